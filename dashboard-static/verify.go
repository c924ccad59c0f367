package dashboard

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nix-ota/nix-ota/bucket"
	"github.com/nix-ota/nix-ota/manifest"
	"github.com/nix-ota/nix-ota/status"
)

// The device registry (manifest.Registry) lives in bucket.RegistryPrefix,
// one create-only object per version, outside devices/, so a fleet-wide
// check-in credential cannot write it.

// How a device's newest check-in stands against the registry
// (Device.Trust). Only verified rows count, and every row while the
// bucket has no registry.
const (
	TrustVerified   = "verified"    // signed by the key the registry has for its id
	TrustNoRegistry = "no-registry" // the bucket has no registry yet: counted by id alone, as before
	TrustPending    = "pending"     // signed by a key not registered for any device of that id
	TrustKeyChanged = "key-changed" // the id is registered with another key
	TrustRevoked    = "revoked"     // signed by a key revoked for that id
	TrustUnsigned   = "unsigned"    // no signature (an agent that does not sign)
	TrustRefused    = "refused"     // anything else: replayed, copied, badly dated, unreadable
)

// MaxSignedAge is how long before the bucket stored a check-in it may have
// been signed. Agents sign at the moment they write; an older signature
// is an old status written again (a replay), or a device clock this far
// behind.
const MaxSignedAge = time.Hour

// Registry is the device registry as a read found it.
type Registry struct {
	Verified *manifest.VerifiedRegistry // nil when absent or unusable
	Absent   bool                       // the bucket has none, and this machine never read one
	Problem  string                     // why it is unusable: every device's reason
	Gone     bool                       // no version left, though this machine read one
	index    *registryIndex
}

// registryIndex answers, per read, what judging each check-in asks of the
// registry beyond its id: who owns a key, and what was revoked.
type registryIndex struct {
	owner      map[string]string // key -> registered id
	revokedKey map[string]string // key -> the id it was revoked for
	revokedID  map[string]bool
}

func (reg *Registry) indexed() *registryIndex {
	if reg.index != nil || reg.Verified == nil {
		return reg.index
	}
	x := &registryIndex{owner: map[string]string{}, revokedKey: map[string]string{}, revokedID: map[string]bool{}}
	for _, e := range reg.Verified.Devices {
		x.owner[e.Key] = e.ID
	}
	for _, e := range reg.Verified.Revoked {
		x.revokedKey[e.Key], x.revokedID[e.ID] = e.ID, true
	}
	reg.index = x
	return x
}

// CachedRegistry is a registry a full read verified, kept in the
// snapshot: incremental reads list the versions and, when the newest is
// the same object, use it without reading and decoding 16 MB (at 100,000
// devices) again. Full reads (hourly) always verify it anew, so a cache
// gone wrong lasts at most that.
type CachedRegistry struct {
	ETag     string
	Registry manifest.Registry
}

// RegistryHead is the newest registry version a listing found.
type RegistryHead struct {
	Info    bucket.Info
	Version uint64
	Found   bool
}

// NewestRegistry lists the registry's versions and returns the newest.
func NewestRegistry(ctx context.Context, s bucket.Store) (RegistryHead, error) {
	var h RegistryHead
	err := s.List(ctx, bucket.RegistryPrefix, func(i bucket.Info) error {
		if v, ok := bucket.ParseRegistryVersionKey(i.Key); ok && v >= h.Version {
			h = RegistryHead{Info: i, Version: v, Found: true}
		}
		return nil
	})
	if err != nil {
		return RegistryHead{}, fmt.Errorf("list %s: %w", bucket.RegistryPrefix, err)
	}
	return h, nil
}

// ReadRegistry reads the newest version of the device registry and
// verifies it against trust, refusing one older than seen; with cached,
// the same object, it is used as it is. A bucket error is an error; a
// registry that cannot be used is a Registry with a Problem, so that
// readers show every device as unverified instead of failing.
func ReadRegistry(ctx context.Context, s bucket.Store, trust *manifest.Trust, seen manifest.RegistryState, cached *CachedRegistry) (Registry, string, error) {
	h, err := NewestRegistry(ctx, s)
	switch {
	case err != nil:
		return Registry{}, "", err
	case !h.Found && seen.Version == 0:
		return Registry{Absent: true}, "", nil
	case !h.Found:
		return Registry{Gone: true, Problem: fmt.Sprintf("the device registry is gone from the bucket (version %d was read before); restore %s from a backup, or approve the devices again", seen.Version, bucket.RegistryVersionKey(seen.Version))}, "", nil
	case trust == nil:
		return Registry{Problem: "the device registry is not checked without the publisher's public key (--public-key or $NIX_OTA_PUBLIC_KEY)"}, h.Info.ETag, nil
	case cached != nil && h.Info.ETag != "" && cached.ETag == h.Info.ETag && cached.Registry.Version == h.Version && h.Version == seen.Version:
		return Registry{Verified: &manifest.VerifiedRegistry{Registry: &cached.Registry, State: seen}}, h.Info.ETag, nil
	}
	obj, err := s.Get(ctx, h.Info.Key, bucket.GetOptions{MaxSize: manifest.MaxRegistrySize})
	switch {
	case errors.Is(err, bucket.ErrTooLarge):
		return Registry{Problem: fmt.Sprintf("%s is larger than %d MiB; it cannot be a registry nix-ota wrote; delete it", h.Info.Key, manifest.MaxRegistrySize>>20)}, "", nil
	case err != nil:
		return Registry{}, "", fmt.Errorf("read %s: %w", h.Info.Key, err)
	}
	v, err := manifest.CheckRegistry(*trust, obj.Data, seen)
	if err == nil && v.Version != h.Version {
		err = fmt.Errorf("it holds version %d", v.Version)
	}
	if err != nil {
		return Registry{Problem: fmt.Sprintf("device registry %s refused: %s; if nix-ota device did not write it, delete it", h.Info.Key, status.Clean(err.Error(), 512))}, obj.ETag, nil
	}
	return Registry{Verified: v}, obj.ETag, nil
}

// Accepted is the last check-in of a device that passed verification,
// kept across reads (Snapshot): later check-ins must be signed after it.
type Accepted struct {
	Checkin   bucket.Info
	Heartbeat time.Duration
	Device    Device
	Key       string
	SignedAt  time.Time
}

// judge says how r's newest check-in stands against reg, remembering
// what r accepted before. It does no I/O.
func (reg *Registry) judge(r *Record) (trust, reason string) {
	id := r.Device.ID
	switch {
	case reg.Absent && r.Key != "" && r.Device.State != Invalid:
		return TrustPending, fmt.Sprintf("pending: key %s; no device registry in this bucket yet, so statuses count by device id alone (nix-ota device approve %s creates it)", status.KeyFingerprint(r.Key), id)
	case reg.Absent:
		return TrustNoRegistry, "no device registry in this bucket: statuses count by device id alone (nix-ota device approve creates it)"
	case r.Device.State == Invalid:
		return TrustRefused, r.Device.LastError
	case r.Key == "":
		return TrustUnsigned, "unsigned status: this agent does not sign check-ins; update nix-ota-agent"
	case reg.Problem != "":
		return TrustRefused, reg.Problem
	}
	e, ok := reg.Verified.Lookup(id)
	if ok && e.Key == r.Key {
		r.Key = e.Key // one copy of the key string, not two
		return checkTimes(r)
	}
	// Only check-ins that are not their id's registered key's need the
	// index (built once per read, when the first one comes).
	fp, x := status.KeyFingerprint(r.Key), reg.indexed()
	switch owner, owned := x.owner[r.Key]; {
	case owned:
		return TrustRefused, fmt.Sprintf("signed by key %s, which is registered to %s: one device's key speaks for one id", fp, owner)
	case x.revokedKey[r.Key] != "":
		return TrustRevoked, fmt.Sprintf("signed by key %s, which was revoked (for %s)", fp, x.revokedKey[r.Key])
	case !ok && x.revokedID[id]:
		return TrustRevoked, fmt.Sprintf("%s was revoked; it comes back only when approved by name and key: nix-ota device approve %s=%s", id, id, fp)
	case !ok:
		return TrustPending, fmt.Sprintf("pending: key %s is not registered; if this is your device, nix-ota device approve %s", fp, id)
	default:
		return TrustKeyChanged, fmt.Sprintf("signed by key %s, but %s is registered with %s: another device writing its status, or the device was reinstalled (then, after checking the key on the device: nix-ota device approve %s=%s)", fp, id, status.KeyFingerprint(e.Key), id, fp)
	}
}

// checkTimes refuses a registered device's check-in that is not where and
// when its signature says, or older than what was accepted from it.
func checkTimes(r *Record) (trust, reason string) {
	signed, stored := r.SignedAt.UTC(), r.Checkin.ModTime.UTC()
	switch a := r.Accepted; {
	case bucket.CheckinKey(r.Device.ID, signed) != r.Checkin.Key:
		return TrustRefused, fmt.Sprintf("signed at %s but stored under %s: a status copied to another check-in", signed.Format(time.RFC3339), r.Checkin.Key)
	case stored.Sub(signed) > MaxSignedAge:
		return TrustRefused, fmt.Sprintf("signed at %s but stored at %s: an old status written again, or the device's clock is more than %s behind", signed.Format(time.RFC3339), stored.Format(time.RFC3339), MaxSignedAge)
	case signed.Sub(stored) > MaxClockSkew:
		return TrustRefused, fmt.Sprintf("signed at %s, after the bucket stored it (%s): the device's clock is ahead; fix it", signed.Format(time.RFC3339), stored.Format(time.RFC3339))
	case a != nil && a.Key == r.Key && signed.Before(a.SignedAt):
		return TrustRefused, fmt.Sprintf("a replay: signed at %s, before the status already accepted from this device (signed at %s)", signed.Format(time.RFC3339), a.SignedAt.UTC().Format(time.RFC3339))
	}
	return TrustVerified, "signed by its registered key"
}

// verify judges every record against reg and splits the rows: those that
// count, and the refused check-ins, shown apart. A registered device whose
// newest check-in is refused still has a counted row, marked Contested:
// its last verified status if the reader has one, else a placeholder. It
// holds its rollout step back (channel.Report.Contested), so that writing
// under its id can hide neither a failure nor a pending update. Records
// remember what they accepted.
func (s *Snapshot) verify(reg Registry, now time.Time, channel string) (counted, unverified []Device) {
	counted = make([]Device, 0, len(s.Records))
	for i := range s.Records {
		r := &s.Records[i]
		trust, reason := reg.judge(r)
		if r.NewestAccepted = trust == TrustVerified; r.NewestAccepted {
			r.Accepted = nil
		}
		row := r.live(now)
		row.Trust, row.Verification = trust, reason
		row.Verified = trust == TrustVerified
		if !row.Verified { // a verified row's key is the registry's
			row.Key = r.Key
		}
		if trust == TrustVerified || reg.Absent {
			if channel == "" || row.Channel == channel {
				counted = append(counted, row)
			}
			continue
		}
		if c, ok := contested(reg, r, now, reason); ok && (channel == "" || c.Channel == channel || c.Channel == "") {
			counted = append(counted, c)
		}
		if row.State != Invalid {
			row.Detail, row.State = row.State, Unverified
		}
		if channel == "" || row.Channel == channel {
			unverified = append(unverified, row)
		}
	}
	return counted, unverified
}

// contested is the counted row of a registered device whose newest
// check-in was refused: its last verified status while that still counts,
// else a placeholder of unknown channel and state.
func contested(reg Registry, r *Record, now time.Time, reason string) (Device, bool) {
	if reg.Verified == nil {
		return Device{}, false
	}
	if _, registered := reg.Verified.Lookup(r.Device.ID); !registered {
		return Device{}, false
	}
	why := "a newer check-in under its id was refused: " + reason
	if stillRegistered(reg, r.Accepted) {
		a := Record{Checkin: r.Accepted.Checkin, Heartbeat: r.Accepted.Heartbeat, Device: r.Accepted.Device}
		last := a.live(now)
		last.Trust, last.Verified, last.Contested = TrustVerified, true, true
		last.Verification = "its last verified status; " + why
		return last, true
	}
	return Device{ID: r.Device.ID, State: Unverified, Trust: TrustRefused, Contested: true, CheckedAt: r.Checkin.ModTime,
		Verification: "no verified status read yet; " + why}, true
}

// stillRegistered: a device's accepted check-in still counts only while
// the key that signed it is the one registered (a revoke ends it at once).
func stillRegistered(reg Registry, a *Accepted) bool {
	if a == nil || reg.Verified == nil {
		return false
	}
	e, ok := reg.Verified.Lookup(a.Device.ID)
	return ok && e.Key == a.Key
}
