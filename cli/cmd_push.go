package cli

import (
	"context"
	"fmt"
	"path/filepath"

	"github.com/spf13/pflag"

	"github.com/nix-ota/nix-ota/bucket"
	"github.com/nix-ota/nix-ota/cache"
)

type pushOptions struct {
	bkt   string
	paths []string
	key   string
}

func pushCmd() *command {
	o := &pushOptions{}
	return &command{
		name:    "push",
		summary: "upload closures into the bucket's binary cache",
		about: `Uploads the closure of each --store-path into cache/ in the bucket as a signed
Nix binary cache (zstd NARs, narinfo signed with --cache-key), uploading only
paths whose narinfo is not there yet. Each NAR is written before its narinfo
and dependencies before dependents, so an interrupted push leaves nothing
half-visible and the next push resumes where it stopped. Devices substitute
from <bucket>/cache (over https, or file:// for air-gapped fleets) and check
every path against the cache's public key. Needs Nix on this machine.`,
		examples: `  nix-ota push --bucket s3://fleet?endpoint=minio.lan:9000 --store-path ./result --cache-key cache.key
  nix-ota publish --push --cache-key cache.key --channel prod --store-path ./result …`,
		flags: o.flags,
		run:   o.run,
	}
}

func (o *pushOptions) flags(fs *pflag.FlagSet) {
	fs.StringVar(&o.bkt, "bucket", "", "bucket URL (or $NIX_OTA_BUCKET)")
	fs.StringArrayVar(&o.paths, "store-path", nil, "store path (or CLASS=PATH, or a ./result link) whose closure to upload (repeatable)")
	fs.StringVar(&o.key, "cache-key", "", "Nix binary cache secret key file (nix-store --generate-binary-cache-key), or $NIX_OTA_CACHE_KEY")
}

func (o *pushOptions) run(ctx context.Context, env *Env, args []string) error {
	if err := noArgs(args); err != nil {
		return err
	}
	if len(o.paths) == 0 {
		return usagef("--store-path is required")
	}
	var storePaths []string
	for _, v := range o.paths {
		_, sp, err := resolveStorePath(env, v)
		if err != nil {
			return err
		}
		storePaths = append(storePaths, sp)
	}
	s, err := openBucket(ctx, env, o.bkt, false)
	if err != nil {
		return err
	}
	if err := bucket.CheckLayout(ctx, s); err != nil {
		return err
	}
	_, err = push(ctx, env, s, o.key, storePaths)
	return err
}

func push(ctx context.Context, env *Env, s bucket.Store, keyFile string, paths []string) (cache.Result, error) {
	if keyFile == "" {
		keyFile = env.Getenv("NIX_OTA_CACHE_KEY")
	}
	if keyFile == "" {
		return cache.Result{}, usagef("--cache-key is required (a Nix binary cache secret key file)")
	}
	k, err := cache.LoadKey(keyFile)
	if err != nil {
		return cache.Result{}, err
	}
	p := &cache.Pusher{Store: s, Key: k, Nix: cache.LocalNix{}, Progress: func(pr cache.Progress) {
		fmt.Fprintf(env.Stderr, "push: %d/%d paths, %d uploaded (%s), %d already in the cache: %s\n",
			pr.Done, pr.Total, pr.Uploaded, mib(pr.Bytes), pr.Skipped, filepath.Base(pr.Path))
	}}
	res, err := p.Push(ctx, paths)
	if err != nil {
		return res, err
	}
	fmt.Fprintf(env.Stdout, "pushed %d paths (%s) to %s/cache; %d were already there; devices trust it with %s\n",
		res.Uploaded, mib(res.Bytes), s, res.Skipped, k.ToPublicKey().String())
	return res, nil
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }
