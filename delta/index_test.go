package delta_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/nix-ota/nix-ota/delta"
)

const (
	ixTarget = "/nix/store/0c8hwb3a6gg0xf3w7kbnkl9wf1b2ng0k-app-1.1"
	ixBase   = "/nix/store/1x0dv4rvqvjxk4x4m0i1zxypkvr2jg0a-app-1.0"
	ixHash   = "sha256:1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s"
	ixDelta  = "delta/0m2wyr0dmxvdavc8a37qig0xnp8hkp8h659hbddl0rihqwcwfrc1.ndelta"
)

func goodIndex() map[string]any {
	return map[string]any{"storePath": ixTarget, "narHash": ixHash, "narSize": 1 << 20, "base": ixBase, "baseNarHash": ixHash,
		"baseNarSize": 1 << 20, "delta": ixDelta, "deltaSize": 300, "fullSize": 900000}
}

func indexJSON(t *testing.T, edit func(map[string]any)) []byte {
	m := goodIndex()
	if edit != nil {
		edit(m)
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestParseIndexRefuses: an index is untrusted bytes from the bucket;
// anything but an exact index for the path asked for is refused, with a
// reason.
func TestParseIndexRefuses(t *testing.T) {
	if ix, err := delta.ParseIndex(ixTarget, indexJSON(t, nil)); err != nil || ix.Base != ixBase || ix.DeltaSize != 300 {
		t.Fatalf("a good index: %+v, %v", ix, err)
	}
	set := func(k string, v any) func(map[string]any) { return func(m map[string]any) { m[k] = v } }
	for _, c := range []struct {
		name string
		body []byte
		why  string
	}{
		{"empty", nil, "EOF"},
		{"not JSON", []byte("<html>"), "invalid character"},
		{"oversized", []byte(`{"storePath":"` + strings.Repeat("a", 5000) + `"}`), "over 4096"},
		{"unknown field", indexJSON(t, set("signature", "x")), "unknown field"},
		{"trailing data", append(indexJSON(t, nil), []byte(` {}`)...), "data after the object"},
		{"another path", indexJSON(t, set("storePath", ixBase)), "it describes"},
		{"itself as base", indexJSON(t, set("base", ixTarget)), "is not another store path"},
		{"base outside the store", indexJSON(t, set("base", "/etc/shadow")), "is not another store path"},
		{"base with dots", indexJSON(t, set("base", "/nix/store/1x0dv4rvqvjxk4x4m0i1zxypkvr2jg0a-../../etc")), "is not another store path"},
		{"base hash not base32", indexJSON(t, set("base", "/nix/store/1x0dv4rvqvjxk4x4m0i1zxypkvr2jg0e-app-1.0")), "is not another store path"},
		{"SRI hash", indexJSON(t, set("narHash", "sha256-AAAA")), "NAR hashes"},
		{"md5 hash", indexJSON(t, set("baseNarHash", "md5:abc")), "NAR hashes"},
		{"small NAR", indexJSON(t, set("narSize", 100)), "out of range"},
		{"zero base size", indexJSON(t, set("baseNarSize", 0)), "out of range"},
		{"negative delta size", indexJSON(t, set("deltaSize", -1)), "out of range"},
		{"delta over the NAR", indexJSON(t, set("deltaSize", 3<<20)), "out of range"},
		{"delta over half the NAR", indexJSON(t, set("deltaSize", 1<<19+4<<10+1)), "out of range"},
		{"zero full size", indexJSON(t, set("fullSize", 0)), "out of range"},
		{"delta key escaping", indexJSON(t, set("delta", "../nar/x.nar.zst")), "is not delta/<sha256>.ndelta"},
		{"delta key short", indexJSON(t, set("delta", "delta/abc.ndelta")), "is not delta/<sha256>.ndelta"},
		{"wrong type", indexJSON(t, set("narSize", "big")), "cannot unmarshal"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := delta.ParseIndex(ixTarget, c.body)
			if !errors.Is(err, delta.ErrIndex) || !strings.Contains(err.Error(), c.why) {
				t.Fatalf("got %v, want ErrIndex saying %q", err, c.why)
			}
		})
	}
}

// TestIndexKey: keys are named by the store hash, and only store paths
// have one.
func TestIndexKey(t *testing.T) {
	if k, err := delta.IndexKey(ixTarget); err != nil || k != "0c8hwb3a6gg0xf3w7kbnkl9wf1b2ng0k.delta" {
		t.Fatalf("IndexKey = %q, %v", k, err)
	}
	for _, bad := range []string{"", "/nix/store/", "/nix/store/short-x", "/tmp/0c8hwb3a6gg0xf3w7kbnkl9wf1b2ng0k-app", "/nix/store/0c8hwb3a6gg0xf3w7kbnkl9wf1b2ng0k-a/b"} {
		if _, err := delta.IndexKey(bad); err == nil {
			t.Errorf("IndexKey(%q) accepted", bad)
		}
	}
	if h, ok := delta.ObjectHash(ixDelta); !ok || delta.ObjectKey(h) != ixDelta {
		t.Fatalf("ObjectHash(%q) = %q, %v", ixDelta, h, ok)
	}
}

func FuzzParseIndex(f *testing.F) {
	f.Add([]byte(`{}`))
	b, _ := json.Marshal(goodIndex())
	f.Add(b)
	f.Fuzz(func(t *testing.T, b []byte) {
		ix, err := delta.ParseIndex(ixTarget, b)
		if err != nil {
			if !errors.Is(err, delta.ErrIndex) {
				t.Fatalf("error without ErrIndex: %v", err)
			}
			return
		}
		if ix.StorePath != ixTarget || ix.Base == ixTarget || ix.DeltaSize <= 0 || uint64(ix.DeltaSize) > ix.NarSize/2+4<<10 {
			t.Fatalf("accepted %+v", ix)
		}
		if _, ok := delta.ObjectHash(ix.Delta); !ok {
			t.Fatalf("accepted delta key %q", ix.Delta)
		}
	})
}
