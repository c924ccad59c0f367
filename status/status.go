// Package status is the check-in blob a device writes to
// devices/<id>/status.json (DESIGN.md §5), shared by the agent that writes
// it and the CLI and dashboard that read it.
//
// Threat model: a status blob is written by a device, and a device may be
// compromised. Readers treat every field as untrusted text: Parse bounds the
// size, refuses a blob whose deviceId does not match its key, and caps
// every string; the dashboard escapes everything it shows.
package status

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
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
	Cleanup          string    `json:"cleanup,omitempty"` // what the last device-side cleanup freed
	CheckedAt        time.Time `json:"checkedAt"`
	ChangedAt        time.Time `json:"changedAt"`
	AgentVersion     string    `json:"agentVersion"`
	HeartbeatSeconds int       `json:"heartbeatSeconds,omitempty"`
}

// ErrInvalid: a blob that cannot be shown as a device's status.
var ErrInvalid = errors.New("invalid status blob")

// Parse decodes an untrusted blob read from devices/<deviceID>/status.json.
func Parse(deviceID string, b []byte) (*Status, error) {
	if len(b) > MaxSize {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrInvalid, len(b), MaxSize)
	}
	var s Status
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&s); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if s.DeviceID != deviceID {
		return nil, fmt.Errorf("%w: blob of device %q claims to be %q", ErrInvalid, deviceID, clip(s.DeviceID, 64))
	}
	known := false
	for _, st := range States {
		known = known || s.State == st
	}
	if !known {
		return nil, fmt.Errorf("%w: unknown state %q", ErrInvalid, clip(s.State, 32))
	}
	for _, f := range []*string{&s.Channel, &s.Class, &s.StorePath, &s.BootedStorePath, &s.LastError, &s.Note, &s.Cleanup, &s.AgentVersion} {
		*f = clip(*f, maxField)
	}
	return &s, nil
}

// clip cuts s to at most n bytes on a rune boundary, marking the cut.
func clip(s string, n int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

// SameFacts reports whether two statuses say the same thing apart from
// when they were checked; the agent writes only when facts change (plus a
// heartbeat).
func SameFacts(a, b Status) bool {
	a.CheckedAt, b.CheckedAt = time.Time{}, time.Time{}
	a.ChangedAt, b.ChangedAt = time.Time{}, time.Time{}
	return a == b
}
