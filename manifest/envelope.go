package manifest

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	ssldsse "github.com/secure-systems-lab/go-securesystemslib/dsse"
)

// MaxSignatures bounds the work one envelope can ask of a verifier: each
// signature is checked against each trusted key.
const MaxSignatures = 16

// Trust is what a device trusts: its configured public keys and how many
// distinct ones must have signed (rule 2).
type Trust struct {
	Keys      []PublicKey
	Threshold int // 0 means 1
}

// Check reports a trust configuration that can never accept anything, that
// would count one key twice, or that trusts a key which verifies forgeries.
// The same key under two names would let one signature, listed twice under
// both names, meet threshold 2.
func (t Trust) Check() error {
	if len(t.Keys) == 0 {
		return fmt.Errorf("%w: no trusted public keys configured", ErrInvalidKey)
	}
	for i, k := range t.Keys {
		if err := ValidateName("key", k.Name); err != nil {
			return fmt.Errorf("%w: trusted key: %v", ErrInvalidKey, err)
		}
		if _, err := newKeyVerifier(k); err != nil {
			return err
		}
		for _, prev := range t.Keys[:i] {
			if prev.Name == k.Name {
				return fmt.Errorf("%w: two trusted keys are named %q; names must be distinct", ErrInvalidKey, k.Name)
			}
			if sameKey(prev.Key, k.Key) {
				return fmt.Errorf("%w: trusted keys %q and %q are the same key, so one signature would count twice toward the threshold; list each key once", ErrInvalidKey, prev.Name, k.Name)
			}
		}
	}
	if th := t.threshold(); th > len(t.Keys) {
		return fmt.Errorf("%w: threshold %d but only %d trusted keys", ErrInvalidKey, th, len(t.Keys))
	}
	return nil
}

// sameKey compares key material. Both supported key types have Equal; an
// ed25519 key that passed newKeyVerifier is canonically encoded, so equal
// points have equal bytes.
func sameKey(a, b crypto.PublicKey) bool {
	ea, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && ea.Equal(b)
}

func (t Trust) threshold() int {
	if t.Threshold <= 0 {
		return 1
	}
	return t.Threshold
}

// State is what a device remembers of a channel between polls: the highest
// revision it accepted and the digest of that revision's payload bytes.
type State struct {
	Revision      uint64
	PayloadDigest string
}

// Verified is a manifest that passed every rule.
type Verified struct {
	Payload       *Payload
	PayloadBytes  []byte
	PayloadDigest string   // sha256 hex of PayloadBytes
	KeyIDs        []string // the trusted keys whose signatures counted
}

// Digest returns the hex sha256 of payload bytes, as recorded in State.
func Digest(payload []byte) string {
	sum := sha256.Sum256(payload)
	return hex.EncodeToString(sum[:])
}

// Verify applies the acceptance rules (docs/design.md, Manifest rules) to
// body for a device that follows channel, trusts t, remembers st, at time
// now. It does no I/O. On error nothing
// about the manifest may be acted on; the error wraps one of the Err*
// reasons.
func Verify(t Trust, channel string, st State, body []byte, now time.Time) (*Verified, error) {
	v, err := CheckSigned(t, channel, body)
	if err != nil {
		return nil, err
	}
	p := v.Payload
	// Rule 4: never below the highest accepted revision; one payload per revision.
	if p.Revision < st.Revision {
		return nil, fmt.Errorf("%w: revision %d is older than accepted revision %d", ErrRollback, p.Revision, st.Revision)
	}
	if p.Revision == st.Revision && st.PayloadDigest != "" && v.PayloadDigest != st.PayloadDigest {
		return nil, fmt.Errorf("%w: revision %d was already accepted with different content (payload sha256 %.12s, now %.12s)", ErrEquivocation, p.Revision, st.PayloadDigest, v.PayloadDigest)
	}
	// Rule 5: freeze protection.
	if !now.Before(p.ExpiresAt) {
		return nil, fmt.Errorf("%w: revision %d expired at %s", ErrExpired, p.Revision, p.ExpiresAt.UTC().Format(time.RFC3339))
	}
	return v, nil
}

// CheckSigned applies the rules that do not depend on a device's memory or
// the clock (rules 1, 2, 3 and 6): a well-formed envelope signed by a
// threshold of trusted keys, for this channel, naming valid store paths.
// Publisher tools use it on history entries; devices use Verify.
func CheckSigned(t Trust, channel string, body []byte) (*Verified, error) {
	if err := t.Check(); err != nil {
		return nil, err
	}
	// Rule 1: bounded, a DSSE envelope, our payload type.
	env, payloadBytes, err := decodeEnvelope(body)
	if err != nil {
		return nil, err
	}
	// Rule 2: threshold distinct trusted keys over PAE(type, payload).
	keyIDs, err := verifySignatures(t, env)
	if err != nil {
		return nil, err
	}
	p, err := decodePayload(payloadBytes)
	if err != nil {
		return nil, err
	}
	if p.Schema != Schema {
		return nil, fmt.Errorf("%w: schema %d, this agent understands %d", ErrMalformed, p.Schema, Schema)
	}
	// Rule 3: no mix-and-match between channels.
	if p.Channel != channel {
		return nil, fmt.Errorf("%w: signed for channel %q, following %q", ErrWrongChannel, p.Channel, channel)
	}
	// Rule 6 and the payload's own consistency.
	if err := p.Validate(); err != nil {
		return nil, err
	}
	return &Verified{Payload: p, PayloadBytes: payloadBytes, PayloadDigest: Digest(payloadBytes), KeyIDs: keyIDs}, nil
}

// b64 is the one base64 the device reads: the standard alphabet, padded,
// with zero padding bits. DSSE also allows the URL-safe alphabet, and Go's
// decoders skip CR and LF; refusing both (and non-zero padding bits) means
// one envelope has one reading. Publishers only ever write this form.
var b64 = base64.StdEncoding.Strict()

func decodeB64(s string) ([]byte, error) {
	if strings.ContainsAny(s, "\r\n") {
		return nil, errors.New("line breaks inside base64")
	}
	return b64.DecodeString(s)
}

func decodeEnvelope(body []byte) (*ssldsse.Envelope, []byte, error) {
	return decodeEnvelopeOf(body, PayloadType, MaxBodySize)
}

// decodeEnvelopeOf is decodeEnvelope for an envelope of payload type want,
// at most limit bytes.
func decodeEnvelopeOf(body []byte, want string, limit int) (*ssldsse.Envelope, []byte, error) {
	if len(body) > limit {
		return nil, nil, fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, len(body), limit)
	}
	if !utf8.Valid(body) {
		return nil, nil, fmt.Errorf("%w: envelope is not valid UTF-8", ErrMalformed)
	}
	if err := checkStrict(body, envelopeShape); err != nil {
		return nil, nil, fmt.Errorf("%w: envelope: %v", ErrMalformed, err)
	}
	var env ssldsse.Envelope
	if err := json.Unmarshal(body, &env); err != nil {
		return nil, nil, fmt.Errorf("%w: envelope: %v", ErrMalformed, err)
	}
	if env.PayloadType != want {
		return nil, nil, fmt.Errorf("%w: %q, want %q", ErrPayloadType, clipForError(env.PayloadType), want)
	}
	payload, err := decodeB64(env.Payload)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: payload is not standard padded base64: %v", ErrMalformed, err)
	}
	if len(env.Signatures) == 0 {
		return nil, nil, fmt.Errorf("%w: no signatures", ErrSignature)
	}
	if len(env.Signatures) > MaxSignatures {
		return nil, nil, fmt.Errorf("%w: %d signatures, limit %d", ErrMalformed, len(env.Signatures), MaxSignatures)
	}
	for _, s := range env.Signatures {
		if _, err := decodeB64(s.Sig); err != nil {
			return nil, nil, fmt.Errorf("%w: signature by %q is not standard padded base64: %v", ErrMalformed, clipForError(s.KeyID), err)
		}
	}
	// The verifier decodes the payload itself; make sure it sees exactly
	// the bytes checked above.
	env.Payload = base64.StdEncoding.EncodeToString(payload)
	return &env, payload, nil
}

// document is a signed JSON document other than a manifest (attestation,
// device registry): it knows its own rules.
type document interface{ Validate() error }

// openDocument verifies a document envelope of payloadType against t (a
// threshold of its keys over exactly these bytes), then decodes the
// payload strictly (shape, no unknown fields) into v and validates it.
// It returns the signing key ids and the payload.
func openDocument(t Trust, body []byte, payloadType string, limit int, sh *shape, what string, v document) ([]string, []byte, error) {
	if err := t.Check(); err != nil {
		return nil, nil, err
	}
	env, payload, err := decodeEnvelopeOf(body, payloadType, limit)
	if err != nil {
		return nil, nil, err
	}
	ids, err := verifySignatures(t, env)
	if err != nil {
		return nil, nil, err
	}
	if err := checkStrict(payload, sh); err != nil {
		return nil, nil, fmt.Errorf("%w: %s: %v", ErrMalformed, what, err)
	}
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return nil, nil, fmt.Errorf("%w: %s: %v", ErrMalformed, what, err)
	}
	return ids, payload, v.Validate()
}

func verifySignatures(t Trust, env *ssldsse.Envelope) ([]string, error) {
	verifiers := make([]ssldsse.Verifier, 0, len(t.Keys))
	for _, k := range t.Keys {
		v, err := newKeyVerifier(k)
		if err != nil {
			return nil, err
		}
		verifiers = append(verifiers, v)
	}
	ev, err := ssldsse.NewMultiEnvelopeVerifier(t.threshold(), verifiers...)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidKey, err)
	}
	accepted, _, err := ev.VerifyAndDecode(context.Background(), env)
	if err != nil {
		return nil, signatureError(t, env, len(accepted))
	}
	ids := make([]string, 0, len(accepted))
	for _, a := range accepted {
		ids = append(ids, a.KeyID)
	}
	return ids, nil
}

// signatureError says why rule 2 failed in words an operator can act on:
// signed by keys the device does not trust, or a trusted key's signature
// that does not match the bytes (the payload was altered), or too few keys.
func signatureError(t Trust, env *ssldsse.Envelope, valid int) error {
	trusted := map[string]bool{}
	for _, k := range t.Keys {
		trusted[k.Name] = true
	}
	var signedBy, trustedSigners []string
	for _, s := range env.Signatures {
		signedBy = append(signedBy, s.KeyID)
		if trusted[s.KeyID] {
			trustedSigners = append(trustedSigners, s.KeyID)
		}
	}
	switch {
	case len(trustedSigners) == 0:
		return fmt.Errorf("%w: signed by %q, none of which is trusted (trusted keys: %q)", ErrSignature, signedBy, keyNames(t.Keys))
	case valid < len(trustedSigners):
		return fmt.Errorf("%w: signature by trusted key %q does not match the payload (altered in transit or in the bucket?)", ErrSignature, trustedSigners)
	}
	return fmt.Errorf("%w: %d valid signatures by trusted keys, threshold is %d", ErrSignature, valid, t.threshold())
}

func keyNames(keys []PublicKey) []string {
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = k.Name
	}
	return out
}

// DecodeUnverified returns the payload of an envelope without checking any
// signature. Only publisher-side tools that read their own bucket (to find
// the next revision number, or to list history) may use it; nothing a
// device does may depend on it.
func DecodeUnverified(body []byte) (*Payload, []byte, error) {
	_, payloadBytes, err := decodeEnvelope(body)
	if err != nil {
		return nil, nil, err
	}
	p, err := decodePayload(payloadBytes)
	if err != nil {
		return nil, nil, err
	}
	return p, payloadBytes, nil
}
