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
		if why := weakEd25519(raw); why != "" {
			return PublicKey{}, fmt.Errorf("%w: public key %q: %s", ErrInvalidKey, name, why)
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
		if len(pk) != ed25519.PublicKeySize {
			break
		}
		if why := weakEd25519(pk); why != "" {
			return keyVerifier{}, fmt.Errorf("%w: trusted key %s: %s", ErrInvalidKey, k.Name, why)
		}
		return keyVerifier{k}, nil
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

// smallOrderY lists the y-coordinates of the eight ed25519 points of order
// dividing 8 (the identity, one point of order 2, two of order 4, four of
// order 8), little-endian with the sign bit of x cleared, plus p and p+1,
// the non-canonical spellings of y = 0 and y = 1. It is libsodium's
// blocklist (ge25519_has_small_order in crypto_core/ed25519/ref10); the
// tests derive every entry again from the curve equation.
//
// A public key A of small order makes [k]A one of eight points whatever
// the message, so a "signature" R = [k]A', S = 0 verifies for one message
// in eight without any private key; for the identity it verifies always.
var smallOrderY = [7][32]byte{
	{0x00}, // y = 0: the two points of order 4
	{0x01}, // y = 1: the identity
	{0x26, 0xe8, 0x95, 0x8f, 0xc2, 0xb2, 0x27, 0xb0, 0x45, 0xc3, 0xf4, 0x89, 0xf2, 0xef, 0x98, 0xf0, 0xd5, 0xdf, 0xac, 0x05, 0xd3, 0xc6, 0x33, 0x39, 0xb1, 0x38, 0x02, 0x88, 0x6d, 0x53, 0xfc, 0x05}, // order 8
	{0xc7, 0x17, 0x6a, 0x70, 0x3d, 0x4d, 0xd8, 0x4f, 0xba, 0x3c, 0x0b, 0x76, 0x0d, 0x10, 0x67, 0x0f, 0x2a, 0x20, 0x53, 0xfa, 0x2c, 0x39, 0xcc, 0xc6, 0x4e, 0xc7, 0xfd, 0x77, 0x92, 0xac, 0x03, 0x7a}, // order 8
	{0xec, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f}, // y = p-1: order 2
	{0xed, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f}, // y = p, i.e. 0
	{0xee, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f}, // y = p+1, i.e. 1
}

// weakEd25519 says why a 32-byte ed25519 public key must not be trusted,
// or "" when it may be: a small-order point (it "verifies" forged
// signatures), or a non-canonical encoding (y >= 2^255-19; no key
// generator writes one, and canonical keys make "the same key under two
// names" a byte comparison).
func weakEd25519(pk []byte) string {
	var y [32]byte
	copy(y[:], pk)
	y[31] &= 0x7f
	for _, bad := range smallOrderY {
		if y == bad {
			return "a small-order ed25519 point, which accepts forged signatures; generate a real key with nix-ota keygen"
		}
	}
	// y >= p = 2^255-19: bytes 1..31 all 0xff (0x7f at the top) and byte 0 >= 0xed.
	high := y[31] == 0x7f && y[0] >= 0xed
	for i := 1; high && i < 31; i++ {
		high = y[i] == 0xff
	}
	if high {
		return "a non-canonical ed25519 encoding (y >= 2^255-19); re-export the key from its private half"
	}
	return ""
}
