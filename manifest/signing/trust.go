package signing

import (
	"fmt"

	"github.com/nix-ota/nix-ota/manifest"
)

// Trust is what a publisher holding keys verifies the bucket with before it
// signs anything derived from it: the keys' own public halves plus extra
// (keys an operator rotated away from), with every signing key required by
// default. Requiring all of them stops a single stolen key from getting a
// forged manifest re-signed by the full set.
func Trust(keys []Key, extra []manifest.PublicKey, threshold int) (manifest.Trust, error) {
	t := manifest.Trust{Threshold: threshold}
	for _, k := range keys {
		pub, err := k.Public()
		if err != nil {
			return manifest.Trust{}, fmt.Errorf("signing key %s: %w", k.Name, err)
		}
		t.Keys = append(t.Keys, pub)
	}
	for _, e := range extra {
		dup := false
		for _, k := range t.Keys {
			if k.Name == e.Name {
				dup = true
				if k.String() != e.String() {
					return manifest.Trust{}, fmt.Errorf("%w: --public-key %s differs from the signing key of that name; give each key a distinct name", manifest.ErrInvalidKey, e.Name)
				}
			}
		}
		if !dup {
			t.Keys = append(t.Keys, e)
		}
	}
	if t.Threshold <= 0 {
		t.Threshold = len(keys)
	}
	if err := t.Check(); err != nil {
		return manifest.Trust{}, err
	}
	return t, nil
}
