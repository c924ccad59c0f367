package agent

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nix-ota/nix-ota/manifest"
)

// Errors of the decision core, beyond manifest's rejection reasons.
var (
	// ErrNoSystemForClass: the manifest has no system for this device class.
	ErrNoSystemForClass = errors.New("no system for this device class")
	// ErrBadRevision: the revision, or its system, was rolled back here
	// before; retried only under a new revision that sets retry.
	ErrBadRevision = errors.New("revision marked bad")
	// ErrSubstituterNotAllowed: a substituter outside allowedSubstituters.
	ErrSubstituterNotAllowed = errors.New("substituter not allowed on this device")
)

// Action is what one poll should do.
type Action int

const (
	Reject    Action = iota // the manifest fails a rule: change nothing, report why
	SkipBad                 // valid, but this revision failed here before
	NotCohort               // valid, but this device is outside the rollout
	UpToDate                // valid, and the device already runs it
	Apply                   // valid, new for this device: fetch, switch, check
)

func (a Action) String() string {
	return [...]string{"reject", "skip-bad", "not-in-cohort", "up-to-date", "apply"}[a]
}

// Device is what the decision needs to know about this device.
type Device struct {
	ID        string
	Class     string
	Channel   string
	Trust     manifest.Trust
	ForceBoot bool // the device is configured to switch only at boot
	// AllowedSubstituters, when set, are the URL prefixes the manifest's
	// substituters must start with.
	AllowedSubstituters []string
}

// Decision is the outcome of Decide.
type Decision struct {
	Action    Action
	Err       error              // why, for Reject and SkipBad
	Verified  *manifest.Verified // nil for Reject
	StorePath string             // the system for this device's class
	Mode      string             // switch or boot
}

// Decide is the agent's whole policy for one manifest, with no I/O: given
// what the device remembers of the channel, the system its profile points
// at, the manifest bytes and the time, what should it do?
func Decide(d Device, cs ChannelState, current string, body []byte, now time.Time) Decision {
	v, err := manifest.Verify(d.Trust, d.Channel, cs.manifestState(), body, now)
	if err != nil {
		return Decision{Action: Reject, Err: err}
	}
	p := v.Payload
	for _, sub := range p.Substituters {
		if !substituterAllowed(sub, d.AllowedSubstituters) {
			return Decision{Action: Reject, Verified: v, Err: fmt.Errorf("%w: revision %d names %q, which starts with none of allowedSubstituters %q", ErrSubstituterNotAllowed, p.Revision, sub, d.AllowedSubstituters)}
		}
	}
	sp, ok := p.StorePathFor(d.Class)
	if !ok {
		return Decision{Action: Reject, Verified: v, Err: fmt.Errorf("%w: revision %d has no system for class %q", ErrNoSystemForClass, p.Revision, d.Class)}
	}
	mode := p.Switch
	if d.ForceBoot {
		mode = manifest.SwitchBoot
	}
	dec := Decision{Verified: v, StorePath: sp, Mode: mode}
	switch reason, bad := cs.isBad(p.Revision, sp, p.Retry); {
	case current == sp:
		dec.Action = UpToDate
	case bad:
		dec.Action, dec.Err = SkipBad, fmt.Errorf("%w: revision %d (or its system) was rolled back on this device (%s); publish a new build, or publish this one again with retry set to try it once more", ErrBadRevision, p.Revision, reason)
	case !InCohort(p.Rollout.Salt, d.ID, p.Rollout.Percent):
		dec.Action = NotCohort
	default:
		dec.Action = Apply
	}
	return dec
}

// substituterAllowed reports whether s starts with one of the prefixes at a
// URL boundary, so https://cache.example.org does not admit
// https://cache.example.org.evil.net. No prefixes allow everything (the
// substituter policy in package manifest still applies).
func substituterAllowed(s string, prefixes []string) bool {
	if len(prefixes) == 0 {
		return true
	}
	for _, p := range prefixes {
		rest, ok := strings.CutPrefix(s, p)
		if ok && (rest == "" || strings.ContainsAny(p[len(p)-1:], "/?&") || rest[0] == '/' || rest[0] == '?') {
			return true
		}
	}
	return false
}

// InCohort is manifest.Rollout.Includes, kept for readability here.
func InCohort(salt, deviceID string, percent int) bool {
	return manifest.Rollout{Percent: percent, Salt: salt}.Includes(deviceID)
}
