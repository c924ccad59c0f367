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
	Body     []byte
	ETag     string
	Revision uint64 // from the unverified payload; 0 if unreadable
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
	p := &Pointer{Body: o.Data, ETag: o.ETag}
	if pl, _, err := manifest.DecodeUnverified(o.Data); err == nil {
		p.Revision = pl.Revision
	}
	return p, nil
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

// Signer builds the signed manifest for a given revision number. Publish
// may call it more than once, with increasing numbers, when it races.
type Signer func(rev uint64) ([]byte, error)

// Result says what a publish did.
type Result struct {
	Revision   uint64 // the revision this publish wrote to history
	Superseded uint64 // non-zero: a concurrent publish moved the channel past Revision
	Attempts   int    // revision numbers tried
}

// Publish claims the next revision of channel name, writes it to history
// and moves the channel pointer to it. On error the channel pointer is as
// it was.
func Publish(ctx context.Context, s bucket.Store, name string, sign Signer) (Result, error) {
	if err := manifest.ValidateName("channel", name); err != nil {
		return Result{}, err
	}
	var res Result
	var lastTried uint64
	for res.Attempts < MaxAttempts {
		res.Attempts++
		ptr, err := ReadPointer(ctx, s, name)
		if err != nil {
			return res, err
		}
		revs, err := Revisions(ctx, s, name)
		if err != nil {
			return res, err
		}
		next := uint64(1)
		if ptr != nil && ptr.Revision >= next {
			next = ptr.Revision + 1
		}
		if n := len(revs); n > 0 && revs[n-1] >= next {
			next = revs[n-1] + 1
		}
		if next <= lastTried { // a listing that lags behind our own claim
			next = lastTried + 1
		}
		lastTried = next
		body, err := sign(next)
		if err != nil {
			return res, err
		}
		opts := bucket.PutOptions{ContentType: "application/json", CacheControl: bucket.Immutable, CreateOnly: true}
		if _, err := bucket.PutBytes(ctx, s, bucket.RevisionKey(name, next), body, opts); err != nil {
			if errors.Is(err, bucket.ErrExists) {
				// Another publisher claimed this number: back off, retry.
				sleep(ctx, res.Attempts)
				continue
			}
			return res, err
		}
		res.Revision = next
		return advance(ctx, s, name, body, ptr, res)
	}
	return res, fmt.Errorf("%w: channel %q: revision %d already exists and %d attempts lost the race (concurrent publish?)", ErrConflict, name, lastTried, res.Attempts)
}

// advance moves the channel pointer to res.Revision by compare-and-swap,
// unless a higher revision got there first.
func advance(ctx context.Context, s bucket.Store, name string, body []byte, ptr *Pointer, res Result) (Result, error) {
	key := bucket.ChannelKey(name)
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
			return res, fmt.Errorf("channel %q: revision %d is in history but the channel pointer was not moved: %w", name, res.Revision, err)
		}
		if ptr, err = ReadPointer(ctx, s, name); err != nil {
			return res, err
		}
		if ptr != nil && ptr.Revision >= res.Revision {
			res.Superseded = ptr.Revision
			return res, nil
		}
	}
	return res, fmt.Errorf("%w: channel %q: could not move the pointer to revision %d", ErrConflict, name, res.Revision)
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
