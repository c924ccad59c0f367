package cli

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/pflag"

	"github.com/nix-ota/nix-ota/bucket"
	"github.com/nix-ota/nix-ota/bucket/awscreds"
	"github.com/nix-ota/nix-ota/bucket/s3store"
	"github.com/nix-ota/nix-ota/channel"
	"github.com/nix-ota/nix-ota/manifest"
)

// openBucket opens --bucket (or $NIX_OTA_BUCKET). s3:// URLs get the full
// AWS credential chain, including the URL's profile= parameter.
func openBucket(ctx context.Context, env *Env, raw string, create bool) (bucket.Store, error) {
	if raw == "" {
		raw = env.Getenv("NIX_OTA_BUCKET")
	}
	if raw == "" {
		return nil, usagef("--bucket is required (or set $NIX_OTA_BUCKET), e.g. file:///srv/nix-ota or s3://fleet?endpoint=minio.lan:9000")
	}
	opts := bucket.Options{Create: create}
	if strings.HasPrefix(raw, "s3://") {
		cfg, err := bucket.ParseS3URL(raw)
		if err != nil {
			return nil, err
		}
		creds, err := awscreds.New(ctx, cfg.Profile)
		if err != nil {
			return nil, err
		}
		return s3store.Open(raw, opts, creds)
	}
	return bucket.Open(raw, opts)
}

func initCmd() *command {
	return &command{
		name:    "init",
		summary: "prepare a bucket for nix-ota",
		about: `Writes the layout marker (nix-ota.json) into a bucket, creating a file://
bucket's directory if needed. Every other command refuses a bucket without
the marker, so a typo in a URL is an error rather than a new, empty fleet.
Running init again on an initialised bucket changes nothing. For S3 and
MinIO the bucket itself must exist (create it with your usual tooling).`,
		examples: `  nix-ota init --bucket file:///srv/nix-ota
  nix-ota init --bucket 's3://fleet?endpoint=minio.lan:9000&scheme=http'`,
		flags: func(fs *pflag.FlagSet) func(context.Context, *Env, []string) error {
			bkt := fs.String("bucket", "", "bucket URL (or $NIX_OTA_BUCKET)")
			return func(ctx context.Context, env *Env, args []string) error {
				if err := noArgs(args); err != nil {
					return err
				}
				s, err := openBucket(ctx, env, *bkt, true)
				if err != nil {
					return err
				}
				created, err := bucket.Init(ctx, s, publisherName(), time.Now())
				if err != nil {
					return err
				}
				if created {
					fmt.Fprintf(env.Stdout, "initialised %s\n", s)
				} else {
					fmt.Fprintf(env.Stdout, "%s is already initialised; nothing changed\n", s)
				}
				return nil
			}
		},
	}
}

func publisherName() string {
	u := "unknown"
	if cu, err := user.Current(); err == nil {
		u = cu.Username
	}
	h, _ := os.Hostname()
	return u + "@" + h
}

func publishCmd() *command {
	return &command{
		name:    "publish",
		summary: "sign and publish a system to a channel",
		about: `Signs a manifest pointing the channel at a system store path and publishes it
as the channel's next revision. The revision is claimed by a create-only
write of channels/C/<rev>.json, then channels/C.json is moved to it only if
it is unchanged since it was read, so concurrent publishers (two CI jobs)
never lose, duplicate or regress a revision: the loser retries with the
next number. If anything fails the channel pointer is left as it was.

The closure must already be in a binary cache the devices can reach
(--substituter); devices check it against their trusted cache keys.
For mixed fleets give --store-path CLASS=PATH once per device class.`,
		examples: `  nix-ota publish --bucket file:///srv/nix-ota --key sign.key --channel prod \
      --store-path "$(readlink -f ./result)" --substituter https://cache.example.org
  nix-ota publish --channel prod --store-path rpi4=/nix/store/…-a --store-path x86=/nix/store/…-b \
      --rollout 10 --message "kiosk 2.3, 10% first"`,
		flags: func(fs *pflag.FlagSet) func(context.Context, *Env, []string) error {
			bkt := fs.String("bucket", "", "bucket URL (or $NIX_OTA_BUCKET)")
			kf := addKeyFlags(fs)
			tf := addSignTrustFlags(fs)
			ch := fs.String("channel", "", "channel name (required)")
			paths := fs.StringArray("store-path", nil, "system store path, or CLASS=PATH for one device class (repeatable; required)")
			subs := fs.StringArray("substituter", nil, "binary cache URL devices fetch the closure from (repeatable)")
			expires := fs.Duration("expires", 720*time.Hour, "how long devices accept this manifest; re-sign before it runs out")
			rollout := fs.Int("rollout", 100, "percent of devices that apply this revision (0-100)")
			salt := fs.String("rollout-salt", "", "cohort salt (default: random per publish)")
			msg := fs.String("message", "", "free text shown on the dashboard and in history")
			sw := fs.String("switch", manifest.SwitchNow, "switch mode: switch (activate now) or boot (on next boot)")
			pub := fs.String("publisher", "", "who published (default user@host)")
			noDash := fs.Bool("no-dashboard", false, "do not regenerate the dashboard in the bucket")
			doPush := fs.Bool("push", false, "first upload the closures into the bucket's cache/ (see nix-ota push)")
			cacheKey := fs.String("cache-key", "", "binary cache secret key file for --push (or $NIX_OTA_CACHE_KEY)")
			wait := fs.Duration("wait", 0, "follow the rollout until every device in the cohort runs it (--wait or --wait=30m); exit 1 if one fails")
			fs.Lookup("wait").NoOptDefVal = "15m"
			waitEvery := fs.Duration("wait-interval", 5*time.Second, "how often --wait reads the device statuses")
			return func(ctx context.Context, env *Env, args []string) error {
				if err := noArgs(args); err != nil {
					return err
				}
				if err := checkChannel(*ch); err != nil {
					return err
				}
				p := &manifest.Payload{
					Schema: manifest.Schema, Channel: *ch, Substituters: *subs,
					Rollout: manifest.Rollout{Percent: *rollout, Salt: *salt},
					Switch:  *sw, Message: *msg, Publisher: *pub,
				}
				if err := parseStorePaths(env, *paths, p); err != nil {
					return err
				}
				if p.Substituters == nil {
					p.Substituters = []string{}
				}
				for _, s := range p.Substituters {
					if err := manifest.ValidateSubstituter(s); err != nil {
						return usageError{err}
					}
				}
				if *rollout < 0 || *rollout > 100 {
					return usagef("--rollout %d: want 0-100", *rollout)
				}
				if *sw != manifest.SwitchNow && *sw != manifest.SwitchBoot {
					return usagef("--switch %q: want switch or boot", *sw)
				}
				if *expires <= 0 {
					return usagef("--expires must be positive")
				}
				if p.Rollout.Salt == "" {
					b := make([]byte, 8)
					rand.Read(b)
					p.Rollout.Salt = hex.EncodeToString(b)
				}
				if p.Publisher == "" {
					p.Publisher = publisherName()
				}
				c, err := openSigned(ctx, env, *bkt, kf, tf, *ch)
				if err != nil {
					return err
				}
				if *doPush {
					if _, err := push(ctx, env, c.s, *cacheKey, p.StorePaths()); err != nil {
						return fmt.Errorf("push (nothing published): %w", err)
					}
				}
				res, err := c.publish(ctx, channel.NewDraft(*p, *expires), *noDash)
				if err != nil {
					return err
				}
				*p = res.Payload
				fmt.Fprintf(env.Stdout, "published channel %s revision %d: %s (signed by %s, rollout %d%%, expires %s)\n",
					*ch, res.Revision, strings.Join(p.StorePaths(), " "), signerNames(c.keys), p.Rollout.Percent, p.ExpiresAt.Format(time.RFC3339))
				if *wait > 0 {
					return waitRollout(ctx, env, c.s, *ch, res.Revision, p.Rollout, p.PublishedAt, *wait, *waitEvery)
				}
				return nil
			}
		},
	}
}

// parseStorePaths fills StorePath / Systems from --store-path values.
func parseStorePaths(env *Env, vals []string, p *manifest.Payload) error {
	if len(vals) == 0 {
		return usagef("--store-path is required (the system's /nix/store path, e.g. $(readlink -f ./result))")
	}
	for _, v := range vals {
		class, path, err := resolveStorePath(env, v)
		if err != nil {
			return err
		}
		if class == "" {
			if p.StorePath != "" {
				return usagef("--store-path given twice without a class; use CLASS=PATH for mixed fleets")
			}
			p.StorePath = path
			continue
		}
		if p.Systems == nil {
			p.Systems = manifest.Systems{}
		}
		if _, dup := p.Systems[class]; dup {
			return usagef("--store-path: class %q given twice", class)
		}
		p.Systems[class] = path
	}
	return nil
}

// resolveStorePath reads one --store-path value: PATH or CLASS=PATH, where
// a symlink into the store (./result) is resolved.
func resolveStorePath(env *Env, v string) (class, path string, err error) {
	class, path, hasClass := strings.Cut(v, "=")
	if !hasClass {
		class, path = "", v
	}
	if !strings.HasPrefix(path, "/nix/store/") {
		if r, err := filepath.EvalSymlinks(path); err == nil && strings.HasPrefix(r, "/nix/store/") {
			fmt.Fprintf(env.Stderr, "resolved %s to %s\n", path, r)
			path = r
		}
	}
	if err := manifest.ValidateStorePath(path); err != nil {
		return "", "", usageError{err}
	}
	if hasClass {
		if err := manifest.ValidateName("device class", class); err != nil {
			return "", "", usageError{err}
		}
	}
	return class, path, nil
}

// trustFlags are the flags that describe what a device trusts.
type trustFlags struct {
	keys      *[]string
	threshold *int
}

func addTrustFlags(fs *pflag.FlagSet) trustFlags {
	return trustFlags{
		keys:      fs.StringArray("public-key", nil, "trusted public key NAME:BASE64 (repeatable)"),
		threshold: fs.Int("threshold", 1, "how many distinct trusted keys must have signed"),
	}
}

func (t trustFlags) trust() (manifest.Trust, error) {
	if len(*t.keys) == 0 {
		return manifest.Trust{}, usagef("--public-key is required (the NAME:BASE64 line nix-ota keygen printed)")
	}
	tr := manifest.Trust{Threshold: *t.threshold}
	for _, k := range *t.keys {
		pk, err := manifest.ParsePublicKey(k)
		if err != nil {
			return manifest.Trust{}, usageError{err}
		}
		tr.Keys = append(tr.Keys, pk)
	}
	if err := tr.Check(); err != nil {
		return manifest.Trust{}, usageError{err}
	}
	return tr, nil
}

func verifyCmd() *command {
	return &command{
		name:    "verify",
		summary: "check a channel as a device would",
		about: `Reads a channel's manifest from the bucket and applies every rule an agent
applies (DESIGN.md §3): envelope and payload type, signatures by --threshold
distinct trusted keys, the channel name, expiry and store paths. It also
catches what only a publisher can see: a channel file older than, or
different from, the highest validly signed revision in the channel's
history (a replay or equivocation by the bucket). Exit 0 only if an agent
with these keys would accept the manifest; exit 3 with the reason if not.`,
		examples: `  nix-ota verify --bucket file:///srv/nix-ota --channel prod --public-key "$(cat sign.pub)"
  nix-ota verify --bucket https://fleet.example.org --channel prod \
      --public-key old:AAAA… --public-key new:BBBB… --threshold 2`,
		flags: func(fs *pflag.FlagSet) func(context.Context, *Env, []string) error {
			bkt := fs.String("bucket", "", "bucket URL (or $NIX_OTA_BUCKET); https:// works")
			ch := fs.String("channel", "", "channel name (required)")
			tf := addTrustFlags(fs)
			return func(ctx context.Context, env *Env, args []string) error {
				if err := noArgs(args); err != nil {
					return err
				}
				if err := checkChannel(*ch); err != nil {
					return err
				}
				trust, err := tf.trust()
				if err != nil {
					return err
				}
				s, err := openBucket(ctx, env, *bkt, false)
				if err != nil {
					return err
				}
				now := time.Now()
				v, err := channel.Check(ctx, s, *ch, trust, now)
				if err != nil {
					return fmt.Errorf("channel %q: rejected: %w", *ch, err)
				}
				p := v.Payload
				fmt.Fprintf(env.Stdout, "ok: channel %s revision %d, %s, signed by %s, expires in %s\n",
					p.Channel, p.Revision, strings.Join(p.StorePaths(), " "), strings.Join(v.KeyIDs, ","), humanDuration(p.ExpiresAt.Sub(now)))
				return nil
			}
		},
	}
}

func historyCmd() *command {
	return &command{
		name:    "history",
		summary: "list a channel's published revisions",
		about: `Lists every revision in channels/C/, newest first, with when it was published,
what it points at and its message; the current one is marked with '*'.
With --public-key each entry's signature is checked and marked (ok or the
reason); without it, the contents are shown as the bucket has them,
unverified.`,
		examples: `  nix-ota history --bucket file:///srv/nix-ota --channel prod
  nix-ota history --channel prod --public-key "$(cat sign.pub)" --limit 5`,
		flags: func(fs *pflag.FlagSet) func(context.Context, *Env, []string) error {
			bkt := fs.String("bucket", "", "bucket URL (or $NIX_OTA_BUCKET); needs listing (file:// or s3://)")
			ch := fs.String("channel", "", "channel name (required)")
			limit := fs.Int("limit", 0, "show at most this many revisions (0: all)")
			tf := addTrustFlags(fs)
			return func(ctx context.Context, env *Env, args []string) error {
				if err := noArgs(args); err != nil {
					return err
				}
				if err := checkChannel(*ch); err != nil {
					return err
				}
				var trust *manifest.Trust
				if len(*tf.keys) > 0 {
					t, err := tf.trust()
					if err != nil {
						return err
					}
					trust = &t
				}
				s, err := openBucket(ctx, env, *bkt, false)
				if err != nil {
					return err
				}
				revs, err := channel.Revisions(ctx, s, *ch)
				if err != nil {
					return err
				}
				if len(revs) == 0 {
					return fmt.Errorf("channel %q: %w: no revisions published in %s", *ch, bucket.ErrNotFound, s)
				}
				ptr, err := channel.ReadPointer(ctx, s, *ch)
				if err != nil {
					return err
				}
				tw := tabwriter.NewWriter(env.Stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "REV\tPUBLISHED\tEXPIRES\tROLLOUT\tSTORE PATH\tSIGNATURE\tMESSAGE")
				shown := 0
				for i := len(revs) - 1; i >= 0 && (*limit <= 0 || shown < *limit); i-- {
					shown++
					rev := revs[i]
					body, err := channel.ReadRevision(ctx, s, *ch, rev)
					if err != nil {
						fmt.Fprintf(tw, "%d\t-\t-\t-\t-\tunreadable: %s\t\n", rev, oneLine(err.Error(), 100))
						continue
					}
					mark := " "
					if ptr != nil && bytes.Equal(ptr.Body, body) {
						mark = "*"
					}
					p, _, err := manifest.DecodeUnverified(body)
					if err != nil {
						fmt.Fprintf(tw, "%d%s\t-\t-\t-\t-\tmalformed\t\n", rev, mark)
						continue
					}
					sig := "unverified"
					if trust != nil {
						sig = "ok"
						if _, err := manifest.CheckSigned(*trust, *ch, body); err != nil {
							sig = firstReason(err)
						} else if p.Revision != rev {
							sig = fmt.Sprintf("claims revision %d", p.Revision)
						}
					}
					fmt.Fprintf(tw, "%d%s\t%s\t%s\t%d%%\t%s\t%s\t%s\n", rev, mark, p.PublishedAt.Format("2006-01-02 15:04"), p.ExpiresAt.Format("2006-01-02"),
						p.Rollout.Percent, strings.Join(p.StorePaths(), " "), sig, oneLine(p.Message, 60))
				}
				return tw.Flush()
			}
		},
	}
}

func firstReason(err error) string {
	for _, r := range []error{manifest.ErrSignature, manifest.ErrMalformed, manifest.ErrWrongChannel, manifest.ErrInvalidStorePath, manifest.ErrPayloadType, manifest.ErrTooLarge} {
		if errors.Is(err, r) {
			return "BAD: " + r.Error()
		}
	}
	return "BAD"
}

// oneLine keeps a table row on one line, whatever the bucket holds, and
// drops every control character (C0, DEL, C1): bucket and device text must
// not reach the terminal as escape sequences.
func oneLine(s string, max int) string {
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || (r >= 0x7f && r <= 0x9f) {
			return ' '
		}
		return r
	}, strings.ToValidUTF8(s, "?"))
	if len([]rune(s)) > max {
		s = string([]rune(s)[:max-1]) + "…"
	}
	return s
}

// humanDuration renders a duration the way an operator reads it: 29d 23h,
// 5h 3m, 42s.
func humanDuration(d time.Duration) string {
	neg := d < 0
	if neg {
		d = -d
	}
	var s string
	switch {
	case d >= 24*time.Hour:
		s = fmt.Sprintf("%dd %dh", d/(24*time.Hour), (d%(24*time.Hour))/time.Hour)
	case d >= time.Hour:
		s = fmt.Sprintf("%dh %dm", d/time.Hour, (d%time.Hour)/time.Minute)
	case d >= time.Minute:
		s = fmt.Sprintf("%dm %ds", d/time.Minute, (d%time.Minute)/time.Second)
	default:
		s = fmt.Sprintf("%ds", d/time.Second)
	}
	if neg {
		return "-" + s
	}
	return s
}
