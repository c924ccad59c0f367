// Package signing makes manifests: it turns a v1 payload into a DSSE
// envelope signed with sigstore's signers (a key file from `nix-ota keygen`,
// or a KMS key the CLI loads through sigstore's KMS registry).
//
// Only publisher tools link this package. Devices verify with package
// manifest alone, which checks the same DSSE pre-authentication encoding
// with go-securesystemslib and the standard library's ed25519 and ECDSA
// checks; keeping sigstore (and the protobuf and container-registry code it
// brings) out of the agent halves the CPU a timer-driven poll costs. The
// tests in this package are the bridge: everything signed here must verify
// there, and sigstore's own verifiers must agree with manifest's on every
// envelope.
package signing

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"

	ssldsse "github.com/secure-systems-lab/go-securesystemslib/dsse"
	"github.com/sigstore/sigstore/pkg/cryptoutils"
	"github.com/sigstore/sigstore/pkg/signature"
	sigdsse "github.com/sigstore/sigstore/pkg/signature/dsse"

	"github.com/nix-ota/nix-ota/manifest"
)

// keyNameHeader carries the key's name inside the private key PEM so that a
// signer knows which keyid to write without a separate flag.
const keyNameHeader = "Nix-Ota-Key-Name"

// Key is a named signing key. The name is the DSSE keyid devices match
// against their trusted keys.
type Key struct {
	Name   string
	Signer signature.Signer
}

// Public returns the key's public half in the form devices trust.
func (k Key) Public() (manifest.PublicKey, error) {
	pub, err := k.Signer.PublicKey()
	if err != nil {
		return manifest.PublicKey{}, err
	}
	return manifest.PublicKey{Name: k.Name, Key: pub}, nil
}

// Sign validates p, encodes it and signs the bytes with every key,
// returning the DSSE envelope as JSON.
func Sign(ctx context.Context, p *manifest.Payload, keys ...Key) ([]byte, error) {
	if len(keys) == 0 {
		return nil, errors.New("sign: no signing key")
	}
	if err := p.Validate(); err != nil {
		return nil, err
	}
	body, err := json.Marshal(p)
	if err != nil {
		return nil, err
	}
	return SignRaw(ctx, body, keys...)
}

// SignRaw signs payload bytes as they are, without validating them. Sign
// is what publishers use; SignRaw exists for tests that need a validly
// signed bad payload (a publisher gone wrong, or a stolen key).
func SignRaw(ctx context.Context, payload []byte, keys ...Key) ([]byte, error) {
	return signEnvelope(ctx, manifest.PayloadType, payload, keys)
}

// SignAttestation validates a and signs it as an attestation envelope.
func SignAttestation(ctx context.Context, a *manifest.Attestation, keys ...Key) ([]byte, error) {
	return signDocument(ctx, manifest.AttestationType, a, keys)
}

// SignRegistry validates r and signs it as the device registry.
func SignRegistry(ctx context.Context, r *manifest.Registry, keys ...Key) ([]byte, error) {
	return signDocument(ctx, manifest.RegistryType, r, keys)
}

// signDocument validates v, then signs its JSON as payloadType.
func signDocument(ctx context.Context, payloadType string, v interface{ Validate() error }, keys []Key) ([]byte, error) {
	if len(keys) == 0 {
		return nil, errors.New("sign: no signing key")
	}
	if err := v.Validate(); err != nil {
		return nil, err
	}
	body, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return signEnvelope(ctx, payloadType, body, keys)
}

func signEnvelope(ctx context.Context, payloadType string, payload []byte, keys []Key) ([]byte, error) {
	adapters := make([]ssldsse.Signer, 0, len(keys))
	for _, k := range keys {
		if err := manifest.ValidateName("key", k.Name); err != nil {
			return nil, err
		}
		pub, err := k.Signer.PublicKey()
		if err != nil {
			return nil, fmt.Errorf("sign: key %s: %w", k.Name, err)
		}
		adapters = append(adapters, &sigdsse.SignerAdapter{SignatureSigner: k.Signer, Pub: pub, PubKeyID: k.Name})
	}
	es, err := ssldsse.NewEnvelopeSigner(adapters...)
	if err != nil {
		return nil, err
	}
	env, err := es.SignPayload(ctx, payloadType, payload)
	if err != nil {
		return nil, fmt.Errorf("sign: %w", err)
	}
	out, err := json.MarshalIndent(env, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(out, '\n'), nil
}

// Generate makes a new ed25519 key named name. When password is not nil
// the PEM is encrypted with sigstore's scheme (scrypt + secretbox).
func Generate(name string, password []byte) (pemBytes []byte, pub manifest.PublicKey, err error) {
	if err := manifest.ValidateName("key", name); err != nil {
		return nil, manifest.PublicKey{}, err
	}
	pk, sk, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, manifest.PublicKey{}, err
	}
	block := &pem.Block{Headers: map[string]string{keyNameHeader: name}}
	if password == nil {
		block.Type = string(cryptoutils.PrivateKeyPEMType)
		block.Bytes, err = cryptoutils.MarshalPrivateKeyToDER(sk)
	} else {
		block.Type = string(cryptoutils.EncryptedSigstorePrivateKeyPEMType)
		block.Bytes, err = cryptoutils.MarshalPrivateKeyToEncryptedDER(sk, cryptoutils.StaticPasswordFunc(password))
	}
	if err != nil {
		return nil, manifest.PublicKey{}, err
	}
	return pem.EncodeToMemory(block), manifest.PublicKey{Name: name, Key: pk}, nil
}

// IsEncrypted reports whether a private key PEM needs a password.
func IsEncrypted(pemBytes []byte) bool {
	b, _ := pem.Decode(pemBytes)
	return b != nil && strings.HasPrefix(b.Type, "ENCRYPTED")
}

// Load reads a private key PEM written by Generate (or any PKCS#8 ed25519
// key; then name must be given). A non-empty name overrides the name
// stored in the PEM.
func Load(pemBytes []byte, name string, password []byte) (Key, error) {
	block, _ := pem.Decode(pemBytes)
	if block == nil {
		return Key{}, fmt.Errorf("%w: not a PEM private key", manifest.ErrInvalidKey)
	}
	if name == "" {
		name = block.Headers[keyNameHeader]
	}
	if err := manifest.ValidateName("key", name); err != nil {
		return Key{}, fmt.Errorf("%w: key name (set one with --key-name): %v", manifest.ErrInvalidKey, err)
	}
	pf := cryptoutils.SkipPassword
	if password != nil {
		pf = cryptoutils.StaticPasswordFunc(password)
	} else if IsEncrypted(pemBytes) {
		return Key{}, fmt.Errorf("%w: key is encrypted and no password was given", manifest.ErrInvalidKey)
	}
	sk, err := cryptoutils.UnmarshalPEMToPrivateKey(pemBytes, pf)
	if err != nil {
		return Key{}, fmt.Errorf("%w: %v", manifest.ErrInvalidKey, err)
	}
	edk, ok := sk.(ed25519.PrivateKey)
	if !ok {
		return Key{}, fmt.Errorf("%w: %T is not an ed25519 key", manifest.ErrInvalidKey, sk)
	}
	s, err := signature.LoadED25519Signer(edk)
	if err != nil {
		return Key{}, fmt.Errorf("%w: %v", manifest.ErrInvalidKey, err)
	}
	return Key{Name: name, Signer: s}, nil
}
