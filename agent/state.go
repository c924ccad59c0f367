package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/nix-ota/nix-ota/internal/atomicfile"
	"github.com/nix-ota/nix-ota/manifest"
	"github.com/nix-ota/nix-ota/status"
)

// StateFormat is the version of the state file layout.
const StateFormat = 1

// State is everything the agent remembers, in one JSON file written
// atomically (temp, fsync, rename, fsync dir) after every change.
type State struct {
	Format   int                      `json:"format"`
	Channels map[string]*ChannelState `json:"channels"`
	// Applied is the last revision this agent switched to and confirmed.
	Applied *Applied `json:"applied,omitempty"`
	// Attempted is the revision of the last update attempt, reported so a
	// publisher can tell a failure of its revision from an older one.
	Attempted uint64 `json:"attempted,omitempty"`
	// Cleanup says what the last device-side cleanup freed.
	Cleanup string `json:"cleanup,omitempty"`
	// Fetch is what the last fetched closure downloaded, and how much of
	// it came as deltas.
	Fetch status.Fetch `json:"fetch,omitzero"`
	// Pending is an update in flight; found on start, it is finished or
	// rolled back before anything else.
	Pending *Pending `json:"pending,omitempty"`
	// Status is the last status written, and when; with RemoteAt it
	// decides whether facts changed or a heartbeat is due.
	Status   status.Status `json:"status"`
	RemoteAt time.Time     `json:"remoteAt,omitempty"`
	// RemoteStale: the last status could not be written everywhere (the
	// bucket, the local status.json, the Prometheus textfile); the next
	// poll writes it, whatever else happens.
	RemoteStale bool `json:"remoteStale,omitempty"`
}

// ChannelState is the anti-rollback memory of one channel (docs/design.md,
// Manifest rules, acceptance rule 4), kept per channel so moving a device
// between channels and back never lowers it, and the revisions and systems
// rolled back on it (docs/design.md, Agent steps).
type ChannelState struct {
	Revision      uint64            `json:"revision"`
	PayloadDigest string            `json:"payloadDigest,omitempty"`
	ExpiresAt     time.Time         `json:"expiresAt,omitempty"`
	ETag          string            `json:"etag,omitempty"`
	Bad           map[string]string `json:"bad,omitempty"`      // revision -> why it was rolled back
	BadPaths      map[string]string `json:"badPaths,omitempty"` // store path -> why it was rolled back
}

// Applied is a confirmed system.
type Applied struct {
	Channel   string    `json:"channel"`
	Revision  uint64    `json:"revision"`
	StorePath string    `json:"storePath"`
	At        time.Time `json:"at"`
}

// Pending is an update between "profile about to change" and "healthy".
type Pending struct {
	Channel   string    `json:"channel"`
	Revision  uint64    `json:"revision"`
	StorePath string    `json:"storePath"`
	Previous  string    `json:"previous"`
	Mode      string    `json:"mode"`
	Attempts  int       `json:"attempts"`
	StartedAt time.Time `json:"startedAt"`
	// ProfileSet: the profile was moved to StorePath. Saved before the
	// switch, so that a start which finds the profile back on Previous
	// knows the update was rolled back, not that it never started.
	ProfileSet bool `json:"profileSet,omitempty"`
	// Installed: a boot-mode update whose switch-to-configuration boot
	// succeeded; it is confirmed (health-checked) once the device has
	// booted into it, or rolled back.
	Installed bool   `json:"installed,omitempty"`
	ETag      string `json:"etag,omitempty"`
}

func newState() *State { return &State{Format: StateFormat, Channels: map[string]*ChannelState{}} }

// channel returns the memory of a channel, creating it.
func (s *State) channel(name string) *ChannelState {
	if s.Channels == nil {
		s.Channels = map[string]*ChannelState{}
	}
	cs := s.Channels[name]
	if cs == nil {
		cs = &ChannelState{}
		s.Channels[name] = cs
	}
	return cs
}

func (cs *ChannelState) manifestState() manifest.State {
	return manifest.State{Revision: cs.Revision, PayloadDigest: cs.PayloadDigest}
}

// isBad reports a revision, or a system, that was rolled back here. The
// system counts too: a staged rollout republishes the same system under
// new revisions, and a device must not retry it at every step, unless the
// publisher signed retry into this revision: then only this revision's own
// failure here counts.
func (cs *ChannelState) isBad(rev uint64, storePath string, retry bool) (string, bool) {
	if r, ok := cs.Bad[strconv.FormatUint(rev, 10)]; ok || retry {
		return r, ok
	}
	r, ok := cs.BadPaths[storePath]
	return r, ok
}

func (cs *ChannelState) markBad(rev uint64, storePath, reason string) {
	if cs.Bad == nil {
		cs.Bad = map[string]string{}
	}
	if cs.BadPaths == nil {
		cs.BadPaths = map[string]string{}
	}
	cs.Bad[strconv.FormatUint(rev, 10)] = reason
	cs.BadPaths[storePath] = reason
}

// stateFile is the state file's name in the state directory.
const stateFile = "state.json"

// loadState reads the state file; a missing file is a fresh state. A
// corrupt one is an error: guessing could lower the anti-rollback memory.
func loadState(dir string) (*State, error) {
	b, err := os.ReadFile(filepath.Join(dir, stateFile))
	if errors.Is(err, fs.ErrNotExist) {
		return newState(), nil
	}
	if err != nil {
		return nil, err
	}
	s := newState()
	if err := json.Unmarshal(b, s); err != nil {
		return nil, fmt.Errorf("state file %s is corrupt (%v); move it aside to start over, which forgets the highest accepted revisions", filepath.Join(dir, stateFile), err)
	}
	if s.Format != StateFormat {
		return nil, fmt.Errorf("state file %s has format %d, this agent understands %d", filepath.Join(dir, stateFile), s.Format, StateFormat)
	}
	return s, nil
}

// saveState writes the state file atomically; only Agent.save calls it.
func saveState(dir string, s *State) error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(filepath.Join(dir, stateFile), append(b, '\n'), 0o600)
}
