package manifest

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

// classPayload is a valid payload with a systems map instead of storePath.
func classPayload() *Payload {
	p := payload(3)
	p.StorePath = ""
	p.Systems = Systems{"rpi4": spA, "x86": spB}
	return p
}

// TestDecodePayloadStrict: payloads that Go's encoding/json reads one way
// and another JSON reader could read another are refused, even when a
// trusted key signed them.
func TestDecodePayloadStrict(t *testing.T) {
	good := string(mustJSON(payload(3)))
	classes := string(mustJSON(classPayload()))
	rep := func(s, old, new string) string {
		if !strings.Contains(s, old) {
			t.Fatalf("fixture lacks %q", old)
		}
		return strings.Replace(s, old, new, 1)
	}
	refused := []struct {
		name, doc string
		want      error
	}{
		{"duplicate key", rep(good, `"revision":3`, `"revision":3,"revision":4`), ErrMalformed},
		{"duplicate key, escaped", rep(good, `"revision":3`, `"revision":3,"\u0072evision":4`), ErrMalformed},
		{"case variant", rep(good, `"revision":3`, `"Revision":3`), ErrMalformed},
		{"case variant after the field", rep(good, `"revision":3`, `"revision":3,"REVISION":4`), ErrMalformed},
		{"unicode fold (long s)", rep(good, `"schema":1`, `"ſchema":1`), ErrMalformed},
		{"duplicate class in systems", rep(classes, `"x86":`, `"rpi4":"`+spB+`","x86":`), ErrMalformed},
		{"duplicate in rollout", rep(good, `"salt":"s"`, `"salt":"s","percent":0`), ErrMalformed},
		{"case variant in rollout", rep(good, `"percent":100`, `"Percent":100`), ErrMalformed},
		{"unknown key", rep(good, `"schema":1`, `"schema":1,"extra":1`), ErrMalformed},
		{"unknown key in rollout", rep(good, `"salt":"s"`, `"salt":"s","x":1`), ErrMalformed},
		{"trailing brace", good + "}", ErrMalformed},
		{"trailing bracket", good + "]", ErrMalformed},
		{"second document", good + "{}", ErrMalformed},
		{"null", "null", ErrMalformed},
		{"array", "[]", ErrMalformed},
		{"string", `"x"`, ErrMalformed},
		{"empty", "", ErrMalformed},
		{"invalid UTF-8", rep(good, `"message":"test"`, "\"message\":\"te\xffst\""), ErrMalformed},
		{"nested too deep", rep(good, `"message":"test"`, `"message":[[[[[[[[[[]]]]]]]]]]`), ErrMalformed},
		{"deep duplicate", rep(good, `"message":"test"`, `"message":[{"a":1,"a":2}]`), ErrMalformed},
		{"too large", good + strings.Repeat(" ", MaxBodySize), ErrTooLarge},
	}
	s, pub := newKey(t, "k")
	trust := Trust{Keys: []PublicKey{pub}}
	for _, c := range refused {
		t.Run(c.name, func(t *testing.T) {
			_, err := decodePayload([]byte(c.doc))
			t.Log(err)
			if !errors.Is(err, c.want) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("decodePayload: %v, want one-line %v", err, c.want)
			}
			if len(c.doc) > MaxBodySize/2 {
				return // does not fit an envelope
			}
			if _, err := CheckSigned(trust, "prod", resign(t, []byte(c.doc), s)); !errors.Is(err, c.want) {
				t.Fatalf("CheckSigned of a signed copy: %v, want %v", err, c.want)
			}
		})
	}
}

// TestDecodePayloadAccepts: what publishers write, in any JSON layout.
func TestDecodePayloadAccepts(t *testing.T) {
	s, pub := newKey(t, "k")
	good := string(mustJSON(payload(3)))
	classes := string(mustJSON(classPayload()))
	indented, _ := json.MarshalIndent(payload(3), "", "  ")
	for name, doc := range map[string]string{
		"compact": good, "indented": string(indented), "systems": classes, "leading space": " \n" + good + "\n",
		"classes differing in case are two classes": strings.Replace(classes, `"x86":`, `"RPI4":"`+spB+`","x86":`, 1),
	} {
		if _, err := CheckSigned(Trust{Keys: []PublicKey{pub}}, "prod", resign(t, []byte(doc), s)); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// TestDuplicateKeysMisleadGo documents why the strict pass exists: plain
// encoding/json takes the last duplicate and folds case.
func TestDuplicateKeysMisleadGo(t *testing.T) {
	var p Payload
	doc := strings.Replace(string(mustJSON(payload(3))), `"revision":3`, `"revision":3,"Revision":9`, 1)
	if err := json.Unmarshal([]byte(doc), &p); err != nil || p.Revision != 9 {
		t.Fatalf("encoding/json read revision %d (%v); the premise of the strict pass changed", p.Revision, err)
	}
	if _, err := decodePayload([]byte(doc)); !errors.Is(err, ErrMalformed) {
		t.Fatalf("strict decoder: %v", err)
	}
}

func TestValidateStorePathRules(t *testing.T) {
	drv := "/nix/store/0c5lq2n9xqbq6yv5q9r1lxg7b8c7wjsz-nixos-system-a.drv"
	if err := ValidateStorePath(drv); !errors.Is(err, ErrInvalidStorePath) || !strings.Contains(err.Error(), "derivation") {
		t.Fatalf("ValidateStorePath(.drv) = %v", err)
	}
	cases := []struct {
		name string
		mut  func(*Payload)
		want error
		text string
	}{
		{"storePath and systems", func(p *Payload) { p.Systems = Systems{"rpi4": spB} }, ErrMalformed, "not both"},
		{"storePath and systems.default", func(p *Payload) { p.Systems = Systems{DefaultClass: spB} }, ErrMalformed, "not both"},
		{"storePath is a derivation", func(p *Payload) { p.StorePath = drv }, ErrInvalidStorePath, "derivation"},
		{"a class is a derivation", func(p *Payload) { p.StorePath = ""; p.Systems = Systems{"rpi4": drv} }, ErrInvalidStorePath, "rpi4"},
	}
	s, pub := newKey(t, "k")
	for _, c := range cases {
		p := payload(3)
		c.mut(p)
		err := p.Validate()
		if !errors.Is(err, c.want) || !strings.Contains(err.Error(), c.text) {
			t.Errorf("%s: Validate = %v, want %v mentioning %q", c.name, err, c.want, c.text)
		}
		if _, err := Verify(Trust{Keys: []PublicKey{pub}}, "prod", State{}, resign(t, mustJSON(p), s), testNow); !errors.Is(err, c.want) {
			t.Errorf("%s: Verify of a signed copy = %v", c.name, err)
		}
	}
	if err := classPayload().Validate(); err != nil {
		t.Fatalf("systems alone: %v", err)
	}
}

// TestEnvelopeStrict: the envelope has one reading: no duplicate or
// case-variant keys, and base64 in exactly the form publishers write.
func TestEnvelopeStrict(t *testing.T) {
	s, pub := newKey(t, "k")
	trust := Trust{Keys: []PublicKey{pub}}
	p := payload(3)
	p.Message = "???>>>" // base64 of this payload has '+' or '/' somewhere
	raw := mustJSON(p)
	sig := s.sign(t, pae(PayloadType, raw))
	std, url := base64.StdEncoding.EncodeToString(raw), base64.URLEncoding.EncodeToString(raw)
	if std == url {
		t.Fatal("fixture: URL-safe and standard base64 are equal, the URL-safe case would prove nothing")
	}
	sigB64 := base64.StdEncoding.EncodeToString(sig) // 64 bytes: ends in "=="
	env := func(payloadKV, sigsKV string) string {
		return `{"payloadType":"` + PayloadType + `",` + payloadKV + `,` + sigsKV + `}`
	}
	sigs := func(sig string) string { return `"signatures":[{"keyid":"k","sig":"` + sig + `"}]` }
	good := env(`"payload":"`+std+`"`, sigs(sigB64))
	if _, err := CheckSigned(trust, "prod", []byte(good)); err != nil {
		t.Fatalf("good envelope: %v", err)
	}
	evil := base64.StdEncoding.EncodeToString(mustJSON(payload(9)))
	lastBit := sigB64[:len(sigB64)-3] + string(sigB64[len(sigB64)-3]+1) + "=="
	for name, body := range map[string]string{
		"duplicate payload, signed one last": env(`"payload":"`+evil+`","payload":"`+std+`"`, sigs(sigB64)),
		"case-variant payload key":           env(`"Payload":"`+std+`"`, sigs(sigB64)),
		"duplicate signatures key":           env(`"payload":"`+std+`"`, sigs(sigB64)+`,`+sigs(sigB64)),
		"duplicate keyid in a signature":     env(`"payload":"`+std+`"`, `"signatures":[{"keyid":"x","keyid":"k","sig":"`+sigB64+`"}]`),
		"unknown key":                        env(`"payload":"`+std+`"`, sigs(sigB64)+`,"cert":"x"`),
		"trailing data":                      good + "]",
		"invalid UTF-8":                      env(`"payload":"`+std+`"`, "\"signatures\":[{\"keyid\":\"k\xff\",\"sig\":\""+sigB64+"\"}]"),
		"URL-safe payload":                   env(`"payload":"`+url+`"`, sigs(sigB64)),
		"payload with a line break":          env(`"payload":"`+std[:8]+`\n`+std[8:]+`"`, sigs(sigB64)),
		"payload with CRLF":                  env(`"payload":"`+std[:8]+`\r\n`+std[8:]+`"`, sigs(sigB64)),
		"payload with a space":               env(`"payload":"`+std[:8]+` `+std[8:]+`"`, sigs(sigB64)),
		"signature without padding":          env(`"payload":"`+std+`"`, sigs(strings.TrimRight(sigB64, "="))),
		"signature with a line break":        env(`"payload":"`+std+`"`, sigs(sigB64[:4]+`\n`+sigB64[4:])),
		"signature with padding bits set":    env(`"payload":"`+std+`"`, sigs(lastBit)),
	} {
		t.Run(name, func(t *testing.T) {
			_, err := CheckSigned(trust, "prod", []byte(body))
			t.Log(err)
			if !errors.Is(err, ErrMalformed) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("CheckSigned: %v, want one-line ErrMalformed", err)
			}
		})
	}
	// The padding-bits case must decode to the same bytes under the
	// lenient decoder, or it tests nothing.
	if b, err := base64.StdEncoding.DecodeString(lastBit); err != nil || !bytes.Equal(b, sig) {
		t.Fatalf("fixture: %q does not decode to the signature leniently (%v)", lastBit, err)
	}
}
