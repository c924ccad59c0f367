package cli

import (
	"context"
	"errors"
	"fmt"
	"path"
	"slices"
	"strings"
	"sync"

	"github.com/nix-community/go-nix/pkg/narinfo/signature"

	"github.com/nix-ota/nix-ota/bucket"
	"github.com/nix-ota/nix-ota/cache"
	"github.com/nix-ota/nix-ota/channel"
	"github.com/nix-ota/nix-ota/delta"
	"github.com/nix-ota/nix-ota/internal/parallel"
	"github.com/nix-ota/nix-ota/manifest"
)

// deltaRevisions is how many of a channel's newest revisions a push makes
// deltas against: devices are most often one or two revisions behind.
const deltaRevisions = 2

// maxChannels bounds the channels whose revisions give delta bases.
const maxChannels = 1000

// maxBases bounds the walk for delta bases: a NixOS system's closure has
// a few thousand paths; a bucket writer's made-up references stop here.
const maxBases = 100_000

// deltaBases are the store paths, with their NAR sizes, in the closures of
// the newest revs revisions of the given channels (every channel when
// none is given), read from the cache's narinfos that key signed.
// Manifests are read without verifying them: a base only decides what a
// delta is made against, push checks the base's NAR before it uses it,
// and devices check what any delta rebuilds against the signed narinfo.
func deltaBases(ctx context.Context, s bucket.Store, key signature.PublicKey, chans []string, revs int) ([]delta.Candidate, error) {
	if len(chans) == 0 {
		names, _, err := channel.List(ctx, s)
		if err != nil {
			return nil, err
		}
		chans = names
	}
	var roots []string
	var skipped error // a channel whose history cannot be read only gives no bases
	for _, ch := range chans[:min(len(chans), maxChannels)] {
		err := recentRevisions(ctx, s, ch, revs, func(p *manifest.Payload) { roots = append(roots, p.StorePaths()...) })
		if err != nil && skipped == nil {
			skipped = fmt.Errorf("channel %q: %w", ch, err)
		}
	}
	bases, err := walkNarinfos(ctx, s, key, roots)
	if err == nil && len(bases) == 0 {
		err = skipped
	}
	return bases, err
}

// walkNarinfos reads the narinfos of the closures of roots, 16 at a time,
// up to maxBases paths. Paths without a narinfo signed by key are left
// out, and their references unknown.
func walkNarinfos(ctx context.Context, s bucket.Store, key signature.PublicKey, roots []string) ([]delta.Candidate, error) {
	seen := map[string]bool{}
	var out []delta.Candidate
	level := roots
	for len(level) > 0 {
		var todo []string
		for _, sp := range level {
			if !seen[sp] && len(seen) < maxBases {
				seen[sp] = true
				todo = append(todo, sp)
			}
		}
		found, next, err := readLevel(ctx, s, key, todo)
		if err != nil {
			return nil, err
		}
		out = append(out, found...)
		level = next
	}
	slices.SortFunc(out, func(a, b delta.Candidate) int { return strings.Compare(a.Path, b.Path) })
	return out, nil
}

// readLevel reads the narinfos of paths at once and returns them with
// the references they name. A missing, unreadable or foreign-signed
// narinfo leaves its path out; only a bucket that cannot be read is an
// error.
func readLevel(ctx context.Context, s bucket.Store, key signature.PublicKey, paths []string) ([]delta.Candidate, []string, error) {
	var (
		mu    sync.Mutex
		found []delta.Candidate
		next  []string
		first error
	)
	parallel.Each(16, paths, func(sp string) {
		ni, err := cache.ReadNarinfo(ctx, s, sp)
		unreachable := errors.Is(err, bucket.ErrUnreachable) || errors.Is(err, bucket.ErrAccessDenied)
		signed := err == nil && signature.VerifyFirst(ni.Fingerprint(), ni.Signatures, []signature.PublicKey{key})
		mu.Lock()
		defer mu.Unlock()
		switch {
		case unreachable && first == nil:
			first = fmt.Errorf("delta bases: %w", err)
		case signed:
			found = append(found, delta.Candidate{Path: sp, NarSize: ni.NarSize})
			for _, r := range ni.References {
				next = append(next, path.Join("/nix/store", r))
			}
		}
	})
	return found, next, first
}
