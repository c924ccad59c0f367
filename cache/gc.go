package cache

import (
	"context"
	"errors"
	"fmt"
	"path"
	"sort"
	"strings"
	"time"

	"github.com/nix-community/go-nix/pkg/narinfo"

	"github.com/nix-ota/nix-ota/bucket"
	"github.com/nix-ota/nix-ota/delta"
)

// ReadNarinfo reads and parses one narinfo from the bucket (untrusted
// bytes: bounded and parsed by go-nix, then checked to name the path it
// was looked up for).
func ReadNarinfo(ctx context.Context, s bucket.Store, storePath string) (*narinfo.NarInfo, error) {
	key, err := NarinfoKey(storePath)
	if err != nil {
		return nil, err
	}
	o, err := s.Get(ctx, key, bucket.GetOptions{MaxSize: MaxNarinfo})
	if err != nil {
		return nil, err
	}
	return ParseNarinfo(storePath, o.Data)
}

// ParseNarinfo parses narinfo text that should describe storePath.
func ParseNarinfo(storePath string, b []byte) (*narinfo.NarInfo, error) {
	ni, err := narinfo.Parse(strings.NewReader(string(b)))
	if err != nil {
		return nil, fmt.Errorf("narinfo of %s: %w", storePath, err)
	}
	if ni.StorePath != storePath {
		return nil, fmt.Errorf("narinfo of %s describes %q", storePath, ni.StorePath)
	}
	if ni.URL == "" || strings.Contains(ni.URL, "..") || strings.HasPrefix(ni.URL, "/") || strings.Contains(ni.URL, "://") {
		return nil, fmt.Errorf("narinfo of %s: bad URL %q", storePath, ni.URL)
	}
	return ni, nil
}

// Plan is what a garbage collection keeps and deletes.
type Plan struct {
	Keep        map[string]bool // object keys reachable from the roots
	Delete      []bucket.Info   // unreachable objects, old enough to delete
	Young       int             // unreachable but too recent (a push may be under way)
	FreedBytes  int64
	RootsMissed []string // roots with no narinfo in the cache (never pushed)
}

// PlanGC walks narinfo references from the roots and lists every cache
// object no root reaches. Objects younger than minAge are spared: a push
// writes a NAR before its narinfo, and must not lose it in between. Any
// unreadable narinfo on the way aborts the plan: unsure means delete nothing.
func PlanGC(ctx context.Context, s bucket.Store, roots []string, minAge time.Duration, now time.Time) (*Plan, error) {
	p := &Plan{Keep: map[string]bool{InfoKey: true}}
	seen := map[string]bool{}
	queue := append([]string(nil), roots...)
	sort.Strings(queue)
	for len(queue) > 0 {
		sp := queue[0]
		queue = queue[1:]
		if seen[sp] {
			continue
		}
		seen[sp] = true
		ni, err := ReadNarinfo(ctx, s, sp)
		if errors.Is(err, bucket.ErrNotFound) {
			p.RootsMissed = append(p.RootsMissed, sp)
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("gc: %w (nothing deleted)", err)
		}
		key, _ := NarinfoKey(sp)
		p.Keep[key] = true
		p.Keep[Prefix+ni.URL] = true
		for _, r := range ni.References {
			queue = append(queue, path.Join("/nix/store", r))
		}
	}
	var objects []bucket.Info
	if err := s.List(ctx, Prefix, func(i bucket.Info) error { objects = append(objects, i); return nil }); err != nil {
		return nil, fmt.Errorf("gc: list cache: %w", err)
	}
	if err := p.keepDeltas(ctx, s, seen, objects); err != nil {
		return nil, err
	}
	for _, i := range objects {
		switch {
		case p.Keep[i.Key]:
		case now.Sub(i.ModTime) < minAge:
			p.Young++
		default:
			p.Delete = append(p.Delete, i)
			p.FreedBytes += i.Size
		}
	}
	return p, nil
}

// keepDeltas keeps the delta index of every kept path that has one, and
// the delta it names. An index that does not parse names nothing: the
// delta it would name goes, the index stays with its path.
func (p *Plan) keepDeltas(ctx context.Context, s bucket.Store, paths map[string]bool, objects []bucket.Info) error {
	present := make(map[string]bool, len(objects))
	for _, o := range objects {
		present[o.Key] = true
	}
	for sp := range paths {
		key, err := delta.IndexKey(sp)
		if err != nil || !present[Prefix+key] {
			continue
		}
		p.Keep[Prefix+key] = true
		o, err := s.Get(ctx, Prefix+key, bucket.GetOptions{MaxSize: delta.MaxIndex})
		if err != nil && !errors.Is(err, bucket.ErrNotFound) {
			return fmt.Errorf("gc: delta index of %s: %w (nothing deleted)", sp, err)
		}
		if err != nil {
			continue
		}
		if ix, err := delta.ParseIndex(sp, o.Data); err == nil {
			p.Keep[Prefix+ix.Delta] = true
		}
	}
	return nil
}

// Apply deletes the planned objects, narinfos first so that no narinfo is
// ever left pointing at a deleted NAR.
func (p *Plan) Apply(ctx context.Context, s bucket.Store) (int, error) {
	sort.SliceStable(p.Delete, func(i, j int) bool {
		return strings.HasSuffix(p.Delete[i].Key, ".narinfo") && !strings.HasSuffix(p.Delete[j].Key, ".narinfo")
	})
	n := 0
	for _, o := range p.Delete {
		if err := s.Delete(ctx, o.Key); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}
