package cli

import (
	"context"
	"crypto/sha256"
	"slices"
	"testing"

	"github.com/nix-community/go-nix/pkg/narinfo"
	"github.com/nix-community/go-nix/pkg/narinfo/signature"
	"github.com/nix-community/go-nix/pkg/nixbase32"
	"github.com/nix-community/go-nix/pkg/nixhash"

	"github.com/nix-ota/nix-ota/bucket"
	"github.com/nix-ota/nix-ota/cache"
)

func basePath(name string) string {
	d := sha256.Sum256([]byte(name))
	return "/nix/store/" + nixbase32.EncodeToString(d[:20]) + "-" + name
}

// putNarinfo writes a narinfo for p naming refs, signed with k.
func putNarinfo(t *testing.T, s bucket.Store, k signature.SecretKey, p string, refs ...string) {
	ni := &narinfo.NarInfo{StorePath: p, URL: "nar/x.nar.zst", Compression: "zstd", NarSize: 1 << 20,
		NarHash: nixhash.MustNewHashWithEncoding(nixhash.SHA256, make([]byte, 32), nixhash.NixBase32, true)}
	for _, r := range refs {
		ni.References = append(ni.References, r[len("/nix/store/"):])
	}
	sig, err := k.Sign(nil, ni.Fingerprint())
	if err != nil {
		t.Fatal(err)
	}
	ni.Signatures = append(ni.Signatures, sig)
	key, _ := cache.NarinfoKey(p)
	if _, err := bucket.PutBytes(context.Background(), s, key, []byte(ni.String()), bucket.PutOptions{}); err != nil {
		t.Fatal(err)
	}
}

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
	sys, lib, app, junk, foreign, hidden := basePath("nixos-system-a"), basePath("glibc-2.40"), basePath("app-1.0"), basePath("junk-1"), basePath("foreign-1"), basePath("hidden-1")
	putNarinfo(t, s, k, sys, lib, app, junk, foreign)
	putNarinfo(t, s, k, lib)
	putNarinfo(t, s, k, app, lib)
	putNarinfo(t, s, other, foreign, hidden)
	putNarinfo(t, s, k, hidden)
	jk, _ := cache.NarinfoKey(junk)
	bucket.PutBytes(context.Background(), s, jk, []byte("StorePath: nonsense\n"), bucket.PutOptions{})
	got, err := walkNarinfos(context.Background(), s, k.ToPublicKey(), []string{sys, basePath("never-pushed")})
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
