package manifest

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	ssldsse "github.com/secure-systems-lab/go-securesystemslib/dsse"
)

func deviceKey(seed byte) string {
	return EncodeDeviceKey(ed25519.NewKeyFromSeed(bytes.Repeat([]byte{seed}, 32)).Public().(ed25519.PublicKey))
}

func sampleRegistry(version uint64) *Registry {
	return &Registry{Schema: Schema, Version: version, IssuedAt: testNow, Devices: []DeviceEntry{
		{ID: "kiosk-1", Key: deviceKey(1), At: testNow},
		{ID: "kiosk-2", Key: deviceKey(2), Class: "pi4", At: testNow},
	}}
}

// signedRegistry signs raw payload bytes as a registry with k.
func signedRegistry(t *testing.T, k testKey, raw []byte) []byte {
	t.Helper()
	env := envelopeOf(raw, rawSig{k.Name, k.sign(t, ssldsse.PAE(RegistryType, raw))})
	return bytes.Replace(env, []byte(PayloadType), []byte(RegistryType), 1)
}

func TestCheckRegistry(t *testing.T) {
	k, pub := newKey(t, "publisher")
	trust := Trust{Keys: []PublicKey{pub}}
	raw := mustJSON(sampleRegistry(3))
	body := signedRegistry(t, k, raw)
	v, err := CheckRegistry(trust, body, RegistryState{})
	if err != nil {
		t.Fatal(err)
	}
	if e, ok := v.Lookup("kiosk-2"); !ok || e.Class != "pi4" || v.State.Version != 3 {
		t.Fatalf("lookup: %+v %v", e, ok)
	}
	if _, ok := v.Lookup("kiosk-3"); ok {
		t.Fatal("found an unregistered device")
	}
	if _, err := CheckRegistry(trust, body, v.State); err != nil {
		t.Fatalf("the same registry again: %v", err)
	}
}

// TestCheckRegistryRefuses: what a bucket writer can put in place of the
// registry is refused, with the reason.
func TestCheckRegistryRefuses(t *testing.T) {
	k, pub := newKey(t, "publisher")
	foreign, _ := newKey(t, "publisher") // same name, other key
	trust := Trust{Keys: []PublicKey{pub}}
	raw := mustJSON(sampleRegistry(3))
	good := signedRegistry(t, k, raw)
	swapped := sampleRegistry(3)
	swapped.Devices[0].Key = deviceKey(9) // an attacker's key for kiosk-1
	unsorted := sampleRegistry(3)
	unsorted.Devices[0], unsorted.Devices[1] = unsorted.Devices[1], unsorted.Devices[0]
	dup := sampleRegistry(3)
	dup.Devices[1].ID = "kiosk-1"
	sameKey := sampleRegistry(3)
	sameKey.Devices[1].Key = sameKey.Devices[0].Key
	badKey := sampleRegistry(3)
	badKey.Devices[0].Key = DeviceKeyPrefix + base64.StdEncoding.EncodeToString(append([]byte{1}, make([]byte, 31)...))
	badID := sampleRegistry(3)
	badID.Devices[0].ID = "../kiosk"
	v2 := sampleRegistry(2)
	other3 := sampleRegistry(3)
	other3.Devices = other3.Devices[:1]
	var m map[string]any
	_ = json.Unmarshal(raw, &m)
	m["extra"] = true
	cases := []struct {
		name string
		body []byte
		seen RegistryState
		want error
	}{
		{"unsigned", bytes.Replace(envelopeOf(raw), []byte(PayloadType), []byte(RegistryType), 1), RegistryState{}, ErrSignature},
		{"plain json", raw, RegistryState{}, ErrMalformed},
		{"foreign-signed", signedRegistry(t, foreign, raw), RegistryState{}, ErrSignature},
		{"device key swapped in the bucket", bytes.Replace(good, []byte(base64.StdEncoding.EncodeToString(raw)), []byte(base64.StdEncoding.EncodeToString(mustJSON(swapped))), 1), RegistryState{}, ErrSignature},
		{"manifest signed by the publisher", func() []byte {
			b := signedRegistry(t, k, raw)
			return bytes.Replace(b, []byte(RegistryType), []byte(PayloadType), 1)
		}(), RegistryState{}, ErrPayloadType},
		{"unsorted", signedRegistry(t, k, mustJSON(unsorted)), RegistryState{}, ErrMalformed},
		{"duplicate id", signedRegistry(t, k, mustJSON(dup)), RegistryState{}, ErrMalformed},
		{"one key for two devices", signedRegistry(t, k, mustJSON(sameKey)), RegistryState{}, ErrMalformed},
		{"small-order device key", signedRegistry(t, k, mustJSON(badKey)), RegistryState{}, ErrMalformed},
		{"bad device id", signedRegistry(t, k, mustJSON(badID)), RegistryState{}, ErrMalformed},
		{"unknown field", signedRegistry(t, k, mustJSON(m)), RegistryState{}, ErrMalformed},
		{"duplicate json key", signedRegistry(t, k, bytes.Replace(raw, []byte(`"version":3`), []byte(`"version":3,"version":4`), 1)), RegistryState{}, ErrMalformed},
		{"rolled back", signedRegistry(t, k, mustJSON(v2)), RegistryState{Version: 3}, ErrRollback},
		{"same version, other content", signedRegistry(t, k, mustJSON(other3)), RegistryState{Version: 3, Digest: Digest(raw)}, ErrEquivocation},
	}
	for _, c := range cases {
		_, err := CheckRegistry(trust, c.body, c.seen)
		if !errors.Is(err, c.want) {
			t.Errorf("%s: got %v, want %v", c.name, err, c.want)
		} else if strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: error is more than one line: %q", c.name, err)
		}
	}
}

func FuzzCheckRegistry(f *testing.F) {
	k, pub := newKey(f, "publisher")
	trust := Trust{Keys: []PublicKey{pub}}
	raw := mustJSON(sampleRegistry(3))
	f.Add(raw)
	f.Add([]byte(`{"schema":1,"version":1,"issuedAt":"2026-01-01T00:00:00Z","devices":[]}`))
	f.Fuzz(func(t *testing.T, payload []byte) {
		// Any payload the publisher's key signed must pass Validate and
		// decode the same again, or be refused.
		body := signedRegistry(t, k, payload)
		v, err := CheckRegistry(trust, body, RegistryState{})
		if err != nil {
			return
		}
		if err := v.Validate(); err != nil {
			t.Fatalf("accepted an invalid registry: %v", err)
		}
		if _, err := CheckRegistry(trust, body, v.State); err != nil {
			t.Fatalf("refused on second read: %v", err)
		}
	})
}
