package cli

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nix-ota/nix-ota/bucket"
	"github.com/nix-ota/nix-ota/cache"
	"github.com/nix-ota/nix-ota/manifest"
)

// errNoClosure: a store path no cache the devices are told about has.
var errNoClosure = errors.New("closure not in any cache")

// checkClosures makes sure devices can fetch what p names before it is
// signed: every store path's narinfo is in the bucket's cache/ or in one
// of p's substituters. A manifest without substituters leaves devices to
// caches this command cannot see, so it is refused too.
func checkClosures(ctx context.Context, env *Env, s bucket.Store, p *manifest.Payload) error {
	if len(p.Substituters) == 0 {
		return usagef("no --substituter: devices would fetch the closure only from caches in their own configuration, which publish cannot check; add --substituter URL (e.g. the bucket's cache/ over https), or --skip-closure-check if devices have it configured")
	}
	caches := []namedStore{{"the bucket's cache/", s, cache.Prefix}}
	var unreachable []string
	for _, sub := range p.Substituters {
		st, err := openSubstituter(ctx, env, sub)
		if err != nil {
			unreachable = append(unreachable, fmt.Sprintf("%s: %s", sub, oneLine(err.Error(), 120)))
			continue
		}
		caches = append(caches, namedStore{sub, st, ""})
	}
	for _, sp := range p.StorePaths() {
		if err := findNarinfo(ctx, caches, sp); err != nil {
			if len(unreachable) > 0 {
				err = fmt.Errorf("%w (could not read %s)", err, strings.Join(unreachable, "; "))
			}
			return err
		}
	}
	return nil
}

type namedStore struct {
	name   string
	store  bucket.Store
	prefix string
}

func findNarinfo(ctx context.Context, caches []namedStore, storePath string) error {
	key, err := cache.NarinfoKey(storePath)
	if err != nil {
		return err
	}
	name := strings.TrimPrefix(key, cache.Prefix)
	var looked []string
	for _, c := range caches {
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		_, err := c.store.Stat(cctx, c.prefix+name)
		cancel()
		if err == nil {
			return nil
		}
		looked = append(looked, c.name)
	}
	return fmt.Errorf("%w: %s: no %s in %s; push it first (nix-ota push, or publish --push), or pass --skip-closure-check for a cache this machine cannot read",
		errNoClosure, storePath, name, strings.Join(looked, " or "))
}

// openSubstituter opens a substituter URL as a read-only bucket: http(s)
// and file:// without their Nix query parameters, s3:// with the AWS
// credential chain.
func openSubstituter(ctx context.Context, env *Env, sub string) (bucket.Store, error) {
	if strings.HasPrefix(sub, "s3://") {
		return openBucket(ctx, env, sub, forWriting) // a cache, not a fleet: no bucket check
	}
	base, _, _ := strings.Cut(sub, "?")
	return bucket.Open(strings.TrimSuffix(base, "/"), bucket.Options{})
}
