package bucket

import (
	"strings"
	"testing"
)

func TestParseRevisionKey(t *testing.T) {
	good := map[string]uint64{"channels/prod/1.json": 1, "channels/prod/42.json": 42, "channels/prod/18446744073709551615.json": 1<<64 - 1}
	for k, want := range good {
		if got, ok := ParseRevisionKey("prod", k); !ok || got != want {
			t.Errorf("%s: %d %v", k, got, ok)
		}
	}
	for _, k := range []string{"channels/prod.json", "channels/prod/0.json", "channels/prod/01.json", "channels/prod/-1.json", "channels/prod/1.json.tmp",
		"channels/prod/x.json", "channels/prod/.json", "channels/prod2/1.json", "channels/prod/1/2.json", "channels/prod/18446744073709551616.json"} {
		if r, ok := ParseRevisionKey("prod", k); ok {
			t.Errorf("%s parsed as revision %d", k, r)
		}
	}
}

// FuzzParseRevisionKey: keys come from bucket listings, which the bucket
// controls; a parsed revision must round-trip to the same key.
func FuzzParseRevisionKey(f *testing.F) {
	f.Add("channels/prod/7.json")
	f.Add("channels/prod/007.json")
	f.Fuzz(func(t *testing.T, key string) {
		if rev, ok := ParseRevisionKey("prod", key); ok && RevisionKey("prod", rev) != key {
			t.Fatalf("%q parsed as %d, which is key %q", key, rev, RevisionKey("prod", rev))
		}
	})
}

func TestValidateKey(t *testing.T) {
	for _, k := range []string{"a", "channels/prod.json", "cache/nar/abc.nar.xz", strings.Repeat("a", 1024)} {
		if err := ValidateKey(k); err != nil {
			t.Errorf("%q: %v", k, err)
		}
	}
	for _, k := range []string{"", "/a", "a/", "a//b", "a/./b", "a/../b", "a\\b", "a\x00", "a\nb", ".nix-ota-lock", strings.Repeat("a", 1025)} {
		if err := ValidateKey(k); err == nil {
			t.Errorf("%q accepted", k)
		}
	}
}
