package parallel

import (
	"sync"
	"testing"
	"time"
)

// TestEach: every item is seen once, and never more than n calls run at
// once (each call holds on a little, so calls do overlap).
func TestEach(t *testing.T) {
	for _, n := range []int{0, 1, 3, 8} {
		var mu sync.Mutex
		seen := map[int]int{}
		running, most := 0, 0
		items := make([]int, 40)
		for i := range items {
			items[i] = i
		}
		Each(n, items, func(i int) {
			mu.Lock()
			seen[i]++
			running++
			most = max(most, running)
			mu.Unlock()
			time.Sleep(time.Millisecond)
			mu.Lock()
			running--
			mu.Unlock()
		})
		if len(seen) != 40 || most > max(n, 1) || (n > 1 && most < 2) {
			t.Fatalf("n=%d: %d items seen, at most %d at once", n, len(seen), most)
		}
		for i, c := range seen {
			if c != 1 {
				t.Fatalf("n=%d: item %d seen %d times", n, i, c)
			}
		}
	}
}
