package manifest

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// FuzzVerify feeds arbitrary bytes to the device's acceptance check. It
// must never panic, and anything it accepts must satisfy every rule.
func FuzzVerify(f *testing.F) {
	s, pub := newKey(f, "fuzz")
	good := mustSign(f, payload(3), s)
	f.Add(good)
	f.Add([]byte(`{"payloadType":"application/vnd.nix-ota.manifest.v1+json","payload":"e30=","signatures":[{"keyid":"fuzz","sig":"AAAA"}]}`))
	f.Add([]byte(`{}`))
	f.Add([]byte(`null`))
	trust := Trust{Keys: []PublicKey{pub}}
	f.Fuzz(func(t *testing.T, body []byte) {
		v, err := Verify(trust, "prod", State{Revision: 2}, body, testNow)
		if err != nil {
			return
		}
		p := v.Payload
		if p.Channel != "prod" || p.Revision < 2 || !testNow.Before(p.ExpiresAt) {
			t.Fatalf("accepted a manifest that breaks a rule: %+v", p)
		}
		if err := p.Validate(); err != nil {
			t.Fatalf("accepted an invalid payload: %v", err)
		}
	})
}

// FuzzDecodeUnverified covers the publisher-side decoder used on bucket
// contents (history listings, next-revision lookups).
func FuzzDecodeUnverified(f *testing.F) {
	s, _ := newKey(f, "fuzz")
	good := mustSign(f, payload(3), s)
	f.Add(good)
	f.Add([]byte(`{"payloadType":"x"}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		_, _, _ = DecodeUnverified(body)
	})
}

// FuzzParsePublicKey covers key strings from device configuration.
func FuzzParsePublicKey(f *testing.F) {
	f.Add("k:11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=")
	f.Add("a:")
	f.Fuzz(func(t *testing.T, s string) {
		k, err := ParsePublicKey(s)
		if err == nil {
			if _, err := ParsePublicKey(k.String()); err != nil {
				t.Fatalf("round trip of %q: %v", s, err)
			}
		}
	})
}

// FuzzValidateName holds the hand-written name check to the name grammar
// (docs/design.md, Names), written as a regular expression here.
func FuzzValidateName(f *testing.F) {
	grammar := regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)
	for _, s := range []string{"prod", "a", "-x", ".x", "a.b_c-d", strings.Repeat("x", 64), strings.Repeat("x", 65), "ü", "a\x00", "a/b", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		err := ValidateName("channel", s)
		if (err == nil) != grammar.MatchString(s) {
			t.Fatalf("ValidateName(%q) = %v, grammar match %v", s, err, grammar.MatchString(s))
		}
		if err != nil && !errors.Is(err, ErrInvalidName) {
			t.Fatalf("wrong error type %v", err)
		}
	})
}

// FuzzDecodePayload holds the strict payload decoder to its promise:
// whatever it accepts has no duplicate or case-variant key at any level
// (checked here by a separate walk over json.RawMessage values), and
// re-encodes to bytes that decode to the same payload.
func FuzzDecodePayload(f *testing.F) {
	good := string(mustJSON(payload(3)))
	classes := string(mustJSON(classPayload()))
	indented, _ := json.MarshalIndent(payload(3), "", "  ")
	for _, s := range []string{
		good, classes, string(indented), `{}`, `{"systems":{}}`, `{"rollout":null,"substituters":null}`,
		strings.Replace(good, `"revision":3`, `"revision":3,"revision":4`, 1),
		strings.Replace(good, `"revision":3`, `"Revision":3`, 1),
		strings.Replace(good, `"schema":1`, `"ſchema":1`, 1),
		strings.Replace(good, `"schema":1`, `"\u0073chema":1`, 1),
		strings.Replace(classes, `"x86":`, `"rpi4":"x","x86":`, 1),
		strings.Replace(good, `"percent":100`, `"percent":100,"PERCENT":0`, 1),
		strings.Replace(good, `"expiresAt":"2026-12-25T12:00:00Z"`, `"expiresAt":"2026-12-25T13:00:00+01:00"`, 1),
		good + "}", `{"message":[[[[[[[[[]]]]]]]]]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := decodePayload(b)
		if err != nil {
			return
		}
		if why := ambiguousKeys(b, payloadFields); why != "" {
			t.Fatalf("accepted %q: %s", b, why)
		}
		again, err := json.Marshal(p)
		if err != nil {
			t.Fatalf("accepted %q but cannot re-encode it: %v", b, err)
		}
		q, err := decodePayload(again)
		if err != nil {
			t.Fatalf("re-encoding %q of accepted %q is refused: %v", again, b, err)
		}
		if !samePayload(p, q) {
			t.Fatalf("accepted %q decodes to %+v, its re-encoding to %+v", b, p, q)
		}
	})
}

// payloadFields is the payload's JSON schema written out by hand (not
// derived from the struct as the decoder does): object keys and, for
// nested objects, their own keys; nil means "keys are data" (systems).
var payloadFields = map[string]map[string]any{
	"": {"schema": nil, "channel": nil, "revision": nil, "storePath": nil, "systems": "map", "substituters": nil,
		"publishedAt": nil, "expiresAt": nil, "rollout": "rollout", "switch": nil, "message": nil, "publisher": nil},
	"rollout": {"percent": nil, "salt": nil},
}

// ambiguousKeys walks a JSON document one level at a time with
// json.RawMessage and reports a duplicate key anywhere, or a key of a
// schema object that equals a field name only up to case.
func ambiguousKeys(doc []byte, schema map[string]map[string]any) string {
	var walk func(raw json.RawMessage, fields map[string]any) string
	walk = func(raw json.RawMessage, fields map[string]any) string {
		raw = bytes.TrimSpace(raw)
		if len(raw) == 0 || raw[0] != '{' && raw[0] != '[' {
			return ""
		}
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.Token() // '{' or '['
		seen := map[string]bool{}
		for dec.More() {
			var key string
			if raw[0] == '{' {
				tok, _ := dec.Token()
				key, _ = tok.(string)
				if seen[key] {
					return "duplicate key " + strconv.Quote(key)
				}
				seen[key] = true
				for name := range fields {
					if name != key && strings.EqualFold(name, key) {
						return "key " + strconv.Quote(key) + " is a case variant of " + name
					}
				}
			}
			var v json.RawMessage
			if err := dec.Decode(&v); err != nil {
				return ""
			}
			var sub map[string]any
			if kind, ok := fields[key].(string); ok && kind != "map" {
				sub = schema[kind]
			}
			if why := walk(v, sub); why != "" {
				return why
			}
		}
		return ""
	}
	return walk(doc, schema[""])
}

// samePayload compares two decoded payloads: times as instants, the rest
// field by field, and their encodings byte for byte.
func samePayload(p, q *Payload) bool {
	a, b := *p, *q
	if !a.PublishedAt.Equal(b.PublishedAt) || !a.ExpiresAt.Equal(b.ExpiresAt) {
		return false
	}
	ja, jb := mustJSON(a), mustJSON(b)
	a.PublishedAt, a.ExpiresAt = b.PublishedAt, b.ExpiresAt // equal instants, compared above
	return reflect.DeepEqual(a, b) && bytes.Equal(ja, jb)
}

// FuzzValidateSubstituter holds the substituter policy to what Nix will
// do with an accepted URL: it parses with net/url, has an allowed scheme,
// no userinfo, no fragment, and, decoded the way Nix decodes store URL
// queries, only the scheme's allowed parameters and none of the words that
// change what Nix trusts or runs.
func FuzzValidateSubstituter(f *testing.F) {
	for _, c := range substituterCases {
		f.Add(c.url)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if ValidateSubstituter(s) != nil {
			return
		}
		if why := substituterBreaksPolicy(s); why != "" {
			t.Fatalf("accepted %q: %s", s, why)
		}
	})
}
