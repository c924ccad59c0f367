package cli

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/pflag"

	"github.com/nix-ota/nix-ota/bucket"
	"github.com/nix-ota/nix-ota/channel"
	dashboard "github.com/nix-ota/nix-ota/dashboard-static"
	"github.com/nix-ota/nix-ota/manifest"
	"github.com/nix-ota/nix-ota/manifest/signing"
)

// signTrustFlags say what, besides the signing keys themselves, a signing
// command trusts in the bucket it builds on.
type signTrustFlags struct {
	keys      *[]string
	threshold *int
}

func addSignTrustFlags(fs *pflag.FlagSet) signTrustFlags {
	return signTrustFlags{
		keys:      fs.StringArray("public-key", nil, "also accept existing revisions signed by this key NAME:BASE64, e.g. one you rotated away from (repeatable; $"+publicKeyEnv+" adds more)"),
		threshold: fs.Int("threshold", 0, "distinct trusted keys an existing revision needs (default: every --key)"),
	}
}

// signedChannel is a channel opened for signing: the keys, the bucket, and
// the channel's history as verified with the keys' trust. Every command
// that signs goes through it, so none can sign what it did not verify.
type signedChannel struct {
	env    *Env
	name   string
	s      bucket.Store
	keys   []signing.Key
	trust  manifest.Trust
	h      *channel.History
	noDash bool // --no-dashboard: never rewrite the bucket's dashboard
}

// openSigned checks the channel name, loads the keys (before any bucket
// I/O, so a bad key touches nothing), opens the bucket and loads the
// channel's verified history.
func openSigned(ctx context.Context, env *Env, bkt string, kf keyFlags, tf signTrustFlags, ch string) (*signedChannel, error) {
	if err := checkChannel(ch); err != nil {
		return nil, err
	}
	keys, err := kf.load(ctx, env)
	if err != nil {
		return nil, err
	}
	extra, err := parsePublicKeys(*tf.keys, envPublicKeys(env))
	if err != nil {
		return nil, err
	}
	trust, err := signing.Trust(keys, extra, *tf.threshold)
	if err != nil {
		return nil, usageError{err}
	}
	s, err := openBucket(ctx, env, bkt, forWriting)
	if err != nil {
		return nil, err
	}
	if err := bucket.CheckLayout(ctx, s); err != nil {
		return nil, err
	}
	c := &signedChannel{env: env, name: ch, s: s, keys: keys, trust: trust}
	if err := c.reload(ctx); err != nil {
		return nil, err
	}
	c.warnSkipped()
	return c, nil
}

// reload reads the channel's history again (rollout does between steps).
func (c *signedChannel) reload(ctx context.Context) error {
	h, err := channel.Load(ctx, c.s, c.name, c.trust)
	if err != nil {
		return err
	}
	c.h = h
	return nil
}

// warnSkipped says which history objects were left out and why.
func (c *signedChannel) warnSkipped() {
	const show = 5
	for i, s := range c.h.Skipped {
		if i == show {
			fmt.Fprintf(c.env.Stderr, "warning: %d more unverified objects skipped (nix-ota doctor lists them)\n", len(c.h.Skipped)-show)
			break
		}
		fmt.Fprintf(c.env.Stderr, "warning: %s skipped, not verified: %s\n", oneLine(s.Key, 200), oneLine(s.Reason, 200))
	}
}

// current is the verified current manifest (exit 3 when it does not
// verify, 2 when the bucket has no such channel).
func (c *signedChannel) current(ctx context.Context) (channel.Entry, error) {
	if c.h.Pointer == nil {
		return channel.Entry{}, channelNotFound(ctx, c.s, c.name)
	}
	return c.h.Current()
}

// openDerived opens a channel for a command that signs something derived
// from its current revision (resign, rollback, rollout) and returns that
// revision, checked as currentForDeriving checks it.
func openDerived(ctx context.Context, env *Env, bkt string, kf keyFlags, tf signTrustFlags, ch string, noDash bool) (*signedChannel, channel.Entry, error) {
	c, err := openSigned(ctx, env, bkt, kf, tf, ch)
	if err != nil {
		return nil, channel.Entry{}, err
	}
	c.noDash = noDash
	cur, err := c.currentForDeriving(ctx)
	return c, cur, err
}

// currentForDeriving is current plus the check only devices can give: a
// channel whose devices mostly run a newer revision than the bucket's
// verified history has had its history truncated and an old manifest put
// back, and nothing may be derived from it.
func (c *signedChannel) currentForDeriving(ctx context.Context) (channel.Entry, error) {
	cur, err := c.current(ctx)
	if err != nil {
		return cur, err
	}
	fleet, err := readFleet(ctx, c.env, c.s, dashboard.Options{Channel: c.name})
	if err != nil {
		return cur, fmt.Errorf("read device statuses to check the channel's history: %w", err)
	}
	return cur, c.h.CheckReports(fleet.Reports())
}

// still makes sure the channel is where a long-running command left it:
// a rollout must not overwrite what someone published meanwhile.
func (c *signedChannel) still(ctx context.Context, cur channel.Entry) error {
	if err := c.reload(ctx); err != nil {
		return err
	}
	now, err := c.current(ctx)
	if err != nil {
		return err
	}
	if now.Revision() != cur.Revision() {
		return fmt.Errorf("channel %s moved to revision %d (%s) while this command followed revision %d; stopping without publishing anything", c.name, now.Revision(), now.Systems(), cur.Revision())
	}
	return nil
}

// publish signs d as the channel's next revision and, unless noDash or
// --no-dashboard, rewrites the dashboard (a failure there is a warning: the
// publish stands).
func (c *signedChannel) publish(ctx context.Context, d channel.Draft, noDash bool) (channel.Result, error) {
	res, err := channel.Publish(ctx, c.s, c.h, d, func(p *manifest.Payload) ([]byte, error) {
		return signing.Sign(ctx, p, c.keys...)
	})
	if err != nil {
		return res, err
	}
	if res.Superseded != 0 {
		fmt.Fprintf(c.env.Stderr, "note: a concurrent publish moved channel %q to revision %d while this one wrote revision %d\n", c.h.Channel, res.Superseded, res.Revision)
	}
	if !noDash {
		c.refreshDashboard(ctx)
	}
	return res, c.reload(ctx)
}

// attest signs and stores how entry e did. A failure is a warning: the
// record only steers later reverts, which refuse without it. No command
// reads the record back in the same run, so the history is not reloaded.
func (c *signedChannel) attest(ctx context.Context, e channel.Entry, good bool, reason string) {
	body, err := signing.SignAttestation(ctx, e.Attestation(good, reason, time.Now()), c.keys...)
	if err == nil {
		err = channel.WriteAttestation(ctx, c.s, c.h, e.Revision(), body)
	}
	if err != nil {
		fmt.Fprintf(c.env.Stderr, "warning: could not record revision %d as %s: %s\n", e.Revision(), map[bool]string{true: "good", false: "bad"}[good], oneLine(err.Error(), 300))
	}
}

// refreshDashboard rewrites the bucket's dashboard after a command changed
// the channel or observed the fleet, so the page never shows what the
// command saw change, and returns how long that took (0 with
// --no-dashboard or on failure, which is a warning: what the command did
// stands).
func (c *signedChannel) refreshDashboard(ctx context.Context) time.Duration {
	if c.noDash {
		return 0
	}
	start := time.Now()
	where, f, err := regenerate(ctx, c.env, c.s, dashSpec{trust: &c.trust})
	if err != nil {
		fmt.Fprintf(c.env.Stderr, "warning: dashboard not regenerated: %s\n", oneLine(err.Error(), 300))
		return 0
	}
	took := time.Since(start)
	fmt.Fprintf(c.env.Stderr, "dashboard: refreshed in %s (%d devices; %s): %s\n", took.Round(time.Millisecond), f.Counts.Devices, readSummary(f.Read), where)
	return took
}
