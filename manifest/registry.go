package manifest

import (
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"time"
)

// RegistryType is the DSSE payload type of the device registry.
const RegistryType = "application/vnd.nix-ota.registry.v1+json"

// MaxRegistrySize bounds a registry envelope: about 400,000 devices.
const MaxRegistrySize = 64 << 20

// DeviceKeyPrefix starts a device key as check-ins and the registry write
// it: "ed25519:" and the raw 32-byte key in standard base64.
const DeviceKeyPrefix = "ed25519:"

// Registry is the publisher's signed list of which device id owns which
// identity key. Readers count a device's status only when it is signed by
// the key registered here for the id it names; anyone able to write under
// devices/ (one fleet-wide check-in credential) can then still write
// bytes, but not a status that counts.
type Registry struct {
	Schema   int           `json:"schema"`
	Version  uint64        `json:"version"` // grows by one per change; readers refuse to go back
	IssuedAt time.Time     `json:"issuedAt"`
	Devices  []DeviceEntry `json:"devices"`           // sorted by id, one entry per id
	Revoked  []DeviceEntry `json:"revoked,omitempty"` // keys removed; never re-admitted without naming the device
}

// DeviceEntry is one device's registered (or revoked) key.
type DeviceEntry struct {
	ID    string    `json:"id"`
	Key   string    `json:"key"` // DeviceKeyPrefix + base64
	Class string    `json:"class,omitempty"`
	At    time.Time `json:"at"` // when approved, or revoked
}

// RegistryState is what a reader remembers of the registry: the highest
// version it accepted and that version's payload digest.
type RegistryState struct {
	Version uint64
	Digest  string
}

// VerifiedRegistry is a registry that passed CheckRegistry.
type VerifiedRegistry struct {
	*Registry
	State  RegistryState
	KeyIDs []string
}

var registryShape = shapeOf(reflect.TypeFor[Registry]())

// Lookup returns the registered entry of device id.
func (r *Registry) Lookup(id string) (DeviceEntry, bool) {
	i, ok := slices.BinarySearchFunc(r.Devices, id, func(e DeviceEntry, id string) int { return strings.Compare(e.ID, id) })
	if !ok {
		return DeviceEntry{}, false
	}
	return r.Devices[i], true
}

// IsRevoked reports whether key was revoked for device id.
func (r *Registry) IsRevoked(id, key string) bool {
	return slices.ContainsFunc(r.Revoked, func(e DeviceEntry) bool { return e.ID == id && e.Key == key })
}

// Validate checks a registry's own consistency.
func (r *Registry) Validate() error {
	switch {
	case r.Schema != Schema:
		return fmt.Errorf("%w: registry schema %d, want %d", ErrMalformed, r.Schema, Schema)
	case r.Version == 0 || r.Version > MaxRevision:
		return fmt.Errorf("%w: registry version %d is outside 1-%d", ErrMalformed, r.Version, uint64(MaxRevision))
	case r.IssuedAt.IsZero():
		return fmt.Errorf("%w: registry has no issuedAt", ErrMalformed)
	}
	owner := make(map[string]string, len(r.Devices))
	for i, e := range r.Devices {
		if err := e.validate(); err != nil {
			return err
		}
		if i > 0 && r.Devices[i-1].ID >= e.ID {
			return fmt.Errorf("%w: registry devices must be sorted by id, each once (%q after %q)", ErrMalformed, e.ID, r.Devices[i-1].ID)
		}
		// One key, one device: else one device's key would speak for two.
		if prev, dup := owner[e.Key]; dup {
			return fmt.Errorf("%w: registry gives %s and %s the same key", ErrMalformed, prev, e.ID)
		}
		owner[e.Key] = e.ID
	}
	for _, e := range r.Revoked {
		if err := e.validate(); err != nil {
			return err
		}
	}
	return nil
}

func (e DeviceEntry) validate() error {
	if err := ValidateName("device id", e.ID); err != nil {
		return fmt.Errorf("%w: registry: %v", ErrMalformed, err)
	}
	if e.Class != "" {
		if err := ValidateName("device class", e.Class); err != nil {
			return fmt.Errorf("%w: registry: %v", ErrMalformed, err)
		}
	}
	if _, err := ParseDeviceKey(e.Key); err != nil {
		return fmt.Errorf("%w: registry entry %s: %v", ErrMalformed, e.ID, err)
	}
	return nil
}

// CheckRegistry verifies a registry envelope: a threshold of t's keys
// signed exactly these strictly decoded bytes, consistent, and not older
// than (or, at the same version, different from) what the reader accepted
// before (seen). It does no I/O.
func CheckRegistry(t Trust, body []byte, seen RegistryState) (*VerifiedRegistry, error) {
	var r Registry
	ids, payload, err := openDocument(t, body, RegistryType, MaxRegistrySize, registryShape, "registry", &r)
	if err != nil {
		return nil, err
	}
	st := RegistryState{Version: r.Version, Digest: Digest(payload)}
	switch {
	case st.Version < seen.Version:
		return nil, fmt.Errorf("%w: registry version %d is older than version %d, read before", ErrRollback, st.Version, seen.Version)
	case st.Version == seen.Version && seen.Digest != "" && st.Digest != seen.Digest:
		return nil, fmt.Errorf("%w: registry version %d was read before with different content", ErrEquivocation, st.Version)
	}
	return &VerifiedRegistry{Registry: &r, State: st, KeyIDs: ids}, nil
}

// EncodeDeviceKey writes a device key in the form ParseDeviceKey reads.
func EncodeDeviceKey(k ed25519.PublicKey) string {
	return DeviceKeyPrefix + base64.StdEncoding.EncodeToString(k)
}

// ParseDeviceKey reads "ed25519:BASE64", canonical base64 only, refusing
// keys that would accept forged signatures (as ParsePublicKey does).
func ParseDeviceKey(s string) (ed25519.PublicKey, error) {
	b64, ok := strings.CutPrefix(s, DeviceKeyPrefix)
	if !ok {
		return nil, fmt.Errorf("%w: device key %q: want %sBASE64", ErrInvalidKey, clipForError(s), DeviceKeyPrefix)
	}
	raw, err := base64.StdEncoding.Strict().DecodeString(b64)
	if err != nil || base64.StdEncoding.EncodeToString(raw) != b64 {
		return nil, fmt.Errorf("%w: device key %q: not canonical standard base64", ErrInvalidKey, clipForError(s))
	}
	if len(raw) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("%w: device key: %d bytes, an ed25519 key has %d", ErrInvalidKey, len(raw), ed25519.PublicKeySize)
	}
	if why := weakEd25519(raw); why != "" {
		return nil, fmt.Errorf("%w: device key: %s", ErrInvalidKey, why)
	}
	return ed25519.PublicKey(raw), nil
}

// ErrNoRegistry: the bucket has no device registry yet.
var ErrNoRegistry = errors.New("no device registry")
