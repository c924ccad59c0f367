package cli

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"

	"github.com/nix-community/go-nix/pkg/narinfo/signature"
	"github.com/spf13/pflag"

	"github.com/nix-ota/nix-ota/bucket"
	"github.com/nix-ota/nix-ota/cache"
	dashboard "github.com/nix-ota/nix-ota/dashboard-static"
	deltapkg "github.com/nix-ota/nix-ota/delta"
)

type pushOptions struct {
	bkt     string
	paths   []string
	key     string
	jobs    int
	json    bool
	noDelta bool
}

func pushCmd() *command {
	o := &pushOptions{}
	return &command{
		name:    "push",
		summary: "upload closures into the bucket's binary cache",
		about: `Uploads the closure of each --store-path into cache/ in the bucket as a signed
Nix binary cache (zstd NARs, narinfo signed with --cache-key), uploading only
paths whose narinfo is not there yet (or not signed by this key). --jobs
paths are uploaded at once, largest first; each NAR streams from the store
through zstd to the bucket without a temporary file, named and checked by
the NAR hash nix path-info reports (a mismatch fails the upload, leaving
no object and no narinfo). A path's NAR is written before its
narinfo, and its narinfo only after those of all its references, so an
interrupted push leaves nothing half-visible and the next push uploads only
what is missing. Devices substitute from <bucket>/cache (over https, or
file:// for air-gapped fleets) and check every path against the cache's
public key. Needs Nix on this machine.

Deltas: each uploaded path of at least 64 KiB also gets a binary delta
against the most similar path (same package name, version aside) of the
newest 2 revisions of every channel, when the delta is at most half its
compressed NAR. A device holding that older path downloads the delta,
rebuilds the NAR and checks it against the signed narinfo; anything else
falls back to the full NAR. Making a delta downloads the older path's NAR
from the cache and writes both NARs uncompressed under $TMPDIR (one path
at a time). A path that gets no delta says why; a delta never fails a
push. Paths already in the cache are not revisited. --no-delta turns
deltas off. gc keeps a path's delta while it keeps the path; keep at least
2 revisions (gc --keep-revisions) for devices to hold their bases.

Progress goes to stderr: a line per path, and for a path that takes longer
than a second its bytes as they are compressed and uploaded (redrawn in
place on a terminal; in a pipe a line at most every second and 5%).
--json prints one object on stdout at the end: {"bucket", "paths" (in the
closures), "uploaded", "skipped" (already in the cache), "bytes"
(compressed bytes uploaded), "narBytes" (NAR bytes of the uploaded paths),
"publicKey" (the cache key devices trust), "deltas" (paths that got a
delta), "deltaBytes" (their size), "deltaFullBytes" (the compressed NARs
they stand for)}.`,
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
	fs.IntVar(&o.jobs, "jobs", cache.DefaultJobs(), "paths uploaded at once")
	fs.BoolVar(&o.json, "json", false, "print the result as one JSON object on stdout (progress goes to stderr)")
	fs.BoolVar(&o.noDelta, "no-delta", false, "upload full NARs only, no deltas against earlier revisions")
}

// pushResult is push --json.
type pushResult struct {
	Bucket    string `json:"bucket"`
	Paths     int    `json:"paths"`
	Uploaded  int    `json:"uploaded"`
	Skipped   int    `json:"skipped"`
	Bytes     int64  `json:"bytes"`
	NarBytes  int64  `json:"narBytes"`
	PublicKey string `json:"publicKey"`
	// Deltas: uploaded paths that also got a delta, its bytes, and the
	// compressed NAR bytes those paths would cost a device without one.
	Deltas         int   `json:"deltas"`
	DeltaBytes     int64 `json:"deltaBytes"`
	DeltaFullBytes int64 `json:"deltaFullBytes"`
}

func (o *pushOptions) run(ctx context.Context, env *Env, args []string) error {
	if err := noArgs(args); err != nil {
		return err
	}
	if len(o.paths) == 0 {
		return usagef("--store-path is required")
	}
	if o.jobs < 1 {
		return usagef("--jobs %d: give at least 1", o.jobs)
	}
	var storePaths []string
	for _, v := range o.paths {
		_, sp, err := resolveStorePath(env, v)
		if err != nil {
			return err
		}
		storePaths = append(storePaths, sp)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // stops nix path-info if the bucket is refused
	nix := prefetchClosure(ctx, storePaths)
	s, err := openBucket(ctx, env, o.bkt, forWriting)
	if err != nil {
		return err
	}
	if err := bucket.CheckLayout(ctx, s); err != nil {
		return err
	}
	delta := deltaAll
	if o.noDelta {
		delta = deltaNone
	}
	res, pub, err := pushWith(ctx, env, humanOut(env, o.json), s, o.key, storePaths, o.jobs, nix, delta)
	if err != nil || !o.json {
		return err
	}
	return writeJSON(env.Stdout, pushResult{Bucket: s.String(), Paths: res.Total, Uploaded: res.Uploaded, Skipped: res.Skipped,
		Bytes: res.Bytes, NarBytes: res.NarBytes, PublicKey: pub, Deltas: res.Deltas, DeltaBytes: res.DeltaBytes, DeltaFullBytes: res.DeltaFullBytes})
}

// deltaChannels says which channels' recent revisions a push makes deltas
// against: deltaAll (every channel), deltaNone, or the channels named.
type deltaChannels []string

var (
	deltaAll  = deltaChannels{}
	deltaNone = deltaChannels(nil)
)

// push uploads the closures of paths into the bucket's cache, with deltas
// against the recent revisions of the channels in delta, progress on
// stderr and the summary on out; it returns the result and the cache's
// public key.
func push(ctx context.Context, env *Env, out io.Writer, s bucket.Store, keyFile string, paths []string, delta deltaChannels) (cache.Result, string, error) {
	return pushWith(ctx, env, out, s, keyFile, paths, 0, cache.LocalNix{}, delta)
}

// pushWith is push with jobs paths at once (0: cache.DefaultJobs) and
// nix for the closure and the NARs.
func pushWith(ctx context.Context, env *Env, out io.Writer, s bucket.Store, keyFile string, paths []string, jobs int, nix cache.Nix, delta deltaChannels) (cache.Result, string, error) {
	k, err := loadCacheKey(env, keyFile)
	if err != nil {
		return cache.Result{}, "", err
	}
	var bases []deltapkg.Candidate
	if delta != nil {
		// Deltas only save devices bytes: without bases, push full NARs.
		if bases, err = deltaBases(ctx, s, k.ToPublicKey(), delta, deltaRevisions); err != nil {
			fmt.Fprintf(env.Stderr, "push: no deltas this time: %v\n", err)
		}
	}
	meter := newByteMeter(env.Stderr)
	p := &cache.Pusher{Store: s, Key: k, Nix: nix, Jobs: jobs, Bytes: meter.update, Bases: bases, Warn: func(sp string, err error) {
		meter.clear()
		fmt.Fprintf(env.Stderr, "push: %s: no delta: %v\n", filepath.Base(sp), err)
	}, Progress: func(pr cache.Progress) {
		meter.clear()
		delta := ""
		if pr.PathDelta > 0 {
			delta = " (and a delta of " + dashboard.Size(pr.PathDelta) + ")"
		}
		fmt.Fprintf(env.Stderr, "push: %d/%d paths, %d uploaded (%s), %d already in the cache: %s%s\n",
			pr.Done, pr.Total, pr.Uploaded, mib(pr.Bytes), pr.Skipped, filepath.Base(pr.Path), delta)
	}}
	res, err := p.Push(ctx, paths)
	meter.clear()
	if err != nil {
		return res, "", err
	}
	pub := k.ToPublicKey().String()
	fmt.Fprintf(out, "pushed %d paths (%s) to %s/cache; %d were already there; devices trust it with %s\n",
		res.Uploaded, mib(res.Bytes), s, res.Skipped, pub)
	if res.Deltas > 0 {
		fmt.Fprintf(out, "deltas for %d paths: %s instead of %s for devices that hold the previous revision\n",
			res.Deltas, dashboard.Size(res.DeltaBytes), dashboard.Size(res.DeltaFullBytes))
	}
	return res, pub, nil
}

// loadCacheKey reads --cache-key (or $NIX_OTA_CACHE_KEY), saying so when
// it is given a nix-ota signing key instead.
func loadCacheKey(env *Env, keyFile string) (signature.SecretKey, error) {
	if keyFile == "" {
		keyFile = env.Getenv("NIX_OTA_CACHE_KEY")
	}
	if keyFile == "" {
		return signature.SecretKey{}, usagef("--cache-key is required (a Nix binary cache secret key file)")
	}
	k, err := cache.LoadKey(keyFile)
	if err != nil {
		if b, rerr := os.ReadFile(keyFile); rerr == nil && bytes.Contains(b, []byte("-----BEGIN")) {
			return k, usagef("cache key %s: that is a nix-ota manifest signing key; give it as --key (the cache key comes from nix-store --generate-binary-cache-key)", keyFile)
		}
		return k, err
	}
	return k, nil
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

// prefetchedNix is LocalNix whose closure query started early: nix
// path-info takes tens of milliseconds, which it spends while the bucket
// is opened and checked and the key read.
type prefetchedNix struct {
	cache.LocalNix
	paths []string
	done  chan struct{}
	infos []cache.PathInfo
	err   error
}

func prefetchClosure(ctx context.Context, paths []string) *prefetchedNix {
	n := &prefetchedNix{paths: paths, done: make(chan struct{})}
	go func() {
		n.infos, n.err = n.LocalNix.Closure(ctx, paths)
		close(n.done)
	}()
	return n
}

func (n *prefetchedNix) Closure(ctx context.Context, paths []string) ([]cache.PathInfo, error) {
	if !slices.Equal(paths, n.paths) {
		return n.LocalNix.Closure(ctx, paths)
	}
	select {
	case <-n.done:
		return n.infos, n.err
	case <-ctx.Done():
		return nil, context.Cause(ctx)
	}
}
