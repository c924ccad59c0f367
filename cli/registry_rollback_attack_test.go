package cli_test

import (
	"crypto/ed25519"
	"testing"
	"time"

	"github.com/nix-ota/nix-ota/bucket"
	"github.com/nix-ota/nix-ota/internal/testenv"
	"github.com/nix-ota/nix-ota/status"
)

// TestAttackRegistryRollbackResigned: a bucket writer puts back an older,
// validly signed registry (from before a revoke). Versions are separate
// create-only objects and everyone takes the newest, so a publisher
// without a snapshot (CI, a new laptop) still builds on the revoke.
// (Deleting every newer version is beyond this: docs/security.md, Known
// limits.)
func TestAttackRegistryRollbackResigned(t *testing.T) {
	fx := fixtures(t)["file"](t)
	url, s := fx.url, fx.store
	key, pub := keygen(t, "fleet-1")
	enc := func(seed byte) string {
		return status.EncodeKey(testenv.DeviceKey(seed).Public().(ed25519.PublicKey))
	}
	laptop := []string{"NIX_OTA_CACHE_DIR=" + t.TempDir()}
	ci := []string{"NIX_OTA_CACHE_DIR=off"}
	add := func(env []string, id string, seed byte) {
		mustRun(t, env, "device", "add", id, "--device-key", enc(seed), "--bucket", url, "--key", key, "--no-dashboard")
	}
	add(laptop, "kiosk-1", 1)
	add(laptop, "kiosk-2", 2)
	old := getObj(t, s, bucket.RegistryVersionKey(2)) // a bucket writer keeps version 2
	mustRun(t, laptop, "device", "revoke", "kiosk-2", "--bucket", url, "--key", key, "--no-dashboard")

	at := time.Now().Add(-time.Minute)
	for i, id := range []string{"kiosk-1", "kiosk-2"} {
		testenv.PutSigned(t, s, testenv.DeviceKey(byte(i+1)), status.Status{DeviceID: id, Channel: "prod", State: status.UpToDate, AgentVersion: "x", ChangedAt: at}, at)
	}
	statusOf(t, laptop, url, pub) // the laptop reader remembers version 3

	if _, err := bucket.PutBytes(ctx, s, bucket.RegistryVersionKey(2), old, bucket.JSONPut()); err != nil {
		t.Fatal(err)
	}
	add(ci, "kiosk-3", 3) // CI adds a device on top of what it finds
	add(ci, "kiosk-4", 4)
	f := statusOf(t, laptop, url, pub)
	t.Logf("laptop reader: registry %+v", f.Registry)
	for _, d := range f.Devices {
		if d.ID == "kiosk-2" && d.Verified {
			t.Errorf("revoked kiosk-2 counts again: the publisher re-signed a rolled-back registry (now version %d)", f.Registry.Version)
		}
	}
}
