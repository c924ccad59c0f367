package cli_test

import (
	"context"
	"crypto/ed25519"
	"strings"
	"testing"
	"time"

	"github.com/nix-ota/nix-ota/bucket"
	dashboard "github.com/nix-ota/nix-ota/dashboard-static"
	"github.com/nix-ota/nix-ota/internal/testenv"
	"github.com/nix-ota/nix-ota/status"
)

// TestAttackAllPendingReadmits: --all-pending must not approve (1) a
// revoked id that comes back with a fresh key, (2) an approved device's key
// under a second id, (3) a revoked key under a new id: none is pending.
func TestAttackAllPendingReadmits(t *testing.T) {
	fx := fixtures(t)["file"](t)
	url, s := fx.url, fx.store
	key, pub := keygen(t, "fleet-1")
	k1, k9, fresh := testenv.DeviceKey(1), testenv.DeviceKey(9), testenv.DeviceKey(99)
	enc := func(k ed25519.PrivateKey) string { return status.EncodeKey(k.Public().(ed25519.PublicKey)) }
	mustRun(t, nil, "device", "add", "kiosk-1", "--device-key", enc(k1), "--bucket", url, "--key", key, "--no-dashboard")
	mustRun(t, nil, "device", "add", "kiosk-9", "--device-key", enc(k9), "--bucket", url, "--key", key, "--no-dashboard")
	mustRun(t, nil, "device", "revoke", "kiosk-9", "--bucket", url, "--key", key, "--no-dashboard")

	at := time.Now().Add(-time.Minute)
	put := func(k ed25519.PrivateKey, id string) {
		testenv.PutSigned(t, s, k, status.Status{DeviceID: id, Channel: "prod", State: status.UpToDate, AgentVersion: "x", ChangedAt: at}, at)
	}
	put(k1, "kiosk-1")    // the attacker's own approved device
	put(fresh, "kiosk-9") // the revoked (stolen) device, with a new key
	put(k1, "kiosk-7")    // kiosk-1's key under a second id
	put(k9, "kiosk-8")    // the revoked key under a new id
	out := mustRun(t, nil, "device", "list", "--bucket", url, "--public-key", pub)
	t.Logf("device list:\n%s", out)
	out = mustRun(t, nil, "device", "approve", "--all-pending", "--bucket", url, "--key", key, "--no-dashboard")
	t.Logf("approve --all-pending:\n%s", out)
	var f dashboard.Fleet
	mustJSON(t, mustRun(t, nil, "status", "--bucket", url, "--public-key", pub, "--json"), &f)
	for _, d := range f.Devices {
		t.Logf("counted: %s trust=%s key=%s", d.ID, d.Trust, d.Key)
		switch d.ID {
		case "kiosk-9":
			t.Errorf("revoked kiosk-9 is back (new key) through --all-pending")
		case "kiosk-7":
			t.Errorf("kiosk-1's key now also speaks for kiosk-7")
		case "kiosk-8":
			t.Errorf("revoked key %s re-admitted under kiosk-8", enc(k9)[:16])
		}
	}
	if !strings.Contains(out, "no pending device to approve") {
		t.Fatalf("--all-pending approved something:\n%s", out)
	}
}

// TestAttackApproveByNameSwap: the operator checks kiosk-5's fingerprint
// in device list, then approves it; in between, a holder of the shared
// credential writes kiosk-5's check-in with its own key. Approving by
// name and fingerprint refuses the swapped key and signs nothing; by name
// alone (trust on first use, as documented) the output names the key it
// registered, and the genuine device then shows as key-changed.
func TestAttackApproveByNameSwap(t *testing.T) {
	fx := fixtures(t)["file"](t)
	url, s := fx.url, fx.store
	key, pub := keygen(t, "fleet-1")
	genuine, attacker := testenv.DeviceKey(5), testenv.DeviceKey(66)
	put := func(k ed25519.PrivateKey, id string, at time.Time) {
		testenv.PutSigned(t, s, k, status.Status{DeviceID: id, Channel: "prod", State: status.UpToDate, AgentVersion: "x", ChangedAt: at}, at)
	}
	put(genuine, "kiosk-5", time.Now().Add(-2*time.Minute))
	seen := status.Fingerprint(genuine.Public().(ed25519.PublicKey))
	if out := mustRun(t, nil, "device", "list", "--bucket", url, "--public-key", pub); !strings.Contains(out, seen) {
		t.Fatalf("device list does not show kiosk-5's key %s:\n%s", seen, out)
	}
	put(attacker, "kiosk-5", time.Now().Add(-time.Minute))
	r := run(t, nil, "device", "approve", "kiosk-5="+seen, "--bucket", url, "--key", key, "--no-dashboard")
	if r.code == 0 || !strings.Contains(r.stderr, "not by "+seen) {
		t.Fatalf("approve kiosk-5=%s with another key's check-in: exit %d\n%s%s", seen, r.code, r.stdout, r.stderr)
	}
	if h := getRegistryVersions(t, s); h != 0 {
		t.Fatalf("a registry was written: %d versions", h)
	}
	out := mustRun(t, nil, "device", "approve", "kiosk-5", "--bucket", url, "--key", key, "--no-dashboard")
	if !strings.Contains(out, status.Fingerprint(attacker.Public().(ed25519.PublicKey))) {
		t.Fatalf("approve by name does not say which key it registered:\n%s", out)
	}
	put(genuine, "kiosk-5", time.Now())
	if out := mustRun(t, nil, "device", "list", "--bucket", url, "--public-key", pub); !strings.Contains(out, "key-changed") {
		t.Fatalf("the genuine device does not show as key-changed:\n%s", out)
	}
}

func getRegistryVersions(t *testing.T, s bucket.Store) int {
	n := 0
	if err := s.List(context.Background(), bucket.RegistryPrefix, func(bucket.Info) error { n++; return nil }); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestAttackDeviceListEscapes: an object key under devices/ carries
// terminal escapes in its device id; device list prints the id raw.
func TestAttackDeviceListEscapes(t *testing.T) {
	fx := fixtures(t)["file"](t)
	url, s := fx.url, fx.store
	key, pub := keygen(t, "fleet-1")
	k1 := testenv.DeviceKey(1)
	mustRun(t, nil, "device", "add", "kiosk-1", "--device-key", status.EncodeKey(k1.Public().(ed25519.PublicKey)), "--bucket", url, "--key", key, "--no-dashboard")
	evil := "x\x1b]0;owned\x07\x1b[2J\x1b[31mFAKE"
	testenv.PutCheckin(t, s, evil, time.Now().Add(-time.Minute), []byte(`{}`))
	for _, args := range [][]string{{"device", "list"}, {"status"}} {
		out := mustRun(t, nil, append(args, "--bucket", url, "--public-key", pub)...)
		if strings.ContainsRune(out, 0x1b) {
			t.Errorf("%v printed a raw ESC from an object key:\n%q", args, out)
		}
	}
}

// TestAttackDeviceListEscapesMinIO: the same with the fleet's shared
// check-in credential on real MinIO.
func TestAttackDeviceListEscapesMinIO(t *testing.T) {
	m := testenv.SharedMinIO(t)
	name, url := m.NewBucket(t)
	env := m.Env()
	mustRun(t, env, "init", "--bucket", url)
	shared := checkinStore(t, m, name, url)
	key, pub := keygen(t, "fleet-1")
	k1 := testenv.DeviceKey(1)
	mustRun(t, env, "device", "add", "kiosk-1", "--device-key", status.EncodeKey(k1.Public().(ed25519.PublicKey)), "--bucket", url, "--key", key, "--no-dashboard")
	evil := "x\x1b]0;owned\x07\x1b[2J\x1b[31mFAKE"
	if _, err := bucket.PutBytes(ctx, shared, bucket.CheckinKey(evil, time.Now()), []byte(`{}`), bucket.JSONPut()); err != nil {
		t.Fatalf("shared credential: %v", err)
	}
	out := mustRun(t, env, "device", "list", "--bucket", url, "--public-key", pub)
	if strings.ContainsRune(out, 0x1b) {
		t.Errorf("device list printed a raw ESC from an object key:\n%q", out)
	}
}
