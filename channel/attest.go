package channel

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
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

// readAttestations reads the attestation of each verified entry (in
// parallel, bounded) and keeps, per set of systems, the newest good or bad
// record. Only revisions that verify are looked up, so junk under
// attestations/ costs nothing; records that do not verify are Skipped.
func (h *History) readAttestations(ctx context.Context, s bucket.Store) {
	h.health = map[string]Health{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, loadConcurrency)
	for _, e := range h.Entries {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			key := bucket.AttestationKey(h.Channel, e.Revision())
			a, err := h.readAttestation(ctx, s, key)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case errors.Is(err, bucket.ErrNotFound):
			case err != nil:
				h.Skipped = append(h.Skipped, Skipped{key, oneLine(err)})
			case strings.Join(a.Systems, " ") != e.Systems():
				h.Skipped = append(h.Skipped, Skipped{key, "names other systems than revision " + strconv.FormatUint(e.Revision(), 10)})
			default:
				if old, ok := h.health[e.Systems()]; !ok || a.Revision >= old.Revision {
					h.health[e.Systems()] = Health{Good: a.Good, Revision: a.Revision, Reason: a.Reason}
				}
			}
		}()
	}
	wg.Wait()
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
	if len(reason) > 4000 {
		reason = strings.ToValidUTF8(reason[:4000], "") + "…"
	}
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

// PreviousGood is where a revert of cur goes: the system that ran right
// before cur's run began, provided its entry is there (verified, with the
// number just below the run) and its newest attestation says good. It
// never searches further back: a bucket writer who deletes records must
// not be able to choose an older system, so any gap is a refusal.
func (h *History) PreviousGood(cur Entry) (Entry, error) {
	start := h.RunStart(cur)
	before := h.Before(start)
	if start <= 1 || len(before) == 0 || before[0].Revision() != start-1 {
		return Entry{}, fmt.Errorf("channel %q: %w: revision %d, the one before revision %d's system, is missing or does not verify; name a revision with --to", h.Channel, ErrNoKnownGood, start-1, start)
	}
	prev := before[0]
	hl, ok := h.HealthOf(prev)
	switch {
	case !ok:
		return Entry{}, fmt.Errorf("channel %q: %w: revision %d (%s) never completed a rollout (rollout or publish --wait records that); name a revision with --to", h.Channel, ErrNoKnownGood, prev.Revision(), prev.Systems())
	case !hl.Good:
		return Entry{}, fmt.Errorf("channel %q: %w: revision %d (%s) was recorded bad at revision %d (%s); name a revision with --to", h.Channel, ErrNoKnownGood, prev.Revision(), prev.Systems(), hl.Revision, hl.Reason)
	}
	return prev, nil
}

// ErrNoKnownGood: nothing to revert to that is known to work.
var ErrNoKnownGood = errors.New("no known-good system")
