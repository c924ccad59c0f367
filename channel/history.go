package channel

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/nix-ota/nix-ota/bucket"
	"github.com/nix-ota/nix-ota/internal/parallel"
	"github.com/nix-ota/nix-ota/manifest"
	"github.com/nix-ota/nix-ota/status"
)

// ErrUnverified: something the publisher was asked to build on (the
// channel pointer or a history entry) does not verify with its trust. It is
// always joined with the manifest.Err* reason, so callers can tell a
// rejection (exit 3) from an I/O failure.
var ErrUnverified = errors.New("not verified")

// loadConcurrency bounds parallel history reads.
const loadConcurrency = 8

// Entry is a manifest that passed manifest.CheckSigned against the trust
// History was loaded with. Only Load makes entries, so a publisher command
// can only derive a new revision from content a threshold of its trusted
// keys signed.
type Entry struct {
	v   *manifest.Verified
	key string
}

// Revision is the entry's signed revision.
func (e Entry) Revision() uint64 { return e.v.Payload.Revision }

// Key is the object the entry was read from.
func (e Entry) Key() string { return e.key }

// Payload returns a copy of the verified payload.
func (e Entry) Payload() manifest.Payload {
	p := *e.v.Payload
	p.Systems = maps.Clone(p.Systems)
	p.Substituters = slices.Clone(p.Substituters)
	return p
}

// Systems is the entry's store paths, space-separated, for messages and
// comparisons.
func (e Entry) Systems() string { return strings.Join(e.v.Payload.StorePaths(), " ") }

// Skipped is an object under channels/<name>/ that is not a verified
// history entry, and why.
type Skipped struct {
	Key    string
	Reason string
}

// History is a channel as the publisher may build on it: the pointer, and
// every history entry that verifies with trust. Its methods are pure.
type History struct {
	Channel string
	Pointer *Pointer // nil: nothing published yet
	Head    *Entry   // the pointer's manifest when it verifies
	HeadErr error    // why the pointer does not verify (Pointer != nil, Head == nil)
	Entries []Entry  // verified history, ascending by revision
	Skipped []Skipped
	trust   manifest.Trust
	health  map[string]Health // by Entry.Systems, from verified attestations
}

// Load reads channel name and verifies its pointer and each history entry
// against trust (signature threshold, channel, revision matching the key).
// Entries that do not verify are listed in Skipped, never used.
func Load(ctx context.Context, s bucket.Store, name string, trust manifest.Trust) (*History, error) {
	if err := manifest.ValidateName("channel", name); err != nil {
		return nil, err
	}
	if err := trust.Check(); err != nil {
		return nil, err
	}
	h := &History{Channel: name, trust: trust}
	ptr, err := ReadPointer(ctx, s, name)
	if errors.Is(err, bucket.ErrTooLarge) {
		return nil, fmt.Errorf("channel %q: %s: %w: %w", name, bucket.ChannelKey(name), manifest.ErrTooLarge, err)
	}
	if err != nil {
		return nil, err
	}
	if h.Pointer = ptr; ptr != nil {
		if v, err := manifest.CheckSigned(trust, name, ptr.Body); err != nil {
			h.HeadErr = err
		} else {
			h.Head = &Entry{v: v, key: bucket.ChannelKey(name)}
		}
	}
	revs, junk, err := ListHistory(ctx, s, name)
	if err != nil {
		return nil, err
	}
	h.Skipped = junk
	h.readEntries(ctx, s, revs)
	h.readAttestations(ctx, s)
	return h, nil
}

// ListHistory lists a channel's history keys: the revision numbers this
// code could ever sign, and every other object under channels/<name>/ with
// why it is not one. Nothing is read or verified.
func ListHistory(ctx context.Context, s bucket.Store, name string) ([]uint64, []Skipped, error) {
	if err := manifest.ValidateName("channel", name); err != nil {
		return nil, nil, err
	}
	var revs []uint64
	var junk []Skipped
	err := s.List(ctx, bucket.RevisionsPrefix(name), func(i bucket.Info) error {
		rev, ok := bucket.ParseRevisionKey(name, i.Key)
		switch {
		case !ok:
			junk = append(junk, Skipped{i.Key, "not a history entry name (want <revision>.json)"})
		case rev > manifest.MaxRevision:
			junk = append(junk, Skipped{i.Key, fmt.Sprintf("revision above the maximum %d", uint64(manifest.MaxRevision))})
		default:
			revs = append(revs, rev)
		}
		return nil
	})
	if errors.Is(err, bucket.ErrUnsupported) {
		return nil, nil, nil // a read-only http(s):// bucket cannot list
	}
	sort.Slice(revs, func(i, j int) bool { return revs[i] < revs[j] })
	return revs, junk, err
}

func (h *History) readEntries(ctx context.Context, s bucket.Store, revs []uint64) {
	var mu sync.Mutex
	parallel.Each(loadConcurrency, revs, func(rev uint64) {
		e, skip := h.readEntry(ctx, s, rev)
		mu.Lock()
		defer mu.Unlock()
		if skip != nil {
			h.Skipped = append(h.Skipped, *skip)
		} else {
			h.Entries = append(h.Entries, e)
		}
	})
	sort.Slice(h.Entries, func(i, j int) bool { return h.Entries[i].Revision() < h.Entries[j].Revision() })
	sort.Slice(h.Skipped, func(i, j int) bool { return h.Skipped[i].Key < h.Skipped[j].Key })
}

func (h *History) readEntry(ctx context.Context, s bucket.Store, rev uint64) (Entry, *Skipped) {
	key := bucket.RevisionKey(h.Channel, rev)
	body, err := ReadRevision(ctx, s, h.Channel, rev)
	if err != nil {
		return Entry{}, &Skipped{key, oneLine(err)}
	}
	v, err := manifest.CheckSigned(h.trust, h.Channel, body)
	if err != nil {
		return Entry{}, &Skipped{key, oneLine(err)}
	}
	if v.Payload.Revision != rev {
		return Entry{}, &Skipped{key, fmt.Sprintf("signed as revision %d, stored as %d", v.Payload.Revision, rev)}
	}
	return Entry{v: v, key: key}, nil
}

func oneLine(err error) string { return status.Clean(err.Error(), 200) }

// Current is the channel's verified current manifest: what every command
// that re-signs the channel builds on. It refuses a pointer that does not
// verify rather than falling back to history, since that is exactly what a
// bucket writer would forge.
func (h *History) Current() (Entry, error) {
	switch {
	case h.Pointer == nil:
		return Entry{}, fmt.Errorf("channel %q: %w: nothing published yet (%s)", h.Channel, bucket.ErrNotFound, bucket.ChannelKey(h.Channel))
	case h.Head == nil:
		return Entry{}, fmt.Errorf("channel %q: %s %w with the signing keys, nothing signed: %w (signed by a key you rotated from? add its --public-key; by fewer keys than you sign with? add --threshold; tampered with? delete it, history keeps every signed revision)",
			h.Channel, bucket.ChannelKey(h.Channel), ErrUnverified, h.HeadErr)
	}
	if err := h.headMatchesHistory(); err != nil {
		return Entry{}, err
	}
	return *h.Head, nil
}

// headMatchesHistory refuses a genuine but replayed pointer: one older than
// the newest verified history entry, or not the entry of its own number.
// Building on it would sign an old system as the newest revision.
func (h *History) headMatchesHistory() error {
	head := h.Head
	if n := len(h.Entries); n > 0 && h.Entries[n-1].Revision() > head.Revision() {
		return fmt.Errorf("channel %q: %s is revision %d but history has verified revision %d: %w (an old manifest replayed), nothing signed; copy %s over %s, or publish a new system",
			h.Channel, bucket.ChannelKey(h.Channel), head.Revision(), h.Entries[n-1].Revision(), manifest.ErrRollback, h.Entries[n-1].Key(), bucket.ChannelKey(h.Channel))
	}
	for _, e := range h.Entries {
		if e.Revision() == head.Revision() && e.v.PayloadDigest != head.v.PayloadDigest {
			return fmt.Errorf("channel %q: %s and %s are both revision %d with different content: %w, nothing signed", h.Channel, bucket.ChannelKey(h.Channel), e.Key(), head.Revision(), manifest.ErrEquivocation)
		}
	}
	return nil
}

// CheckReports refuses to build on history that devices have moved past:
// when more than half of the channel's reporting devices accepted a
// revision newer than the newest verified one here, history was truncated
// and the pointer replayed. A majority, so that one compromised device
// cannot block re-signing by reporting a made-up revision.
func (h *History) CheckReports(reports []Report) error {
	var reporting, ahead int
	var newest uint64
	for _, r := range reports {
		if r.Status.Channel != h.Channel || r.Status.Revision == 0 {
			continue
		}
		reporting++
		if r.Status.Revision > h.Latest() {
			ahead++
			newest = max(newest, r.Status.Revision)
		}
	}
	if ahead*2 > reporting {
		return fmt.Errorf("channel %q: %d of %d devices report revision %d or newer, but the newest verified revision in the bucket is %d: %w (history truncated and an old manifest replayed?), nothing signed; restore channels/%s/ from a backup or publish a new system",
			h.Channel, ahead, reporting, newest, h.Latest(), manifest.ErrRollback, h.Channel)
	}
	return nil
}

// unverifiedAt reports whether Load found an object at revision rev that
// is not a verified entry (junk a bucket writer may plant to use up
// Publish's attempts).
func (h *History) unverifiedAt(rev uint64) bool {
	key := bucket.RevisionKey(h.Channel, rev)
	for _, s := range h.Skipped {
		if s.Key == key {
			return true
		}
	}
	return false
}

// Latest is the highest verified revision (pointer or history), 0 if none.
func (h *History) Latest() uint64 {
	var n uint64
	if h.Head != nil {
		n = h.Head.Revision()
	}
	if k := len(h.Entries); k > 0 {
		n = max(n, h.Entries[k-1].Revision())
	}
	return n
}

// Next is the revision the next publish claims: one above the highest
// verified revision, never above manifest.MaxRevision. Unverified names
// (a bucket writer's 18446744073709551614.json) cannot move it.
func (h *History) Next() (uint64, error) {
	n := h.Latest() + 1
	if n > manifest.MaxRevision {
		return 0, fmt.Errorf("channel %q: revision %d is the highest a channel can have; start a new channel", h.Channel, h.Latest())
	}
	return n, nil
}

// Find returns the verified entry of revision rev, or why there is none.
func (h *History) Find(rev uint64) (Entry, error) {
	for _, e := range h.Entries {
		if e.Revision() == rev {
			return e, nil
		}
	}
	key := bucket.RevisionKey(h.Channel, rev)
	for _, s := range h.Skipped {
		if s.Key == key {
			return Entry{}, fmt.Errorf("channel %q: %s %w: %s", h.Channel, key, ErrUnverified, s.Reason)
		}
	}
	return Entry{}, fmt.Errorf("channel %q: %w: no revision %d in history", h.Channel, bucket.ErrNotFound, rev)
}

// Before returns the verified entries below rev, newest first.
func (h *History) Before(rev uint64) []Entry {
	var out []Entry
	for i := len(h.Entries) - 1; i >= 0; i-- {
		if h.Entries[i].Revision() < rev {
			out = append(out, h.Entries[i])
		}
	}
	return out
}

// RunStart is the first revision of the unbroken run (consecutive numbers)
// of verified entries with cur's systems that ends at cur: where a rollout of cur's system
// began, so failures at any of its steps count.
func (h *History) RunStart(cur Entry) uint64 {
	first := cur.Revision()
	for _, e := range h.Before(cur.Revision()) {
		if e.Revision() != first-1 || e.Systems() != cur.Systems() {
			break
		}
		first = e.Revision()
	}
	return first
}

// RevertTarget picks what a rollback goes to: revision to when given (it
// must be verified, earlier, and not recorded bad), else the system that
// ran before cur's run, if it is known good (PreviousGood).
func (h *History) RevertTarget(cur Entry, to uint64) (Entry, error) {
	if to == 0 {
		return h.PreviousGood(cur)
	}
	if to >= cur.Revision() {
		return Entry{}, fmt.Errorf("channel %q: revision %d is not earlier than the current revision %d", h.Channel, to, cur.Revision())
	}
	e, err := h.Find(to)
	if err != nil {
		return Entry{}, err
	}
	if hl, ok := h.HealthOf(e); ok && !hl.Good {
		return Entry{}, fmt.Errorf("channel %q: revision %d's system was recorded bad at revision %d (%s); pick another with --to", h.Channel, to, hl.Revision, hl.Reason)
	}
	return e, nil
}

// List returns the names of the channels in a bucket (channels/<name>.json)
// and, apart, pointer objects whose names no agent could follow.
func List(ctx context.Context, s bucket.Store) (names, invalid []string, err error) {
	err = s.List(ctx, bucket.ChannelsPrefix, func(i bucket.Info) error {
		n, ok := strings.CutSuffix(strings.TrimPrefix(i.Key, bucket.ChannelsPrefix), ".json")
		switch {
		case !ok || strings.Contains(n, "/"):
		case manifest.ValidateName("channel", n) != nil:
			invalid = append(invalid, n)
		default:
			names = append(names, n)
		}
		return nil
	})
	sort.Strings(names)
	return names, invalid, err
}
