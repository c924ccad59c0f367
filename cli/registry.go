package cli

import (
	"fmt"
	"slices"
	"strings"
	"time"

	dashboard "github.com/nix-ota/nix-ota/dashboard-static"
	"github.com/nix-ota/nix-ota/manifest"
	"github.com/nix-ota/nix-ota/status"
)

// Registry edits are planned here without I/O: cmd_device.go reads the
// registry (verified) and the fleet, plans, signs and writes.

// deviceChange is one line of what device approve, add or revoke did.
type deviceChange struct {
	ID          string `json:"id"`
	Action      string `json:"action"` // approved, re-approved, added, revoked, unchanged
	Key         string `json:"key,omitempty"`
	Fingerprint string `json:"fingerprint,omitempty"`
	Class       string `json:"class,omitempty"`
	Why         string `json:"why,omitempty"`
}

// nextRegistry is cur with entries set and removed, one version on.
// cur nil starts a registry after version base.
func nextRegistry(cur *manifest.Registry, base uint64, now time.Time) *manifest.Registry {
	next := &manifest.Registry{Schema: manifest.Schema, Version: base + 1, IssuedAt: now.UTC()}
	if cur != nil {
		next.Version = max(cur.Version, base) + 1
		next.Devices = slices.Clone(cur.Devices)
		next.Revoked = slices.Clone(cur.Revoked)
	}
	return next
}

// set registers e, replacing the entry of its id and un-revoking its key.
func set(r *manifest.Registry, e manifest.DeviceEntry) {
	r.Revoked = slices.DeleteFunc(r.Revoked, func(x manifest.DeviceEntry) bool { return x.ID == e.ID && x.Key == e.Key })
	i, found := slices.BinarySearchFunc(r.Devices, e.ID, func(x manifest.DeviceEntry, id string) int { return strings.Compare(x.ID, id) })
	if found {
		r.Devices[i] = e
		return
	}
	r.Devices = slices.Insert(r.Devices, i, e)
}

// planApprove registers the keys the named devices (or, with all, every
// pending device) signed their newest check-in with. A device whose id is
// registered with another key is re-approved only when named: a key
// change may be another device writing its status.
//
// pins maps ids to the key fingerprint the operator named (ID=SHA256:…):
// the check-in must carry that key. A key change or a revoked device needs
// one, so that whoever writes last under an id cannot get its key
// registered by an operator approving the name.
func planApprove(cur *manifest.Registry, base uint64, f *dashboard.Fleet, ids []string, all bool, class string, pins map[string]string, now time.Time) (*manifest.Registry, []deviceChange, error) {
	// Pending devices are shown apart, or, while the bucket has no
	// registry, among the counted ones.
	seen := map[string]dashboard.Device{}
	for _, d := range append(slices.Clone(f.Devices), f.Unverified...) {
		if d.Trust != dashboard.TrustVerified {
			seen[d.ID] = d
		}
	}
	if all {
		for _, d := range seen {
			if d.Trust == dashboard.TrustPending {
				ids = append(ids, d.ID)
			}
		}
		slices.Sort(ids)
		if len(ids) == 0 {
			return nil, nil, nil
		}
	}
	next := nextRegistry(cur, base, now)
	var changes []deviceChange
	for _, id := range ids {
		d, ok := seen[id]
		if !ok {
			if e, reg := next.Lookup(id); reg {
				changes = append(changes, deviceChange{ID: id, Action: "unchanged", Key: e.Key, Fingerprint: status.KeyFingerprint(e.Key), Why: "already approved"})
				continue
			}
			return nil, nil, fmt.Errorf("%s has no check-in waiting for approval; pre-register its key with nix-ota device add %s --key ed25519:… (nix-ota-agent identity prints it on the device)", id, id)
		}
		action, fp := "approved", status.KeyFingerprint(d.Key)
		switch pin := pins[id]; {
		case d.Trust != dashboard.TrustPending && d.Trust != dashboard.TrustKeyChanged && d.Trust != dashboard.TrustRevoked:
			return nil, nil, fmt.Errorf("%s cannot be approved from its newest check-in: %s", id, d.Verification)
		case pin != "" && pin != fp:
			return nil, nil, fmt.Errorf("%s's newest check-in is signed by %s, not by %s; nothing was signed (nix-ota-agent identity on the device prints its key)", id, fp, pin)
		case d.Trust != dashboard.TrustPending && pin == "":
			return nil, nil, fmt.Errorf("%s is %s: approve it by name and key, after checking the key on the device: nix-ota device approve %s=%s", id, d.Trust, id, fp)
		case d.Trust != dashboard.TrustPending:
			action = "re-approved"
		}
		e := manifest.DeviceEntry{ID: id, Key: d.Key, Class: firstNonEmpty(class, d.Class), At: now.UTC()}
		set(next, e)
		changes = append(changes, deviceChange{ID: id, Action: action, Key: d.Key, Fingerprint: fp, Class: e.Class})
	}
	return next, changes, nil
}

// planAdd pre-registers a key baked into an image. Replacing a registered
// device's key needs replace.
func planAdd(cur *manifest.Registry, base uint64, id, key, class string, replace bool, now time.Time) (*manifest.Registry, []deviceChange, error) {
	if _, err := status.ParseKey(key); err != nil {
		return nil, nil, usagef("--key: %v", err)
	}
	next := nextRegistry(cur, base, now)
	action := "added"
	if e, ok := next.Lookup(id); ok {
		switch {
		case e.Key == key && (class == "" || e.Class == class):
			return nil, []deviceChange{{ID: id, Action: "unchanged", Key: key, Fingerprint: status.KeyFingerprint(key), Class: e.Class, Why: "already registered with this key"}}, nil
		case e.Key != key && !replace:
			return nil, nil, usagef("%s is registered with key %s; to replace it (a reinstalled device) add --replace", id, status.KeyFingerprint(e.Key))
		}
		action = "re-approved"
	}
	set(next, manifest.DeviceEntry{ID: id, Key: key, Class: class, At: now.UTC()})
	return next, []deviceChange{{ID: id, Action: action, Key: key, Fingerprint: status.KeyFingerprint(key), Class: class}}, nil
}

// planRevoke removes devices and records their keys as revoked, so that
// approve --all-pending never lets them back in.
func planRevoke(cur *manifest.Registry, base uint64, ids []string, now time.Time) (*manifest.Registry, []deviceChange, error) {
	next := nextRegistry(cur, base, now)
	var changes []deviceChange
	for _, id := range ids {
		e, ok := next.Lookup(id)
		if !ok {
			return nil, nil, fmt.Errorf("%s is not registered (nix-ota device list shows who is)", id)
		}
		next.Devices = slices.DeleteFunc(next.Devices, func(x manifest.DeviceEntry) bool { return x.ID == id })
		next.Revoked = append(next.Revoked, manifest.DeviceEntry{ID: id, Key: e.Key, Class: e.Class, At: now.UTC()})
		changes = append(changes, deviceChange{ID: id, Action: "revoked", Key: e.Key, Fingerprint: status.KeyFingerprint(e.Key)})
	}
	return next, changes, nil
}

func firstNonEmpty(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
