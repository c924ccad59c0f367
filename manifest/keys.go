package manifest

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
)

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

// keyVerifier checks one trusted key's signature over DSSE's
// pre-authentication encoding with the standard library: ed25519 over the
// message itself, ECDSA P-256 over its SHA-256 with an ASN.1 signature.
// These are the constructions sigstore's signers (key files and KMS keys)
// produce; package signing's tests hold the two sides together.
type keyVerifier struct{ key PublicKey }

func newKeyVerifier(k PublicKey) (keyVerifier, error) {
	switch pk := k.Key.(type) {
	case ed25519.PublicKey:
		if len(pk) == ed25519.PublicKeySize {
			return keyVerifier{k}, nil
		}
	case *ecdsa.PublicKey:
		if pk != nil && pk.Curve == elliptic.P256() {
			return keyVerifier{k}, nil
		}
	}
	return keyVerifier{}, fmt.Errorf("%w: trusted key %s: %T is not an ed25519 or ECDSA P-256 key", ErrInvalidKey, k.Name, k.Key)
}

func (v keyVerifier) KeyID() (string, error)   { return v.key.Name, nil }
func (v keyVerifier) Public() crypto.PublicKey { return v.key.Key }

func (v keyVerifier) Verify(_ context.Context, msg, sig []byte) error {
	ok := false
	switch pk := v.key.Key.(type) {
	case ed25519.PublicKey:
		ok = ed25519.Verify(pk, msg, sig)
	case *ecdsa.PublicKey:
		digest := sha256.Sum256(msg)
		ok = ecdsa.VerifyASN1(pk, digest[:], sig)
	}
	if !ok {
		return errBadSignature
	}
	return nil
}

var errBadSignature = errors.New("signature does not match")
