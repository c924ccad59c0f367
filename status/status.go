// Package status is the check-in blob a device writes to
// devices/<id>/status.json (docs/design.md, Device status), shared by the
// agent that writes it and the CLI and dashboard that read it.
//
// Threat model: a status blob is written by a device, and a device may be
// compromised. Readers treat every field as untrusted text: Parse bounds the
// size, refuses a blob whose deviceId does not match its key, and passes
// every string through Clean (no control or invisible formatting
// characters, capped length); the dashboard escapes everything it shows.
package status

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// States a device reports.
const (
	UpToDate      = "up-to-date"
	Downloading   = "downloading"
	Switching     = "switching"
	Failed        = "failed"
	RolledBack    = "rolled-back"
	Rejected      = "rejected"
	WaitingReboot = "waiting-reboot"
)

// States lists every state, in the order dashboards show them.
var States = []string{UpToDate, Downloading, Switching, WaitingReboot, Failed, RolledBack, Rejected}

// MaxSize bounds a status blob; real ones are well under 2 KiB.
const MaxSize = 16 << 10

// maxField caps every string field a reader keeps.
const maxField = 1024

// Status is one device's latest check-in.
type Status struct {
	DeviceID         string    `json:"deviceId"`
	Channel          string    `json:"channel"`
	Class            string    `json:"class,omitempty"`
	State            string    `json:"state"`
	Revision         uint64    `json:"revision"`
	Attempted        uint64    `json:"attemptedRevision,omitempty"` // the revision the last update attempt was for
	StorePath        string    `json:"storePath"`
	BootedStorePath  string    `json:"bootedStorePath,omitempty"`
	NeedsReboot      bool      `json:"needsReboot"`
	LastError        string    `json:"lastError,omitempty"`
	Note             string    `json:"note,omitempty"`
	Cleanup          string    `json:"cleanup,omitempty"`  // what the last device-side cleanup freed
	CheckedAt        time.Time `json:"checkedAt,omitzero"` // local copies only: in the bucket, the object's LastModified
	ChangedAt        time.Time `json:"changedAt"`
	AgentVersion     string    `json:"agentVersion"`
	HeartbeatSeconds int       `json:"heartbeatSeconds,omitempty"`
	DeviceKey        string    `json:"deviceKey,omitempty"` // signed check-ins: the key that signed it (EncodeKey)
	Fetch            Fetch     `json:"fetch,omitzero"`      // what the last update downloaded
}

// Fetch is what the device's last update downloaded from the fleet's
// cache, and how much of it came as deltas. Paths from other caches are
// not counted: the agent cannot see what Nix fetched from them.
type Fetch struct {
	Revision   uint64 `json:"revision"`           // the revision it was fetched for
	Paths      int    `json:"paths"`              // store paths the device lacked and the fleet cache has
	Bytes      int64  `json:"bytes"`              // bytes downloaded for them: deltas and compressed NARs
	DeltaPaths int    `json:"deltaPaths"`         // of Paths, rebuilt from a delta
	DeltaBytes int64  `json:"deltaBytes"`         // of Bytes, delta bytes
	FullBytes  int64  `json:"fullBytes"`          // what the compressed NARs of all Paths come to
	Fallbacks  int    `json:"fallbacks"`          // deltas that could not be used (their full NARs were fetched)
	Fallback   string `json:"fallback,omitempty"` // why the first of them could not
}

// MaxFetch bounds each count of a Fetch: a pebibyte, or as many paths,
// is past any update; it keeps a fleet's sums far from overflowing.
const MaxFetch = 1 << 50

func (f Fetch) plausible() bool {
	for _, v := range []int64{int64(f.Paths), f.Bytes, int64(f.DeltaPaths), f.DeltaBytes, f.FullBytes, int64(f.Fallbacks)} {
		if v < 0 || v > MaxFetch {
			return false
		}
	}
	return true
}

// ErrInvalid: a blob that cannot be shown as a device's status.
var ErrInvalid = errors.New("invalid status blob")

// Parse decodes an untrusted blob read from devices/<deviceID>/status.json.
func Parse(deviceID string, b []byte) (*Status, error) {
	if len(b) > MaxSize {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrInvalid, len(b), MaxSize)
	}
	if Clean(deviceID, maxField) != deviceID {
		return nil, fmt.Errorf("%w: device id %q has control or invisible characters", ErrInvalid, Clean(deviceID, 64))
	}
	var s Status
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&s); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, Clean(err.Error(), maxField))
	}
	if s.DeviceID != deviceID {
		return nil, fmt.Errorf("%w: blob of device %q claims to be %q", ErrInvalid, Clean(deviceID, 64), Clean(s.DeviceID, 64))
	}
	known := false
	for _, st := range States {
		known = known || s.State == st
	}
	if !known {
		return nil, fmt.Errorf("%w: unknown state %q", ErrInvalid, Clean(s.State, 32))
	}
	if !s.Fetch.plausible() {
		return nil, fmt.Errorf("%w: fetch counts out of range (negative, or over %d)", ErrInvalid, int64(MaxFetch))
	}
	cleanStrings(&s)
	s.Fetch.Fallback = Clean(s.Fetch.Fallback, maxField)
	return &s, nil
}

// cleanStrings passes every string field of s through Clean, found by
// reflection so that a field added later cannot be missed.
func cleanStrings(s *Status) {
	v := reflect.ValueOf(s).Elem()
	for i := range v.NumField() {
		if f := v.Field(i); f.Kind() == reflect.String {
			f.SetString(Clean(f.String(), maxField))
		}
	}
}

// Clean makes untrusted text safe to show on one line, in a terminal or a
// web page: invalid UTF-8 becomes U+FFFD; line breaks, tabs and other
// white-space controls become a space; every other control character (C0,
// DEL, C1: terminal escapes) and every invisible format character
// (Unicode Cf: bidi overrides and isolates, zero-width characters, the
// byte-order mark, tag characters), which can make text display as
// something else, is dropped; and the result is cut to at most limit
// bytes on a rune boundary, ending in "…" when cut.
func Clean(s string, limit int) string {
	var b strings.Builder
	for _, r := range strings.ToValidUTF8(s, "\uFFFD") {
		switch {
		case r == '\t' || r == '\n' || r == '\v' || r == '\f' || r == '\r' || r == 0x85 || r == 0x2028 || r == 0x2029:
			b.WriteByte(' ')
		case unicode.IsControl(r) || unicode.Is(unicode.Cf, r):
		default:
			b.WriteRune(r)
		}
		if b.Len() > limit {
			break // enough to know it must be cut
		}
	}
	return cut(b.String(), limit)
}

const ellipsis = "…"

// cut shortens s to at most limit bytes on a rune boundary, ending in "…"
// when there is room for it.
func cut(s string, limit int) string {
	if len(s) <= limit {
		return s
	}
	mark := ellipsis
	if limit < len(mark) {
		mark = ""
	}
	n := max(limit-len(mark), 0)
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + mark
}

// SameFacts reports whether two statuses say the same thing apart from
// when they were checked; the agent writes only when facts change (plus a
// heartbeat).
func SameFacts(a, b Status) bool {
	a.CheckedAt, b.CheckedAt = time.Time{}, time.Time{}
	a.ChangedAt, b.ChangedAt = time.Time{}, time.Time{}
	return a == b
}
