package cli

import (
	"context"
	"slices"
	"testing"

	"github.com/nix-community/go-nix/pkg/narinfo/signature"

	"github.com/nix-ota/nix-ota/bucket"
	"github.com/nix-ota/nix-ota/cache"
	"github.com/nix-ota/nix-ota/internal/testenv"
)

// TestWalkNarinfos: delta bases are the closure through narinfos this
// cache key signed; a junk or foreign-signed narinfo (a bucket writer's)
// leaves its path and what it references out, and fails nothing.
func TestWalkNarinfos(t *testing.T) {
	s, err := bucket.Open("file://"+t.TempDir(), bucket.Options{})
	if err != nil {
		t.Fatal(err)
	}
	k, _, _ := signature.GenerateKeypair("cache-1", nil)
	other, _, _ := signature.GenerateKeypair("cache-2", nil)
	sys, lib, app, junk, foreign, hidden := testenv.StorePath("nixos-system-a"), testenv.StorePath("glibc-2.40"), testenv.StorePath("app-1.0"), testenv.StorePath("junk-1"), testenv.StorePath("foreign-1"), testenv.StorePath("hidden-1")
	testenv.PutNarinfo(t, s, &k, sys, 1<<20, lib, app, junk, foreign)
	testenv.PutNarinfo(t, s, &k, lib, 1<<20)
	testenv.PutNarinfo(t, s, &k, app, 1<<20, lib)
	testenv.PutNarinfo(t, s, &other, foreign, 1<<20, hidden)
	testenv.PutNarinfo(t, s, &k, hidden, 1<<20)
	jk, _ := cache.NarinfoKey(junk)
	bucket.PutBytes(context.Background(), s, jk, []byte("StorePath: nonsense\n"), bucket.PutOptions{})
	got, err := walkNarinfos(context.Background(), s, k.ToPublicKey(), []string{sys, testenv.StorePath("never-pushed")})
	if err != nil {
		t.Fatal(err)
	}
	var paths []string
	for _, c := range got {
		paths = append(paths, c.Path)
	}
	want := []string{sys, lib, app}
	slices.Sort(want)
	if !slices.Equal(paths, want) {
		t.Fatalf("bases %q, want %q", paths, want)
	}
}
