package bucket

import (
	"strings"
	"testing"
	"time"
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

func TestParseRegistryVersionKey(t *testing.T) {
	for k, want := range map[string]uint64{"device-registry/1.json": 1, "device-registry/420.json": 420} {
		if got, ok := ParseRegistryVersionKey(k); !ok || got != want || RegistryVersionKey(got) != k {
			t.Errorf("%s: %d %v", k, got, ok)
		}
	}
	for _, k := range []string{"device-registry.json", "device-registry/0.json", "device-registry/01.json", "device-registry/x.json", "device-registry/.json",
		"device-registry/1.json.tmp", "device-registry/1/2.json", "device-registry/18446744073709551616.json", "devices/1.json"} {
		if v, ok := ParseRegistryVersionKey(k); ok {
			t.Errorf("%s parsed as version %d", k, v)
		}
	}
}

// FuzzParseRegistryVersionKey: keys come from bucket listings; a parsed
// version must round-trip to the same key.
func FuzzParseRegistryVersionKey(f *testing.F) {
	f.Add("device-registry/7.json")
	f.Add("device-registry/007.json")
	f.Fuzz(func(t *testing.T, key string) {
		if v, ok := ParseRegistryVersionKey(key); ok && RegistryVersionKey(v) != key {
			t.Fatalf("%q parsed as %d, which is key %q", key, v, RegistryVersionKey(v))
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

func TestParseCheckinKey(t *testing.T) {
	at := time.Date(2026, 11, 26, 9, 7, 31, 0, time.FixedZone("x", 3600))
	key := CheckinKey("kiosk-1", at)
	if key != "devices/202611260805/kiosk-1.json" {
		t.Fatalf("CheckinKey = %s", key)
	}
	id, w, ok := ParseCheckinKey(key)
	if !ok || id != "kiosk-1" || !w.Equal(time.Date(2026, 11, 26, 8, 5, 0, 0, time.UTC)) {
		t.Fatalf("ParseCheckinKey(%s) = %q %v %v", key, id, w, ok)
	}
	for _, bad := range []string{
		"devices/kiosk-1/status.json",         // the old layout
		"devices/202611260806/kiosk-1.json",   // not a window start
		"devices/202613260805/kiosk-1.json",   // no month 13
		"devices/20261126080/kiosk-1.json",    // 11 digits
		"devices/2026112608050/kiosk-1.json",  // 13 digits
		"devices/+02611260805/kiosk-1.json",   // sign
		"devices/202611260805/kiosk-1",        // no .json
		"devices/202611260805/.json",          // no id
		"devices/202611260805/x/kiosk-1.json", // nested
		"devices/202611260805",                // a window alone
		"channels/202611260805/kiosk-1.json",  // another prefix
		"devices/２０２６11260805/kiosk-1.json",   // non-ASCII digits
	} {
		if id, _, ok := ParseCheckinKey(bad); ok {
			t.Errorf("ParseCheckinKey(%q) accepted, device %q", bad, id)
		}
	}
	if from := CheckinsFrom(at); !(key > from) || CheckinKey("a", at.Add(-CheckinWindow)) > from {
		t.Errorf("CheckinsFrom = %s: the window's keys must sort after it, the previous window's before", from)
	}
}

func FuzzParseCheckinKey(f *testing.F) {
	f.Add("devices/202611260805/kiosk-1.json")
	f.Add("devices/kiosk-1/status.json")
	f.Fuzz(func(t *testing.T, key string) {
		id, w, ok := ParseCheckinKey(key)
		if !ok {
			return
		}
		if again := CheckinKey(id, w); again != key {
			t.Fatalf("%q parses to %q at %v, which is written to %q", key, id, w, again)
		}
	})
}
