package cli

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/pflag"

	"github.com/nix-ota/nix-ota/bucket"
	"github.com/nix-ota/nix-ota/cache"
	"github.com/nix-ota/nix-ota/channel"
	"github.com/nix-ota/nix-ota/manifest"
)

type gcOptions struct {
	bkt    string
	keep   int
	dry    bool
	minAge time.Duration
	json   bool
}

func gcCmd() *command {
	o := &gcOptions{}
	return &command{
		name:    "gc",
		summary: "delete cache objects no recent revision needs",
		about: `Deletes cache/ objects (narinfos and NARs) that are not reachable, through
narinfo references, from the systems of the newest --keep-revisions
revisions of every channel, nor from any channel's current manifest. Objects
younger than --min-age are spared (a push in progress writes NARs before
their narinfos). Any unreadable narinfo on the way aborts without deleting.
--dry-run prints what would be freed.

--json prints one object on stdout: {"dryRun", "systemsKept",
"objectsKept", "deleted": [{"key", "size"}] (what was, or with --dry-run
would be, deleted), "freedBytes", "spared" (unreachable but younger than
--min-age)}.`,
		examples: `  nix-ota gc --bucket s3://fleet --keep-revisions 5 --dry-run
  nix-ota gc --bucket file:///srv/nix-ota --keep-revisions 2`,
		flags: o.flags,
		run:   o.run,
	}
}

func (o *gcOptions) flags(fs *pflag.FlagSet) {
	fs.StringVar(&o.bkt, "bucket", "", "bucket URL (or $NIX_OTA_BUCKET)")
	fs.IntVar(&o.keep, "keep-revisions", 5, "keep what the newest N revisions of each channel need")
	fs.BoolVar(&o.dry, "dry-run", false, "print what would be deleted; delete nothing")
	fs.DurationVar(&o.minAge, "min-age", time.Hour, "never delete objects younger than this")
	fs.BoolVar(&o.json, "json", false, "print the result as one JSON object on stdout")
}

// gcResult is gc --json.
type gcResult struct {
	DryRun      bool        `json:"dryRun"`
	SystemsKept int         `json:"systemsKept"`
	ObjectsKept int         `json:"objectsKept"`
	Deleted     []gcDeleted `json:"deleted"`
	FreedBytes  int64       `json:"freedBytes"`
	Spared      int         `json:"spared"`
}

type gcDeleted struct {
	Key  string `json:"key"`
	Size int64  `json:"size"`
}

func (o *gcOptions) run(ctx context.Context, env *Env, args []string) error {
	if err := noArgs(args); err != nil {
		return err
	}
	if o.keep < 1 {
		return usagef("--keep-revisions must be at least 1")
	}
	s, err := openBucket(ctx, env, o.bkt, forWriting)
	if err != nil {
		return err
	}
	if err := bucket.CheckLayout(ctx, s); err != nil {
		return err
	}
	roots, err := gcRoots(ctx, s, o.keep)
	if err != nil {
		return err
	}
	plan, err := cache.PlanGC(ctx, s, roots, o.minAge, time.Now())
	if err != nil {
		return err
	}
	if !o.dry {
		if _, err := plan.Apply(ctx, s); err != nil {
			return err
		}
	}
	if o.json {
		res := gcResult{DryRun: o.dry, SystemsKept: len(roots), ObjectsKept: len(plan.Keep) - 1, Deleted: []gcDeleted{}, FreedBytes: plan.FreedBytes, Spared: plan.Young}
		for _, d := range plan.Delete {
			res.Deleted = append(res.Deleted, gcDeleted{d.Key, d.Size})
		}
		return writeJSON(env.Stdout, res)
	}
	verb := "deleted"
	if o.dry {
		verb = "would delete"
		for _, o := range plan.Delete {
			fmt.Fprintf(env.Stdout, "would delete %s (%d bytes)\n", o.Key, o.Size)
		}
	}
	fmt.Fprintf(env.Stdout, "gc: %d systems kept (%d cache objects); %s %d objects, %s; %d unreachable objects younger than %s spared\n",
		len(roots), len(plan.Keep)-1, verb, len(plan.Delete), mib(plan.FreedBytes), plan.Young, o.minAge)
	return nil
}

// gcRoots are the systems of every channel's current manifest and newest
// keep revisions.
func gcRoots(ctx context.Context, s bucket.Store, keep int) ([]string, error) {
	names, _, err := channel.List(ctx, s)
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	var roots []string
	add := func(p *manifest.Payload) {
		for _, sp := range p.StorePaths() {
			if !seen[sp] {
				seen[sp] = true
				roots = append(roots, sp)
			}
		}
	}
	for _, ch := range names {
		cur, err := peekPointer(ctx, s, ch)
		if err != nil {
			return nil, fmt.Errorf("gc: %w (nothing deleted)", err)
		}
		add(cur)
		if err := recentRevisions(ctx, s, ch, keep, add); err != nil {
			return nil, fmt.Errorf("gc: %w (nothing deleted)", err)
		}
	}
	if len(names) == 0 {
		return nil, errors.New("gc: no channel in the bucket; refusing to treat the whole cache as garbage")
	}
	return roots, nil
}

// recentRevisions calls fn with the payload of each of the newest keep
// revisions of channel ch, newest first, read without verifying them.
func recentRevisions(ctx context.Context, s bucket.Store, ch string, keep int, fn func(*manifest.Payload)) error {
	revs, err := channel.Revisions(ctx, s, ch)
	if err != nil {
		return err
	}
	for i := len(revs) - 1; i >= 0 && i >= len(revs)-keep; i-- {
		p, err := peekRevision(ctx, s, ch, revs[i])
		if err != nil {
			return err
		}
		fn(p)
	}
	return nil
}

// peekPointer reads a channel's current payload without verifying it. Only
// gc uses it, and only to keep more: it never signs or installs anything.
func peekPointer(ctx context.Context, s bucket.Store, ch string) (*manifest.Payload, error) {
	ptr, err := channel.ReadPointer(ctx, s, ch)
	if err != nil {
		return nil, err
	}
	if ptr == nil {
		return nil, fmt.Errorf("channel %q: %w: nothing published yet", ch, bucket.ErrNotFound)
	}
	p, _, err := manifest.DecodeUnverified(ptr.Body)
	if err != nil {
		return nil, fmt.Errorf("channel %q: current manifest: %w", ch, err)
	}
	return p, nil
}

// peekRevision reads a history entry without verifying it (gc only).
func peekRevision(ctx context.Context, s bucket.Store, ch string, rev uint64) (*manifest.Payload, error) {
	body, err := channel.ReadRevision(ctx, s, ch, rev)
	if err != nil {
		return nil, fmt.Errorf("channel %q revision %d: %w", ch, rev, err)
	}
	p, _, err := manifest.DecodeUnverified(body)
	if err != nil {
		return nil, fmt.Errorf("channel %q revision %d: %w", ch, rev, err)
	}
	return p, nil
}
