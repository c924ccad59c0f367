package status

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	ssldsse "github.com/secure-systems-lab/go-securesystemslib/dsse"
)

func paeOf(p []byte) []byte { return ssldsse.PAE(PayloadType, p) }

func testKey(seed byte) ed25519.PrivateKey {
	return ed25519.NewKeyFromSeed(bytes.Repeat([]byte{seed}, ed25519.SeedSize))
}

func sampleStatus(id string) Status {
	at := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	return Status{DeviceID: id, Channel: "prod", State: UpToDate, Revision: 3, StorePath: "/nix/store/x",
		CheckedAt: at, ChangedAt: at.Add(-time.Hour), AgentVersion: "1.0", HeartbeatSeconds: 28800}
}

func TestSignOpen(t *testing.T) {
	k := testKey(1)
	blob, err := Sign(sampleStatus("kiosk-1"), k)
	if err != nil {
		t.Fatal(err)
	}
	s, err := Open("kiosk-1", blob)
	if err != nil {
		t.Fatal(err)
	}
	if !SameKey(s.Key, k.Public().(ed25519.PublicKey)) || !s.SignedAt.Equal(sampleStatus("").CheckedAt) || s.Status.Revision != 3 || len(s.Digest) != 64 {
		t.Fatalf("opened %+v", s)
	}
	if again, _ := Sign(sampleStatus("kiosk-1"), k); !bytes.Equal(again, blob) {
		t.Fatal("the same status signed twice gave different bytes; ed25519 is deterministic")
	}
	// An unsigned blob (an agent that does not sign) opens without a key.
	plain, _ := json.Marshal(sampleStatus("kiosk-1"))
	if u, err := Open("kiosk-1", plain); err != nil || u.Key != nil || !u.SignedAt.IsZero() {
		t.Fatalf("unsigned blob: %+v, %v", u, err)
	}
}

// envelope re-marshals blob's envelope after edit.
func envelope(t *testing.T, blob []byte, edit func(m map[string]any)) string {
	var m map[string]any
	if err := json.Unmarshal(blob, &m); err != nil {
		t.Fatal(err)
	}
	edit(m)
	out, _ := json.Marshal(m)
	return string(out)
}

// TestSignedAtTheCaps: a status with every text field at the cap the
// agent keeps (1024 bytes), all of it characters JSON might escape, still
// signs into a blob readers accept.
func TestSignedAtTheCaps(t *testing.T) {
	st := sampleStatus("kiosk-1")
	long := strings.Repeat("<&>", 1024/3)
	st.LastError, st.Note, st.Cleanup, st.StorePath, st.BootedStorePath, st.AgentVersion, st.Class = long, long, long, long, long, long, long
	blob, err := Sign(st, testKey(1))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Open("kiosk-1", blob); err != nil {
		t.Fatalf("%d bytes: %v", len(blob), err)
	}
}

func TestOpenRefuses(t *testing.T) {
	k := testKey(1)
	blob, _ := Sign(sampleStatus("kiosk-1"), k)
	payloadOf := func(st Status) string {
		b, _ := json.Marshal(st)
		return base64.StdEncoding.EncodeToString(b)
	}
	other := sampleStatus("kiosk-1")
	other.State = RolledBack
	noTime := sampleStatus("kiosk-1")
	noTime.CheckedAt = time.Time{}
	noTimeBlob := func() []byte {
		st := noTime
		st.DeviceKey = EncodeKey(k.Public().(ed25519.PublicKey))
		p, _ := json.Marshal(st)
		env := map[string]any{"payloadType": PayloadType, "payload": base64.StdEncoding.EncodeToString(p),
			"signatures": []map[string]string{{"keyid": "x", "sig": base64.StdEncoding.EncodeToString(ed25519.Sign(k, paeOf(p)))}}}
		b, _ := json.Marshal(env)
		return b
	}()
	cases := []struct {
		name, id, body string
		want           error
	}{
		{"other device's key", "kiosk-2", string(blob), ErrInvalid},
		{"payload swapped", "kiosk-1", envelope(t, blob, func(m map[string]any) { m["payload"] = payloadOf(other) }), ErrBadSignature},
		{"key swapped", "kiosk-1", envelope(t, blob, func(m map[string]any) {
			st := sampleStatus("kiosk-1")
			st.DeviceKey = EncodeKey(testKey(2).Public().(ed25519.PublicKey))
			b, _ := json.Marshal(st)
			m["payload"] = base64.StdEncoding.EncodeToString(b)
		}), ErrBadSignature},
		{"no key", "kiosk-1", envelope(t, blob, func(m map[string]any) { m["payload"] = payloadOf(sampleStatus("kiosk-1")) }), ErrBadSignature},
		{"small-order key", "kiosk-1", envelope(t, blob, func(m map[string]any) {
			st := sampleStatus("kiosk-1")
			st.DeviceKey = KeyPrefix + base64.StdEncoding.EncodeToString(append([]byte{1}, make([]byte, 31)...))
			b, _ := json.Marshal(st)
			m["payload"] = base64.StdEncoding.EncodeToString(b)
		}), ErrBadSignature},
		{"no signatures", "kiosk-1", envelope(t, blob, func(m map[string]any) { m["signatures"] = []any{} }), ErrBadSignature},
		{"two signatures", "kiosk-1", envelope(t, blob, func(m map[string]any) {
			s := m["signatures"].([]any)
			m["signatures"] = append(s, s[0])
		}), ErrBadSignature},
		{"signature not base64", "kiosk-1", envelope(t, blob, func(m map[string]any) {
			m["signatures"] = []map[string]string{{"keyid": "x", "sig": "!!"}}
		}), ErrBadSignature},
		{"manifest payload type", "kiosk-1", envelope(t, blob, func(m map[string]any) { m["payloadType"] = "application/vnd.nix-ota.manifest.v1+json" }), ErrInvalid},
		{"url-safe base64 payload", "kiosk-1", envelope(t, blob, func(m map[string]any) {
			m["payload"] = strings.NewReplacer("+", "-", "/", "_").Replace(m["payload"].(string)) + "\n"
		}), ErrInvalid},
		{"signed without time", "kiosk-1", string(noTimeBlob), ErrInvalid},
		{"oversized", "kiosk-1", string(blob) + strings.Repeat(" ", MaxSize), ErrInvalid},
	}
	for _, c := range cases {
		if _, err := Open(c.id, []byte(c.body)); !errors.Is(err, c.want) {
			t.Errorf("%s: got %v, want %v", c.name, err, c.want)
		} else if strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: error is more than one line: %q", c.name, err)
		}
	}
}

func TestParseKey(t *testing.T) {
	pub := testKey(3).Public().(ed25519.PublicKey)
	if k, err := ParseKey(EncodeKey(pub)); err != nil || !SameKey(k, pub) {
		t.Fatalf("round trip: %v", err)
	}
	for _, bad := range []string{"", "ed25519:", "ssh-ed25519 AAAA", KeyPrefix + "AAAA", KeyPrefix + base64.StdEncoding.EncodeToString(make([]byte, 32)),
		KeyPrefix + base64.RawStdEncoding.EncodeToString(pub), " " + EncodeKey(pub)} {
		if _, err := ParseKey(bad); err == nil {
			t.Errorf("ParseKey(%q) accepted", bad)
		}
	}
	if fp := Fingerprint(pub); !strings.HasPrefix(fp, "SHA256:") || len(fp) != 7+43 {
		t.Fatalf("fingerprint %q", fp)
	}
}

func FuzzOpen(f *testing.F) {
	blob, _ := Sign(sampleStatus("kiosk-1"), testKey(1))
	plain, _ := json.Marshal(sampleStatus("kiosk-1"))
	f.Add(blob)
	f.Add(plain)
	f.Add([]byte(`{"payloadType":"` + PayloadType + `","payload":"","signatures":[]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := Open("kiosk-1", b)
		if err != nil {
			return
		}
		if s.Status.DeviceID != "kiosk-1" {
			t.Fatalf("opened a blob of %q under kiosk-1", s.Status.DeviceID)
		}
		if s.Key != nil {
			// A signed blob that opens must verify under the key it names.
			again, err := Open("kiosk-1", b)
			if err != nil || !SameKey(again.Key, s.Key) || again.Digest != s.Digest {
				t.Fatalf("a blob that opened does not open the same way again: %v", err)
			}
		}
	})
}
