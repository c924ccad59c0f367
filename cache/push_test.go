package cache_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nix-community/go-nix/pkg/narinfo/signature"
	"github.com/nix-community/go-nix/pkg/nixbase32"

	"github.com/nix-ota/nix-ota/bucket"
	"github.com/nix-ota/nix-ota/bucket/s3store"
	"github.com/nix-ota/nix-ota/cache"
	"github.com/nix-ota/nix-ota/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// fakeNix serves made-up store paths whose "NAR" is any bytes: it stands
// beside the real-Nix tests in this package to make orderings, sizes and
// corrupt dumps that a real store cannot. dump overrides what Dump writes.
type fakeNix struct {
	infos []cache.PathInfo
	nars  map[string][]byte
	dump  func(path string, nar []byte, w io.Writer) error
}

// add makes a path with the given NAR bytes and references.
func (n *fakeNix) add(name string, nar []byte, refs ...string) string {
	p := testenv.StorePath(name)
	h := sha256.Sum256(nar)
	n.infos = append(n.infos, cache.PathInfo{Path: p, NarHash: "sha256:" + nixbase32.EncodeToString(h[:]), NarSize: uint64(len(nar)), References: refs})
	if n.nars == nil {
		n.nars = map[string][]byte{}
	}
	n.nars[p] = nar
	return p
}

func (n *fakeNix) Closure(context.Context, []string) ([]cache.PathInfo, error) { return n.infos, nil }

func (n *fakeNix) Dump(_ context.Context, p string, w io.Writer) error {
	if n.dump != nil {
		return n.dump(p, n.nars[p], w)
	}
	_, err := w.Write(n.nars[p])
	return err
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

func newKey(t *testing.T) signature.SecretKey {
	k, _, err := signature.GenerateKeypair("test-1", nil)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func fileStore(t *testing.T) (bucket.Store, string) {
	dir := t.TempDir()
	s, err := bucket.Open("file://"+dir, bucket.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return s, dir
}

// event is one Put seen by recordStore, numbered in the order Puts began
// and ended.
type event struct {
	key        string
	start, end int
}

// recordStore records Puts and holds the first NAR Put until a second one
// is under way (or 3 seconds passed): proof that uploads overlap.
type recordStore struct {
	bucket.Store
	mu         sync.Mutex
	seq        int
	events     []*event
	narsActive int
	waited     bool // the first NAR Put has waited
	overlapped chan struct{}
	once       sync.Once
}

func newRecordStore(s bucket.Store) *recordStore {
	return &recordStore{Store: s, overlapped: make(chan struct{})}
}

func (s *recordStore) Put(ctx context.Context, key string, r io.Reader, size int64, o bucket.PutOptions) (string, error) {
	s.mu.Lock()
	s.seq++
	e := &event{key: key, start: s.seq}
	s.events = append(s.events, e)
	isNAR := strings.HasPrefix(key, "cache/nar/")
	wait := isNAR && !s.waited
	if isNAR {
		s.waited = true
		s.narsActive++
		if s.narsActive >= 2 {
			s.once.Do(func() { close(s.overlapped) })
		}
	}
	s.mu.Unlock()
	if wait {
		select {
		case <-s.overlapped:
		case <-time.After(3 * time.Second):
		}
	}
	etag, err := s.Store.Put(ctx, key, r, size, o)
	s.mu.Lock()
	s.seq++
	e.end = s.seq
	if isNAR {
		s.narsActive--
	}
	s.mu.Unlock()
	return etag, err
}

// ended returns the event of key's last successful Put.
func (s *recordStore) ended(key string) *event {
	var last *event
	for _, e := range s.events {
		if e.key == key && e.end > 0 {
			last = e
		}
	}
	return last
}

// dag is a closure of 12 made-up paths: leaves of mixed sizes (two with
// the same contents, one of two S3 parts), middles on them,
// tops on the middles; dependencies first, as Nix.Closure returns them.
func dag() *fakeNix {
	n := &fakeNix{}
	same := bytes.Repeat([]byte("same contents "), 1000)
	leaves := []string{
		n.add("leaf-big", append(randomBytes(17<<20), make([]byte, 1<<20)...)),
		n.add("leaf-a", randomBytes(300<<10)),
		n.add("leaf-b", bytes.Repeat([]byte("compressible "), 50000)),
		n.add("leaf-same-1", same),
		n.add("leaf-same-2", same),
		n.add("leaf-empty", nil),
	}
	m1 := n.add("mid-1", randomBytes(4<<10), leaves[0], leaves[1])
	m2 := n.add("mid-2", randomBytes(8<<10), leaves[2], leaves[3])
	m3 := n.add("mid-3", randomBytes(1<<10), leaves[4], leaves[5], m1)
	top1 := n.add("top-1", randomBytes(2<<10), m1, m2, m3)
	n.add("top-2", randomBytes(2<<10), m2, m3, leaves[1])
	self := testenv.StorePath("top-3")
	n.add("top-3", randomBytes(2<<10), top1, self)
	return n
}

// TestPushOrder: with several jobs, NAR uploads overlap; every narinfo is
// written after its NAR and after the narinfos of all its references; a
// second push writes nothing and a push with one job writes the same
// objects.
func TestPushOrder(t *testing.T) {
	for _, jobs := range []int{1, 4} {
		t.Run(fmt.Sprintf("jobs=%d", jobs), func(t *testing.T) {
			n := dag()
			inner, _ := fileStore(t)
			s := newRecordStore(inner)
			p := &cache.Pusher{Store: s, Key: newKey(t), Nix: n, Jobs: jobs}
			var reports []cache.Progress
			p.Progress = func(pr cache.Progress) { reports = append(reports, pr) }
			var mu sync.Mutex
			uploaded := map[string]int64{} // the last upload report of each path
			p.Bytes = func(b cache.ByteProgress) {
				mu.Lock()
				defer mu.Unlock()
				if b.Phase == cache.PhaseUpload {
					uploaded[b.Path] = max(uploaded[b.Path], b.Done)
				}
			}
			res, err := p.Push(context.Background(), nil)
			if err != nil {
				t.Fatal(err)
			}
			if res.Uploaded != len(n.infos) || res.Skipped != 0 || res.Done != len(n.infos) || len(reports) != len(n.infos) {
				t.Fatalf("result %+v after %d reports", res, len(reports))
			}
			for i, r := range reports {
				if r.Done != i+1 || r.Total != len(n.infos) {
					t.Fatalf("report %d: %+v", i, r)
				}
			}
			select {
			case <-s.overlapped:
				if jobs == 1 {
					t.Fatal("two NAR uploads at once with one job")
				}
			default:
				if jobs > 1 {
					t.Fatal("NAR uploads never overlapped")
				}
			}
			checkOrder(t, s, n)
			if jobs == 1 {
				checkLargestFirst(t, s, n)
			}
			// the two paths with the same NAR upload it once, for either
			same1, same2 := testenv.StorePath("leaf-same-1"), testenv.StorePath("leaf-same-2")
			uploaded[same1] = max(uploaded[same1], uploaded[same2])
			uploaded[same2] = uploaded[same1]
			for _, info := range n.infos {
				if info.NarSize > 0 && uploaded[info.Path] != int64(info.NarSize) {
					t.Fatalf("upload progress of %s ended at %d of %d", info.Path, uploaded[info.Path], info.NarSize)
				}
			}
			again, err := (&cache.Pusher{Store: s, Key: p.Key, Nix: n, Jobs: jobs}).Push(context.Background(), nil)
			if err != nil || again.Skipped != len(n.infos) || again.Uploaded != 0 {
				t.Fatalf("second push: %+v %v", again, err)
			}
		})
	}
}

// checkOrder checks the invariants of a finished push against what the
// store saw, and that the two paths with the same NAR share one upload.
func checkOrder(t *testing.T, s *recordStore, n *fakeNix) {
	t.Helper()
	nars := map[string]int{}
	for _, e := range s.events {
		if strings.HasPrefix(e.key, "cache/nar/") {
			nars[e.key]++
		}
	}
	if len(nars) != len(n.infos)-1 {
		t.Fatalf("%d NAR objects for %d paths, two of them alike: %v", len(nars), len(n.infos), nars)
	}
	for k, c := range nars {
		if c != 1 {
			t.Fatalf("%s uploaded %d times", k, c)
		}
	}
	for _, info := range n.infos {
		key, _ := cache.NarinfoKey(info.Path)
		ni, err := cache.ReadNarinfo(context.Background(), s, info.Path)
		if err != nil {
			t.Fatal(err)
		}
		if ni.FileHash != nil || ni.FileSize != 0 || ni.NarSize != info.NarSize || ni.NarHash.String() != info.NarHash {
			t.Fatalf("narinfo of %s: %s", info.Path, ni)
		}
		written := s.ended(key)
		if nar := s.ended("cache/" + ni.URL); nar == nil || nar.end > written.start {
			t.Fatalf("narinfo %s written before its NAR", key)
		}
		for _, r := range info.References {
			rk, _ := cache.NarinfoKey(r)
			if r != info.Path && s.ended(rk).end > written.start {
				t.Fatalf("narinfo %s written before its reference %s", key, rk)
			}
		}
	}
}

// checkLargestFirst: with one job, NAR uploads start largest first.
func checkLargestFirst(t *testing.T, s *recordStore, n *fakeNix) {
	t.Helper()
	size := map[string]uint64{}
	for _, info := range n.infos {
		size["cache/nar/"+strings.TrimPrefix(info.NarHash, "sha256:")+".nar.zst"] = info.NarSize
	}
	last := uint64(1 << 62)
	for _, e := range s.events {
		if sz, ok := size[e.key]; ok {
			if sz > last {
				t.Fatalf("a NAR of %d bytes uploaded after one of %d", sz, last)
			}
			last = sz
		}
	}
}

// minioStore is a fresh bucket on the shared MinIO server.
func minioStore(t *testing.T) (bucket.Store, string) {
	m := testenv.SharedMinIO(t)
	name, url := m.NewBucket(t)
	s, err := s3store.Open(url, bucket.Options{}, m.Creds())
	if err != nil {
		t.Fatal(err)
	}
	return s, name
}

// TestPushBadDump: a dump that does not hash to what Nix said, or that
// fails midway, fails the push, and neither a narinfo nor a NAR object is
// left: not for a small NAR, not for a large one (whose first S3 part is
// already uploaded when the hash is known), not on file:// and not on
// MinIO, where no multipart upload is left behind either.
func TestPushBadDump(t *testing.T) {
	dumps := map[string]func(string, []byte, io.Writer) error{
		"mismatch": func(_ string, nar []byte, w io.Writer) error {
			bad := bytes.Clone(nar)
			bad[len(bad)-1] ^= 1
			_, err := w.Write(bad)
			return err
		},
		"fails midway": func(_ string, nar []byte, w io.Writer) error {
			if _, err := w.Write(nar[:len(nar)-100]); err != nil {
				return err
			}
			return errors.New("nix-store --dump: exit status 1: disk read error")
		},
	}
	sizes := map[string]int{"small": 64 << 10, "two parts": 20 << 20}
	for dumpName, dump := range dumps {
		for sizeName, size := range sizes {
			for _, backend := range []string{"file", "minio"} {
				t.Run(dumpName+"/"+sizeName+"/"+backend, func(t *testing.T) {
					n := &fakeNix{dump: dump}
					n.add("bad", randomBytes(size)) // incompressible: 20 MiB are two S3 parts
					var s bucket.Store
					var where string
					if backend == "file" {
						s, where = fileStore(t)
					} else {
						s, where = minioStore(t)
					}
					_, err := (&cache.Pusher{Store: s, Key: newKey(t), Nix: n}).Push(context.Background(), nil)
					want := map[string]string{"mismatch": "NAR hash mismatch", "fails midway": "disk read error"}[dumpName]
					if err == nil || !strings.Contains(err.Error(), want) {
						t.Fatalf("push: %v, want an error with %q", err, want)
					}
					checkEmpty(t, s, backend, where)
				})
			}
		}
	}
}

// checkEmpty: the bucket holds only nix-cache-info, a file:// bucket no
// temporary file, and MinIO no unfinished upload.
func checkEmpty(t *testing.T, s bucket.Store, backend, where string) {
	t.Helper()
	var keys []string
	s.List(context.Background(), "", func(i bucket.Info) error { keys = append(keys, i.Key); return nil })
	if len(keys) != 1 || keys[0] != cache.InfoKey {
		t.Fatalf("left in the bucket: %v", keys)
	}
	if backend == "file" {
		var files []string
		filepath.WalkDir(where, func(p string, d fs.DirEntry, err error) error {
			if err == nil && !d.IsDir() {
				files = append(files, p)
			}
			return nil
		})
		if len(files) != 1 {
			t.Fatalf("files left: %v", files)
		}
		return
	}
	m := testenv.SharedMinIO(t)
	for u := range m.Admin().ListIncompleteUploads(context.Background(), where, "", true) {
		t.Fatalf("unfinished upload left: %+v", u)
	}
}

// failNAR fails the Nth NAR upload: the network dropping midway.
type failNAR struct {
	bucket.Store
	mu       sync.Mutex
	n, nars  int
	narPuts  int // NAR Puts that went through
	infoPuts int // narinfo Puts that went through
}

func (s *failNAR) Put(ctx context.Context, key string, r io.Reader, size int64, o bucket.PutOptions) (string, error) {
	s.mu.Lock()
	isNAR := strings.HasPrefix(key, "cache/nar/")
	if isNAR {
		s.nars++
		if s.nars == s.n {
			s.mu.Unlock()
			return "", fmt.Errorf("put %s: %w: connection reset (injected)", key, bucket.ErrUnreachable)
		}
	}
	s.mu.Unlock()
	etag, err := s.Store.Put(ctx, key, r, size, o)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err == nil && isNAR {
		s.narPuts++
	} else if err == nil && strings.HasSuffix(key, ".narinfo") {
		s.infoPuts++
	}
	return etag, err
}

// realClosure builds a closure of 6 real store paths: a 20 MiB one (mostly
// random: two S3 parts), two small ones beside it, and three on top.
func realClosure(t *testing.T) (top string, all []string) {
	file := filepath.Join(t.TempDir(), "firmware.bin")
	if err := os.WriteFile(file, append(randomBytes(18<<20), make([]byte, 2<<20)...), 0o644); err != nil {
		t.Fatal(err)
	}
	big := strings.TrimSpace(testenv.Cmd(t, "nix-store", "--add", file))
	l1 := testenv.BuildSystem(t, "lib1", testenv.SystemOptions{})
	l2 := testenv.BuildSystem(t, "lib2", testenv.SystemOptions{})
	m1 := testenv.BuildSystem(t, "mid1", testenv.SystemOptions{Deps: []string{big, l1}})
	m2 := testenv.BuildSystem(t, "mid2", testenv.SystemOptions{Deps: []string{l2}})
	top = testenv.BuildSystem(t, "top", testenv.SystemOptions{Deps: []string{m1, m2, l1}})
	return top, []string{big, l1, l2, m1, m2, top}
}

// publicCache makes a MinIO bucket whose cache/ anyone may read, as
// devices substitute from it, and returns the store and the substituter.
func publicCache(t *testing.T) (bucket.Store, string) {
	s, name := minioStore(t)
	m := testenv.SharedMinIO(t)
	policy := fmt.Sprintf(`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":["*"]},"Action":["s3:GetObject"],"Resource":["arn:aws:s3:::%s/cache/*"]}]}`, name)
	if err := m.Admin().SetBucketPolicy(context.Background(), name, policy); err != nil {
		t.Fatal(err)
	}
	return s, fmt.Sprintf("http://%s/%s/cache", m.Endpoint, name)
}

// TestPushResumes, with real Nix and MinIO: a push cut off midway (an
// upload fails, or the push is cancelled) leaves only narinfos whose NAR
// and references are all there; the next push uploads exactly the paths
// without one; and real Nix substitutes the whole closure from the cache,
// the 20 MiB path (a multipart upload) included.
func TestPushResumes(t *testing.T) {
	testenv.RequireNix(t)
	c := testenv.NewCache(t)
	key, err := cache.LoadKey(c.SecretKey)
	if err != nil {
		t.Fatal(err)
	}
	for _, cut := range []string{"upload fails", "cancelled"} {
		t.Run(cut, func(t *testing.T) {
			top, all := realClosure(t)
			s, subst := publicCache(t)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			p := &cache.Pusher{Store: s, Key: key, Nix: cache.LocalNix{}, Jobs: 2}
			if cut == "upload fails" {
				p.Store = &failNAR{Store: s, n: 5}
			} else {
				p.Progress = func(pr cache.Progress) {
					if pr.Done == 2 {
						cancel()
					}
				}
			}
			res, err := p.Push(ctx, []string{top})
			if err == nil {
				t.Fatalf("the push was not cut: %+v", res)
			}
			complete := checkComplete(t, s, key.ToPublicKey())
			t.Logf("cut after %d of %d paths complete (%d counted)", complete, len(all), res.Uploaded)
			if res.Uploaded > complete || complete == len(all) || cut == "cancelled" && complete < 2 {
				t.Fatalf("cut push reported %+v; %d narinfos in the cache", res, complete)
			}
			again := &failNAR{Store: s}
			res, err = (&cache.Pusher{Store: again, Key: key, Nix: cache.LocalNix{}}).Push(context.Background(), []string{top})
			if err != nil {
				t.Fatal(err)
			}
			missing := len(all) - complete
			if res.Uploaded != missing || res.Skipped != complete || again.narPuts != missing || again.infoPuts != missing {
				t.Fatalf("resumed push after %d complete: %+v, %d NARs and %d narinfos written", complete, res, again.narPuts, again.infoPuts)
			}
			if checkComplete(t, s, key.ToPublicKey()) != len(all) {
				t.Fatal("the resumed push left paths out")
			}
			testenv.Forget(t, all...)
			testenv.Cmd(t, "nix-store", "--realise", top, "--option", "substituters", subst, "--option", "trusted-public-keys", c.PublicKey)
			testenv.Cmd(t, "nix-store", "--verify-path", all[0])
		})
	}
}

// checkComplete checks every narinfo in the cache: signed by pub, its NAR
// present, the narinfos of its references present. It returns how many.
func checkComplete(t *testing.T, s bucket.Store, pub signature.PublicKey) int {
	t.Helper()
	ctx := context.Background()
	var keys []string
	if err := s.List(ctx, "cache/", func(i bucket.Info) error { keys = append(keys, i.Key); return nil }); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, k := range keys {
		if !strings.HasSuffix(k, ".narinfo") {
			continue
		}
		o, err := s.Get(ctx, k, bucket.GetOptions{MaxSize: cache.MaxNarinfo})
		if err != nil {
			t.Fatal(err)
		}
		sp := strings.TrimPrefix(strings.SplitN(string(o.Data), "\n", 2)[0], "StorePath: ")
		ni, err := cache.ParseNarinfo(sp, o.Data)
		if err != nil {
			t.Fatal(err)
		}
		if !signature.VerifyFirst(ni.Fingerprint(), ni.Signatures, []signature.PublicKey{pub}) {
			t.Fatalf("%s: not signed by the push's key", k)
		}
		if _, err := s.Stat(ctx, "cache/"+ni.URL); err != nil {
			t.Fatalf("%s points at a missing NAR: %v", k, err)
		}
		for _, r := range ni.References {
			if _, err := cache.ReadNarinfo(ctx, s, "/nix/store/"+r); err != nil {
				t.Fatalf("%s: its reference %s has no narinfo: %v", k, r, err)
			}
		}
		n++
	}
	return n
}

// lookupStore holds narinfo Gets until 8 are in flight, or until 3
// seconds after the first, and records whether 8 were.
type lookupStore struct {
	bucket.Store
	mu       sync.Mutex
	active   int
	deadline chan struct{} // closed 3 seconds after the first Get
	reached  chan struct{}
	once     sync.Once
}

func (s *lookupStore) Get(ctx context.Context, key string, o bucket.GetOptions) (*bucket.Object, error) {
	if strings.HasSuffix(key, ".narinfo") {
		s.mu.Lock()
		s.active++
		if s.active >= 8 {
			s.once.Do(func() { close(s.reached) })
		}
		if s.deadline == nil {
			s.deadline = make(chan struct{})
			time.AfterFunc(3*time.Second, func() { close(s.deadline) })
		}
		deadline := s.deadline
		s.mu.Unlock()
		select {
		case <-s.reached:
		case <-deadline:
		}
		defer func() { s.mu.Lock(); s.active--; s.mu.Unlock() }()
	}
	return s.Store.Get(ctx, key, o)
}

// TestPushLooksUpAtOnce: a push that finds a closure in the cache looks
// its narinfos up many at once, even with one job, and uploads nothing.
func TestPushLooksUpAtOnce(t *testing.T) {
	n := &fakeNix{}
	for i := range 40 {
		n.add(fmt.Sprintf("p%d", i), randomBytes(1<<10))
	}
	s, _ := fileStore(t)
	key := newKey(t)
	if _, err := (&cache.Pusher{Store: s, Key: key, Nix: n}).Push(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	ls := &lookupStore{Store: s, reached: make(chan struct{})}
	res, err := (&cache.Pusher{Store: ls, Key: key, Nix: n, Jobs: 1}).Push(context.Background(), nil)
	if err != nil || res.Skipped != 40 || res.Uploaded != 0 {
		t.Fatalf("second push: %+v %v", res, err)
	}
	select {
	case <-ls.reached:
	default:
		t.Fatal("narinfos were never looked up 8 at once")
	}
}
