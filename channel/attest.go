package channel

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nix-ota/nix-ota/bucket"
	"github.com/nix-ota/nix-ota/manifest"
)

// Health is what the verified attestations say about one set of systems:
// the newest record wins, so a system that halted once and later completed
// a rollout is good again.
type Health struct {
	Good     bool
	Revision uint64 // the revision the record is about
	Reason   string
}

// readAttestations verifies attestations/<channel>/*.json against the
// trust and keeps, per set of systems, the newest record. Records that do
// not verify are listed in Skipped.
func (h *History) readAttestations(ctx context.Context, s bucket.Store) error {
	h.health = map[string]Health{}
	var keys []string
	err := s.List(ctx, bucket.AttestationsPrefix(h.Channel), func(i bucket.Info) error {
		keys = append(keys, i.Key)
		return nil
	})
	if errors.Is(err, bucket.ErrUnsupported) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, key := range keys {
		a, err := h.readAttestation(ctx, s, key)
		if err != nil {
			h.Skipped = append(h.Skipped, Skipped{key, oneLine(err)})
			continue
		}
		k := strings.Join(a.Systems, " ")
		if old, ok := h.health[k]; !ok || a.Revision >= old.Revision {
			h.health[k] = Health{Good: a.Good, Revision: a.Revision, Reason: a.Reason}
		}
	}
	return nil
}

func (h *History) readAttestation(ctx context.Context, s bucket.Store, key string) (*manifest.Attestation, error) {
	o, err := s.Get(ctx, key, bucket.GetOptions{MaxSize: manifest.MaxBodySize})
	if err != nil {
		return nil, err
	}
	a, err := manifest.CheckAttestation(h.trust, h.Channel, o.Data)
	if err != nil {
		return nil, err
	}
	if key != bucket.AttestationKey(h.Channel, a.Revision) {
		return nil, fmt.Errorf("signed for revision %d, stored as %s", a.Revision, key)
	}
	return a, nil
}

// HealthOf is the newest verified record about e's systems, if any.
func (h *History) HealthOf(e Entry) (Health, bool) {
	v, ok := h.health[e.Systems()]
	return v, ok
}

// Attestation is the record that says how e did: good, or bad with why.
func (e Entry) Attestation(good bool, reason string, now time.Time) *manifest.Attestation {
	systems := slices.Clone(e.v.Payload.StorePaths())
	return &manifest.Attestation{Schema: manifest.Schema, Channel: e.v.Payload.Channel, Revision: e.Revision(),
		Systems: systems, Good: good, Reason: reason, At: now.UTC().Truncate(time.Second)}
}

// WriteAttestation stores a signed attestation body for revision rev after
// checking it verifies with h's trust.
func WriteAttestation(ctx context.Context, s bucket.Store, h *History, rev uint64, body []byte) error {
	a, err := manifest.CheckAttestation(h.trust, h.Channel, body)
	if err != nil {
		return fmt.Errorf("channel %q: attestation does not verify with the publisher's own trust (nothing written): %w", h.Channel, err)
	}
	if a.Revision != rev {
		return fmt.Errorf("channel %q: attestation is for revision %d, not %d", h.Channel, a.Revision, rev)
	}
	_, err = bucket.PutBytes(ctx, s, bucket.AttestationKey(h.Channel, rev), body, bucket.JSONPut())
	return err
}

// KnownGood is the newest verified entry before rev whose systems differ
// from avoid's and whose newest attestation is good: where a revert goes.
func (h *History) KnownGood(rev uint64, avoid Entry) (Entry, error) {
	for _, e := range h.Before(rev) {
		if e.Systems() == avoid.Systems() {
			continue
		}
		if hl, ok := h.HealthOf(e); ok && hl.Good {
			return e, nil
		}
	}
	return Entry{}, fmt.Errorf("channel %q: %w: no earlier revision with another system is known good (a rollout or publish --wait that completes healthy records that); name one with --to", h.Channel, ErrNoKnownGood)
}

// ErrNoKnownGood: nothing to revert to that is known to work.
var ErrNoKnownGood = errors.New("no known-good system")
