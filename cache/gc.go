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
	err := s.List(ctx, Prefix, func(i bucket.Info) error {
		if p.Keep[i.Key] {
			return nil
		}
		if now.Sub(i.ModTime) < minAge {
			p.Young++
			return nil
		}
		p.Delete = append(p.Delete, i)
		p.FreedBytes += i.Size
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("gc: list cache: %w", err)
	}
	return p, nil
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
