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
)

// loadKMS returns a signer for a KMS key URI understood by sigstore's KMS
// registry (awskms://, gcpkms://, hashivault://, and plugins), so CI can
// sign without a key file. Its keyid is name.
func loadKMS(ctx context.Context, name, uri string) (manifest.Signer, error) {
	if name == "" {
		return manifest.Signer{}, usagef("KMS key %s needs a name: --key NAME=%s (or --key-name NAME)", uri, uri)
	}
	if err := manifest.ValidateName("key", name); err != nil {
		return manifest.Signer{}, usageError{err}
	}
	sv, err := kms.Get(ctx, uri, crypto.SHA256)
	if err != nil {
		return manifest.Signer{}, fmt.Errorf("KMS key %s: %w", uri, err)
	}
	return manifest.Signer{Name: name, Signer: sv}, nil
}
