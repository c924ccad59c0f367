package cli_test

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nix-ota/nix-ota/bucket"
	"github.com/nix-ota/nix-ota/internal/testenv"
	"github.com/nix-ota/nix-ota/status"
)

// TestAttackRolloutSuppressedFailure: real MinIO, the fleet's shared
// check-in credential. kiosk-1 is the attacker's own (approved) device
// and reports the new system done; kiosk-2 genuinely rolls back; the
// attacker overwrites kiosk-2's check-in (same key) with junk. The
// rollout must not complete (kiosk-2 is contested: unproven).
func TestAttackRolloutSuppressedFailure(t *testing.T) {
	m := testenv.SharedMinIO(t)
	name, url := m.NewBucket(t)
	env := m.Env()
	mustRun(t, env, "init", "--bucket", url)
	shared := checkinStore(t, m, name, url)
	key, pub := keygen(t, "fleet-1")
	k1, k2, junkKey := testenv.DeviceKey(21), testenv.DeviceKey(22), testenv.DeviceKey(66)
	a, s := storePath("system-a"), storePath("system-s")
	checkin := func(signer ed25519.PrivateKey, st status.Status) string {
		t.Helper()
		st.CheckedAt, st.Channel, st.AgentVersion = time.Now(), "prod", "test"
		blob, _ := status.Sign(st, signer)
		k := bucket.CheckinKey(st.DeviceID, st.CheckedAt)
		if _, err := bucket.PutBytes(context.Background(), shared, k, blob, bucket.JSONPut()); err != nil {
			t.Fatal(err)
		}
		return k
	}
	mustRun(t, env, "publish", "--skip-closure-check", "--no-dashboard", "--bucket", url, "--key", key, "--channel", "prod", "--store-path", a)
	checkin(k1, status.Status{DeviceID: "kiosk-1", State: status.UpToDate, Revision: 1, StorePath: a})
	checkin(k2, status.Status{DeviceID: "kiosk-2", State: status.UpToDate, Revision: 1, StorePath: a})
	mustRun(t, env, "device", "approve", "--all-pending", "--bucket", url, "--key", key)
	statusOf(t, env, url, pub) // a reader with memory accepts both

	mustRun(t, env, "publish", "--skip-closure-check", "--no-dashboard", "--bucket", url, "--key", key, "--channel", "prod", "--store-path", s,
		"--rollout", "50", "--rollout-salt", cohortSalt([]string{"kiosk-1", "kiosk-2"}, nil, 50))
	time.Sleep(1100 * time.Millisecond)
	checkin(k1, status.Status{DeviceID: "kiosk-1", State: status.UpToDate, Revision: 2, StorePath: s})
	k := checkin(k2, status.Status{DeviceID: "kiosk-2", State: status.RolledBack, Revision: 1, StorePath: a, Attempted: 2, LastError: "health check failed"})
	// The attacker cannot read or list, but writes kiosk-2's current
	// window key over and over; one write is enough here.
	junk, _ := status.Sign(status.Status{DeviceID: "kiosk-2", Channel: "prod", State: status.UpToDate, CheckedAt: time.Now()}, junkKey)
	if _, err := bucket.PutBytes(context.Background(), shared, k, junk, bucket.JSONPut()); err != nil {
		t.Fatal(err)
	}
	r := run(t, env, "rollout", "--bucket", url, "--key", key, "--channel", "prod", "--steps", "50,100", "--wait", "3s", "--interval", "300ms", "--max-failed", "0", "--json")
	var out map[string]any
	_ = json.Unmarshal([]byte(r.stdout), &out)
	t.Logf("rollout exit %d: %v\n%s", r.code, out, r.stderr)
	if out["outcome"] == "complete" {
		t.Errorf("kiosk-2 rolled back, yet the rollout completed at 100%% and recorded the system known good")
	}
	if strings.Contains(r.stderr, "failed") && out["outcome"] == "halted" {
		t.Log("halted as it should")
	}
}
