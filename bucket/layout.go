package bucket

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Object keys of nix-ota's bucket layout (docs/design.md, Bucket layout).
// Callers validate channel and device names (manifest.ValidateName)
// before building keys.
const (
	LayoutKey      = "nix-ota.json"     // layout marker written by init
	ChannelsPrefix = "channels/"        // channel pointers and their history
	DevicesPrefix  = "devices/"         // device check-ins: devices/<window>/<id>.json
	AttestPrefix   = "attestations/"    // signed records of how revisions did
	RegistryPrefix = "device-registry/" // the signed device registry, one object per version
	CachePrefix    = "cache/"           // a Nix binary cache
	DashboardKey   = "index.html"       // the static dashboard
	DashboardJSON  = "dashboard.json"   // the same facts, machine-readable
	jsonType       = "application/json" // content type of every JSON object
)

// Cache-Control values: a channel pointer must be revalidated by every CDN
// on every poll; history revisions never change.
const (
	NoCache   = "no-cache"
	Immutable = "public, max-age=31536000, immutable"
)

// ChannelKey is the current signed manifest of a channel, what agents poll.
func ChannelKey(channel string) string { return ChannelsPrefix + channel + ".json" }

// RevisionsPrefix lists a channel's history.
func RevisionsPrefix(channel string) string { return ChannelsPrefix + channel + "/" }

// RevisionKey is one immutable published revision.
func RevisionKey(channel string, rev uint64) string {
	return RevisionsPrefix(channel) + strconv.FormatUint(rev, 10) + ".json"
}

// ParseRevisionKey returns the revision of a history key of channel, and
// false for anything else.
func ParseRevisionKey(channel, key string) (uint64, bool) {
	rest, ok := strings.CutPrefix(key, RevisionsPrefix(channel))
	if !ok {
		return 0, false
	}
	num, ok := strings.CutSuffix(rest, ".json")
	if !ok || num == "" || num[0] == '0' {
		return 0, false
	}
	rev, err := strconv.ParseUint(num, 10, 64)
	return rev, err == nil
}

// RegistryVersionKey is version v of the device registry. Versions are
// written create-only and readers take the highest, so putting an older
// version back changes nothing: rolling the registry back takes deleting
// every newer one.
func RegistryVersionKey(v uint64) string {
	return RegistryPrefix + strconv.FormatUint(v, 10) + ".json"
}

// ParseRegistryVersionKey returns the version of a registry key, and false
// for anything else.
func ParseRegistryVersionKey(key string) (uint64, bool) {
	num, ok := strings.CutPrefix(key, RegistryPrefix)
	if !ok {
		return 0, false
	}
	if num, ok = strings.CutSuffix(num, ".json"); !ok || num == "" || num[0] == '0' {
		return 0, false
	}
	v, err := strconv.ParseUint(num, 10, 64)
	return v, err == nil
}

// AttestationsPrefix lists a channel's attestations.
func AttestationsPrefix(channel string) string { return AttestPrefix + channel + "/" }

// AttestationKey is the publisher's signed record of how revision rev did.
func AttestationKey(channel string, rev uint64) string {
	return AttestationsPrefix(channel) + strconv.FormatUint(rev, 10) + ".json"
}

// CheckinWindow is how finely check-in keys are grouped by time. A device
// writes each status to the window of its clock's current time, so a
// reader that read the fleet before lists only the windows written since
// (docs/design.md, Device status): its cost follows what changed, not the
// fleet's size.
const CheckinWindow = 5 * time.Minute

// windowLayout names a window by its start in UTC, to the minute: keys then
// sort in time order.
const windowLayout = "200601021504"

// CheckinKey is where a device writes a status at time t:
// devices/<window>/<id>.json.
func CheckinKey(device string, t time.Time) string {
	return DevicesPrefix + WindowLabel(t) + "/" + device + ".json"
}

// WindowLabel names the check-in window holding t.
func WindowLabel(t time.Time) string {
	return t.UTC().Truncate(CheckinWindow).Format(windowLayout)
}

// CheckinsFrom is the key to list check-ins after to get every window
// from the one holding t on: the window's own keys sort after it.
func CheckinsFrom(t time.Time) string { return DevicesPrefix + WindowLabel(t) }

// ParseCheckinKey returns the device and window of a check-in key, and
// false for any other key: one window of 12 digits that is a real window
// start, one name ending in .json, nothing else. The device name is not
// checked here (manifest.ValidateName is the rule).
func ParseCheckinKey(key string) (device string, window time.Time, ok bool) {
	rest, ok := strings.CutPrefix(key, DevicesPrefix)
	if !ok {
		return "", time.Time{}, false
	}
	label, file, ok := strings.Cut(rest, "/")
	if !ok || len(label) != len(windowLayout) || strings.Trim(label, "0123456789") != "" {
		return "", time.Time{}, false
	}
	w, err := time.Parse(windowLayout, label)
	if err != nil || !w.Truncate(CheckinWindow).Equal(w) {
		return "", time.Time{}, false
	}
	device, ok = strings.CutSuffix(file, ".json")
	if !ok || device == "" || strings.Contains(device, "/") {
		return "", time.Time{}, false
	}
	return device, w, true
}

// JSONPut are the options for a mutable JSON object.
func JSONPut() PutOptions { return PutOptions{ContentType: jsonType, CacheControl: NoCache} }

// notInitialised wraps ErrNotFound for a bucket without a layout marker.
func notInitialised(s Store) error {
	return fmt.Errorf("%w: %s has no %s (run: nix-ota init --bucket %s)", ErrNotFound, s, LayoutKey, s)
}

// LayoutFormat is the version of the bucket layout this code reads and
// writes; init records it and every command checks it.
const LayoutFormat = 1

// Layout is the content of the layout marker.
type Layout struct {
	Format    int       `json:"format"`
	CreatedAt time.Time `json:"createdAt"`
	CreatedBy string    `json:"createdBy,omitempty"`
}

// Init writes the layout marker if it is missing. It reports whether it
// created one; an existing marker of another format is an error.
func Init(ctx context.Context, s Store, createdBy string, now time.Time) (bool, error) {
	b, _ := json.MarshalIndent(Layout{Format: LayoutFormat, CreatedAt: now.UTC(), CreatedBy: createdBy}, "", "  ")
	_, err := PutBytes(ctx, s, LayoutKey, append(b, '\n'), PutOptions{ContentType: jsonType, CreateOnly: true})
	if err == nil {
		return true, nil
	}
	if !errors.Is(err, ErrExists) {
		return false, err
	}
	return false, CheckLayout(ctx, s)
}

// CheckLayout fails unless s carries a layout marker this code understands,
// so that a typo in a bucket URL is an error, not a new empty bucket.
func CheckLayout(ctx context.Context, s Store) error {
	o, err := s.Get(ctx, LayoutKey, GetOptions{MaxSize: 64 << 10})
	if errors.Is(err, ErrNotFound) {
		return notInitialised(s)
	}
	if err != nil {
		return err
	}
	var l Layout
	if err := json.Unmarshal(o.Data, &l); err != nil {
		return fmt.Errorf("%s/%s: not a nix-ota layout marker: %v", s, LayoutKey, err)
	}
	if l.Format != LayoutFormat {
		return fmt.Errorf("%s: layout format %d, this nix-ota understands %d", s, l.Format, LayoutFormat)
	}
	return nil
}

// Newer reports whether check-in a supersedes check-in b of the same
// device: the later write by the bucket's clock, then the later window (a
// device's clock decides windows; the bucket's decides what came last).
func Newer(a, b Info) bool {
	if !a.ModTime.Equal(b.ModTime) {
		return a.ModTime.After(b.ModTime)
	}
	return a.Key > b.Key
}

// LatestCheckin finds the newest check-in of one device by listing every
// window: for tests, tools and one-off reads; fleet readers list once for
// all devices.
func LatestCheckin(ctx context.Context, s Store, device string) (Info, error) {
	var best Info
	err := s.List(ctx, DevicesPrefix, func(i Info) error {
		if id, _, ok := ParseCheckinKey(i.Key); ok && id == device && (best.Key == "" || Newer(i, best)) {
			best = i
		}
		return nil
	})
	if err == nil && best.Key == "" {
		err = fmt.Errorf("%w: no check-in of device %s under %s", ErrNotFound, device, DevicesPrefix)
	}
	return best, err
}

// multiDeleter is a Store that deletes many keys in one request (S3's
// DeleteObjects, up to 1,000 keys each).
type multiDeleter interface {
	DeleteKeys(ctx context.Context, keys []string) error
}

// DeleteAll deletes keys, in batched requests where the store can, and
// returns how many it deleted before any error.
func DeleteAll(ctx context.Context, s Store, keys []string) (int, error) {
	if md, ok := unwrap(s).(multiDeleter); ok {
		for i := 0; i < len(keys); i += 1000 {
			batch := keys[i:min(i+1000, len(keys))]
			if err := md.DeleteKeys(ctx, batch); err != nil {
				return i, err
			}
			if c, ok := s.(*Counting); ok {
				c.n.Add(1)
			}
		}
		return len(keys), nil
	}
	for i, k := range keys {
		if err := s.Delete(ctx, k); err != nil {
			return i, err
		}
	}
	return len(keys), nil
}

// unwrap looks through a Counting store.
func unwrap(s Store) Store {
	if c, ok := s.(*Counting); ok {
		return c.Store
	}
	return s
}
