package channel_test

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/nix-ota/nix-ota/bucket"
	"github.com/nix-ota/nix-ota/bucket/s3store"
	"github.com/nix-ota/nix-ota/channel"
	"github.com/nix-ota/nix-ota/internal/testenv"
	"github.com/nix-ota/nix-ota/manifest"
	"github.com/nix-ota/nix-ota/manifest/signing"
)

const sp = "/nix/store/0c5lq2n9xqbq6yv5q9r1lxg7b8c7wjsz-nixos-system-a"

func TestMain(m *testing.M) { testenv.Main(m) }

func stores(t *testing.T) map[string]bucket.Store {
	f, err := bucket.Open("file://"+filepath.Join(t.TempDir(), "b"), bucket.Options{Create: true})
	if err != nil {
		t.Fatal(err)
	}
	m := testenv.SharedMinIO(t)
	_, url := m.NewBucket(t)
	s3, err := s3store.Open(url, bucket.Options{}, m.Creds())
	if err != nil {
		t.Fatal(err)
	}
	return map[string]bucket.Store{"file": f, "minio": s3}
}

// signed is revision rev of ch signed by s, as bytes.
func signed(t testing.TB, s signing.Key, ch string, rev uint64) []byte {
	t.Helper()
	b, err := signing.Sign(context.Background(), testenv.Payload(ch, rev, sp), s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// publish publishes the next revision of "prod" signed by s, trusting s.
func publish(st bucket.Store, s signing.Key) (channel.Result, error) {
	return testenv.PublishSigned(context.Background(), st, nil, testenv.Payload("prod", 0, sp), s)
}

// TestInterruptedPublish: a publisher that died between the history write
// and the channel write leaves the channel as it was; verify flags the
// gap; the next publish moves past it.
func TestInterruptedPublish(t *testing.T) {
	ctx := context.Background()
	for name, st := range stores(t) {
		t.Run(name, func(t *testing.T) {
			s, pub := testenv.NewSigner(t, "k")
			trust := manifest.Trust{Keys: []manifest.PublicKey{pub}}
			if _, err := publish(st, s); err != nil {
				t.Fatal(err)
			}
			// Revision 2 reaches history, the pointer never moves.
			body := signed(t, s, "prod", 2)
			if _, err := bucket.PutBytes(ctx, st, bucket.RevisionKey("prod", 2), body, bucket.PutOptions{CreateOnly: true}); err != nil {
				t.Fatal(err)
			}
			if _, err := channel.Check(ctx, st, "prod", trust, time.Now()); !errors.Is(err, manifest.ErrRollback) {
				t.Fatalf("check with a pointer behind history: %v", err)
			}
			res, err := publish(st, s)
			if err != nil || res.Revision != 3 {
				t.Fatalf("publish after interruption: %+v %v", res, err)
			}
			v, err := channel.Check(ctx, st, "prod", trust, time.Now())
			if err != nil || v.Payload.Revision != 3 {
				t.Fatalf("check: %v", err)
			}
			revs, _ := channel.Revisions(ctx, st, "prod")
			if len(revs) != 3 || revs[0] != 1 || revs[2] != 3 {
				t.Fatalf("revisions %v", revs)
			}
		})
	}
}

// TestForgedHistoryIgnored: junk or foreign-signed history entries cannot
// make Check reject a genuine channel (they do not define "current").
func TestForgedHistoryIgnored(t *testing.T) {
	ctx := context.Background()
	st := stores(t)["file"]
	s, pub := testenv.NewSigner(t, "k")
	intruder, _ := testenv.NewSigner(t, "intruder")
	publish(st, s)
	bucket.PutBytes(ctx, st, bucket.RevisionKey("prod", 7), []byte("junk"), bucket.PutOptions{})
	forged := signed(t, intruder, "prod", 9)
	bucket.PutBytes(ctx, st, bucket.RevisionKey("prod", 9), forged, bucket.PutOptions{})
	if _, err := channel.Check(ctx, st, "prod", manifest.Trust{Keys: []manifest.PublicKey{pub}}, time.Now()); err != nil {
		t.Fatalf("genuine channel rejected because of forged history: %v", err)
	}
}

// TestConcurrentLibraryPublish races publishers in one process on both
// backends: every revision exactly once, pointer at the highest, some
// publishers told they were superseded rather than failing.
func TestConcurrentLibraryPublish(t *testing.T) {
	ctx := context.Background()
	for name, st := range stores(t) {
		t.Run(name, func(t *testing.T) {
			s, pub := testenv.NewSigner(t, "k")
			trust := manifest.Trust{Keys: []manifest.PublicKey{pub}}
			const n = 12
			var wg sync.WaitGroup
			revs := make(chan uint64, n)
			for range n {
				wg.Add(1)
				go func() {
					defer wg.Done()
					res, err := publish(st, s)
					if err != nil {
						t.Error(err)
						return
					}
					revs <- res.Revision
				}()
			}
			wg.Wait()
			close(revs)
			seen := map[uint64]bool{}
			for r := range revs {
				if seen[r] {
					t.Fatalf("revision %d claimed twice", r)
				}
				seen[r] = true
			}
			for r := uint64(1); r <= n; r++ {
				if !seen[r] {
					t.Fatalf("revision %d missing: %v", r, seen)
				}
			}
			v, err := channel.Check(ctx, st, "prod", trust, time.Now())
			if err != nil || v.Payload.Revision != n {
				t.Fatalf("pointer at %v, want %d (%v)", v, n, err)
			}
		})
	}
}

func TestBadNames(t *testing.T) {
	ctx := context.Background()
	st := stores(t)["file"]
	for _, n := range []string{"", "../x", "a/b", ".hidden"} {
		if _, err := channel.Load(ctx, st, n, manifest.Trust{}); !errors.Is(err, manifest.ErrInvalidName) {
			t.Errorf("load %q: %v", n, err)
		}
		if _, err := channel.Revisions(ctx, st, n); !errors.Is(err, manifest.ErrInvalidName) {
			t.Errorf("revisions %q: %v", n, err)
		}
	}
}
