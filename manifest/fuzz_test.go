package manifest

import (
	"errors"
	"regexp"
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

// FuzzValidateName holds the hand-written name check to the grammar of
// DESIGN.md §2, written as a regular expression here.
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
