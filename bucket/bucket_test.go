package bucket_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nix-ota/nix-ota/bucket"
	"github.com/nix-ota/nix-ota/bucket/s3store"
	"github.com/nix-ota/nix-ota/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// backends returns one fresh, empty, writable store per backend type. The
// S3 ones talk to a real MinIO server: through minio-go (bucket/s3store,
// what the CLI uses) and through the built-in SigV4 client (what devices
// use).
func backends(t *testing.T) map[string]func(t *testing.T) bucket.Store {
	return map[string]func(t *testing.T) bucket.Store{
		"file": func(t *testing.T) bucket.Store {
			s, err := bucket.Open("file://"+filepath.Join(t.TempDir(), "b"), bucket.Options{Create: true})
			if err != nil {
				t.Fatal(err)
			}
			return s
		},
		"file-walk": func(t *testing.T) bucket.Store {
			// what kernels without openat2 (before 5.6) run
			t.Cleanup(bucket.UseOpenat2(false))
			s, err := bucket.Open("file://"+filepath.Join(t.TempDir(), "b"), bucket.Options{Create: true})
			if err != nil {
				t.Fatal(err)
			}
			return s
		},
		"minio": func(t *testing.T) bucket.Store {
			m := testenv.SharedMinIO(t)
			_, url := m.NewBucket(t)
			s, err := s3store.Open(url, bucket.Options{}, m.Creds())
			if err != nil {
				t.Fatal(err)
			}
			return s
		},
		"minio-prefix": func(t *testing.T) bucket.Store {
			m := testenv.SharedMinIO(t)
			name, _ := m.NewBucket(t)
			url := fmt.Sprintf("s3://%s/fleet/a?endpoint=%s&scheme=http&region=us-east-1", name, m.Endpoint)
			s, err := s3store.Open(url, bucket.Options{}, m.Creds())
			if err != nil {
				t.Fatal(err)
			}
			return s
		},
		"builtin-s3": func(t *testing.T) bucket.Store {
			m := testenv.SharedMinIO(t)
			_, url := m.NewBucket(t)
			s, err := bucket.Open(url, bucket.Options{Credentials: bucket.StaticCredentials(m.AccessKey, m.SecretKey, "")})
			if err != nil {
				t.Fatal(err)
			}
			return s
		},
		"builtin-s3-prefix": func(t *testing.T) bucket.Store {
			m := testenv.SharedMinIO(t)
			name, _ := m.NewBucket(t)
			url := fmt.Sprintf("s3://%s/fleet/a?endpoint=%s&scheme=http&region=us-east-1", name, m.Endpoint)
			s, err := bucket.Open(url, bucket.Options{Credentials: bucket.StaticCredentials(m.AccessKey, m.SecretKey, "")})
			if err != nil {
				t.Fatal(err)
			}
			return s
		},
	}
}

// canList: the built-in s3:// client does not list, on purpose.
func canList(name string) bool { return !strings.HasPrefix(name, "builtin-") }

// TestConformance is the contract every writable backend keeps.
func TestConformance(t *testing.T) {
	for name, open := range backends(t) {
		t.Run(name, func(t *testing.T) {
			t.Run("GetMissing", func(t *testing.T) { testGetMissing(t, open(t)) })
			t.Run("RoundTrip", func(t *testing.T) { testRoundTrip(t, open(t)) })
			t.Run("SizeLimit", func(t *testing.T) { testSizeLimit(t, open(t)) })
			t.Run("CreateOnly", func(t *testing.T) { testCreateOnly(t, open(t)) })
			t.Run("IfMatch", func(t *testing.T) { testIfMatch(t, open(t)) })
			t.Run("List", func(t *testing.T) {
				if canList(name) {
					testList(t, open(t))
					return
				}
				err := open(t).List(ctx, "", func(bucket.Info) error { return nil })
				if !errors.Is(err, bucket.ErrUnsupported) {
					t.Fatalf("list: %v, want ErrUnsupported", err)
				}
			})
			t.Run("ListAfter", func(t *testing.T) {
				if canList(name) {
					testListAfter(t, open(t))
				}
			})
			t.Run("Escaping", func(t *testing.T) { testEscaping(t, open(t)) })
			t.Run("Delete", func(t *testing.T) { testDelete(t, open(t)) })
			t.Run("UnknownSize", func(t *testing.T) { testUnknownSize(t, open(t), !strings.HasPrefix(name, "builtin-")) })
			t.Run("InvalidKeys", func(t *testing.T) { testInvalidKeys(t, open(t)) })
			t.Run("RacingCreateOnly", func(t *testing.T) { testRacingCreateOnly(t, open(t)) })
			t.Run("RacingCompareAndSwap", func(t *testing.T) { testRacingCAS(t, open(t)) })
		})
	}
}

var ctx = context.Background()

func put(t *testing.T, s bucket.Store, key, data string, o bucket.PutOptions) string {
	t.Helper()
	etag, err := bucket.PutBytes(ctx, s, key, []byte(data), o)
	if err != nil {
		t.Fatalf("put %s: %v", key, err)
	}
	if etag == "" {
		t.Fatalf("put %s: empty etag", key)
	}
	return etag
}

func get(t *testing.T, s bucket.Store, key string) *bucket.Object {
	t.Helper()
	o, err := s.Get(ctx, key, bucket.GetOptions{})
	if err != nil {
		t.Fatalf("get %s: %v", key, err)
	}
	return o
}

func testGetMissing(t *testing.T, s bucket.Store) {
	if _, err := s.Get(ctx, "channels/none.json", bucket.GetOptions{}); !errors.Is(err, bucket.ErrNotFound) {
		t.Fatalf("get missing: %v", err)
	}
	if _, err := s.Stat(ctx, "channels/none.json"); !errors.Is(err, bucket.ErrNotFound) {
		t.Fatalf("stat missing: %v", err)
	}
}

func testRoundTrip(t *testing.T, s bucket.Store) {
	e1 := put(t, s, "channels/prod.json", "one", bucket.PutOptions{ContentType: "application/json", CacheControl: "no-cache"})
	o := get(t, s, "channels/prod.json")
	if string(o.Data) != "one" || o.ETag != e1 {
		t.Fatalf("got %q etag %q, want %q etag %q", o.Data, o.ETag, "one", e1)
	}
	if _, err := s.Get(ctx, "channels/prod.json", bucket.GetOptions{IfNoneMatch: e1}); !errors.Is(err, bucket.ErrNotModified) {
		t.Fatalf("conditional get, unchanged: %v", err)
	}
	e2 := put(t, s, "channels/prod.json", "two", bucket.PutOptions{})
	if e2 == e1 {
		t.Fatal("etag did not change with content")
	}
	o, err := s.Get(ctx, "channels/prod.json", bucket.GetOptions{IfNoneMatch: e1})
	if err != nil || string(o.Data) != "two" || o.ETag != e2 {
		t.Fatalf("conditional get, changed: %v %+v", err, o)
	}
	st, err := s.Stat(ctx, "channels/prod.json")
	if err != nil || st.Size != 3 || st.ETag != e2 {
		t.Fatalf("stat: %v %+v", err, st)
	}
}

func testSizeLimit(t *testing.T, s bucket.Store) {
	put(t, s, "big", "0123456789", bucket.PutOptions{})
	if _, err := s.Get(ctx, "big", bucket.GetOptions{MaxSize: 9}); !errors.Is(err, bucket.ErrTooLarge) {
		t.Fatalf("over limit: %v", err)
	}
	if o, err := s.Get(ctx, "big", bucket.GetOptions{MaxSize: 10}); err != nil || len(o.Data) != 10 {
		t.Fatalf("at limit: %v", err)
	}
}

func testCreateOnly(t *testing.T, s bucket.Store) {
	put(t, s, "channels/prod/1.json", "first", bucket.PutOptions{CreateOnly: true})
	_, err := bucket.PutBytes(ctx, s, "channels/prod/1.json", []byte("second"), bucket.PutOptions{CreateOnly: true})
	if !errors.Is(err, bucket.ErrExists) {
		t.Fatalf("second create-only put: %v", err)
	}
	if o := get(t, s, "channels/prod/1.json"); string(o.Data) != "first" {
		t.Fatalf("create-only put overwrote: %q", o.Data)
	}
}

func testIfMatch(t *testing.T, s bucket.Store) {
	e1 := put(t, s, "channels/prod.json", "v1", bucket.PutOptions{})
	e2 := put(t, s, "channels/prod.json", "v2", bucket.PutOptions{IfMatch: e1})
	if _, err := bucket.PutBytes(ctx, s, "channels/prod.json", []byte("stale"), bucket.PutOptions{IfMatch: e1}); !errors.Is(err, bucket.ErrChanged) {
		t.Fatalf("put with stale etag: %v", err)
	}
	o := get(t, s, "channels/prod.json")
	if string(o.Data) != "v2" || o.ETag != e2 {
		t.Fatalf("after refused put: %q", o.Data)
	}
}

func testList(t *testing.T, s bucket.Store) {
	keys := []string{"channels/prod.json", "channels/prod/1.json", "channels/prod/2.json", "channels/prod2/1.json", "devices/a/status.json", "nix-ota.json"}
	for _, k := range keys {
		put(t, s, k, k, bucket.PutOptions{})
	}
	var got []string
	if err := s.List(ctx, "channels/prod/", func(i bucket.Info) error {
		got = append(got, i.Key)
		if i.Size != int64(len(i.Key)) {
			t.Errorf("%s: size %d", i.Key, i.Size)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != "[channels/prod/1.json channels/prod/2.json]" {
		t.Fatalf("list channels/prod/: %v", got)
	}
	got = nil
	s.List(ctx, "", func(i bucket.Info) error { got = append(got, i.Key); return nil })
	if fmt.Sprint(got) != fmt.Sprint(keys) {
		t.Fatalf("list all: %v", got)
	}
	got = nil
	s.List(ctx, "channels/prod", func(i bucket.Info) error { got = append(got, i.Key); return nil })
	if len(got) != 4 {
		t.Fatalf("list partial name channels/prod: %v", got)
	}
	stop := errors.New("stop")
	n := 0
	if err := s.List(ctx, "", func(bucket.Info) error { n++; return stop }); !errors.Is(err, stop) || n != 1 {
		t.Fatalf("early stop: %v after %d", err, n)
	}
	if err := s.List(ctx, "nothing/", func(bucket.Info) error { t.Fatal("called"); return nil }); err != nil {
		t.Fatalf("list empty prefix: %v", err)
	}
}

// testListAfter: start-after listing of check-in windows, across more
// than one page, with the ETags a Stat gives.
func testListAfter(t *testing.T, s bucket.Store) {
	base := time.Date(2026, 11, 26, 9, 0, 0, 0, time.UTC)
	var want []string
	for w := range 3 {
		for d := range 520 {
			key := bucket.CheckinKey(fmt.Sprintf("d%04d", d), base.Add(time.Duration(w)*bucket.CheckinWindow))
			put(t, s, key, key, bucket.PutOptions{})
			if w > 0 {
				want = append(want, key)
			}
		}
	}
	put(t, s, "devices2/x.json", "x", bucket.PutOptions{})
	var got []string
	err := s.ListAfter(ctx, bucket.DevicesPrefix, bucket.CheckinsFrom(base.Add(bucket.CheckinWindow)), func(i bucket.Info) error {
		got = append(got, i.Key)
		if len(got) == 700 {
			st, err := s.Stat(ctx, i.Key)
			if err != nil || st.ETag != i.ETag || i.ETag == "" || i.ModTime.Sub(st.ModTime).Abs() >= time.Second { // HTTP dates have whole seconds
				t.Errorf("listed %+v, stat %+v (%v)", i, st, err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("list after the first window: %d keys, want %d (first %v)", len(got), len(want), got[:min(3, len(got))])
	}
	got = nil
	s.ListAfter(ctx, bucket.DevicesPrefix, want[len(want)-2], func(i bucket.Info) error { got = append(got, i.Key); return nil })
	if !slices.Equal(got, want[len(want)-1:]) {
		t.Fatalf("list after the last but one key: %v", got)
	}
}

func testDelete(t *testing.T, s bucket.Store) {
	put(t, s, "devices/a/status.json", "x", bucket.PutOptions{})
	if err := s.Delete(ctx, "devices/a/status.json"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, "devices/a/status.json", bucket.GetOptions{}); !errors.Is(err, bucket.ErrNotFound) {
		t.Fatalf("after delete: %v", err)
	}
	if err := s.Delete(ctx, "devices/a/status.json"); err != nil {
		t.Fatalf("delete absent: %v", err)
	}
}

// failingReader yields n bytes and then fails: a body streamed from a
// command that died.
type failingReader struct{ n int }

func (r *failingReader) Read(b []byte) (int, error) {
	if r.n == 0 {
		return 0, errors.New("the producer failed")
	}
	k := min(len(b), r.n)
	for i := range b[:k] {
		b[i] = byte(i)
	}
	r.n -= k
	return k, nil
}

// testUnknownSize: a Put of size -1 stores the whole body (with large,
// empty and past the S3 backend's 16 MiB first part), signed or with
// UnsignedPayload, and a body that fails midway leaves no object, not
// even when it fails after the first part. The built-in S3 client (large
// false) writes small bodies only.
func testUnknownSize(t *testing.T, s bucket.Store, large bool) {
	sizes := []int{1000}
	if large {
		sizes = append(sizes, 0, 16<<20+123)
	}
	for i, n := range append(sizes, sizes...) { // twice: a backend reusing its buffers must not mix bodies
		body := bytes.Repeat([]byte{byte('a' + i)}, n)
		opts := bucket.PutOptions{UnsignedPayload: i >= len(sizes)}
		if _, err := s.Put(ctx, "cache/nar/x.nar", bytes.NewBuffer(body), -1, opts); err != nil {
			t.Fatalf("put %d bytes of unknown size: %v", n, err)
		}
		o, err := s.Get(ctx, "cache/nar/x.nar", bucket.GetOptions{MaxSize: int64(n) + 1})
		if err != nil || !bytes.Equal(o.Data, body) {
			t.Fatalf("get %d bytes put with unknown size: %v, %d bytes", n, err, len(o.Data))
		}
		fail := n + 1
		if _, err := s.Put(ctx, "cache/nar/y.nar", &failingReader{n: fail}, -1, opts); err == nil {
			t.Fatalf("put of a body failing after %d bytes succeeded", fail)
		}
		if _, err := s.Stat(ctx, "cache/nar/y.nar"); !errors.Is(err, bucket.ErrNotFound) {
			t.Fatalf("a body failing after %d bytes left an object: %v", fail, err)
		}
	}
}

// testEscaping: keys with characters URLs and SigV4 escape differently
// round-trip (a signing mismatch would be an access-denied error).
func testEscaping(t *testing.T, s bucket.Store) {
	for _, k := range []string{"devices/a b/status.json", "x/+=&$@:,;!*'()~%20.json", "y/ü€.json"} {
		put(t, s, k, k, bucket.PutOptions{})
		if o := get(t, s, k); string(o.Data) != k {
			t.Fatalf("get %q: %q", k, o.Data)
		}
		if _, err := s.Stat(ctx, k); err != nil {
			t.Fatalf("stat %q: %v", k, err)
		}
		if err := s.Delete(ctx, k); err != nil {
			t.Fatalf("delete %q: %v", k, err)
		}
	}
}

func testInvalidKeys(t *testing.T, s bucket.Store) {
	for _, k := range []string{"", "/abs", "a/../b", "..", "a//b", "dir/", "a\\b", ".nix-ota-lock", "a/.nix-ota-tmp-1"} {
		if _, err := s.Get(ctx, k, bucket.GetOptions{}); !errors.Is(err, bucket.ErrInvalidKey) {
			t.Errorf("get %q: %v", k, err)
		}
		if _, err := bucket.PutBytes(ctx, s, k, []byte("x"), bucket.PutOptions{}); !errors.Is(err, bucket.ErrInvalidKey) {
			t.Errorf("put %q: %v", k, err)
		}
	}
}

// testRacingCreateOnly: of many writers racing for one key, exactly one wins.
func testRacingCreateOnly(t *testing.T, s bucket.Store) {
	const n = 16
	var wins, lost atomic.Int32
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := bucket.PutBytes(ctx, s, "channels/race/1.json", []byte(strconv.Itoa(i)), bucket.PutOptions{CreateOnly: true})
			switch {
			case err == nil:
				wins.Add(1)
			case errors.Is(err, bucket.ErrExists):
				lost.Add(1)
			default:
				t.Errorf("writer %d: %v", i, err)
			}
		}()
	}
	wg.Wait()
	if wins.Load() != 1 || lost.Load() != n-1 {
		t.Fatalf("%d winners, %d losers; want 1 and %d", wins.Load(), lost.Load(), n-1)
	}
}

// testRacingCAS: read-modify-write loops with put-if-match lose no update.
func testRacingCAS(t *testing.T, s bucket.Store) {
	const writers, each = 8, 5
	put(t, s, "counter", "0", bucket.PutOptions{})
	var wg sync.WaitGroup
	for range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for done := 0; done < each; {
				o, err := s.Get(ctx, "counter", bucket.GetOptions{})
				if err != nil {
					t.Error(err)
					return
				}
				n, _ := strconv.Atoi(string(o.Data))
				_, err = bucket.PutBytes(ctx, s, "counter", []byte(strconv.Itoa(n+1)), bucket.PutOptions{IfMatch: o.ETag})
				if errors.Is(err, bucket.ErrChanged) {
					continue
				}
				if err != nil {
					t.Error(err)
					return
				}
				done++
			}
		}()
	}
	wg.Wait()
	if o := get(t, s, "counter"); string(o.Data) != strconv.Itoa(writers*each) {
		t.Fatalf("counter = %s, want %d (lost updates)", o.Data, writers*each)
	}
}

// TestHTTPReadOnly reads a real MinIO bucket anonymously over HTTP, the way
// an agent polls a public bucket or a CDN.
func TestHTTPReadOnly(t *testing.T) {
	m := testenv.SharedMinIO(t)
	name, url := m.NewBucket(t)
	policy := fmt.Sprintf(`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":["*"]},"Action":["s3:GetObject"],"Resource":["arn:aws:s3:::%s/channels/*"]}]}`, name)
	if err := m.Admin().SetBucketPolicy(ctx, name, policy); err != nil {
		t.Fatal(err)
	}
	w, err := s3store.Open(url, bucket.Options{}, m.Creds())
	if err != nil {
		t.Fatal(err)
	}
	etag := put(t, w, "channels/prod.json", "manifest", bucket.PutOptions{})
	put(t, w, "secret.json", "private", bucket.PutOptions{})

	s, err := bucket.Open("http://"+m.Endpoint+"/"+name, bucket.Options{})
	if err != nil {
		t.Fatal(err)
	}
	o := get(t, s, "channels/prod.json")
	if string(o.Data) != "manifest" || o.ETag != etag {
		t.Fatalf("http get: %q %q (want etag %q)", o.Data, o.ETag, etag)
	}
	if _, err := s.Get(ctx, "channels/prod.json", bucket.GetOptions{IfNoneMatch: etag}); !errors.Is(err, bucket.ErrNotModified) {
		t.Fatalf("http conditional get: %v", err)
	}
	if _, err := s.Get(ctx, "channels/prod.json", bucket.GetOptions{MaxSize: 3}); !errors.Is(err, bucket.ErrTooLarge) {
		t.Fatalf("http size limit: %v", err)
	}
	if _, err := s.Get(ctx, "secret.json", bucket.GetOptions{}); !errors.Is(err, bucket.ErrAccessDenied) {
		t.Fatalf("http get outside public prefix: %v", err)
	}
	if _, err := bucket.PutBytes(ctx, s, "channels/prod.json", []byte("x"), bucket.PutOptions{}); !errors.Is(err, bucket.ErrReadOnly) {
		t.Fatalf("http put: %v", err)
	}
	if err := s.List(ctx, "", func(bucket.Info) error { return nil }); !errors.Is(err, bucket.ErrUnsupported) {
		t.Fatalf("http list: %v", err)
	}
}

func TestUnreachable(t *testing.T) {
	port, _ := testenv.FreePort() // nothing listens there
	s, err := bucket.Open(fmt.Sprintf("s3://bkt?endpoint=127.0.0.1:%d&scheme=http", port), bucket.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, "channels/prod.json", bucket.GetOptions{}); !errors.Is(err, bucket.ErrUnreachable) {
		t.Fatalf("s3 unreachable: %v", err)
	}
	h, _ := bucket.Open(fmt.Sprintf("http://127.0.0.1:%d/b", port), bucket.Options{})
	if _, err := h.Get(ctx, "channels/prod.json", bucket.GetOptions{}); !errors.Is(err, bucket.ErrUnreachable) {
		t.Fatalf("http unreachable: %v", err)
	}
	if _, err := bucket.Open("file:///nonexistent/nix-ota-bucket", bucket.Options{}); !errors.Is(err, bucket.ErrUnreachable) {
		t.Fatalf("file missing dir: %v", err)
	}
}

// TestBuiltinS3Interop: what the built-in client writes minio-go reads, and
// the reverse, with the same ETags; bad keys and missing buckets give this
// package's errors.
func TestBuiltinS3Interop(t *testing.T) {
	m := testenv.SharedMinIO(t)
	name, url := m.NewBucket(t)
	full, err := s3store.Open(url, bucket.Options{}, m.Creds())
	if err != nil {
		t.Fatal(err)
	}
	lite, err := bucket.Open(url, bucket.Options{Credentials: bucket.StaticCredentials(m.AccessKey, m.SecretKey, "")})
	if err != nil {
		t.Fatal(err)
	}
	e1 := put(t, lite, "devices/d1/status.json", `{"a":1}`, bucket.PutOptions{ContentType: "application/json"})
	if o := get(t, full, "devices/d1/status.json"); string(o.Data) != `{"a":1}` || o.ETag != e1 || o.ContentType != "application/json" {
		t.Fatalf("minio-go reads %+v, want etag %s", o, e1)
	}
	e2 := put(t, full, "channels/prod.json", "m", bucket.PutOptions{})
	if o := get(t, lite, "channels/prod.json"); string(o.Data) != "m" || o.ETag != e2 {
		t.Fatalf("built-in reads %+v, want etag %s", o, e2)
	}

	wrong, _ := bucket.Open(url, bucket.Options{Credentials: bucket.StaticCredentials(m.AccessKey, "not-the-secret", "")})
	if _, err := wrong.Get(ctx, "channels/prod.json", bucket.GetOptions{}); !errors.Is(err, bucket.ErrAccessDenied) {
		t.Fatalf("wrong secret: %v", err)
	}
	anon, _ := bucket.Open(url, bucket.Options{Credentials: bucket.StaticCredentials("", "", "")})
	if _, err := anon.Get(ctx, "channels/prod.json", bucket.GetOptions{}); !errors.Is(err, bucket.ErrAccessDenied) {
		t.Fatalf("anonymous on a private bucket: %v", err)
	}
	missing, _ := bucket.Open(strings.Replace(url, name, name+"-missing", 1), bucket.Options{Credentials: bucket.StaticCredentials(m.AccessKey, m.SecretKey, "")})
	if _, err := missing.Get(ctx, "channels/prod.json", bucket.GetOptions{}); !errors.Is(err, bucket.ErrUnreachable) || !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("missing bucket: %v", err)
	}
	if _, err := bucket.PutBytes(ctx, lite, "big", make([]byte, 17<<20), bucket.PutOptions{}); !errors.Is(err, bucket.ErrUnsupported) {
		t.Fatalf("oversized put: %v", err)
	}
	failing := func(context.Context) (bucket.Credentials, error) { return bucket.Credentials{}, errors.New("no file") }
	broken, _ := bucket.Open(url, bucket.Options{Credentials: failing})
	if _, err := broken.Get(ctx, "channels/prod.json", bucket.GetOptions{}); err == nil || !strings.Contains(err.Error(), "no file") {
		t.Fatalf("credentials error: %v", err)
	}
}

// TestBuiltinS3WrongRegion: a server in another region than the URL says
// refuses the signature; the error says to check region=.
func TestBuiltinS3WrongRegion(t *testing.T) {
	m, err := testenv.StartMinIO("MINIO_SITE_REGION=eu-west-3")
	if err != nil {
		t.Fatal(err)
	}
	defer m.Stop()
	creds := bucket.StaticCredentials(m.AccessKey, m.SecretKey, "")
	wrong, _ := bucket.Open(fmt.Sprintf("s3://fleet?endpoint=%s&scheme=http", m.Endpoint), bucket.Options{Credentials: creds})
	// A fresh server says ready before it has loaded its settings: for a
	// moment it answers 503 XMinioServerNotInitialized, then accepts any
	// region. Wait, at most 30 s, for it to enforce its own.
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		_, err = wrong.Get(ctx, "channels/prod.json", bucket.GetOptions{})
		starting := err != nil && (strings.Contains(err.Error(), "XMinioServerNotInitialized") || errors.Is(err, bucket.ErrUnreachable))
		if !starting || time.Now().After(deadline) {
			break
		}
	}
	if !errors.Is(err, bucket.ErrAccessDenied) || !strings.Contains(err.Error(), "region=us-east-1 right?") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("wrong region: %v", err)
	}
	t.Logf("wrong region: %v", err)
	right, _ := bucket.Open(fmt.Sprintf("s3://fleet?endpoint=%s&scheme=http&region=eu-west-3", m.Endpoint), bucket.Options{Credentials: creds})
	if _, err := right.Get(ctx, "channels/prod.json", bucket.GetOptions{}); !errors.Is(err, bucket.ErrUnreachable) || !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("right region, no bucket: %v", err)
	}
}

func TestOpenBadURLs(t *testing.T) {
	for _, u := range []string{
		"", "ftp://x", "/abs/path", "file://relative/path", "file:///x?y=1",
		"s3://", "s3://bkt?scheme=gopher", "s3://bkt?bogus=1", "s3://user:pw@bkt", "s3://b", "s3://a..b", "s3://-ab", "s3://ab-", "s3://a.-b", "s3://192.168.1.10", "s3://" + strings.Repeat("a", 64), "s3://a%20b", "http://", "https://h/p?q=1",
	} {
		if _, err := bucket.Open(u, bucket.Options{}); !errors.Is(err, bucket.ErrInvalidURL) {
			t.Errorf("Open(%q) = %v, want ErrInvalidURL", u, err)
		}
	}
	c, err := bucket.ParseS3URL("s3://fleet/prod/x?endpoint=minio.lan:9000&region=eu-1&scheme=http&profile=ci&secret-key=/k")
	if err != nil {
		t.Fatal(err)
	}
	if c.Bucket != "fleet" || c.Prefix != "prod/x" || c.Endpoint != "minio.lan:9000" || c.Region != "eu-1" || c.Secure || c.Profile != "ci" {
		t.Fatalf("parsed %+v", c)
	}
}
