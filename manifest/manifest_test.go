package manifest

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"
)

var (
	testNow = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	spA     = "/nix/store/0c5lq2n9xqbq6yv5q9r1lxg7b8c7wjsz-nixos-system-a"
	spB     = "/nix/store/1m8v1fvjz0w4mkrq3p5kqk3n2b9ffx6l-nixos-system-b"
)

// testKey signs with the standard library directly, independently of
// package signing (which uses sigstore): the verifier is tested against an
// implementation written from the DSSE spec, and package signing's tests
// check it against sigstore's.
type testKey struct {
	Name string
	key  crypto.Signer
}

func newKey(t testing.TB, name string) (testKey, PublicKey) {
	t.Helper()
	pk, sk, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return testKey{Name: name, key: sk}, PublicKey{Name: name, Key: pk}
}

func newECDSAKey(t testing.TB, name string) (testKey, PublicKey) {
	t.Helper()
	sk, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return testKey{Name: name, key: sk}, PublicKey{Name: name, Key: &sk.PublicKey}
}

// sign signs msg the way sigstore's signers do: ed25519 over the message,
// ECDSA over its SHA-256.
func (k testKey) sign(t testing.TB, msg []byte) []byte {
	t.Helper()
	var sig []byte
	var err error
	switch sk := k.key.(type) {
	case ed25519.PrivateKey:
		sig = ed25519.Sign(sk, msg)
	case *ecdsa.PrivateKey:
		d := sha256.Sum256(msg)
		sig, err = ecdsa.SignASN1(rand.Reader, sk, d[:])
	}
	if err != nil || sig == nil {
		t.Fatalf("sign: %v", err)
	}
	return sig
}

func payload(rev uint64) *Payload {
	return &Payload{
		Schema:       Schema,
		Channel:      "prod",
		Revision:     rev,
		StorePath:    spA,
		Substituters: []string{"https://cache.example.org"},
		PublishedAt:  testNow.Add(-time.Hour),
		ExpiresAt:    testNow.Add(720 * time.Hour),
		Rollout:      Rollout{Percent: 100, Salt: "s"},
		Switch:       SwitchNow,
		Message:      "test",
	}
}

// mustSign signs a payload that passed Validate, as a publisher does.
func mustSign(t testing.TB, p *Payload, keys ...testKey) []byte {
	t.Helper()
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
	return resign(t, mustJSON(p), keys...)
}

// resign builds an envelope over raw payload bytes, bypassing validation,
// to test what an agent does with a validly signed bad payload.
func resign(t testing.TB, raw []byte, keys ...testKey) []byte {
	t.Helper()
	type sig struct {
		KeyID string `json:"keyid"`
		Sig   string `json:"sig"`
	}
	env := struct {
		PayloadType string `json:"payloadType"`
		Payload     string `json:"payload"`
		Signatures  []sig  `json:"signatures"`
	}{PayloadType: PayloadType, Payload: base64.StdEncoding.EncodeToString(raw)}
	for _, k := range keys {
		env.Signatures = append(env.Signatures, sig{k.Name, base64.StdEncoding.EncodeToString(k.sign(t, pae(PayloadType, raw)))})
	}
	return mustJSON(env)
}

// pae is DSSE's pre-authentication encoding, written out here from the
// spec so the test does not trust the code under test to compute it.
func pae(typ string, body []byte) []byte {
	var b bytes.Buffer
	b.WriteString("DSSEv1 ")
	b.WriteString(strconv.Itoa(len(typ)))
	b.WriteString(" ")
	b.WriteString(typ)
	b.WriteString(" ")
	b.WriteString(strconv.Itoa(len(body)))
	b.WriteString(" ")
	b.Write(body)
	return b.Bytes()
}

func TestSignVerifyRoundTrip(t *testing.T) {
	s, pub := newKey(t, "fleet-1")
	body := mustSign(t, payload(2), s)
	v, err := Verify(Trust{Keys: []PublicKey{pub}}, "prod", State{Revision: 1}, body, testNow)
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
	if v.Payload.Revision != 2 || v.Payload.StorePath != spA || len(v.KeyIDs) != 1 || v.KeyIDs[0] != "fleet-1" {
		t.Fatalf("unexpected verified manifest: %+v %v", v.Payload, v.KeyIDs)
	}
	// The same bytes again (an idle re-poll) are accepted.
	if _, err := Verify(Trust{Keys: []PublicKey{pub}}, "prod", State{Revision: 2, PayloadDigest: v.PayloadDigest}, body, testNow); err != nil {
		t.Fatalf("re-verify same revision: %v", err)
	}
}

func TestPublicKeyRoundTrip(t *testing.T) {
	_, pub := newKey(t, "fleet-1")
	got, err := ParsePublicKey(pub.String())
	if err != nil {
		t.Fatal(err)
	}
	if got.String() != pub.String() || !strings.HasPrefix(pub.String(), "fleet-1:") {
		t.Fatalf("round trip: %s != %s", got, pub)
	}
}

func TestParsePublicKeyBad(t *testing.T) {
	for _, in := range []string{
		"", "nocolon", ":AAAA", "bad name:AAAA", "k:not*base64",
		"k:" + base64.StdEncoding.EncodeToString(make([]byte, 31)),
		"k:" + base64.StdEncoding.EncodeToString(make([]byte, 33)),
	} {
		if _, err := ParsePublicKey(in); !errors.Is(err, ErrInvalidKey) {
			t.Errorf("ParsePublicKey(%q) = %v, want ErrInvalidKey", in, err)
		}
	}
}

func TestVerifyRejects(t *testing.T) {
	ctx := context.Background()
	s, pub := newKey(t, "fleet-1")
	other, otherPub := newKey(t, "fleet-2")
	trust := Trust{Keys: []PublicKey{pub}}
	good := mustSign(t, payload(5), s)
	goodV, err := Verify(trust, "prod", State{}, good, testNow)
	if err != nil {
		t.Fatal(err)
	}

	tamper := func(b []byte) []byte {
		var env map[string]any
		_ = json.Unmarshal(b, &env)
		raw, _ := base64.StdEncoding.DecodeString(env["payload"].(string))
		raw = bytes.Replace(raw, []byte(spA), []byte(spB), 1)
		env["payload"] = base64.StdEncoding.EncodeToString(raw)
		out, _ := json.Marshal(env)
		return out
	}
	withType := func(b []byte, typ string) []byte {
		var env map[string]any
		_ = json.Unmarshal(b, &env)
		env["payloadType"] = typ
		out, _ := json.Marshal(env)
		return out
	}
	expired := payload(6)
	expired.ExpiresAt = testNow
	otherChan := payload(6)
	otherChan.Channel = "staging"
	badPath := payload(6)
	rawBadPath, _ := json.Marshal(badPath)
	rawBadPath = bytes.Replace(rawBadPath, []byte(spA), []byte("/tmp/evil"), 1)
	equiv := payload(5)
	equiv.Message = "different"
	unknownField := []byte(`{"schema":1,"channel":"prod","revision":6,"storePath":"` + spA + `","substituters":[],"publishedAt":"2026-11-25T11:00:00Z","expiresAt":"2026-12-25T11:00:00Z","rollout":{"percent":100,"salt":""},"switch":"switch","extra":1}`)
	schema2 := bytes.Replace(unknownField, []byte(`"schema":1`), []byte(`"schema":2`), 1)
	schema2 = bytes.Replace(schema2, []byte(`,"extra":1`), nil, 1)
	big := append(bytes.Repeat([]byte(" "), MaxBodySize), good...)

	twoKeys := Trust{Keys: []PublicKey{pub, otherPub}, Threshold: 2}
	_ = ctx
	cases := []struct {
		name  string
		trust Trust
		state State
		body  []byte
		want  error
	}{
		{"tampered payload", trust, State{}, tamper(good), ErrSignature},
		{"untrusted key", trust, State{}, mustSign(t, payload(6), other), ErrSignature},
		{"wrong payload type", trust, State{}, withType(good, "application/json"), ErrPayloadType},
		{"not json", trust, State{}, []byte("<html>"), ErrMalformed},
		{"empty", trust, State{}, nil, ErrMalformed},
		{"oversized", trust, State{}, big, ErrTooLarge},
		{"other channel", trust, State{}, mustSign(t, otherChan, s), ErrWrongChannel},
		{"rollback", trust, State{Revision: 6}, good, ErrRollback},
		{"equivocation", trust, State{Revision: 5, PayloadDigest: goodV.PayloadDigest}, mustSign(t, equiv, s), ErrEquivocation},
		{"expired", trust, State{}, resign(t, mustJSON(expired), s), ErrExpired},
		{"invalid store path", trust, State{}, resign(t, rawBadPath, s), ErrInvalidStorePath},
		{"unknown field", trust, State{}, resign(t, unknownField, s), ErrMalformed},
		{"schema 2", trust, State{}, resign(t, schema2, s), ErrMalformed},
		{"threshold 2, one signature", twoKeys, State{}, good, ErrSignature},
		{"threshold above keys", Trust{Keys: []PublicKey{pub}, Threshold: 2}, State{}, good, ErrInvalidKey},
		{"no trusted keys", Trust{}, State{}, good, ErrInvalidKey},
		{"duplicate key names", Trust{Keys: []PublicKey{pub, pub}, Threshold: 2}, State{}, good, ErrInvalidKey},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Verify(c.trust, "prod", c.state, c.body, testNow)
			if !errors.Is(err, c.want) {
				t.Fatalf("got %v, want %v", err, c.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("error spans lines: %q", err)
			}
		})
	}
}

func mustJSON(v any) []byte {
	b, _ := json.Marshal(v)
	return b
}

func TestThresholdTwoDistinctKeys(t *testing.T) {
	a, pubA := newKey(t, "a")
	b, pubB := newKey(t, "b")
	trust := Trust{Keys: []PublicKey{pubA, pubB}, Threshold: 2}
	both := mustSign(t, payload(1), a, b)
	v, err := Verify(trust, "prod", State{}, both, testNow)
	if err != nil {
		t.Fatalf("two keys: %v", err)
	}
	if len(v.KeyIDs) != 2 {
		t.Fatalf("key ids %v", v.KeyIDs)
	}
	// Two signatures by the same key do not make two keys.
	twice := mustSign(t, payload(1), a, a)
	if _, err := Verify(trust, "prod", State{}, twice, testNow); !errors.Is(err, ErrSignature) {
		t.Fatalf("same key twice: %v", err)
	}
	// A signature claiming to be b but made by a does not count for b.
	forged := a
	forged.Name = "b"
	mixed := mustSign(t, payload(1), a, forged)
	if _, err := Verify(trust, "prod", State{}, mixed, testNow); !errors.Is(err, ErrSignature) {
		t.Fatalf("forged keyid: %v", err)
	}
}

func TestStorePathFor(t *testing.T) {
	p := payload(1)
	p.Systems = Systems{"rpi4": spB}
	if sp, ok := p.StorePathFor(""); !ok || sp != spA {
		t.Fatalf("default: %s %v", sp, ok)
	}
	if sp, ok := p.StorePathFor("rpi4"); !ok || sp != spB {
		t.Fatalf("rpi4: %s %v", sp, ok)
	}
	if _, ok := p.StorePathFor("x86"); ok {
		t.Fatal("x86 should be absent")
	}
	if got := p.StorePaths(); len(got) != 2 {
		t.Fatalf("StorePaths %v", got)
	}
}

func TestValidateName(t *testing.T) {
	for _, ok := range []string{"prod", "a", "A.b_c-1", strings.Repeat("x", 64)} {
		if err := ValidateName("channel", ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"", ".hidden", "-x", "a/b", "..", "a b", strings.Repeat("x", 65), "ü", "a\x00"} {
		if err := ValidateName("channel", bad); !errors.Is(err, ErrInvalidName) {
			t.Errorf("%q: %v", bad, err)
		}
	}
}

// TestECDSAKeys: ECDSA P-256 keys (as cloud KMS keys are) verify, alone
// and next to ed25519 keys, and their NAME:ecdsa-p256:BASE64 form
// round-trips.
func TestECDSAKeys(t *testing.T) {
	s, pub := newECDSAKey(t, "kms-1")
	parsed, err := ParsePublicKey(pub.String())
	if err != nil || !strings.HasPrefix(pub.String(), "kms-1:ecdsa-p256:") {
		t.Fatalf("round trip %q: %v", pub.String(), err)
	}
	body := mustSign(t, payload(1), s)
	if _, err := Verify(Trust{Keys: []PublicKey{parsed}}, "prod", State{}, body, testNow); err != nil {
		t.Fatalf("verify ECDSA: %v", err)
	}
	// Mixed: an ed25519 key and an ECDSA key, threshold 2.
	ed, edPub := newKey(t, "ed")
	both := mustSign(t, payload(1), ed, s)
	if _, err := Verify(Trust{Keys: []PublicKey{edPub, parsed}, Threshold: 2}, "prod", State{}, both, testNow); err != nil {
		t.Fatalf("verify ed25519+ECDSA threshold 2: %v", err)
	}
	// An ECDSA signature presented under the ed25519 key's name, and the
	// reverse, do not verify.
	swapped := resign(t, mustJSON(payload(1)), testKey{Name: "ed", key: s.key})
	if _, err := Verify(Trust{Keys: []PublicKey{edPub}}, "prod", State{}, swapped, testNow); !errors.Is(err, ErrSignature) {
		t.Fatalf("ECDSA signature under an ed25519 key: %v", err)
	}
	for _, bad := range []string{"k:ecdsa-p256:AAAA", "k:rsa:AAAA", "k:ed25519:" + base64.StdEncoding.EncodeToString(make([]byte, 31))} {
		if _, err := ParsePublicKey(bad); !errors.Is(err, ErrInvalidKey) {
			t.Errorf("%q: %v", bad, err)
		}
	}
}

// TestTrustRejectsUnusableKeys: a key of another type or curve in a trust
// configuration is refused up front, not silently never matched.
func TestTrustRejectsUnusableKeys(t *testing.T) {
	good := mustSign(t, payload(1), func() testKey { k, _ := newKey(t, "k"); return k }())
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	for name, key := range map[string]crypto.PublicKey{
		"P-384":          &p384.PublicKey,
		"short ed25519":  ed25519.PublicKey(make([]byte, 31)),
		"nil":            nil,
		"rsa-like bytes": []byte("x"),
	} {
		_, err := Verify(Trust{Keys: []PublicKey{{Name: "k", Key: key}}}, "prod", State{}, good, testNow)
		if !errors.Is(err, ErrInvalidKey) {
			t.Errorf("%s: %v, want ErrInvalidKey", name, err)
		}
	}
}
