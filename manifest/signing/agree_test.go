package signing

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"encoding/asn1"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math/big"
	"strings"
	"testing"
	"unicode/utf8"

	ssldsse "github.com/secure-systems-lab/go-securesystemslib/dsse"

	"github.com/nix-ota/nix-ota/manifest"
)

// Differences between the device's verifier (manifest.CheckSigned) and
// sigstore's (go-securesystemslib's DSSE with sigstore's verifiers). Each
// is the device refusing what sigstore accepts, never the reverse, and
// each has a reason. TestVerifierDifferences checks every row;
// documentedDifference lets FuzzVerifiersAgree tell a documented
// difference from a new one.
const (
	diffBase64    = "base64 other than standard, padded, with zero padding bits and no line breaks: DSSE allows the URL-safe alphabet and Go's decoders skip CR/LF and padding bits; publishers write only the standard form, so the device reads only that and one envelope has one reading"
	diffJSON      = "duplicate, case-variant or unknown envelope keys: encoding/json keeps the last duplicate and folds case, another reader might not; publishers never write them"
	diffRawECDSA  = "an ECDSA signature as raw r||s (IEEE P1363): sigstore's verifier falls back to it when ASN.1 parsing fails; sigstore's signers and cloud KMS write ASN.1 DER, the only form the device reads"
	diffWeakKey   = "a small-order ed25519 key: it verifies forged signatures; the device refuses to trust it at all"
	diffSameKey   = "one key trusted under two names: sigstore's DSSE counts each name, so one signature listed twice meets threshold 2; the device refuses the trust configuration"
	diffManySigs  = "more than manifest.MaxSignatures signatures: the device bounds the work an envelope can ask for"
	diffBadUTF8   = "invalid UTF-8 in the envelope: encoding/json replaces it silently; the device refuses it"
	agreeHighS    = "both accept an ECDSA signature with high S (n-s): Go's ECDSA does not require low S and KMS signers do not normalise it; the device identifies a manifest by its payload digest, never by signature bytes, so this malleability changes nothing"
	agreeRejected = "both refuse"
)

type verifierCase struct {
	name             string
	trust            manifest.Trust
	body             []byte
	device, sigstore bool
	why              string
}

// TestVerifierDifferences: base64 variants of sig and payload, ECDSA
// signature encodings, and trust configurations, with what each verifier
// does and why.
func TestVerifierDifferences(t *testing.T) {
	ed, edPub := newKey(t, "fleet-1")
	ec, ecPub := newECDSAKey(t, "kms-1")
	for _, c := range differenceCases(t, ed, edPub, ec, ecPub) {
		t.Run(c.name, func(t *testing.T) {
			_, err := manifest.CheckSigned(c.trust, "prod", c.body)
			device, ref := err == nil, sigstoreAccepts(t, c.trust, c.body)
			if device != c.device || ref != c.sigstore {
				t.Fatalf("device accepts=%v (%v), sigstore accepts=%v; documented: device %v, sigstore %v (%s)", device, err, ref, c.device, c.sigstore, c.why)
			}
			if device && !ref {
				t.Fatal("the device must never accept what sigstore refuses")
			}
			if !device && ref && documentedDifference(c.trust, c.body) == "" {
				t.Fatalf("a difference documentedDifference does not recognise: %v", err)
			}
		})
	}
}

// differenceCases builds every row with the given keys.
func differenceCases(t testing.TB, ed Key, edPub manifest.PublicKey, ec Key, ecPub manifest.PublicKey) []verifierCase {
	var cases []verifierCase
	cases = append(cases, base64Cases(t, ed, manifest.Trust{Keys: []manifest.PublicKey{edPub}})...)
	cases = append(cases, base64Cases(t, ec, manifest.Trust{Keys: []manifest.PublicKey{ecPub}})...)
	cases = append(cases, ecdsaEncodingCases(t, ec, manifest.Trust{Keys: []manifest.PublicKey{ecPub}})...)
	cases = append(cases, envelopeJSONCases(t, ed, manifest.Trust{Keys: []manifest.PublicKey{edPub}})...)
	return append(cases, trustCases(t)...)
}

// signWhere signs payloads with varying messages until pred holds for the
// envelope, so that a variant below is not vacuous (a URL-safe form that
// equals the standard one, padding that is not there).
func signWhere(t testing.TB, k Key, pred func(env *ssldsse.Envelope) bool) *ssldsse.Envelope {
	t.Helper()
	for i := range 500 {
		p := payload(3)
		p.Message = fmt.Sprintf("test %d ???>>>", i)
		var env ssldsse.Envelope
		if err := json.Unmarshal(mustSign(t, p, k), &env); err != nil {
			t.Fatal(err)
		}
		if pred(&env) {
			return &env
		}
	}
	t.Fatal("no envelope with the wanted form after 500 tries")
	return nil
}

func marshal(t testing.TB, env *ssldsse.Envelope) []byte {
	t.Helper()
	b, err := json.Marshal(env)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// base64Variants are the ways a base64 field can be written, applied to
// the signature and to the payload in turn.
var base64Variants = []struct {
	name             string
	edit             func(string) string
	device, sigstore bool
	why              string
}{
	{"unchanged", func(s string) string { return s }, true, true, "the form publishers write"},
	{"URL-safe alphabet", urlSafe, false, true, diffBase64},
	{"missing padding", func(s string) string { return strings.TrimRight(s, "=") }, false, false, agreeRejected},
	{"URL-safe, missing padding", func(s string) string { return strings.TrimRight(urlSafe(s), "=") }, false, false, agreeRejected},
	{"embedded LF", func(s string) string { return s[:8] + "\n" + s[8:] }, false, true, diffBase64},
	{"embedded CRLF", func(s string) string { return s[:8] + "\r\n" + s[8:] }, false, true, diffBase64},
	{"trailing LF", func(s string) string { return s + "\n" }, false, true, diffBase64},
	{"embedded space", func(s string) string { return s[:8] + " " + s[8:] }, false, false, agreeRejected},
	{"embedded tab", func(s string) string { return s[:8] + "\t" + s[8:] }, false, false, agreeRejected},
	{"padding bits set", setPaddingBit, false, true, diffBase64},
}

func urlSafe(s string) string { return strings.NewReplacer("+", "-", "/", "_").Replace(s) }

func base64Cases(t testing.TB, k Key, trust manifest.Trust) []verifierCase {
	env := signWhere(t, k, func(e *ssldsse.Envelope) bool {
		s := e.Signatures[0].Sig
		return strings.ContainsAny(s, "+/") && strings.HasSuffix(s, "=") && strings.ContainsAny(e.Payload, "+/") && strings.HasSuffix(e.Payload, "=")
	})
	var out []verifierCase
	for _, field := range []string{"sig", "payload"} {
		for _, v := range base64Variants {
			e := *env
			e.Signatures = append([]ssldsse.Signature(nil), env.Signatures...)
			if field == "sig" {
				e.Signatures[0].Sig = v.edit(e.Signatures[0].Sig)
			} else {
				e.Payload = v.edit(e.Payload)
			}
			if v.name != "unchanged" && e.Payload == env.Payload && e.Signatures[0].Sig == env.Signatures[0].Sig {
				t.Fatalf("%s %s: the variant equals the original", field, v.name)
			}
			out = append(out, verifierCase{k.Name + "/" + field + "/" + v.name, trust, marshal(t, &e), v.device, v.sigstore, v.why})
		}
	}
	return out
}

// setPaddingBit changes the last base64 digit before the padding so that
// it carries a non-zero unused bit: the lenient decoder reads the same
// bytes, the strict one refuses.
func setPaddingBit(s string) string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
	body := strings.TrimRight(s, "=")
	i := len(body) - 1
	v := strings.IndexByte(alphabet, body[i])
	return body[:i] + string(alphabet[v|1]) + s[len(body):]
}

type ecdsaSig struct{ R, S *big.Int }

// derInt is a DER INTEGER for a non-negative v, optionally with a
// redundant leading zero (non-minimal, so not DER).
func derInt(v *big.Int, extraZero bool) []byte {
	b := v.Bytes()
	if len(b) == 0 || b[0]&0x80 != 0 {
		b = append([]byte{0}, b...)
	}
	if extraZero {
		b = append([]byte{0}, b...)
	}
	return append([]byte{0x02, byte(len(b))}, b...)
}

func ecdsaEncodingCases(t testing.TB, ec Key, trust manifest.Trust) []verifierCase {
	env := signWhere(t, ec, func(*ssldsse.Envelope) bool { return true })
	der, err := base64.StdEncoding.DecodeString(env.Signatures[0].Sig)
	if err != nil {
		t.Fatal(err)
	}
	var sig ecdsaSig
	if rest, err := asn1.Unmarshal(der, &sig); err != nil || len(rest) != 0 {
		t.Fatalf("publisher's signature is not DER: %v", err)
	}
	n := elliptic.P256().Params().N
	raw := append(sig.R.FillBytes(make([]byte, 32)), sig.S.FillBytes(make([]byte, 32))...)
	padded := append(append([]byte{0}, sig.R.FillBytes(make([]byte, 32))...), append([]byte{0}, sig.S.FillBytes(make([]byte, 32))...)...)
	flipS, _ := asn1.Marshal(ecdsaSig{sig.R, new(big.Int).Sub(n, sig.S)})
	seq := func(body []byte) []byte { return append([]byte{0x30, byte(len(body))}, body...) }
	nonMinimal := seq(append(derInt(sig.R, true), derInt(sig.S, false)...))
	if _, err := asn1.Unmarshal(nonMinimal, &ecdsaSig{}); err == nil {
		t.Fatalf("fixture: %x is valid DER", nonMinimal)
	}
	longLen := append([]byte{0x30, 0x81, der[1]}, der[2:]...)
	indefinite := append(append([]byte{0x30, 0x80}, der[2:]...), 0, 0)
	zeroR, _ := asn1.Marshal(ecdsaSig{big.NewInt(0), sig.S})
	with := func(s []byte) []byte {
		e := *env
		e.Signatures = []ssldsse.Signature{{KeyID: env.Signatures[0].KeyID, Sig: base64.StdEncoding.EncodeToString(s)}}
		return marshal(t, &e)
	}
	return []verifierCase{
		{"ecdsa/DER as signed", trust, with(der), true, true, "the form publishers write"},
		{"ecdsa/high S, DER", trust, with(flipS), true, true, agreeHighS},
		{"ecdsa/raw r||s", trust, with(raw), false, true, diffRawECDSA},
		{"ecdsa/raw r||s, each zero-padded to 33 bytes", trust, with(padded), false, true, diffRawECDSA},
		{"ecdsa/DER, non-minimal integer", trust, with(nonMinimal), false, false, agreeRejected},
		{"ecdsa/DER, long-form length", trust, with(longLen), false, false, agreeRejected},
		{"ecdsa/BER, indefinite length", trust, with(indefinite), false, false, agreeRejected},
		{"ecdsa/DER, trailing byte", trust, with(append(bytes.Clone(der), 0)), false, false, agreeRejected},
		{"ecdsa/r = 0", trust, with(zeroR), false, false, agreeRejected},
		{"ecdsa/high S as raw r||s", trust, with(append(sig.R.FillBytes(make([]byte, 32)), new(big.Int).Sub(n, sig.S).FillBytes(make([]byte, 32))...)), false, true, diffRawECDSA},
	}
}

func trustCases(t testing.TB) []verifierCase {
	ed, edPub := newKey(t, "a")
	body := mustSign(t, payload(3), ed)
	var env ssldsse.Envelope
	if err := json.Unmarshal(body, &env); err != nil {
		t.Fatal(err)
	}
	env.Signatures = append(env.Signatures, ssldsse.Signature{KeyID: "b", Sig: env.Signatures[0].Sig})
	twice := marshal(t, &env)
	sameKey := manifest.Trust{Keys: []manifest.PublicKey{edPub, {Name: "b", Key: edPub.Key}}, Threshold: 2}

	// The identity point as a key: R = identity, S = 0 verifies any message.
	identity := ed25519.PublicKey(append([]byte{1}, make([]byte, 31)...))
	raw, _ := json.Marshal(payload(3))
	forged := ssldsse.Envelope{PayloadType: manifest.PayloadType, Payload: base64.StdEncoding.EncodeToString(raw),
		Signatures: []ssldsse.Signature{{KeyID: "weak", Sig: base64.StdEncoding.EncodeToString(append(append([]byte{1}, make([]byte, 31)...), make([]byte, 32)...))}}}
	weak := manifest.Trust{Keys: []manifest.PublicKey{{Name: "weak", Key: identity}}}

	var many ssldsse.Envelope
	_ = json.Unmarshal(body, &many)
	for range manifest.MaxSignatures {
		many.Signatures = append(many.Signatures, ssldsse.Signature{KeyID: "other", Sig: many.Signatures[0].Sig})
	}
	one := manifest.Trust{Keys: []manifest.PublicKey{edPub}}
	return []verifierCase{
		{"trust/same key under two names, one signature listed twice", sameKey, twice, false, true, diffSameKey},
		{"trust/identity key, forged signature", weak, marshal(t, &forged), false, true, diffWeakKey},
		{"envelope/17 signatures, one valid", one, marshal(t, &many), false, true, diffManySigs},
	}
}

func envelopeJSONCases(t testing.TB, ed Key, trust manifest.Trust) []verifierCase {
	good := string(mustSign(t, payload(3), ed))
	var env ssldsse.Envelope
	_ = json.Unmarshal([]byte(good), &env)
	evil := base64.StdEncoding.EncodeToString([]byte(`{"schema":1}`))
	edit := func(old, new string) []byte {
		if !strings.Contains(good, old) {
			t.Fatalf("fixture lacks %q", old)
		}
		return []byte(strings.Replace(good, old, new, 1))
	}
	return []verifierCase{
		{"json/duplicate payload, the signed one last", trust, edit(`"payload": "`, `"payload": "`+evil+`", "payload": "`), false, true, diffJSON},
		{"json/case-variant key", trust, edit(`"payloadType"`, `"PayloadType"`), false, true, diffJSON},
		{"json/unknown key", trust, edit(`"payloadType"`, `"cert": "x", "payloadType"`), false, true, diffJSON},
		{"json/duplicate sig, the valid one last", trust, edit(`"sig": "`, `"sig": "AAAA", "sig": "`), false, true, diffJSON},
		{"json/invalid UTF-8 in an extra field", trust, edit(`"keyid": "fleet-1"`, "\"keyid\": \"fleet-1\", \"x\": \"\xff\""), false, true, diffBadUTF8},
		{"json/trailing data", trust, []byte(good + "}"), false, false, agreeRejected},
	}
}

// documentedDifference says which documented difference explains the
// device refusing an envelope that sigstore accepts, or "" when none
// does. It reads the envelope itself, independently of the device's
// error message.
func documentedDifference(trust manifest.Trust, body []byte) string {
	if !utf8.Valid(body) {
		return diffBadUTF8
	}
	if envelopeKeysAmbiguous(body) {
		return diffJSON
	}
	var env ssldsse.Envelope
	if json.Unmarshal(body, &env) != nil {
		return ""
	}
	if len(env.Signatures) > manifest.MaxSignatures {
		return diffManySigs
	}
	if !strictBase64(env.Payload) {
		return diffBase64
	}
	for _, s := range env.Signatures {
		if !strictBase64(s.Sig) {
			return diffBase64
		}
	}
	for i, k := range trust.Keys {
		if _, err := manifest.ParsePublicKey(k.String()); err != nil {
			return diffWeakKey
		}
		for _, o := range trust.Keys[:i] {
			if o.String()[len(o.Name):] == k.String()[len(k.Name):] {
				return diffSameKey
			}
		}
	}
	for _, s := range env.Signatures {
		sig, _ := base64.StdEncoding.DecodeString(s.Sig)
		var v ecdsaSig
		if rest, err := asn1.Unmarshal(sig, &v); (err != nil || len(rest) != 0) && isECDSAKey(trust, s.KeyID) {
			return diffRawECDSA
		}
	}
	return ""
}

// isECDSAKey: keyid names a trusted ECDSA key (an empty keyid may be any).
func isECDSAKey(trust manifest.Trust, keyID string) bool {
	for _, k := range trust.Keys {
		if _, ok := k.Key.(*ecdsa.PublicKey); ok && (keyID == "" || keyID == k.Name) {
			return true
		}
	}
	return false
}

func strictBase64(s string) bool {
	_, err := base64.StdEncoding.Strict().DecodeString(s)
	return err == nil && !strings.ContainsAny(s, "\r\n")
}

// envelopeKeysAmbiguous reports a duplicate key, or a key that is not
// exactly one of DSSE's, in the envelope or a signature object.
func envelopeKeysAmbiguous(body []byte) bool {
	top := map[string]bool{"payloadType": true, "payload": true, "signatures": true}
	var fields map[string]json.RawMessage
	keys, ok := objectKeys(body)
	if !ok || json.Unmarshal(body, &fields) != nil {
		return false
	}
	if !exactKeys(keys, top) {
		return true
	}
	var sigs []json.RawMessage
	if json.Unmarshal(fields["signatures"], &sigs) != nil {
		return false
	}
	for _, s := range sigs {
		if keys, ok := objectKeys(s); ok && !exactKeys(keys, map[string]bool{"keyid": true, "sig": true}) {
			return true
		}
	}
	return false
}

// objectKeys lists an object's keys in order, duplicates included.
func objectKeys(b []byte) ([]string, bool) {
	dec := json.NewDecoder(bytes.NewReader(b))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, false
	}
	var keys []string
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, false
		}
		keys = append(keys, tok.(string))
		var skip json.RawMessage
		if dec.Decode(&skip) != nil {
			return nil, false
		}
	}
	return keys, true
}

func exactKeys(keys []string, allowed map[string]bool) bool {
	seen := map[string]bool{}
	for _, k := range keys {
		if seen[k] || !allowed[k] {
			return false
		}
		seen[k] = true
	}
	return true
}
