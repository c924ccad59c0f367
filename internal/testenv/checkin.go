package testenv

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nix-ota/nix-ota/bucket"
	"github.com/nix-ota/nix-ota/manifest"
	"github.com/nix-ota/nix-ota/manifest/signing"
	"github.com/nix-ota/nix-ota/status"
)

// PutCheckin writes a device's check-in blob as the device would at time
// at, and returns its key. On a file:// bucket the object is dated at
// (readers take its modification time as the check-in time); on S3 the
// server dates it now.
func PutCheckin(t testing.TB, s bucket.Store, device string, at time.Time, body []byte) string {
	t.Helper()
	key := bucket.CheckinKey(device, at)
	if _, err := bucket.PutBytes(context.Background(), s, key, body, bucket.JSONPut()); err != nil {
		t.Fatal(err)
	}
	if err := bucket.Touch(s, key, at); err != nil && !errors.Is(err, bucket.ErrUnsupported) {
		t.Fatal(err)
	}
	return key
}

// DeviceKey is a device identity key made from seed, the same for the
// same seed.
func DeviceKey(seed byte) ed25519.PrivateKey {
	return ed25519.NewKeyFromSeed(bytes.Repeat([]byte{seed}, ed25519.SeedSize))
}

// PutSigned writes st as the agent does: signed by key, at st.CheckedAt,
// under that time's check-in window, dated at (where the backend can).
func PutSigned(t testing.TB, s bucket.Store, key ed25519.PrivateKey, st status.Status, at time.Time) string {
	t.Helper()
	if st.CheckedAt.IsZero() {
		st.CheckedAt = at
	}
	blob, err := status.Sign(st, key)
	if err != nil {
		t.Fatal(err)
	}
	k := bucket.CheckinKey(st.DeviceID, st.CheckedAt)
	if _, err := bucket.PutBytes(context.Background(), s, k, blob, bucket.JSONPut()); err != nil {
		t.Fatal(err)
	}
	if err := bucket.Touch(s, k, at); err != nil && !errors.Is(err, bucket.ErrUnsupported) {
		t.Fatal(err)
	}
	return k
}

// Registered is one registry entry: a device id and its key.
func Registered(id string, key ed25519.PrivateKey) manifest.DeviceEntry {
	return manifest.DeviceEntry{ID: id, Key: status.EncodeKey(key.Public().(ed25519.PublicKey)), At: time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)}
}

// WriteRegistry signs a registry of version with entries (sorted here)
// and writes it as that version (overwriting it, which nix-ota never
// does).
func WriteRegistry(t testing.TB, s bucket.Store, signer signing.Key, version uint64, entries ...manifest.DeviceEntry) []byte {
	t.Helper()
	slices.SortFunc(entries, func(a, b manifest.DeviceEntry) int { return strings.Compare(a.ID, b.ID) })
	r := &manifest.Registry{Schema: manifest.Schema, Version: version, IssuedAt: time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC), Devices: entries}
	body, err := signing.SignRegistry(context.Background(), r, signer)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bucket.PutBytes(context.Background(), s, bucket.RegistryVersionKey(version), body, bucket.JSONPut()); err != nil {
		t.Fatal(err)
	}
	return body
}

// ClearRegistry deletes every version of the device registry.
func ClearRegistry(t testing.TB, s bucket.Store) {
	t.Helper()
	var keys []string
	if err := s.List(context.Background(), bucket.RegistryPrefix, func(i bucket.Info) error { keys = append(keys, i.Key); return nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := bucket.DeleteAll(context.Background(), s, keys); err != nil {
		t.Fatal(err)
	}
}
