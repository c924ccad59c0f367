// Package channel is the publisher's view of a channel in a bucket: the
// signed pointer agents poll (channels/C.json) and its immutable history
// (channels/C/<rev>.json).
//
// Publishing never loses, duplicates or regresses a revision, even with
// publishers racing and no server to serialise them: a revision is claimed
// by a create-only write of its history object (exactly one writer wins
// each number), and the pointer only moves forward by compare-and-swap on
// its ETag. A publisher that loses the claim retries with the next number;
// one whose claimed revision was overtaken by a higher one leaves the
// pointer alone (the higher revision is newer by definition).
//
// The bucket is untrusted, so the publisher only builds on what verifies:
// Load checks the pointer and every history entry against the publisher's
// trust, the next revision is derived from verified entries alone, and a
// new revision can only be drafted from the operator's input or from a
// verified Entry. Nothing read back unverified is ever signed.
//
// The decisions are pure and table-tested, like the device's
// manifest.Verify and agent.Decide: History (Current, Next, RevertTarget,
// PreviousGood, RunStart, CheckReports) says what the channel is and where a revert goes;
// Step.Classify is the one rule for whether a device is done, pending or
// failed in a rollout step, and Gate.Judge decides the step. Load and
// Publish are the only functions here that touch the bucket, plus the
// attestation reads and writes that record which systems completed a
// rollout (known good) or halted one (bad).
package channel

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"time"

	"github.com/nix-ota/nix-ota/bucket"
	"github.com/nix-ota/nix-ota/manifest"
)

// ErrConflict: publishing gave up after too many concurrent publishers
// claimed the revisions it tried.
var ErrConflict = errors.New("concurrent publish")

// MaxAttempts bounds how many revision numbers one publish tries to claim.
const MaxAttempts = 64

// Pointer is the current channel file as read from the bucket.
type Pointer struct {
	Body []byte
	ETag string
}

// ReadPointer reads channels/C.json. A missing pointer is (nil, nil).
func ReadPointer(ctx context.Context, s bucket.Store, name string) (*Pointer, error) {
	if err := manifest.ValidateName("channel", name); err != nil {
		return nil, err
	}
	o, err := s.Get(ctx, bucket.ChannelKey(name), bucket.GetOptions{MaxSize: manifest.MaxBodySize})
	if errors.Is(err, bucket.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return &Pointer{Body: o.Data, ETag: o.ETag}, nil
}

// Revisions lists the revision numbers in a channel's history, ascending.
func Revisions(ctx context.Context, s bucket.Store, name string) ([]uint64, error) {
	if err := manifest.ValidateName("channel", name); err != nil {
		return nil, err
	}
	var revs []uint64
	err := s.List(ctx, bucket.RevisionsPrefix(name), func(i bucket.Info) error {
		if r, ok := bucket.ParseRevisionKey(name, i.Key); ok {
			revs = append(revs, r)
		}
		return nil
	})
	sort.Slice(revs, func(i, j int) bool { return revs[i] < revs[j] })
	return revs, err
}

// ReadRevision reads one history entry.
func ReadRevision(ctx context.Context, s bucket.Store, name string, rev uint64) ([]byte, error) {
	o, err := s.Get(ctx, bucket.RevisionKey(name, rev), bucket.GetOptions{MaxSize: manifest.MaxBodySize})
	if err != nil {
		return nil, err
	}
	return o.Data, nil
}

// Sign signs a payload exactly as given; Publish calls it with the
// revision and times filled in, and may call it more than once when it races.
type Sign func(p *manifest.Payload) ([]byte, error)

// Draft is the content of a revision waiting for its number and signature.
// A draft is either new content from the operator (NewDraft) or derived
// from a verified entry (Entry.Draft); there is no way to make one from
// bytes read back from the bucket without verifying them.
type Draft struct {
	payload manifest.Payload
	// Validity, when set, makes Publish stamp publishedAt with the time of
	// signing and expiresAt that much later.
	Validity time.Duration
}

// NewDraft is new content for the channel, given by the operator.
func NewDraft(p manifest.Payload, validity time.Duration) Draft {
	return Draft{payload: p, Validity: validity}
}

// Draft starts a new revision from the entry's verified content. The retry
// mark is not carried over: only the operator's own publish --retry grants
// devices another try, never a resign, rollout step or rollback of it.
func (e Entry) Draft(validity time.Duration) Draft {
	p := e.Payload()
	p.Retry = false
	return Draft{payload: p, Validity: validity}
}

// Edit changes the draft's content (rollout share, message, publisher).
func (d *Draft) Edit(f func(p *manifest.Payload)) { f(&d.payload) }

// Payload returns a copy of the draft's content, as it would be signed.
func (d Draft) Payload() manifest.Payload { return d.payload }

// Result says what a publish did.
type Result struct {
	Revision   uint64 // the revision this publish wrote to history
	Superseded uint64 // non-zero: a concurrent publish moved the channel past Revision
	Attempts   int    // revision numbers tried
	Payload    manifest.Payload
}

// Publish claims the next revision of h's channel for d, writes it to
// history and moves the channel pointer to it. It refuses when the current
// pointer does not verify with h's trust, and never claims a revision
// above manifest.MaxRevision. On error the channel pointer is as it was.
func Publish(ctx context.Context, s bucket.Store, h *History, d Draft, sign Sign) (Result, error) {
	var res Result
	if d.payload.Channel != h.Channel {
		return res, fmt.Errorf("channel %q: draft is for channel %q", h.Channel, d.payload.Channel)
	}
	if h.Pointer != nil && h.Head == nil {
		// A pointer no trusted key signed: refuse rather than overwrite
		// what may be a rotation the operator forgot to pass --public-key
		// for. (An old but genuine pointer does not block new content:
		// the next revision comes from verified history either way.)
		_, err := h.Current()
		return res, err
	}
	next, err := h.Next()
	if err != nil {
		return res, err
	}
	for ; res.Attempts < MaxAttempts; next++ {
		if next > manifest.MaxRevision {
			return res, fmt.Errorf("channel %q: no revision left below the maximum %d", h.Channel, uint64(manifest.MaxRevision))
		}
		if h.unverifiedAt(next) {
			continue // an object that is not a verified revision holds the number: skip it, no attempt spent
		}
		res.Attempts++
		p := d.payload
		p.Revision = next
		if d.Validity > 0 {
			now := time.Now().UTC().Truncate(time.Second)
			p.PublishedAt, p.ExpiresAt = now, now.Add(d.Validity)
		}
		body, err := sign(&p)
		if err != nil {
			return res, err
		}
		if _, err := manifest.CheckSigned(h.trust, h.Channel, body); err != nil {
			return res, fmt.Errorf("channel %q: the new revision does not verify with the publisher's own trust (nothing written): %w", h.Channel, err)
		}
		opts := bucket.PutOptions{ContentType: "application/json", CacheControl: bucket.Immutable, CreateOnly: true}
		if _, err := bucket.PutBytes(ctx, s, bucket.RevisionKey(h.Channel, next), body, opts); err != nil {
			if errors.Is(err, bucket.ErrExists) {
				// Another publisher (or a bucket writer) holds this number.
				sleep(ctx, res.Attempts)
				continue
			}
			return res, err
		}
		res.Revision, res.Payload = next, p
		return advance(ctx, s, h, body, res)
	}
	return res, fmt.Errorf("%w: channel %q: revision %d already exists and %d attempts lost the race (concurrent publish?)", ErrConflict, h.Channel, next-1, res.Attempts)
}

// advance moves the channel pointer to res.Revision by compare-and-swap,
// unless a higher verified revision got there first. A pointer that does
// not verify is overwritten: it was never a revision devices could accept.
func advance(ctx context.Context, s bucket.Store, h *History, body []byte, res Result) (Result, error) {
	key := bucket.ChannelKey(h.Channel)
	ptr := h.Pointer
	for i := 0; i < 4*MaxAttempts; i++ {
		opts := bucket.JSONPut()
		if ptr == nil {
			opts.CreateOnly = true
		} else {
			opts.IfMatch = ptr.ETag
		}
		_, err := bucket.PutBytes(ctx, s, key, body, opts)
		if err == nil {
			return res, nil
		}
		if !errors.Is(err, bucket.ErrChanged) && !errors.Is(err, bucket.ErrExists) && !errors.Is(err, bucket.ErrNotFound) {
			return res, fmt.Errorf("channel %q: revision %d is in history but the channel pointer was not moved: %w", h.Channel, res.Revision, err)
		}
		if ptr, err = ReadPointer(ctx, s, h.Channel); err != nil {
			return res, err
		}
		if ptr == nil {
			continue
		}
		if v, err := manifest.CheckSigned(h.trust, h.Channel, ptr.Body); err == nil && v.Payload.Revision >= res.Revision {
			res.Superseded = v.Payload.Revision
			return res, nil
		}
	}
	return res, fmt.Errorf("%w: channel %q: could not move the pointer to revision %d", ErrConflict, h.Channel, res.Revision)
}

func sleep(ctx context.Context, attempt int) {
	d := time.Duration(rand.IntN(10*min(attempt, 10))+1) * time.Millisecond
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// Check verifies the channel as a device with trust would at time now,
// plus the replay check only the publisher can make: the pointer must not
// be older than, or disagree with, the highest validly signed revision in
// history (a bucket that serves an old signed manifest is replaying it).
func Check(ctx context.Context, s bucket.Store, name string, trust manifest.Trust, now time.Time) (*manifest.Verified, error) {
	ptr, err := ReadPointer(ctx, s, name)
	if err != nil {
		if errors.Is(err, bucket.ErrTooLarge) {
			return nil, fmt.Errorf("%w: %v", manifest.ErrTooLarge, err)
		}
		return nil, err
	}
	if ptr == nil {
		return nil, fmt.Errorf("channel %q: %w: nothing published yet (%s)", name, bucket.ErrNotFound, bucket.ChannelKey(name))
	}
	revs, err := Revisions(ctx, s, name)
	if err != nil && !errors.Is(err, bucket.ErrUnsupported) {
		return nil, err
	}
	var st manifest.State
	for i := len(revs) - 1; i >= 0; i-- {
		body, err := ReadRevision(ctx, s, name, revs[i])
		if err != nil {
			continue
		}
		v, err := manifest.CheckSigned(trust, name, body)
		if err != nil || v.Payload.Revision != revs[i] {
			continue // not a genuine entry: it cannot define what is current
		}
		st = manifest.State{Revision: v.Payload.Revision, PayloadDigest: v.PayloadDigest}
		break
	}
	return manifest.Verify(trust, name, st, ptr.Body, now)
}
