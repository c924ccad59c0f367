package cli

import (
	"context"
	"crypto"
	"fmt"

	"github.com/sigstore/sigstore/pkg/signature/kms"
	// KMS providers, registered with sigstore's KMS registry. Only the CLI
	// links them; the agent never signs anything.
	_ "github.com/sigstore/sigstore/pkg/signature/kms/aws"
	_ "github.com/sigstore/sigstore/pkg/signature/kms/gcp"
	_ "github.com/sigstore/sigstore/pkg/signature/kms/hashivault"

	"github.com/nix-ota/nix-ota/manifest"
	"github.com/nix-ota/nix-ota/manifest/signing"
)

// loadKMS returns a signer for a KMS key URI understood by sigstore's KMS
// registry (awskms://, gcpkms://, hashivault://, and plugins), so CI can
// sign without a key file. Its keyid is name.
func loadKMS(ctx context.Context, name, uri string) (signing.Key, error) {
	if name == "" {
		return signing.Key{}, usagef("KMS key %s needs a name: --key NAME=%s (or --key-name NAME)", uri, uri)
	}
	if err := manifest.ValidateName("key", name); err != nil {
		return signing.Key{}, usageError{err}
	}
	sv, err := kms.Get(ctx, uri, crypto.SHA256)
	if err != nil {
		return signing.Key{}, fmt.Errorf("KMS key %s: %w", uri, err)
	}
	return signing.Key{Name: name, Signer: sv}, nil
}
