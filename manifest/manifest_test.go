package manifest

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sigstore/sigstore/pkg/signature"
)

var (
	testNow = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	spA     = "/nix/store/0c5lq2n9xqbq6yv5q9r1lxg7b8c7wjsz-nixos-system-a"
	spB     = "/nix/store/1m8v1fvjz0w4mkrq3p5kqk3n2b9ffx6l-nixos-system-b"
)

func newKey(t testing.TB, name string) (Signer, PublicKey) {
	t.Helper()
	pemBytes, pub, err := GenerateKey(name, nil)
	if err != nil {
		t.Fatal(err)
	}
	s, err := LoadSigner(pemBytes, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	return s, pub
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

func mustSign(t testing.TB, p *Payload, signers ...Signer) []byte {
	t.Helper()
	b, err := Sign(context.Background(), p, signers...)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// resign builds an envelope over raw payload bytes, bypassing Sign's
// validation, to test what an agent does with a validly signed bad payload.
func resign(t testing.TB, raw []byte, s Signer) []byte {
	t.Helper()
	var p Payload
	_ = json.Unmarshal(raw, &p)
	env := map[string]any{"payloadType": PayloadType, "payload": base64.StdEncoding.EncodeToString(raw)}
	sig, err := s.Signer.SignMessage(bytes.NewReader(pae(PayloadType, raw)))
	if err != nil {
		t.Fatal(err)
	}
	env["signatures"] = []map[string]string{{"keyid": s.Name, "sig": base64.StdEncoding.EncodeToString(sig)}}
	b, _ := json.Marshal(env)
	return b
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

func TestEncryptedKey(t *testing.T) {
	pemBytes, pub, err := GenerateKey("enc", []byte("hunter2"))
	if err != nil {
		t.Fatal(err)
	}
	if !IsEncryptedKey(pemBytes) {
		t.Fatal("key not marked encrypted")
	}
	if _, err := LoadSigner(pemBytes, "", nil); !errors.Is(err, ErrInvalidKey) {
		t.Fatalf("no password: got %v", err)
	}
	if _, err := LoadSigner(pemBytes, "", []byte("wrong")); !errors.Is(err, ErrInvalidKey) {
		t.Fatalf("wrong password: got %v", err)
	}
	s, err := LoadSigner(pemBytes, "", []byte("hunter2"))
	if err != nil {
		t.Fatal(err)
	}
	body := mustSign(t, payload(1), s)
	if _, err := Verify(Trust{Keys: []PublicKey{pub}}, "prod", State{}, body, testNow); err != nil {
		t.Fatal(err)
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

func TestSignRefusesInvalidPayload(t *testing.T) {
	s, _ := newKey(t, "k")
	for name, mut := range map[string]func(*Payload){
		"bad channel":      func(p *Payload) { p.Channel = "../etc" },
		"store path /tmp":  func(p *Payload) { p.StorePath = "/tmp/x" },
		"store path below": func(p *Payload) { p.StorePath = spA + "/bin" },
		"no path":          func(p *Payload) { p.StorePath = "" },
		"rollout 101":      func(p *Payload) { p.Rollout.Percent = 101 },
		"switch test":      func(p *Payload) { p.Switch = "test" },
		"revision 0":       func(p *Payload) { p.Revision = 0 },
		"expires before":   func(p *Payload) { p.ExpiresAt = p.PublishedAt },
		"substituter opt":  func(p *Payload) { p.Substituters = []string{"--option"} },
		"substituter ftp":  func(p *Payload) { p.Substituters = []string{"ftp://x"} },
		"bad class":        func(p *Payload) { p.Systems = Systems{"a b": spA} },
	} {
		p := payload(1)
		mut(p)
		if _, err := Sign(context.Background(), p, s); err == nil {
			t.Errorf("%s: signed an invalid payload", name)
		}
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

// TestECDSAKeys: ECDSA P-256 keys (as cloud KMS keys are) sign and verify,
// and their NAME:ecdsa-p256:BASE64 form round-trips.
func TestECDSAKeys(t *testing.T) {
	sv, _, err := signature.NewDefaultECDSASignerVerifier()
	if err != nil {
		t.Fatal(err)
	}
	s := Signer{Name: "kms-1", Signer: sv}
	pub, err := s.Public()
	if err != nil {
		t.Fatal(err)
	}
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
	for _, bad := range []string{"k:ecdsa-p256:AAAA", "k:rsa:AAAA", "k:ed25519:" + base64.StdEncoding.EncodeToString(make([]byte, 31))} {
		if _, err := ParsePublicKey(bad); !errors.Is(err, ErrInvalidKey) {
			t.Errorf("%q: %v", bad, err)
		}
	}
}
