package manifest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"strings"

	"github.com/sigstore/sigstore/pkg/cryptoutils"
	"github.com/sigstore/sigstore/pkg/signature"
)

// keyNameHeader carries the key's name inside the private key PEM so that a
// signer knows which keyid to write without a separate flag.
const keyNameHeader = "Nix-Ota-Key-Name"

// PublicKey is a trusted key as it appears in device configuration:
//
//	NAME:BASE64             ed25519, Nix's style: the raw 32-byte key
//	NAME:ed25519:BASE64     the same, algorithm stated
//	NAME:ecdsa-p256:BASE64  ECDSA P-256 (what cloud KMS keys usually are), PKIX DER
//
// NAME is the keyid written into signatures.
type PublicKey struct {
	Name string
	Key  crypto.PublicKey
}

// String renders the key in the form ParsePublicKey reads.
func (k PublicKey) String() string {
	switch pk := k.Key.(type) {
	case ed25519.PublicKey:
		return k.Name + ":" + base64.StdEncoding.EncodeToString(pk)
	case *ecdsa.PublicKey:
		der, err := x509.MarshalPKIXPublicKey(pk)
		if err == nil {
			return k.Name + ":ecdsa-p256:" + base64.StdEncoding.EncodeToString(der)
		}
	}
	return k.Name + ":?"
}

// ParsePublicKey parses a key in one of the forms PublicKey documents.
func ParsePublicKey(s string) (PublicKey, error) {
	s = strings.TrimSpace(s)
	name, rest, ok := strings.Cut(s, ":")
	if !ok {
		return PublicKey{}, fmt.Errorf("%w: public key %q: want NAME:BASE64 or NAME:ecdsa-p256:BASE64", ErrInvalidKey, s)
	}
	if err := ValidateName("key", name); err != nil {
		return PublicKey{}, fmt.Errorf("%w: public key: %v", ErrInvalidKey, err)
	}
	alg, b64, hasAlg := strings.Cut(rest, ":")
	if !hasAlg {
		alg, b64 = "ed25519", rest
	}
	raw, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return PublicKey{}, fmt.Errorf("%w: public key %q: bad base64: %v", ErrInvalidKey, name, err)
	}
	switch alg {
	case "ed25519":
		if len(raw) != ed25519.PublicKeySize {
			return PublicKey{}, fmt.Errorf("%w: public key %q: %d bytes, an ed25519 key has %d", ErrInvalidKey, name, len(raw), ed25519.PublicKeySize)
		}
		return PublicKey{Name: name, Key: ed25519.PublicKey(raw)}, nil
	case "ecdsa-p256":
		pk, err := x509.ParsePKIXPublicKey(raw)
		if err != nil {
			return PublicKey{}, fmt.Errorf("%w: public key %q: %v", ErrInvalidKey, name, err)
		}
		ek, ok := pk.(*ecdsa.PublicKey)
		if !ok || ek.Curve != elliptic.P256() {
			return PublicKey{}, fmt.Errorf("%w: public key %q: not an ECDSA P-256 key", ErrInvalidKey, name)
		}
		return PublicKey{Name: name, Key: ek}, nil
	}
	return PublicKey{}, fmt.Errorf("%w: public key %q: unknown algorithm %q (want ed25519 or ecdsa-p256)", ErrInvalidKey, name, alg)
}

// Signer is a named signing key. The name is the DSSE keyid.
type Signer struct {
	Name   string
	Signer signature.Signer
}

// Public returns the signer's public key in NAME:BASE64 form.
func (s Signer) Public() (PublicKey, error) {
	pub, err := s.Signer.PublicKey()
	if err != nil {
		return PublicKey{}, err
	}
	return PublicKey{Name: s.Name, Key: pub}, nil
}

// GenerateKey makes a new ed25519 key named name. When password is not nil
// the PEM is encrypted with sigstore's scheme (scrypt + secretbox).
func GenerateKey(name string, password []byte) (pemBytes []byte, pub PublicKey, err error) {
	if err := ValidateName("key", name); err != nil {
		return nil, PublicKey{}, err
	}
	pk, sk, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, PublicKey{}, err
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
		return nil, PublicKey{}, err
	}
	return pem.EncodeToMemory(block), PublicKey{Name: name, Key: pk}, nil
}

// IsEncryptedKey reports whether a private key PEM needs a password.
func IsEncryptedKey(pemBytes []byte) bool {
	b, _ := pem.Decode(pemBytes)
	return b != nil && strings.HasPrefix(b.Type, "ENCRYPTED")
}

// LoadSigner reads a private key PEM written by GenerateKey (or any PKCS#8
// ed25519 key; then name must be given). A non-empty name overrides the
// name stored in the PEM.
func LoadSigner(pemBytes []byte, name string, password []byte) (Signer, error) {
	block, _ := pem.Decode(pemBytes)
	if block == nil {
		return Signer{}, fmt.Errorf("%w: not a PEM private key", ErrInvalidKey)
	}
	if name == "" {
		name = block.Headers[keyNameHeader]
	}
	if err := ValidateName("key", name); err != nil {
		return Signer{}, fmt.Errorf("%w: key name (set one with --key-name): %v", ErrInvalidKey, err)
	}
	pf := cryptoutils.SkipPassword
	if password != nil {
		pf = cryptoutils.StaticPasswordFunc(password)
	} else if IsEncryptedKey(pemBytes) {
		return Signer{}, fmt.Errorf("%w: key is encrypted and no password was given", ErrInvalidKey)
	}
	sk, err := cryptoutils.UnmarshalPEMToPrivateKey(pemBytes, pf)
	if err != nil {
		return Signer{}, fmt.Errorf("%w: %v", ErrInvalidKey, err)
	}
	edk, ok := sk.(ed25519.PrivateKey)
	if !ok {
		return Signer{}, fmt.Errorf("%w: %T is not an ed25519 key", ErrInvalidKey, sk)
	}
	s, err := signature.LoadED25519Signer(edk)
	if err != nil {
		return Signer{}, fmt.Errorf("%w: %v", ErrInvalidKey, err)
	}
	return Signer{Name: name, Signer: s}, nil
}
