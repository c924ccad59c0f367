// Package parallel runs a function over many items, a bounded number at
// once: the shape of every "read these N small objects" loop.
package parallel

import "sync"

// Each calls fn for every item, at most n at once (n < 1 counts as 1),
// and returns when every call has returned. fn guards what it shares.
func Each[T any](n int, items []T, fn func(T)) {
	var wg sync.WaitGroup
	slots := make(chan struct{}, max(n, 1))
	for _, it := range items {
		wg.Add(1)
		slots <- struct{}{}
		go func() {
			defer func() { <-slots; wg.Done() }()
			fn(it)
		}()
	}
	wg.Wait()
}
