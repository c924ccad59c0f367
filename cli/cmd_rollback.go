package cli

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/pflag"

	"github.com/nix-ota/nix-ota/manifest"
)

type rollbackOptions struct {
	bkt     string
	kf      keyFlags
	tf      signTrustFlags
	ch      string
	to      uint64
	expires time.Duration
	noDash  bool
	json    bool
}

func rollbackCmd() *command {
	o := &rollbackOptions{}
	return &command{
		name:    "rollback",
		summary: "republish an earlier revision's system",
		about: `Publishes the system of an earlier revision as the channel's next revision, so
devices (which never accept a lower revision) move back to it. Without --to
it goes to the system that ran right before the current one, and only if
that system is known good (a rollout or publish --wait completed with it);
otherwise it refuses and says why, and --to names a revision. A system
recorded bad is never a target. The message records what was rolled back
from. Only revisions that verify with the
signing keys (and any --public-key) are considered; a current manifest that
does not verify is refused (exit 3) and nothing is signed.

--json prints one object on stdout: {"channel", "revision" (the new one),
"from" (the revision rolled back from), "to" (the revision whose system it
republished), "storePaths", "systems", "rollout", "publishedAt",
"expiresAt", "message", "publisher", "signedBy"}.`,
		examples: `  nix-ota rollback --bucket file:///srv/nix-ota --key sign.key --channel prod
  nix-ota rollback --channel prod --to 6 --key sign.key --json`,
		flags: o.flags,
		run:   o.run,
	}
}

func (o *rollbackOptions) flags(fs *pflag.FlagSet) {
	fs.StringVar(&o.bkt, "bucket", "", "bucket URL (or $NIX_OTA_BUCKET)")
	o.kf = addKeyFlags(fs)
	o.tf = addSignTrustFlags(fs)
	fs.StringVar(&o.ch, "channel", "", "channel name (required)")
	fs.Uint64Var(&o.to, "to", 0, "revision whose system to go back to (default: the system before the current one, if it is known good)")
	fs.DurationVar(&o.expires, "expires", 720*time.Hour, "how long devices accept the new manifest")
	fs.BoolVar(&o.noDash, "no-dashboard", false, "do not regenerate the dashboard")
	fs.BoolVar(&o.json, "json", false, "print the result as one JSON object on stdout (messages go to stderr)")
}

// rollbackResult is rollback --json.
type rollbackResult struct {
	From     uint64   `json:"from"`
	To       uint64   `json:"to"`
	SignedBy []string `json:"signedBy"`
	*revisionJSON
}

func (o *rollbackOptions) run(ctx context.Context, env *Env, args []string) error {
	if err := noArgs(args); err != nil {
		return err
	}
	c, cur, err := openDerived(ctx, env, o.bkt, o.kf, o.tf, o.ch, o.noDash)
	if err != nil {
		return err
	}
	if o.to != 0 && o.to >= cur.Revision() {
		return usagef("--to %d: not an earlier revision (current is %d)", o.to, cur.Revision())
	}
	target, err := c.h.RevertTarget(cur, o.to)
	if err != nil {
		return err
	}
	d := target.Draft(o.expires)
	d.Edit(func(p *manifest.Payload) {
		p.Rollout.Percent = 100
		p.Message = fmt.Sprintf("rollback from revision %d (%s) to revision %d", cur.Revision(), cur.Systems(), target.Revision())
		p.Publisher = publisherName()
	})
	res, err := c.publish(ctx, d, false)
	if err != nil {
		return err
	}
	fmt.Fprintf(humanOut(env, o.json), "channel %s revision %d: %s\n", o.ch, res.Revision, res.Payload.Message)
	if o.json {
		return writeJSON(env.Stdout, rollbackResult{From: cur.Revision(), To: target.Revision(), SignedBy: keyNames(c.keys), revisionJSON: newRevisionJSON(res.Payload)})
	}
	return nil
}
