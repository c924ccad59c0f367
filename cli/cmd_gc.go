package cli

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/nix-ota/nix-ota/bucket"
	"github.com/nix-ota/nix-ota/cache"
	"github.com/nix-ota/nix-ota/channel"
	"github.com/nix-ota/nix-ota/manifest"
)

func pushCmd() *command {
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
		flags: func(fs *pflag.FlagSet) func(context.Context, *Env, []string) error {
			bkt := fs.String("bucket", "", "bucket URL (or $NIX_OTA_BUCKET)")
			paths := fs.StringArray("store-path", nil, "store path (or CLASS=PATH, or a ./result link) whose closure to upload (repeatable)")
			key := fs.String("cache-key", "", "Nix binary cache secret key file (nix-store --generate-binary-cache-key), or $NIX_OTA_CACHE_KEY")
			return func(ctx context.Context, env *Env, args []string) error {
				if err := noArgs(args); err != nil {
					return err
				}
				if len(*paths) == 0 {
					return usagef("--store-path is required")
				}
				var storePaths []string
				for _, v := range *paths {
					_, sp, err := resolveStorePath(env, v)
					if err != nil {
						return err
					}
					storePaths = append(storePaths, sp)
				}
				s, err := openBucket(ctx, env, *bkt, false)
				if err != nil {
					return err
				}
				if err := bucket.CheckLayout(ctx, s); err != nil {
					return err
				}
				_, err = push(ctx, env, s, *key, storePaths)
				return err
			}
		},
	}
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

func rollbackCmd() *command {
	return &command{
		name:    "rollback",
		summary: "republish an earlier revision's system",
		about: `Publishes the system of an earlier revision as the channel's next revision, so
devices (which never accept a lower revision) move back to it. Without --to
it picks the newest earlier revision with a different system. The message
records what was rolled back from. Only revisions that verify with the
signing keys (and any --public-key) are considered; a current manifest that
does not verify is refused (exit 3) and nothing is signed.`,
		examples: `  nix-ota rollback --bucket file:///srv/nix-ota --key sign.key --channel prod
  nix-ota rollback --channel prod --to 6 --key sign.key`,
		flags: func(fs *pflag.FlagSet) func(context.Context, *Env, []string) error {
			bkt := fs.String("bucket", "", "bucket URL (or $NIX_OTA_BUCKET)")
			kf := addKeyFlags(fs)
			tf := addSignTrustFlags(fs)
			ch := fs.String("channel", "", "channel name (required)")
			to := fs.Uint64("to", 0, "revision whose system to go back to (default: the newest earlier one with a different system)")
			expires := fs.Duration("expires", 720*time.Hour, "how long devices accept the new manifest")
			noDash := fs.Bool("no-dashboard", false, "do not regenerate the dashboard")
			return func(ctx context.Context, env *Env, args []string) error {
				if err := noArgs(args); err != nil {
					return err
				}
				c, err := openSigned(ctx, env, *bkt, kf, tf, *ch)
				if err != nil {
					return err
				}
				cur, err := c.current()
				if err != nil {
					return err
				}
				if *to != 0 && *to >= cur.Revision() {
					return usagef("--to %d: not an earlier revision (current is %d)", *to, cur.Revision())
				}
				target, err := c.h.RevertTarget(cur, *to)
				if err != nil {
					return err
				}
				d := target.Draft(*expires)
				d.Edit(func(p *manifest.Payload) {
					p.Rollout.Percent = 100
					p.Message = fmt.Sprintf("rollback from revision %d (%s) to revision %d", cur.Revision(), cur.Systems(), target.Revision())
					p.Publisher = publisherName()
				})
				res, err := c.publish(ctx, d, *noDash)
				if err != nil {
					return err
				}
				fmt.Fprintf(env.Stdout, "channel %s revision %d: %s\n", *ch, res.Revision, res.Payload.Message)
				return nil
			}
		},
	}
}

func resignCmd() *command {
	return &command{
		name:    "resign",
		summary: "re-sign a channel's current system with a later expiry",
		about: `Devices refuse a manifest past its expiry (so a bucket cannot freeze them on an
old system forever), so a channel that does not change still needs a fresh
signature before it expires: resign publishes the current system again as
the next revision with a new expiry. Devices already on it do nothing. Run it
from a scheduled CI job or cron, e.g. weekly with --expires 720h; with
--if-expires-within it does nothing while the current manifest has longer.
The current manifest must verify with the signing keys (and any
--public-key); one that does not is refused (exit 3) and nothing is signed.`,
		examples: `  nix-ota resign --bucket s3://fleet --key sign.key --channel prod
  nix-ota resign --channel prod --key sign.key --if-expires-within 168h`,
		flags: func(fs *pflag.FlagSet) func(context.Context, *Env, []string) error {
			bkt := fs.String("bucket", "", "bucket URL (or $NIX_OTA_BUCKET)")
			kf := addKeyFlags(fs)
			tf := addSignTrustFlags(fs)
			ch := fs.String("channel", "", "channel name (required)")
			expires := fs.Duration("expires", 720*time.Hour, "new validity")
			within := fs.Duration("if-expires-within", 0, "only re-sign when the current manifest expires within this long")
			noDash := fs.Bool("no-dashboard", false, "do not regenerate the dashboard")
			return func(ctx context.Context, env *Env, args []string) error {
				if err := noArgs(args); err != nil {
					return err
				}
				c, err := openSigned(ctx, env, *bkt, kf, tf, *ch)
				if err != nil {
					return err
				}
				cur, err := c.current()
				if err != nil {
					return err
				}
				curP := cur.Payload()
				if left := time.Until(curP.ExpiresAt); *within > 0 && left > *within {
					fmt.Fprintf(env.Stdout, "channel %s revision %d expires in %s; nothing to do\n", *ch, cur.Revision(), humanDuration(left))
					return nil
				}
				d := cur.Draft(*expires)
				d.Edit(func(p *manifest.Payload) {
					if !strings.HasPrefix(p.Message, "re-signed") {
						p.Message = fmt.Sprintf("re-signed revision %d: %s", cur.Revision(), p.Message)
					}
				})
				res, err := c.publish(ctx, d, *noDash)
				if err != nil {
					return err
				}
				fmt.Fprintf(env.Stdout, "channel %s revision %d: same system as revision %d, expires %s\n", *ch, res.Revision, cur.Revision(), res.Payload.ExpiresAt.Format(time.RFC3339))
				return nil
			}
		},
	}
}

func gcCmd() *command {
	return &command{
		name:    "gc",
		summary: "delete cache objects no recent revision needs",
		about: `Deletes cache/ objects (narinfos and NARs) that are not reachable, through
narinfo references, from the systems of the newest --keep-revisions
revisions of every channel, nor from any channel's current manifest. Objects
younger than --min-age are spared (a push in progress writes NARs before
their narinfos). Any unreadable narinfo on the way aborts without deleting.
--dry-run prints what would be freed.`,
		examples: `  nix-ota gc --bucket s3://fleet --keep-revisions 5 --dry-run
  nix-ota gc --bucket file:///srv/nix-ota --keep-revisions 2`,
		flags: func(fs *pflag.FlagSet) func(context.Context, *Env, []string) error {
			bkt := fs.String("bucket", "", "bucket URL (or $NIX_OTA_BUCKET)")
			keep := fs.Int("keep-revisions", 5, "keep what the newest N revisions of each channel need")
			dry := fs.Bool("dry-run", false, "print what would be deleted; delete nothing")
			minAge := fs.Duration("min-age", time.Hour, "never delete objects younger than this")
			return func(ctx context.Context, env *Env, args []string) error {
				if err := noArgs(args); err != nil {
					return err
				}
				if *keep < 1 {
					return usagef("--keep-revisions must be at least 1")
				}
				s, err := openBucket(ctx, env, *bkt, false)
				if err != nil {
					return err
				}
				if err := bucket.CheckLayout(ctx, s); err != nil {
					return err
				}
				roots, err := gcRoots(ctx, s, *keep)
				if err != nil {
					return err
				}
				plan, err := cache.PlanGC(ctx, s, roots, *minAge, time.Now())
				if err != nil {
					return err
				}
				verb := "deleted"
				if *dry {
					verb = "would delete"
					for _, o := range plan.Delete {
						fmt.Fprintf(env.Stdout, "would delete %s (%d bytes)\n", o.Key, o.Size)
					}
				} else if _, err := plan.Apply(ctx, s); err != nil {
					return err
				}
				fmt.Fprintf(env.Stdout, "gc: %d systems kept (%d cache objects); %s %d objects, %s; %d unreachable objects younger than %s spared\n",
					len(roots), len(plan.Keep)-1, verb, len(plan.Delete), mib(plan.FreedBytes), plan.Young, *minAge)
				return nil
			}
		},
	}
}

// gcRoots are the systems of every channel's current manifest and newest
// keep revisions.
func gcRoots(ctx context.Context, s bucket.Store, keep int) ([]string, error) {
	var names []string
	err := s.List(ctx, bucket.ChannelsPrefix, func(i bucket.Info) error {
		if n, ok := strings.CutSuffix(strings.TrimPrefix(i.Key, bucket.ChannelsPrefix), ".json"); ok && !strings.Contains(n, "/") {
			names = append(names, n)
		}
		return nil
	})
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
		if manifest.ValidateName("channel", ch) != nil {
			continue
		}
		cur, err := peekPointer(ctx, s, ch)
		if err != nil {
			return nil, fmt.Errorf("gc: %w (nothing deleted)", err)
		}
		add(cur)
		revs, err := channel.Revisions(ctx, s, ch)
		if err != nil {
			return nil, err
		}
		for i := len(revs) - 1; i >= 0 && i >= len(revs)-keep; i-- {
			p, err := peekRevision(ctx, s, ch, revs[i])
			if err != nil {
				return nil, fmt.Errorf("gc: %w (nothing deleted)", err)
			}
			add(p)
		}
	}
	if len(names) == 0 {
		return nil, errors.New("gc: no channel in the bucket; refusing to treat the whole cache as garbage")
	}
	return roots, nil
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
