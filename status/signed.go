package status

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	ssldsse "github.com/secure-systems-lab/go-securesystemslib/dsse"

	"github.com/nix-ota/nix-ota/manifest"
)

// PayloadType is the DSSE payload type of a signed check-in. Its own type
// keeps a device's signature from ever passing as a manifest, a registry
// or an attestation, and theirs from passing as a check-in.
const PayloadType = "application/vnd.nix-ota.status.v1+json"

// KeyPrefix starts a device key as a status and the registry write it.
const KeyPrefix = manifest.DeviceKeyPrefix

// Signed is a check-in whose signature matches the key it names. That
// proves only that the writer holds that key: whether the key belongs to
// the device is the device registry's say (readers, not this package).
type Signed struct {
	Status   *Status
	Key      ed25519.PublicKey // nil for an unsigned blob (an agent before signing)
	SignedAt time.Time         // the signed checkedAt; zero when unsigned
	Digest   string            // sha256 hex of the signed payload
}

// ErrBadSignature: a check-in whose signature does not hold.
var ErrBadSignature = errors.New("bad check-in signature")

// Sign writes st as a DSSE envelope signed by priv. The payload carries
// the device's public key and checkedAt, the time of signing: readers
// compare it with when the bucket stored the blob, and with the last
// status they accepted from the device, so an old status written again
// (a replay) is refused.
func Sign(st Status, priv ed25519.PrivateKey) ([]byte, error) {
	if st.CheckedAt.IsZero() {
		return nil, errors.New("sign status: checkedAt is not set")
	}
	st.DeviceKey = EncodeKey(priv.Public().(ed25519.PublicKey))
	// Without HTML escaping: "<" as \u003c would take 6 bytes, and a status
	// with every text field at its cap must stay under MaxSize.
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(st); err != nil {
		return nil, err
	}
	payload := bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
	sig := ed25519.Sign(priv, ssldsse.PAE(PayloadType, payload))
	env := ssldsse.Envelope{PayloadType: PayloadType, Payload: base64.StdEncoding.EncodeToString(payload),
		Signatures: []ssldsse.Signature{{KeyID: Fingerprint(priv.Public().(ed25519.PublicKey)), Sig: base64.StdEncoding.EncodeToString(sig)}}}
	out, err := json.Marshal(env)
	if err != nil {
		return nil, err
	}
	return append(out, '\n'), nil
}

// Open reads an untrusted check-in blob written under deviceID's key: a
// signed envelope (its signature checked against the key its payload
// names), or a plain status of an agent that does not sign (Key nil).
// Every string is cleaned as Parse does.
func Open(deviceID string, b []byte) (*Signed, error) {
	if len(b) > MaxSize {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrInvalid, len(b), MaxSize)
	}
	var env ssldsse.Envelope
	if err := json.Unmarshal(b, &env); err != nil || env.PayloadType == "" {
		st, err := Parse(deviceID, b)
		if err != nil {
			return nil, err
		}
		return &Signed{Status: st}, nil
	}
	if env.PayloadType != PayloadType {
		return nil, fmt.Errorf("%w: payload type %q, want %q", ErrInvalid, Clean(env.PayloadType, 80), PayloadType)
	}
	payload, err := strictB64(env.Payload)
	if err != nil {
		return nil, fmt.Errorf("%w: payload: %v", ErrInvalid, err)
	}
	if len(env.Signatures) != 1 {
		return nil, fmt.Errorf("%w: %d signatures, a check-in has exactly one", ErrBadSignature, len(env.Signatures))
	}
	st, err := Parse(deviceID, payload)
	if err != nil {
		return nil, err
	}
	key, err := ParseKey(st.DeviceKey)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadSignature, err)
	}
	sig, err := strictB64(env.Signatures[0].Sig)
	if err != nil || !ed25519.Verify(key, ssldsse.PAE(PayloadType, payload), sig) {
		return nil, fmt.Errorf("%w: the signature does not match the payload and the key it names (%s)", ErrBadSignature, Fingerprint(key))
	}
	if st.CheckedAt.IsZero() {
		return nil, fmt.Errorf("%w: signed without checkedAt", ErrInvalid)
	}
	sum := sha256.Sum256(payload)
	return &Signed{Status: st, Key: key, SignedAt: st.CheckedAt, Digest: hex.EncodeToString(sum[:])}, nil
}

// strictB64 is the one base64 spelling Sign writes: standard, padded.
func strictB64(s string) ([]byte, error) {
	if strings.ContainsAny(s, "\r\n") {
		return nil, errors.New("line breaks inside base64")
	}
	return base64.StdEncoding.Strict().DecodeString(s)
}

// EncodeKey writes a device public key as statuses and the registry
// carry it (manifest.EncodeDeviceKey).
func EncodeKey(k ed25519.PublicKey) string { return manifest.EncodeDeviceKey(k) }

// ParseKey reads EncodeKey's form (manifest.ParseDeviceKey).
func ParseKey(s string) (ed25519.PublicKey, error) { return manifest.ParseDeviceKey(s) }

// Fingerprint is a short, stable name for a device key, for people to
// compare: "SHA256:" and the unpadded base64 of its hash, as ssh-keygen -l
// prints.
func Fingerprint(k ed25519.PublicKey) string {
	sum := sha256.Sum256(k)
	return "SHA256:" + base64.RawStdEncoding.EncodeToString(sum[:])
}

// KeyFingerprint is Fingerprint of a key in EncodeKey's form: "" for no
// key, "(unreadable key)" for one that does not parse.
func KeyFingerprint(key string) string {
	if key == "" {
		return ""
	}
	k, err := ParseKey(key)
	if err != nil {
		return "(unreadable key)"
	}
	return Fingerprint(k)
}

// SameKey reports whether a and b are the same device key.
func SameKey(a, b ed25519.PublicKey) bool { return len(a) > 0 && bytes.Equal(a, b) }
