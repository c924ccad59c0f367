package cli

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/nix-ota/nix-ota/manifest"
)

type resignOptions struct {
	bkt     string
	kf      keyFlags
	tf      signTrustFlags
	ch      string
	expires time.Duration
	within  time.Duration
	noDash  bool
	json    bool
}

func resignCmd() *command {
	o := &resignOptions{}
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
--public-key); one that does not is refused (exit 3) and nothing is signed.

--json prints one object on stdout: {"channel", "resigned" (false when
--if-expires-within found nothing to do), "revision" (the new one, or the
current one when nothing was done), "from" (the revision re-signed),
"storePaths", "systems", "rollout", "publishedAt", "expiresAt", "message",
"publisher", "signedBy"}.`,
		examples: `  nix-ota resign --bucket s3://fleet --key sign.key --channel prod
  nix-ota resign --channel prod --key sign.key --if-expires-within 168h --json`,
		flags: o.flags,
		run:   o.run,
	}
}

func (o *resignOptions) flags(fs *pflag.FlagSet) {
	fs.StringVar(&o.bkt, "bucket", "", "bucket URL (or $NIX_OTA_BUCKET)")
	o.kf = addKeyFlags(fs)
	o.tf = addSignTrustFlags(fs)
	fs.StringVar(&o.ch, "channel", "", "channel name (required)")
	fs.DurationVar(&o.expires, "expires", 720*time.Hour, "new validity")
	fs.DurationVar(&o.within, "if-expires-within", 0, "only re-sign when the current manifest expires within this long")
	fs.BoolVar(&o.noDash, "no-dashboard", false, "do not regenerate the dashboard")
	fs.BoolVar(&o.json, "json", false, "print the result as one JSON object on stdout (messages go to stderr)")
}

// resignResult is resign --json.
type resignResult struct {
	Resigned bool     `json:"resigned"`
	From     uint64   `json:"from"`
	SignedBy []string `json:"signedBy,omitempty"`
	*revisionJSON
}

func (o *resignOptions) run(ctx context.Context, env *Env, args []string) error {
	if err := noArgs(args); err != nil {
		return err
	}
	c, cur, err := openDerived(ctx, env, o.bkt, o.kf, o.tf, o.ch, o.noDash)
	if err != nil {
		return err
	}
	curP := cur.Payload()
	if left := time.Until(curP.ExpiresAt); o.within > 0 && left > o.within {
		fmt.Fprintf(humanOut(env, o.json), "channel %s revision %d expires in %s; nothing to do\n", o.ch, cur.Revision(), humanDuration(left))
		return o.report(env, resignResult{From: cur.Revision(), revisionJSON: newRevisionJSON(curP)})
	}
	d := cur.Draft(o.expires)
	d.Edit(func(p *manifest.Payload) {
		if !strings.HasPrefix(p.Message, "re-signed") {
			p.Message = fmt.Sprintf("re-signed revision %d: %s", cur.Revision(), p.Message)
		}
	})
	res, err := c.publish(ctx, d, false)
	if err != nil {
		return err
	}
	fmt.Fprintf(humanOut(env, o.json), "channel %s revision %d: same system as revision %d, expires %s\n", o.ch, res.Revision, cur.Revision(), res.Payload.ExpiresAt.Format(time.RFC3339))
	return o.report(env, resignResult{Resigned: true, From: cur.Revision(), SignedBy: keyNames(c.keys), revisionJSON: newRevisionJSON(res.Payload)})
}

func (o *resignOptions) report(env *Env, r resignResult) error {
	if !o.json {
		return nil
	}
	return writeJSON(env.Stdout, r)
}
