package bucket_test

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nix-ota/nix-ota/bucket"
)

// A file:// bucket may be a USB stick or a directory other users can write,
// and the agent that reads and writes it runs as root. These tests plant
// symlinks, FIFOs and sockets in a real directory and check that nothing is
// read or written outside it and that nothing blocks. Each runs with the
// kernel's openat2 and with the walk kernels before 5.6 get.

// resolvers runs f once per way of resolving paths.
func resolvers(t *testing.T, f func(t *testing.T)) {
	for _, r := range []struct {
		name    string
		openat2 bool
	}{{"openat2", true}, {"walk", false}} {
		t.Run(r.name, func(t *testing.T) {
			t.Cleanup(bucket.UseOpenat2(r.openat2))
			f(t)
		})
	}
}

// fileBucket makes an empty file:// bucket and, beside it, a directory
// outside it holding secret.txt; it returns the store and both paths.
func fileBucket(t *testing.T) (s bucket.Store, root, outside string) {
	t.Helper()
	dir := t.TempDir()
	root, outside = filepath.Join(dir, "bucket"), filepath.Join(dir, "outside")
	s, err := bucket.Open("file://"+root, bucket.Options{Create: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(outside, 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(outside, "secret.txt"), "secret")
	return s, root, outside
}

func writeFile(t *testing.T, p, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

func symlink(t *testing.T, target, link string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(link), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
}

// wantErr fails unless err is target and its message has every part.
func wantErr(t *testing.T, what string, err, target error, parts ...string) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("%s: %v, want %v", what, err, target)
	}
	for _, p := range parts {
		if !strings.Contains(err.Error(), p) {
			t.Fatalf("%s: %q does not say %q", what, err, p)
		}
	}
}

// assertOutside fails unless the directory outside holds exactly
// secret.txt with its original content.
func assertOutside(t *testing.T, outside string) {
	t.Helper()
	ents, err := os.ReadDir(outside)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 1 || ents[0].Name() != "secret.txt" {
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		t.Fatalf("outside the bucket now holds %v", names)
	}
	if b, _ := os.ReadFile(filepath.Join(outside, "secret.txt")); string(b) != "secret" {
		t.Fatalf("outside the bucket, secret.txt now holds %q", b)
	}
}

func TestFileSymlinkedObject(t *testing.T) {
	resolvers(t, func(t *testing.T) {
		s, root, outside := fileBucket(t)
		symlink(t, "/etc/passwd", filepath.Join(root, "channels/prod.json"))
		symlink(t, "../../outside/secret.txt", filepath.Join(root, "channels/relative.json"))
		for _, key := range []string{"channels/prod.json", "channels/relative.json"} {
			_, err := s.Get(ctx, key, bucket.GetOptions{})
			wantErr(t, "get "+key, err, bucket.ErrSymlink, "get "+key, key+" is a symlink")
			_, err = s.Stat(ctx, key)
			wantErr(t, "stat "+key, err, bucket.ErrSymlink, key+" is a symlink")
		}
		// Put-if-match reads the current object first: it refuses too.
		_, err := bucket.PutBytes(ctx, s, "channels/relative.json", []byte("x"), bucket.PutOptions{IfMatch: "e"})
		wantErr(t, "put-if-match over a symlink", err, bucket.ErrSymlink, "channels/relative.json is a symlink")
		_, err = bucket.PutBytes(ctx, s, "channels/relative.json", []byte("x"), bucket.PutOptions{CreateOnly: true})
		wantErr(t, "create-only put over a symlink", err, bucket.ErrExists)
		// A plain put replaces the link itself; it never writes through it.
		put(t, s, "channels/relative.json", "mine", bucket.PutOptions{})
		if o := get(t, s, "channels/relative.json"); string(o.Data) != "mine" {
			t.Fatalf("after put: %q", o.Data)
		}
		if err := s.Delete(ctx, "channels/prod.json"); err != nil {
			t.Fatalf("delete a symlink at a key: %v", err)
		}
		if _, err := os.Stat("/etc/passwd"); err != nil {
			t.Fatalf("delete of the link removed its target: %v", err)
		}
		assertOutside(t, outside)
	})
}

func TestFileSymlinkedDirectory(t *testing.T) {
	resolvers(t, func(t *testing.T) {
		s, root, outside := fileBucket(t)
		symlink(t, outside, filepath.Join(root, "devices"))
		symlink(t, outside, filepath.Join(root, "channels/prod"))
		symlink(t, filepath.Join(outside, "made"), filepath.Join(root, "cache")) // dangling
		writeFile(t, filepath.Join(root, "channels/prod.json"), "ok")

		// A dangling link must not make its target directory either.
		_, err := bucket.PutBytes(ctx, s, "cache/nar/x.nar", []byte("nar"), bucket.PutOptions{})
		wantErr(t, "put through a dangling link", err, bucket.ErrSymlink, "cache is a symlink")

		for _, o := range []bucket.PutOptions{{}, {CreateOnly: true}, {IfMatch: "e"}} {
			_, err := bucket.PutBytes(ctx, s, "devices/x.json", []byte("status"), o)
			wantErr(t, "put devices/x.json", err, bucket.ErrSymlink, "put devices/x.json", "devices is a symlink")
			_, err = bucket.PutBytes(ctx, s, "devices/d1/status.json", []byte("status"), o)
			wantErr(t, "put devices/d1/status.json", err, bucket.ErrSymlink, "devices is a symlink")
		}
		_, err = s.Get(ctx, "devices/secret.txt", bucket.GetOptions{})
		wantErr(t, "get through a symlinked directory", err, bucket.ErrSymlink, "devices is a symlink")
		err = s.Delete(ctx, "devices/secret.txt")
		wantErr(t, "delete through a symlinked directory", err, bucket.ErrSymlink, "devices is a symlink")
		err = s.List(ctx, "devices/", func(bucket.Info) error { return nil })
		wantErr(t, "list a symlinked directory", err, bucket.ErrSymlink, "devices is a symlink")

		// Listing the whole bucket skips both links and what they point at.
		var keys []string
		if err := s.List(ctx, "", func(i bucket.Info) error { keys = append(keys, i.Key); return nil }); err != nil {
			t.Fatal(err)
		}
		if strings.Join(keys, " ") != "channels/prod.json" {
			t.Fatalf("list: %v, want only channels/prod.json", keys)
		}
		assertOutside(t, outside)
	})
}

// TestFileSymlinkedLock: put-if-match creates no file through a symlink
// planted at the lock file's name.
func TestFileSymlinkedLock(t *testing.T) {
	resolvers(t, func(t *testing.T) {
		s, root, outside := fileBucket(t)
		etag := put(t, s, "channels/prod.json", "v1", bucket.PutOptions{})
		symlink(t, filepath.Join(outside, "lock"), filepath.Join(root, ".nix-ota-lock"))
		_, err := bucket.PutBytes(ctx, s, "channels/prod.json", []byte("v2"), bucket.PutOptions{IfMatch: etag})
		wantErr(t, "put-if-match with a symlinked lock", err, bucket.ErrSymlink, ".nix-ota-lock is a symlink")
		assertOutside(t, outside)
	})
}

// TestFileSpecialFiles: a FIFO, a socket or a directory at a key is refused
// at once, with no read: a FIFO would otherwise block the reader forever.
func TestFileSpecialFiles(t *testing.T) {
	resolvers(t, func(t *testing.T) {
		s, root, _ := fileBucket(t)
		if err := os.MkdirAll(filepath.Join(root, "channels"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := syscall.Mkfifo(filepath.Join(root, "channels/prod.json"), 0o644); err != nil {
			t.Fatal(err)
		}
		l, err := net.Listen("unix", filepath.Join(root, "channels/sock.json"))
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		if err := os.MkdirAll(filepath.Join(root, "channels/dir.json"), 0o755); err != nil {
			t.Fatal(err)
		}
		c, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		for key, what := range map[string]string{"channels/prod.json": "a FIFO", "channels/sock.json": "a socket", "channels/dir.json": "a directory"} {
			_, err := s.Get(c, key, bucket.GetOptions{})
			wantErr(t, "get "+key, err, bucket.ErrNotRegular, "get "+key, key+" is "+what)
			_, err = s.Stat(c, key)
			wantErr(t, "stat "+key, err, bucket.ErrNotRegular, key+" is "+what)
			_, err = bucket.PutBytes(c, s, key, []byte("x"), bucket.PutOptions{IfMatch: "e"})
			wantErr(t, "put-if-match "+key, err, bucket.ErrNotRegular, key+" is "+what)
		}
		if c.Err() != nil {
			t.Fatalf("refusals outlived the context: %v", c.Err())
		}
		var keys []string
		if err := s.List(ctx, "", func(i bucket.Info) error { keys = append(keys, i.Key); return nil }); err != nil || len(keys) != 0 {
			t.Fatalf("list: %v %v, want no objects", keys, err)
		}
	})
}

// TestFileSymlinkedRoot: the bucket root itself may be a symlink the
// operator chose; it is resolved once at open.
func TestFileSymlinkedRoot(t *testing.T) {
	dir := t.TempDir()
	real, link := filepath.Join(dir, "real"), filepath.Join(dir, "link")
	if err := os.Mkdir(real, 0o755); err != nil {
		t.Fatal(err)
	}
	symlink(t, real, link)
	s, err := bucket.Open("file://"+link, bucket.Options{})
	if err != nil {
		t.Fatal(err)
	}
	put(t, s, "channels/prod.json", "m", bucket.PutOptions{})
	if b, err := os.ReadFile(filepath.Join(real, "channels/prod.json")); err != nil || string(b) != "m" {
		t.Fatalf("through the root link: %q %v", b, err)
	}
	if s.String() != "file://"+link {
		t.Fatalf("String() = %s, want the configured path", s)
	}
}
