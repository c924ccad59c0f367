package agent

import (
	"context"
	"errors"
	"fmt"
	"path"
	"slices"
	"sync"

	"github.com/nix-community/go-nix/pkg/narinfo"
	"github.com/nix-community/go-nix/pkg/narinfo/signature"

	"github.com/nix-ota/nix-ota/bucket"
	"github.com/nix-ota/nix-ota/cache"
	"github.com/nix-ota/nix-ota/delta"
	"github.com/nix-ota/nix-ota/internal/parallel"
	"github.com/nix-ota/nix-ota/status"
)

// A device fetches a new closure in two steps (docs/design.md, Delta
// updates). First, for each path it lacks that has a delta against a path
// it holds, it downloads the delta, rebuilds the NAR from its own copy of
// the base, checks it against the narinfo, and hands it to Nix through a
// file:// cache of its own (deltaRun.apply); then Nix realises the system
// as always, fetching every other path whole. Anything that goes wrong
// with a delta only means that path's full NAR is fetched.

// missing is a path of the new closure the device lacks and the fleet
// cache has.
type missing struct {
	path string
	ni   *narinfo.NarInfo
	ix   *delta.Index // nil: no usable delta
	full int64        // bytes of its compressed NAR
	why  string       // why a delta it has cannot be used
}

// maxDelta bounds a delta the agent holds in memory: deltas are meant to
// be a small fraction of a NAR; a larger one is not worth the rebuild.
const maxDelta = 64 << 20

// fetchConcurrency is how many small requests (narinfos, indexes, sizes)
// the agent has in flight while planning a fetch.
const fetchConcurrency = 8

// maxPlan bounds the paths a fetch plan walks: a NixOS closure has a few
// thousand; references made up by a bucket writer stop here.
const maxPlan = 100_000

// plan lists the paths of storePath's closure that the device lacks and
// the fleet cache has under a narinfo signed by one of keys, dependencies
// first, with their deltas. Nothing unsigned is followed.
func (a *Agent) plan(ctx context.Context, storePath string, keys []signature.PublicKey) ([]*missing, error) {
	seen := map[string]bool{storePath: true}
	level := []string{storePath}
	byPath := map[string]*missing{}
	for len(level) > 0 {
		invalid, err := a.System.Invalid(ctx, level)
		if err != nil {
			return nil, err
		}
		var todo []string
		for _, p := range level {
			if invalid[p] {
				todo = append(todo, p)
			}
		}
		found, err := a.readMissing(ctx, todo, keys)
		if err != nil {
			return nil, err
		}
		level = nil
		for _, m := range found {
			byPath[m.path] = m
			for _, r := range m.ni.References {
				if rp := path.Join("/nix/store", r); !seen[rp] {
					seen[rp] = true
					level = append(level, rp)
				}
			}
			if len(seen) > maxPlan {
				return nil, fmt.Errorf("the closure has over %d paths", maxPlan)
			}
		}
	}
	return dependenciesFirst(byPath), nil
}

// dependenciesFirst orders the paths so that each comes after the
// missing paths it references: Nix realises a path only once its
// references are valid.
func dependenciesFirst(byPath map[string]*missing) []*missing {
	var out []*missing
	done := map[string]bool{}
	var visit func(m *missing)
	visit = func(m *missing) {
		if done[m.path] {
			return
		}
		done[m.path] = true
		for _, r := range m.ni.References {
			if dep, ok := byPath[path.Join("/nix/store", r)]; ok {
				visit(dep)
			}
		}
		out = append(out, m)
	}
	keys := make([]string, 0, len(byPath))
	for k := range byPath {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		visit(byPath[k])
	}
	return out
}

// readMissing reads the narinfo, delta index and NAR size of each path,
// fetchConcurrency at a time. Paths without a narinfo are left out (Nix
// fetches them from another cache, or fails as it would have).
func (a *Agent) readMissing(ctx context.Context, paths []string, keys []signature.PublicKey) ([]*missing, error) {
	var (
		mu    sync.Mutex
		out   []*missing
		first error
	)
	parallel.Each(fetchConcurrency, paths, func(p string) {
		m, err := a.readOne(ctx, p, keys)
		mu.Lock()
		defer mu.Unlock()
		if err != nil && first == nil {
			first = err
		}
		if m != nil {
			out = append(out, m)
		}
	})
	return out, first
}

// readOne reads what the fetch of p involves. A narinfo the bucket does
// not give (a path from another cache: S3 answers 403 without list
// rights), or does not parse, or no trusted key signed, leaves p out.
func (a *Agent) readOne(ctx context.Context, p string, keys []signature.PublicKey) (*missing, error) {
	ni, err := cache.ReadNarinfo(ctx, a.Store, p)
	switch {
	case errors.Is(err, bucket.ErrNotFound), errors.Is(err, bucket.ErrAccessDenied):
		return nil, nil
	case errors.Is(err, bucket.ErrUnreachable):
		return nil, fmt.Errorf("narinfo of %s: %w", p, err)
	case err != nil || !signature.VerifyFirst(ni.Fingerprint(), ni.Signatures, keys):
		return nil, nil
	}
	m := &missing{path: p, ni: ni}
	if ni.NarSize >= delta.MinNarSize {
		m.ix, m.why = a.readIndex(ctx, ni)
	}
	if m.ix != nil {
		m.full = min(m.ix.FullSize, delta.MaxCompressed(ni.NarSize))
		return m, nil
	}
	if info, err := a.Store.Stat(ctx, cache.Prefix+ni.URL); err == nil {
		m.full = min(info.Size, delta.MaxCompressed(ni.NarSize))
	}
	return m, nil
}

// readIndex returns the path's delta index if it has one that agrees with
// its narinfo, or why a delta it has cannot be used.
func (a *Agent) readIndex(ctx context.Context, ni *narinfo.NarInfo) (*delta.Index, string) {
	key, err := delta.IndexKey(ni.StorePath)
	if err != nil {
		return nil, ""
	}
	o, err := a.Store.Get(ctx, cache.Prefix+key, bucket.GetOptions{MaxSize: delta.MaxIndex})
	if errors.Is(err, bucket.ErrNotFound) || errors.Is(err, bucket.ErrAccessDenied) {
		return nil, "" // no delta (S3 answers 403 for a missing key without list rights)
	}
	if err != nil {
		return nil, fmt.Sprintf("delta index of %s: %v", ni.StorePath, err)
	}
	ix, err := delta.ParseIndex(ni.StorePath, o.Data)
	switch {
	case err != nil:
		return nil, err.Error()
	case ix.NarHash != ni.NarHash.String() || ix.NarSize != ni.NarSize:
		return nil, fmt.Sprintf("delta index of %s names another NAR than its narinfo", ni.StorePath)
	case ix.DeltaSize > maxDelta:
		return nil, fmt.Sprintf("delta of %s is %d bytes, over the %d the agent holds", ni.StorePath, ix.DeltaSize, maxDelta)
	case ix.BaseNarSize > delta.MaxBaseSize(ni.NarSize):
		return nil, fmt.Sprintf("delta of %s is against a base of %d bytes, too large for a NAR of %d", ni.StorePath, ix.BaseNarSize, ni.NarSize)
	}
	return ix, ""
}

// trustedKeys are the keys a narinfo must be signed by for the agent to
// act on it: its own trustedCacheKeys and those its Nix trusts.
func (a *Agent) trustedKeys(ctx context.Context) []signature.PublicKey {
	names := slices.Clone(a.Config.TrustedCacheKeys)
	if sys, err := a.System.TrustedKeys(ctx); err == nil {
		names = append(names, sys...)
	} else {
		a.logf("delta: cannot read the keys Nix trusts (%v); using trustedCacheKeys only", err)
	}
	var keys []signature.PublicKey
	for _, k := range names {
		if pk, err := signature.ParsePublicKey(k); err == nil {
			keys = append(keys, pk)
		}
	}
	return keys
}

// tally is what the plan will download, before any delta is tried.
func tally(rev uint64, plan []*missing) status.Fetch {
	f := status.Fetch{Revision: rev, Paths: len(plan)}
	for _, m := range plan {
		f.FullBytes = min(f.FullBytes+m.full, status.MaxFetch)
	}
	f.Bytes = f.FullBytes
	return f
}
