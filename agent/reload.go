package agent

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/nix-ota/nix-ota/internal/atomicfile"
)

// configSource builds the effective configuration: the JSON file, if any,
// with the command line's flags bound over it (flagSet) and defaults
// filled in. The daemon
// keeps one to reread the file: on NixOS /etc/nix-ota/agent.json is a
// symlink into the store that a switch replaces, and the daemon is never
// restarted by a switch (it may be the process running it), so a new
// configuration (a second trusted key during a rotation, say) must be
// picked up by the running daemon.
type configSource struct {
	path string
	args []string          // the command line's flags, parsed again over each read
	seen [sha256.Size]byte // the file content last read
}

// load reads the file and returns the effective configuration, not yet
// checked.
func (s *configSource) load() (*Config, error) {
	return s.loadWith(func(c *Config) error {
		var path string
		return flagSet(c, &path).Parse(s.args)
	})
}

// loadWith is load with a command's own flag parsing (parse binds the
// command line over c, as flagSet does).
func (s *configSource) loadWith(parse func(c *Config) error) (*Config, error) {
	cfg := &Config{}
	if s.path != "" {
		b, err := s.read()
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrConfig, err)
		}
		if cfg, err = ParseConfig(b); err != nil {
			return nil, fmt.Errorf("%s: %w", s.path, err)
		}
	}
	if err := parse(cfg); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrConfig, err)
	}
	cfg.withDefaults()
	return cfg, nil
}

// read reads the file and remembers what it read (its content, or the
// error), so changed can tell when there is something new to report.
func (s *configSource) read() ([]byte, error) {
	b, err := os.ReadFile(s.path)
	s.seen = digestOf(b, err)
	return b, err
}

// changed reports whether the file differs from what read last saw.
func (s *configSource) changed() bool {
	b, err := os.ReadFile(s.path)
	return digestOf(b, err) != s.seen
}

func digestOf(b []byte, err error) [sha256.Size]byte {
	if err != nil {
		b = []byte("\x00unreadable: " + err.Error())
	}
	return sha256.Sum256(b)
}

// reload takes a changed configuration file between polls. A file that
// cannot be read, parsed or checked, that moves the state directory
// (whose lock this process holds) or names another identity key (the
// running agent signs with the one it loaded), is logged with the reason
// and the running configuration is kept; it is not logged again until the
// file changes.
func (a *Agent) reload(src *configSource) {
	if !src.changed() {
		return
	}
	keep := func(format string, args ...any) {
		a.logf("daemon: %s changed but is not used, keeping the running configuration: "+format, append([]any{src.path}, args...)...)
	}
	cfg, err := src.load()
	if err != nil {
		keep("%v", err)
		return
	}
	trust, err := cfg.Check()
	if err != nil {
		keep("%v", err)
		return
	}
	if cfg.StateDir != a.Config.StateDir {
		keep("stateDir %s differs from the running %s; restart nix-ota-agent to move it", cfg.StateDir, a.Config.StateDir)
		return
	}
	if cfg.identityPath() != a.Config.identityPath() {
		keep("identityKey %s differs from the running %s; restart nix-ota-agent to sign with it", cfg.identityPath(), a.Config.identityPath())
		return
	}
	store, status, err := openBuckets(*cfg)
	if err != nil {
		keep("%v", err)
		return
	}
	a.Config, a.Trust, a.Store, a.Status = *cfg, trust, store, status
	a.System = localSystem(*cfg, a.Logf)
	names := make([]string, len(trust.Keys))
	for i, k := range trust.Keys {
		names[i] = k.Name
	}
	a.logf("daemon: reloaded %s: channel %s on %s, trusting %s (threshold %d), every %s",
		src.path, cfg.Channel, store, strings.Join(names, ","), trust.Threshold, cfg.Interval.Duration)
	a.noteConfig()
}

// configDigestFile, in the state directory, holds the digest of the
// settings that decided the last manifest's acceptance.
const configDigestFile = "config.sha256"

// acceptance is what decides whether this device accepts a manifest: its
// trust, its identity (cohort, class) and its substituter pins.
type acceptance struct {
	Bucket, Channel, DeviceID, DeviceClass string
	PublicKeys, AllowedSubstituters        []string
	Threshold                              int
}

// noteConfig makes the first poll after a change to those settings fetch
// and verify the channel manifest again. A manifest refused under the old
// ones (say, signed only by a key the new configuration adds) keeps its
// ETag in the state so the same bytes are not re-verified every poll;
// under the new ones they must be. Costs one full manifest GET per change;
// other settings (health checks, intervals) change nothing here.
func (a *Agent) noteConfig() {
	c := a.Config
	b, err := json.Marshal(acceptance{c.Bucket, c.Channel, c.DeviceID, c.DeviceClass, c.PublicKeys, c.AllowedSubstituters, c.Threshold})
	if err != nil {
		a.logf("config digest: %v", err)
		return
	}
	sum := sha256.Sum256(b)
	digest := []byte(hex.EncodeToString(sum[:]) + "\n")
	path := filepath.Join(a.Config.StateDir, configDigestFile)
	if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, digest) {
		return
	}
	if cs := a.state.channel(a.Config.Channel); cs.ETag != "" {
		cs.ETag = ""
		if err := a.save(); err != nil {
			a.logf("config changed: %v", err)
			return
		}
	}
	if err := atomicfile.WriteFile(path, digest, 0o600); err != nil {
		a.logf("config digest: %v", err)
	}
}
