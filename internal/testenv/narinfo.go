package testenv

import (
	"context"
	"crypto/sha256"
	"path"
	"testing"

	"github.com/nix-community/go-nix/pkg/narinfo"
	"github.com/nix-community/go-nix/pkg/narinfo/signature"
	"github.com/nix-community/go-nix/pkg/nixbase32"
	"github.com/nix-community/go-nix/pkg/nixhash"

	"github.com/nix-ota/nix-ota/bucket"
	"github.com/nix-ota/nix-ota/cache"
)

// StorePath is a made-up but well-formed store path for name.
func StorePath(name string) string {
	d := sha256.Sum256([]byte(name))
	return "/nix/store/" + nixbase32.EncodeToString(d[:20]) + "-" + name
}

// PutNarinfo writes a narinfo for p into s's cache, naming refs, signed
// with signer (nil: unsigned), and returns it. Its NAR is not written.
func PutNarinfo(t testing.TB, s bucket.Store, signer *signature.SecretKey, p string, narSize uint64, refs ...string) *narinfo.NarInfo {
	t.Helper()
	ni := &narinfo.NarInfo{StorePath: p, URL: "nar/x.nar.zst", Compression: "zstd", NarSize: narSize,
		NarHash: nixhash.MustNewHashWithEncoding(nixhash.SHA256, make([]byte, 32), nixhash.NixBase32, true)}
	for _, r := range refs {
		ni.References = append(ni.References, path.Base(r))
	}
	if signer != nil {
		sig, err := signer.Sign(nil, ni.Fingerprint())
		if err != nil {
			t.Fatal(err)
		}
		ni.Signatures = append(ni.Signatures, sig)
	}
	key, err := cache.NarinfoKey(p)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bucket.PutBytes(context.Background(), s, key, []byte(ni.String()), bucket.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	return ni
}
