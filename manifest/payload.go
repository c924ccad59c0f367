package manifest

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/nix-community/go-nix/pkg/storepath"
)

// PayloadType is the DSSE payload type of a v1 manifest.
const PayloadType = "application/vnd.nix-ota.manifest.v1+json"

// Schema is the payload schema this code reads and writes.
const Schema = 1

// MaxBodySize bounds every manifest read (rule 1): no reader
// of a manifest reads more, so an endless or huge body cannot exhaust memory.
const MaxBodySize = 1 << 20

// MaxRevision is the highest revision a publisher signs or a device
// accepts: 2^53-1, the largest integer every JSON reader holds exactly, so
// a revision can never wrap or round, and no bucket writer can push a
// channel to the end of the number line.
const MaxRevision = 1<<53 - 1

// DefaultClass is the device class used when a device configures none.
const DefaultClass = "default"

// Switch modes.
const (
	SwitchNow  = "switch" // switch-to-configuration switch
	SwitchBoot = "boot"   // switch-to-configuration boot, then reboot policy
)

// Payload is the signed content of a manifest (docs/design.md, Payload).
type Payload struct {
	Schema       int       `json:"schema"`
	Channel      string    `json:"channel"`
	Revision     uint64    `json:"revision"`
	StorePath    string    `json:"storePath,omitempty"`
	Systems      Systems   `json:"systems,omitempty"`
	Substituters []string  `json:"substituters"`
	PublishedAt  time.Time `json:"publishedAt"`
	ExpiresAt    time.Time `json:"expiresAt"`
	Rollout      Rollout   `json:"rollout"`
	Switch       string    `json:"switch"`
	Message      string    `json:"message,omitempty"`
	Publisher    string    `json:"publisher,omitempty"`
	// Retry lets a device try again a system it rolled back before (under
	// an earlier revision); a device where this revision itself failed
	// does not. Agents older than this field refuse a manifest carrying it
	// (no unknown field, rule 1) and stay on their system.
	Retry bool `json:"retry,omitempty"`
}

// Systems maps a device class to the system store path for that class, for
// mixed fleets (for example rpi4 and x86 devices on one channel).
type Systems map[string]string

// Rollout says which share of the fleet should apply this revision. A device
// is in the cohort when hash(salt, deviceId) falls below Percent.
type Rollout struct {
	Percent int    `json:"percent"`
	Salt    string `json:"salt"`
}

// Includes places a device in the rollout deterministically: the same salt
// and device id always give the same answer, and raising the percentage
// only ever adds devices, so no device flaps between rollout steps.
func (r Rollout) Includes(deviceID string) bool {
	if r.Percent >= 100 {
		return true
	}
	if r.Percent <= 0 {
		return false
	}
	h := sha256.Sum256([]byte(r.Salt + "\x00" + deviceID))
	return binary.BigEndian.Uint64(h[:8])%10000 < uint64(r.Percent)*100
}

// StorePathFor returns the store path a device of the given class should
// run, and false when the manifest carries nothing for that class.
func (p *Payload) StorePathFor(class string) (string, bool) {
	if class == "" {
		class = DefaultClass
	}
	if sp, ok := p.Systems[class]; ok {
		return sp, true
	}
	if p.StorePath != "" && class == DefaultClass {
		return p.StorePath, true
	}
	return "", false
}

// StorePaths returns every store path the manifest names, sorted, without
// duplicates.
func (p *Payload) StorePaths() []string {
	seen := map[string]bool{}
	var out []string
	add := func(s string) {
		if s != "" && !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	add(p.StorePath)
	for _, s := range p.Systems {
		add(s)
	}
	sort.Strings(out)
	return out
}

// ValidateName checks a channel, device, class or key name against the
// name grammar (docs/design.md, Names): [A-Za-z0-9][A-Za-z0-9._-]{0,63}.
// Names become object keys and file names, so this runs before any I/O.
// (A loop rather than a regexp: compiling that bounded repetition at start-up was the largest
// single cost of every agent process; see docs/perf.md.)
func ValidateName(kind, name string) error {
	ok := len(name) >= 1 && len(name) <= 64
	for i := 0; ok && i < len(name); i++ {
		c := name[i]
		ok = c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || i > 0 && (c == '.' || c == '_' || c == '-')
	}
	if !ok {
		return fmt.Errorf("%w: %s %q: must be 1-64 characters of A-Z a-z 0-9 . _ - and start with a letter or digit", ErrInvalidName, kind, name)
	}
	return nil
}

// ValidateStorePath checks rule 6 with go-nix's store path parser: an
// absolute /nix/store path with a valid hash and name, nothing below it,
// and not a derivation (realising a .drv builds it on the device).
func ValidateStorePath(s string) error {
	sp, err := storepath.FromAbsolutePath(s)
	if err != nil {
		return fmt.Errorf("%w: %q: %v", ErrInvalidStorePath, s, err)
	}
	if sp.Absolute() != s {
		return fmt.Errorf("%w: %q: not a top-level store path", ErrInvalidStorePath, s)
	}
	if strings.HasSuffix(sp.Name, ".drv") {
		return fmt.Errorf("%w: %q is a derivation, which the device would build; give the built system's output path (readlink -f ./result)", ErrInvalidStorePath, s)
	}
	return nil
}

// Validate checks the payload's own consistency: the parts of rules 1 and
// 6 that need nothing but the payload (not the signatures, the device's
// channel, its state or the clock). Publishers run it before signing;
// Verify runs it after the signature check.
func (p *Payload) Validate() error {
	if p.Schema != Schema {
		return fmt.Errorf("%w: schema %d, this agent understands %d", ErrMalformed, p.Schema, Schema)
	}
	if err := ValidateName("channel", p.Channel); err != nil {
		return fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if p.Revision == 0 || p.Revision > MaxRevision {
		return fmt.Errorf("%w: revision %d is outside 1-%d", ErrMalformed, p.Revision, uint64(MaxRevision))
	}
	if p.StorePath == "" && len(p.Systems) == 0 {
		return fmt.Errorf("%w: no storePath and no systems", ErrInvalidStorePath)
	}
	if p.StorePath != "" && len(p.Systems) > 0 {
		return fmt.Errorf("%w: both storePath and systems; use systems.%s or storePath, not both", ErrMalformed, DefaultClass)
	}
	if p.StorePath != "" {
		if err := ValidateStorePath(p.StorePath); err != nil {
			return err
		}
	}
	for class, sp := range p.Systems {
		if err := ValidateName("device class", class); err != nil {
			return fmt.Errorf("%w: %v", ErrMalformed, err)
		}
		if err := ValidateStorePath(sp); err != nil {
			return fmt.Errorf("%w (class %s)", err, class)
		}
	}
	for _, s := range p.Substituters {
		if err := ValidateSubstituter(s); err != nil {
			return err
		}
	}
	if p.Rollout.Percent < 0 || p.Rollout.Percent > 100 {
		return fmt.Errorf("%w: rollout percent %d is outside 0-100", ErrMalformed, p.Rollout.Percent)
	}
	if len(p.Rollout.Salt) > 128 {
		return fmt.Errorf("%w: rollout salt longer than 128 bytes", ErrMalformed)
	}
	if p.Switch != SwitchNow && p.Switch != SwitchBoot {
		return fmt.Errorf("%w: switch mode %q (want %q or %q)", ErrMalformed, p.Switch, SwitchNow, SwitchBoot)
	}
	if p.ExpiresAt.IsZero() || !p.ExpiresAt.After(p.PublishedAt) {
		return fmt.Errorf("%w: expiresAt %s is not after publishedAt %s", ErrMalformed, p.ExpiresAt.Format(time.RFC3339), p.PublishedAt.Format(time.RFC3339))
	}
	if len(p.Message) > 4096 || len(p.Publisher) > 256 {
		return fmt.Errorf("%w: message or publisher too long", ErrMalformed)
	}
	return nil
}

// decodePayload parses payload bytes strictly: unknown fields are refused,
// because an old agent silently ignoring a field it does not know (say, a
// new per-class system map) could apply the wrong system; so are duplicate
// keys, case variants of field names and invalid UTF-8, which other JSON
// readers resolve differently than Go does (see checkStrict).
func decodePayload(b []byte) (*Payload, error) {
	if len(b) > MaxBodySize {
		return nil, fmt.Errorf("%w: payload of %d bytes, limit %d", ErrTooLarge, len(b), MaxBodySize)
	}
	if !utf8.Valid(b) {
		return nil, fmt.Errorf("%w: payload is not valid UTF-8", ErrMalformed)
	}
	if err := checkStrict(b, payloadShape); err != nil {
		return nil, fmt.Errorf("%w: payload: %v", ErrMalformed, err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var p Payload
	if err := dec.Decode(&p); err != nil {
		return nil, fmt.Errorf("%w: payload: %v", ErrMalformed, err)
	}
	if len(p.Systems) == 0 {
		p.Systems = nil // "systems":{} and no systems are one payload
	}
	return &p, nil
}
