package manifest

import (
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
