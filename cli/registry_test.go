package cli

import (
	"bytes"
	"crypto/ed25519"
	"strings"
	"testing"
	"time"

	dashboard "github.com/nix-ota/nix-ota/dashboard-static"
	"github.com/nix-ota/nix-ota/manifest"
	"github.com/nix-ota/nix-ota/status"
)

func devKey(seed byte) string {
	return status.EncodeKey(ed25519.NewKeyFromSeed(bytes.Repeat([]byte{seed}, 32)).Public().(ed25519.PublicKey))
}

// TestPlanApprove: which check-ins approve registers, and what it refuses.
func TestPlanApprove(t *testing.T) {
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	cur := &manifest.Registry{Schema: manifest.Schema, Version: 4, IssuedAt: now, Devices: []manifest.DeviceEntry{{ID: "kiosk-1", Key: devKey(1), At: now}},
		Revoked: []manifest.DeviceEntry{{ID: "kiosk-9", Key: devKey(9), At: now}}}
	f := &dashboard.Fleet{
		Devices: []dashboard.Device{{ID: "kiosk-1", Trust: dashboard.TrustVerified, Key: devKey(1)}},
		Unverified: []dashboard.Device{
			{ID: "kiosk-2", Trust: dashboard.TrustPending, Key: devKey(2), Class: "pi4"},
			{ID: "kiosk-3", Trust: dashboard.TrustKeyChanged, Key: devKey(33)},
			{ID: "kiosk-4", Trust: dashboard.TrustUnsigned, Verification: "unsigned status"},
			{ID: "kiosk-5", Trust: dashboard.TrustPending, Key: devKey(5)},
			{ID: "kiosk-9", Trust: dashboard.TrustRevoked, Key: devKey(9)},
		},
	}
	next, changes, err := planApprove(cur, 0, f, nil, true, "", nil, now)
	if err != nil || next.Version != 5 || len(changes) != 2 || changes[0].ID != "kiosk-2" || changes[1].ID != "kiosk-5" {
		t.Fatalf("--all-pending: %v %+v", err, changes)
	}
	if e, _ := next.Lookup("kiosk-2"); e.Class != "pi4" || e.Key != devKey(2) {
		t.Errorf("kiosk-2 registered as %+v", e)
	}
	if _, ok := next.Lookup("kiosk-3"); ok {
		t.Error("--all-pending took a key change")
	}
	if len(cur.Devices) != 1 {
		t.Error("planning changed the current registry")
	}
	// A key change or a revoked device is approved only with its key named.
	if _, _, err := planApprove(cur, 0, f, []string{"kiosk-3"}, false, "", nil, now); err == nil || !strings.Contains(err.Error(), "kiosk-3="+status.KeyFingerprint(devKey(33))) {
		t.Errorf("key change without a fingerprint: %v", err)
	}
	if _, _, err := planApprove(cur, 0, f, []string{"kiosk-2"}, false, "", map[string]string{"kiosk-2": status.KeyFingerprint(devKey(3))}, now); err == nil || !strings.Contains(err.Error(), "not by") {
		t.Errorf("a pin of another key: %v", err)
	}
	pins := map[string]string{"kiosk-3": status.KeyFingerprint(devKey(33)), "kiosk-9": status.KeyFingerprint(devKey(9))}
	next, changes, err = planApprove(cur, 0, f, []string{"kiosk-3", "kiosk-9", "kiosk-1"}, false, "lobby", pins, now)
	if err != nil || changes[0].Action != "re-approved" || changes[1].Action != "re-approved" || changes[2].Action != "unchanged" {
		t.Fatalf("named: %v %+v", err, changes)
	}
	if e, _ := next.Lookup("kiosk-3"); e.Key != devKey(33) || e.Class != "lobby" || next.IsRevoked("kiosk-9", devKey(9)) {
		t.Errorf("kiosk-3 %+v, kiosk-9 still revoked: %v", e, next.IsRevoked("kiosk-9", devKey(9)))
	}
	for ids, want := range map[string]string{"kiosk-4": "unsigned status", "kiosk-7": "device add kiosk-7"} {
		if _, _, err := planApprove(cur, 0, f, []string{ids}, false, "", nil, now); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("approve %s: %v, want %q", ids, err, want)
		}
	}
	// No registry yet (version 7 was read before it was deleted): the new
	// one starts after what readers remember.
	if next, _, _ := planApprove(nil, 7, f, []string{"kiosk-2"}, false, "", nil, now); next.Version != 8 || len(next.Devices) != 1 {
		t.Errorf("from nothing: %+v", next)
	}
}

func TestPlanAddRevoke(t *testing.T) {
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	cur := &manifest.Registry{Schema: manifest.Schema, Version: 1, IssuedAt: now, Devices: []manifest.DeviceEntry{{ID: "kiosk-1", Key: devKey(1), At: now}}}
	if _, _, err := planAdd(cur, 0, "kiosk-1", devKey(2), "", false, now); err == nil || !strings.Contains(err.Error(), "--replace") {
		t.Errorf("key change without --replace: %v", err)
	}
	if next, c, err := planAdd(cur, 0, "kiosk-1", devKey(2), "", true, now); err != nil || c[0].Action != "re-approved" || next.Devices[0].Key != devKey(2) {
		t.Errorf("--replace: %v %+v", err, c)
	}
	if next, c, _ := planAdd(cur, 0, "kiosk-1", devKey(1), "", false, now); next != nil || c[0].Action != "unchanged" {
		t.Errorf("same key: %+v", c)
	}
	for _, bad := range []string{"", "ed25519:AAAA", "ssh-ed25519 " + devKey(1)} {
		if _, _, err := planAdd(cur, 0, "kiosk-2", bad, "", false, now); err == nil {
			t.Errorf("added key %q", bad)
		}
	}
	next, c, err := planRevoke(cur, 0, []string{"kiosk-1"}, now)
	if err != nil || len(next.Devices) != 0 || !next.IsRevoked("kiosk-1", devKey(1)) || c[0].Action != "revoked" {
		t.Errorf("revoke: %v %+v", err, next)
	}
	if _, _, err := planRevoke(cur, 0, []string{"kiosk-2"}, now); err == nil {
		t.Error("revoked an unregistered device")
	}
	if err := next.Validate(); err != nil {
		t.Errorf("planned registry does not validate: %v", err)
	}
}
