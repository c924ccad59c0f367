package manifest

import (
	"fmt"
	"reflect"
	"slices"
	"time"
)

// AttestationType is the DSSE payload type of an attestation. Devices never
// read attestations; the distinct type keeps one from ever passing as a
// manifest, and a manifest from passing as one.
const AttestationType = "application/vnd.nix-ota.attestation.v1+json"

// Attestation is the publisher's signed record of how a revision's systems
// did in the field: good when a rollout of them completed with its devices
// healthy, bad when a rollout halted. Reverts go only to systems with a
// good record, so what is "known good" is something the publisher can
// verify, never an unsigned note in the bucket.
type Attestation struct {
	Schema   int       `json:"schema"`
	Channel  string    `json:"channel"`
	Revision uint64    `json:"revision"`
	Systems  []string  `json:"systems"` // the revision's store paths, sorted
	Good     bool      `json:"good"`
	Reason   string    `json:"reason,omitempty"`
	At       time.Time `json:"at"`
}

var attestationShape = shapeOf(reflect.TypeFor[Attestation]())

// Validate checks an attestation's own consistency.
func (a *Attestation) Validate() error {
	switch {
	case a.Schema != Schema:
		return fmt.Errorf("%w: attestation schema %d, want %d", ErrMalformed, a.Schema, Schema)
	case a.Revision == 0 || a.Revision > MaxRevision:
		return fmt.Errorf("%w: attestation revision %d is outside 1-%d", ErrMalformed, a.Revision, uint64(MaxRevision))
	case len(a.Systems) == 0 || !slices.IsSorted(a.Systems):
		return fmt.Errorf("%w: attestation systems must be a sorted, non-empty list", ErrMalformed)
	case len(a.Reason) > 4096:
		return fmt.Errorf("%w: attestation reason too long", ErrMalformed)
	}
	if err := ValidateName("channel", a.Channel); err != nil {
		return fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	for _, sp := range a.Systems {
		if err := ValidateStorePath(sp); err != nil {
			return err
		}
	}
	return nil
}

// CheckAttestation verifies an attestation envelope against t for channel:
// a threshold of trusted keys signed exactly these bytes, strictly decoded.
func CheckAttestation(t Trust, channel string, body []byte) (*Attestation, error) {
	var a Attestation
	if _, _, err := openDocument(t, body, AttestationType, MaxBodySize, attestationShape, "attestation", &a); err != nil {
		return nil, err
	}
	if a.Channel != channel {
		return nil, fmt.Errorf("%w: attestation for channel %q, reading %q", ErrWrongChannel, a.Channel, channel)
	}
	return &a, nil
}
