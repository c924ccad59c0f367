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
	DevicesPrefix  = "devices/"         // one status blob per device
	AttestPrefix   = "attestations/"    // signed records of how revisions did
	CachePrefix    = "cache/"           // a Nix binary cache
	DashboardKey   = "index.html"       // the static dashboard
	DashboardJSON  = "dashboard.json"   // the same facts, machine-readable
	StatusName     = "status.json"      // devices/<id>/status.json
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

// AttestationsPrefix lists a channel's attestations.
func AttestationsPrefix(channel string) string { return AttestPrefix + channel + "/" }

// AttestationKey is the publisher's signed record of how revision rev did.
func AttestationKey(channel string, rev uint64) string {
	return AttestationsPrefix(channel) + strconv.FormatUint(rev, 10) + ".json"
}

// StatusKey is the check-in blob of one device.
func StatusKey(device string) string { return DevicesPrefix + device + "/" + StatusName }

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
