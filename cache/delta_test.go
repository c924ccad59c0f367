package cache_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/nix-community/go-nix/pkg/nixbase32"

	"github.com/nix-ota/nix-ota/bucket"
	"github.com/nix-ota/nix-ota/cache"
	"github.com/nix-ota/nix-ota/delta"
	"github.com/nix-ota/nix-ota/internal/testenv"
)

// orderStore records the keys of finished Puts, in order.
type orderStore struct {
	bucket.Store
	mu   sync.Mutex
	puts []string
}

func (s *orderStore) Put(ctx context.Context, key string, r io.Reader, size int64, o bucket.PutOptions) (string, error) {
	etag, err := s.Store.Put(ctx, key, r, size, o)
	s.mu.Lock()
	s.puts = append(s.puts, key)
	s.mu.Unlock()
	return etag, err
}

func (s *orderStore) index(key string) int { return slices.Index(s.puts, key) }

// TestPushDeltas: a second push writes a delta, and its index, for the one
// path that has a same-name base, is large enough and gains from it;
// index and delta are written before the narinfo, the delta rebuilds the
// NAR exactly, and paths that are too small, have no base of their name,
// or would not gain get none. gc keeps index and delta while their path is
// reachable and deletes them with it.
func TestPushDeltas(t *testing.T) {
	for backend, open := range map[string]func(*testing.T) (bucket.Store, string){"file": fileStore, "minio": minioStore} {
		t.Run(backend, func(t *testing.T) {
			s, _ := open(t)
			key := newKey(t)
			old, fresh := &fakeNix{}, &fakeNix{}
			app := binaryish(1 << 20)
			old.add("app-1.0", app)
			old.add("small-1.0", app[:32<<10])
			old.add("noise-1.0", randomBytes(256<<10))
			if _, err := (&cache.Pusher{Store: s, Key: key, Nix: old}).Push(context.Background(), nil); err != nil {
				t.Fatal(err)
			}
			app2 := bytes.Clone(app)
			copy(app2[500<<10:], "a fix in the middle")
			target := fresh.add("app-1.1", app2)
			fresh.add("small-1.1", app2[:32<<10])
			fresh.add("noise-1.1", randomBytes(256<<10))
			fresh.add("other-2.0", app2)
			var bases []delta.Candidate
			for _, i := range old.infos {
				bases = append(bases, delta.Candidate{Path: i.Path, NarSize: i.NarSize})
			}
			var warned []string
			rec := &orderStore{Store: s}
			p := &cache.Pusher{Store: rec, Key: key, Nix: fresh, Bases: bases, Jobs: 2,
				Warn: func(sp string, err error) { warned = append(warned, sp+": "+err.Error()) }}
			res, err := p.Push(context.Background(), nil)
			if err != nil {
				t.Fatal(err)
			}
			if res.Deltas != 1 || res.DeltaBytes*20 > res.DeltaFullBytes {
				t.Fatalf("push result %+v: want one delta, under a twentieth of its NAR (warnings %q)", res, warned)
			}
			if len(warned) != 1 || !strings.Contains(warned[0], "noise-1.1: delta not at most half the compressed NAR") {
				t.Fatalf("warnings: %q", warned)
			}
			ixKey, _ := delta.IndexKey(target)
			ix, err := delta.ParseIndex(target, getObj(t, s, "cache/"+ixKey))
			if err != nil {
				t.Fatal(err)
			}
			niKey, _ := cache.NarinfoKey(target)
			if i, j, k := rec.index("cache/"+ix.Delta), rec.index("cache/"+ixKey), rec.index(niKey); i < 0 || j < i || k < j {
				t.Fatalf("put order: delta %d, index %d, narinfo %d", i, j, k)
			}
			d := getObj(t, s, "cache/"+ix.Delta)
			sum := sha256.Sum256(d)
			if h, _ := delta.ObjectHash(ix.Delta); h != nixbase32.EncodeToString(sum[:]) || int64(len(d)) != ix.DeltaSize {
				t.Fatalf("delta object %s: %d bytes, hash %s", ix.Delta, len(d), nixbase32.EncodeToString(sum[:]))
			}
			var out bytes.Buffer
			if _, err := delta.Apply(&out, bytes.NewReader(app), int64(len(app)), bytes.NewReader(d), int64(len(app2))); err != nil || !bytes.Equal(out.Bytes(), app2) {
				t.Fatalf("delta does not rebuild app-1.1: %v", err)
			}
			for _, name := range []string{"small-1.1", "noise-1.1", "other-2.0"} {
				k, _ := delta.IndexKey(testenv.StorePath(name))
				if _, err := s.Stat(context.Background(), "cache/"+k); err == nil {
					t.Errorf("%s got a delta", name)
				}
			}
			checkDeltaGC(t, s, target, "cache/"+ixKey, "cache/"+ix.Delta)
		})
	}
}

func checkDeltaGC(t *testing.T, s bucket.Store, target string, keys ...string) {
	ctx := context.Background()
	plan, err := cache.PlanGC(ctx, s, []string{target}, 0, time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if !plan.Keep[k] {
			t.Errorf("gc with %s as root would delete %s", target, k)
		}
	}
	plan, err = cache.PlanGC(ctx, s, []string{testenv.StorePath("other-2.0")}, 0, time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := plan.Apply(ctx, s); err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if _, err := s.Stat(ctx, k); err == nil {
			t.Errorf("gc without %s kept %s", target, k)
		}
	}
}

// binaryish is n bytes of runs of random bytes and repeated words, as
// code and tables have: zstd shrinks it some, not much.
func binaryish(n int) []byte {
	b := randomBytes(n)
	for i := 0; i+64 < n; i += 97 {
		copy(b[i:i+40], bytes.Repeat([]byte{b[i] & 7}, 40))
	}
	return b
}

func getObj(t *testing.T, s bucket.Store, key string) []byte {
	t.Helper()
	o, err := s.Get(context.Background(), key, bucket.GetOptions{MaxSize: 64 << 20})
	if err != nil {
		t.Fatalf("get %s: %v", key, err)
	}
	return o.Data
}

// TestPushDeltaBaseUnverified: a base whose narinfo this cache key did
// not sign, or whose NAR in the bucket was replaced (by other bytes, or
// by a small object that decompresses to 256 MiB), gets no delta made
// against it, and the push says why; the bomb is read no further than
// the signed NAR size.
func TestPushDeltaBaseUnverified(t *testing.T) {
	for name, spoil := range map[string]func(t *testing.T, s bucket.Store, base string){
		"foreign narinfo": func(t *testing.T, s bucket.Store, base string) {
			other := &fakeNix{}
			other.add("app-1.0", binaryish(1<<20))
			if _, err := (&cache.Pusher{Store: s, Key: newKey(t), Nix: other}).Push(context.Background(), nil); err != nil {
				t.Fatal(err)
			}
		},
		"replaced NAR": func(t *testing.T, s bucket.Store, base string) {
			ni, err := cache.ReadNarinfo(context.Background(), s, base)
			if err != nil {
				t.Fatal(err)
			}
			var z bytes.Buffer
			enc, _ := zstd.NewWriter(&z)
			enc.Write(binaryish(1 << 20))
			enc.Close()
			if _, err := bucket.PutBytes(context.Background(), s, "cache/"+ni.URL, z.Bytes(), bucket.PutOptions{}); err != nil {
				t.Fatal(err)
			}
		},
		"decompression bomb": func(t *testing.T, s bucket.Store, base string) {
			ni, err := cache.ReadNarinfo(context.Background(), s, base)
			if err != nil {
				t.Fatal(err)
			}
			var z bytes.Buffer
			enc, _ := zstd.NewWriter(&z)
			zeros := make([]byte, 1<<20)
			for range 256 { // 256 MiB of zeros, a few KiB compressed
				enc.Write(zeros)
			}
			enc.Close()
			if _, err := bucket.PutBytes(context.Background(), s, "cache/"+ni.URL, z.Bytes(), bucket.PutOptions{}); err != nil {
				t.Fatal(err)
			}
		},
	} {
		t.Run(name, func(t *testing.T) {
			s, _ := fileStore(t)
			key := newKey(t)
			old, fresh := &fakeNix{}, &fakeNix{}
			app := binaryish(1 << 20)
			base := old.add("app-1.0", app)
			if _, err := (&cache.Pusher{Store: s, Key: key, Nix: old}).Push(context.Background(), nil); err != nil {
				t.Fatal(err)
			}
			spoil(t, s, base)
			app2 := bytes.Clone(app)
			app2[1000] ^= 1
			fresh.add("app-1.1", app2)
			var warned []string
			p := &cache.Pusher{Store: s, Key: key, Nix: fresh, Bases: []delta.Candidate{{Path: base, NarSize: 1 << 20}},
				Warn: func(sp string, err error) { warned = append(warned, err.Error()) }}
			res, err := p.Push(context.Background(), nil)
			if err != nil {
				t.Fatal(err)
			}
			want := map[string]string{"foreign narinfo": "not signed by this cache key", "replaced NAR": "does not match its narinfo",
				"decompression bomb": "does not match its narinfo"}[name]
			if res.Deltas != 0 || len(warned) != 1 || !strings.Contains(warned[0], want) {
				t.Fatalf("deltas %d, warnings %q; want none, and one saying %q", res.Deltas, warned, want)
			}
		})
	}
}
