package cli

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/nix-ota/nix-ota/channel"
	"github.com/nix-ota/nix-ota/manifest"
)

type publishOptions struct {
	bucket, channel        string
	keys                   keyFlags
	trust                  signTrustFlags
	paths, substituters    []string
	expires                time.Duration
	rollout                int
	salt, message, sw, pub string
	retry                  bool
	noDashboard, push      bool
	noDelta                bool
	skipClosureCheck, json bool
	cacheKey               string
	gate                   gateFlags
}

func publishCmd() *command {
	o := &publishOptions{}
	return &command{
		name:    "publish",
		summary: "sign and publish a system to a channel",
		about: `Signs a manifest pointing the channel at a system store path and publishes it
as the channel's next revision. The revision is claimed by a create-only
write of channels/C/<rev>.json, then channels/C.json is moved to it only if
it is unchanged since it was read, so concurrent publishers (two CI jobs)
never lose, duplicate or regress a revision: the loser retries with the
next number. If anything fails the channel pointer is left as it was. The
channel's current manifest must verify with the signing keys (add
--public-key for a key you rotated from), and the next revision number
comes from verified revisions only.

The closure must already be in a binary cache the devices can reach
(--substituter); devices check it against their trusted cache keys.
--push uploads it first, with binary deltas against the paths of this
channel's two newest revisions (see nix-ota push; --no-delta: full NARs
only), so devices one or two revisions behind download a fraction.
For mixed fleets give --store-path CLASS=PATH once per device class.

--json prints one object on stdout: {"channel", "revision",
"supersededBy" (a concurrent publish's later revision, if any),
"storePaths", "systems", "rollout", "expiresAt", "signedBy"}; messages,
push and --wait progress go to stderr.`,
		examples: `  nix-ota publish --bucket file:///srv/nix-ota --key sign.key --channel prod \
      --store-path "$(readlink -f ./result)" --substituter https://cache.example.org
  nix-ota publish --channel prod --store-path rpi4=/nix/store/…-a --store-path x86=/nix/store/…-b \
      --rollout 10 --message "kiosk 2.3, 10% first"`,
		flags: o.flags,
		run:   o.run,
	}
}

// deltaChannels: --push makes deltas against this channel's revisions.
func (o *publishOptions) deltaChannels() deltaChannels {
	if o.noDelta {
		return deltaNone
	}
	return deltaChannels{o.channel}
}

func (o *publishOptions) flags(fs *pflag.FlagSet) {
	addBucketFlag(fs, &o.bucket, "")
	o.keys = addKeyFlags(fs)
	o.trust = addSignTrustFlags(fs)
	fs.StringVar(&o.channel, "channel", "", "channel name (required)")
	fs.StringArrayVar(&o.paths, "store-path", nil, "system store path, or CLASS=PATH for one device class (repeatable; required)")
	fs.StringArrayVar(&o.substituters, "substituter", nil, "binary cache URL devices fetch the closure from (repeatable)")
	fs.DurationVar(&o.expires, "expires", 720*time.Hour, "how long devices accept this manifest; re-sign before it runs out")
	fs.IntVar(&o.rollout, "rollout", 100, "percent of devices that apply this revision (0-100)")
	fs.StringVar(&o.salt, "rollout-salt", "", "cohort salt (default: random per publish)")
	fs.StringVar(&o.message, "message", "", "free text shown on the dashboard and in history")
	fs.BoolVar(&o.retry, "retry", false, "let devices that rolled this system back try it once more (signed; agents older than this release refuse such a manifest and stay put)")
	fs.StringVar(&o.sw, "switch", manifest.SwitchNow, "switch mode: switch (activate now) or boot (on next boot)")
	fs.StringVar(&o.pub, "publisher", "", "who published (default user@host)")
	fs.BoolVar(&o.noDashboard, "no-dashboard", false, "do not regenerate the dashboard in the bucket")
	fs.BoolVar(&o.push, "push", false, "first upload the closures into the bucket's cache/ (see nix-ota push)")
	fs.BoolVar(&o.noDelta, "no-delta", false, "with --push: upload full NARs only, no deltas against earlier revisions")
	fs.BoolVar(&o.json, "json", false, "print the result as one JSON object on stdout (messages go to stderr)")
	fs.BoolVar(&o.skipClosureCheck, "skip-closure-check", false, "do not check that a cache the devices use has every store path (for caches this machine cannot read)")
	fs.StringVar(&o.cacheKey, "cache-key", "", "binary cache secret key file for --push (or $NIX_OTA_CACHE_KEY)")
	fs.DurationVar(&o.gate.wait, "wait", 0, "follow the rollout until every device in the cohort runs it (--wait or --wait=30m); exit 1 if one fails or none reports")
	fs.Lookup("wait").NoOptDefVal = "15m"
	fs.DurationVar(&o.gate.interval, "wait-interval", 5*time.Second, "how often --wait reads the device statuses")
	o.gate.addGate(fs)
}

func (o *publishOptions) run(ctx context.Context, env *Env, args []string) error {
	start := time.Now()
	if err := noArgs(args); err != nil {
		return err
	}
	p, err := o.payload(env)
	if err != nil {
		return err
	}
	var f *follower
	if o.gate.wait > 0 {
		if f, err = o.gate.follower(env, channel.Gate{RequireAll: true}); err != nil {
			return err
		}
	}
	c, err := openSigned(ctx, env, o.bucket, o.keys, o.trust, o.channel)
	if err != nil {
		return err
	}
	c.noDash = o.noDashboard
	if c.h.Pointer == nil {
		warnNewChannel(ctx, env, c.s, o.channel)
	}
	if o.push {
		if _, _, err := push(ctx, env, humanOut(env, o.json), c.s, o.cacheKey, p.StorePaths(), o.deltaChannels()); err != nil {
			return fmt.Errorf("push (nothing published): %w", err)
		}
	}
	if !o.skipClosureCheck {
		if err := checkClosures(ctx, env, c.s, p); err != nil {
			return err
		}
	}
	// The channel moves first; the dashboard follows and is timed apart,
	// so a publish waits on the fleet's size only for the page.
	res, err := c.publish(ctx, channel.NewDraft(*p, o.expires), true)
	if err != nil {
		return err
	}
	took := publishTimings{PublishMs: time.Since(start).Milliseconds()}
	*p = res.Payload
	if !o.json {
		fmt.Fprintf(env.Stdout, "published channel %s revision %d in %s: %s (signed by %s, rollout %d%%, expires %s)\n",
			o.channel, res.Revision, time.Since(start).Round(time.Millisecond), strings.Join(p.StorePaths(), " "), signerNames(c.keys), p.Rollout.Percent, p.ExpiresAt.Format(time.RFC3339))
	}
	if !o.noDashboard {
		took.DashboardMs = c.refreshDashboard(ctx).Milliseconds()
	}
	if o.json {
		err = writeJSON(env.Stdout, publishResult{Channel: o.channel, Revision: res.Revision, Superseded: res.Superseded,
			StorePaths: p.StorePaths(), Systems: p.Systems, Rollout: p.Rollout.Percent, ExpiresAt: p.ExpiresAt, SignedBy: keyNames(c.keys), Timings: took})
	}
	if err != nil {
		return err
	}
	if f != nil {
		f.s, f.trust = c.s, &c.trust
		return waitPublished(ctx, c, f, res.Revision)
	}
	return nil
}

// publishResult is publish --json.
type publishResult struct {
	Channel    string           `json:"channel"`
	Revision   uint64           `json:"revision"`
	Superseded uint64           `json:"supersededBy,omitempty"`
	StorePaths []string         `json:"storePaths"`
	Systems    manifest.Systems `json:"systems,omitempty"`
	Rollout    int              `json:"rollout"`
	ExpiresAt  time.Time        `json:"expiresAt"`
	SignedBy   []string         `json:"signedBy"`
	Timings    publishTimings   `json:"timings"`
}

// publishTimings: how long the channel took to move (from the start of the
// command), and the dashboard refresh after it (0 when skipped or failed).
type publishTimings struct {
	PublishMs   int64 `json:"publishMs"`
	DashboardMs int64 `json:"dashboardMs"`
}

// payload checks the flags and builds the new revision's content, before
// any key is loaded or the bucket is touched.
func (o *publishOptions) payload(env *Env) (*manifest.Payload, error) {
	if err := checkChannel(o.channel); err != nil {
		return nil, err
	}
	p := &manifest.Payload{
		Schema: manifest.Schema, Channel: o.channel, Substituters: append([]string{}, o.substituters...),
		Rollout: manifest.Rollout{Percent: o.rollout, Salt: o.salt},
		Switch:  o.sw, Message: o.message, Publisher: o.pub, Retry: o.retry,
	}
	if err := parseStorePaths(env, o.paths, p); err != nil {
		return nil, err
	}
	for _, s := range p.Substituters {
		if err := manifest.ValidateSubstituter(s); err != nil {
			return nil, usageError{err}
		}
	}
	switch {
	case o.rollout < 0 || o.rollout > 100:
		return nil, usagef("--rollout %d: want 0-100", o.rollout)
	case o.sw != manifest.SwitchNow && o.sw != manifest.SwitchBoot:
		return nil, usagef("--switch %q: want switch or boot", o.sw)
	case o.expires <= 0:
		return nil, usagef("--expires must be positive")
	}
	if p.Rollout.Salt == "" {
		b := make([]byte, 8)
		rand.Read(b)
		p.Rollout.Salt = hex.EncodeToString(b)
	}
	if p.Publisher == "" {
		p.Publisher = publisherName()
	}
	return p, nil
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
	if p.StorePath != "" && len(p.Systems) > 0 {
		return usagef("--store-path %s has no class but others do; give it one (default=%s for devices without deviceClass)", p.StorePath, p.StorePath)
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
