package cache_test

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nix-ota/nix-ota/cache"
	"github.com/nix-ota/nix-ota/internal/testenv"
)

// TestDumpMatchesNixStore: the in-process NAR of a tree with every kind of
// node (nested and empty directories, names that sort differently by
// case and by byte, empty, executable, padded and unpadded files, one
// larger than the read buffer, relative, absolute and dangling symlinks)
// is byte for byte what nix-store --dump writes, and Nix's hash of it.
func TestDumpMatchesNixStore(t *testing.T) {
	testenv.RequireNix(t)
	src := filepath.Join(t.TempDir(), "tree")
	files := map[string]string{
		"a":               "x",
		"B":               "eight b.",
		"a.b":             "",
		"a-b/c/d":         strings.Repeat("nested ", 3),
		"bin/run":         "#!/bin/sh\necho hi\n",
		"big":             string(randomBytes(300 << 10)),
		"\u00e9t\u00e9":   "unicode",
		"zz/empty-dir/.k": "",
	}
	for name, body := range files {
		p := filepath.Join(src, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	must(t, os.Chmod(filepath.Join(src, "bin/run"), 0o755))
	must(t, os.Remove(filepath.Join(src, "zz/empty-dir/.k")))
	must(t, os.Symlink("../a", filepath.Join(src, "bin/rel")))
	must(t, os.Symlink("/nix/store/does-not-exist", filepath.Join(src, "dangling")))
	sp := strings.TrimSpace(testenv.Cmd(t, "nix-store", "--add", src))
	var mine, theirs bytes.Buffer
	n := cache.LocalNix{}
	must(t, n.Dump(context.Background(), sp, &mine))
	must(t, n.DumpNixStore(context.Background(), sp, &theirs))
	if !bytes.Equal(mine.Bytes(), theirs.Bytes()) {
		t.Fatalf("in-process NAR (%d bytes) differs from nix-store --dump (%d bytes)", mine.Len(), theirs.Len())
	}
	infos, err := n.Closure(context.Background(), []string{sp})
	if err != nil || len(infos) != 1 || infos[0].NarSize != uint64(mine.Len()) {
		t.Fatalf("nix path-info: %+v %v", infos, err)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// twoDumps is a Nix whose own Dump gets a path wrong and whose
// DumpNixStore gets it right, as LocalNix would if its serialiser ever
// disagreed with Nix's.
type twoDumps struct{ *fakeNix }

func (n twoDumps) DumpNixStore(ctx context.Context, p string, w io.Writer) error {
	_, err := w.Write(n.nars[p])
	return err
}

// TestPushRedumpsOnMismatch: a NAR that Nix's Dump got wrong is dumped
// again by nix-store, and the push goes on with the right one.
func TestPushRedumpsOnMismatch(t *testing.T) {
	n := &fakeNix{dump: func(_ string, nar []byte, w io.Writer) error {
		_, err := w.Write(append(bytes.Clone(nar), 0))
		return err
	}}
	sp := n.add("p", randomBytes(10<<10))
	s, _ := fileStore(t)
	res, err := (&cache.Pusher{Store: s, Key: newKey(t), Nix: twoDumps{n}}).Push(context.Background(), nil)
	if err != nil || res.Uploaded != 1 {
		t.Fatalf("push: %+v %v", res, err)
	}
	ni, err := cache.ReadNarinfo(context.Background(), s, sp)
	if err != nil || ni.NarSize != 10<<10 {
		t.Fatalf("narinfo: %v %v", ni, err)
	}
}
