package cli

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/nix-ota/nix-ota/channel"
	"github.com/nix-ota/nix-ota/manifest"
)

type verifyOptions struct {
	bucket, channel string
	trust           trustFlags
	json            bool
}

func verifyCmd() *command {
	o := &verifyOptions{}
	return &command{
		name:    "verify",
		summary: "check a channel as a device would",
		about: `Reads the channel's current manifest (over any bucket URL, including the
https:// one devices use) and applies every rule a device applies: a
threshold of the given keys signed it, for this channel, it has not
expired, it names valid store paths; plus a check only the publisher can
make, that it is not older than the newest validly signed revision in the
channel's history (a bucket replaying an old manifest). Exit 0 if a device
with these keys would accept the manifest; exit 3 with the reason if not;
exit 2 if the bucket has no such channel.

--json prints one object on stdout, when the manifest was checked:
{"channel", "accepted": true|false, "revision", "storePaths", "systems",
"rollout", "publishedAt", "expiresAt", "signedBy"} when accepted, or
{"channel", "accepted": false, "reason", "error"} when rejected (exit 3).`,
		examples: `  nix-ota verify --bucket file:///srv/nix-ota --channel prod --public-key "$(cat sign.pub)"
  nix-ota verify --bucket https://fleet.example.org --channel prod \
      --public-key old:AAAA… --public-key new:BBBB… --threshold 2
  NIX_OTA_PUBLIC_KEY="$(cat sign.pub)" nix-ota verify --channel prod --json | jq .revision`,
		flags: o.flags,
		run:   o.run,
	}
}

func (o *verifyOptions) flags(fs *pflag.FlagSet) {
	addBucketFlag(fs, &o.bucket, "; https:// works")
	fs.StringVar(&o.channel, "channel", "", "channel name (required)")
	o.trust = addTrustFlags(fs)
	fs.BoolVar(&o.json, "json", false, "print the verdict as one JSON object on stdout")
}

// verifyResult is verify --json.
type verifyResult struct {
	Channel  string   `json:"channel"`
	Accepted bool     `json:"accepted"`
	Reason   string   `json:"reason,omitempty"`
	Error    string   `json:"error,omitempty"`
	SignedBy []string `json:"signedBy,omitempty"`
	*revisionJSON
}

func (o *verifyOptions) run(ctx context.Context, env *Env, args []string) error {
	if err := noArgs(args); err != nil {
		return err
	}
	if err := checkChannel(o.channel); err != nil {
		return err
	}
	trust, err := o.trust.trust(env)
	if err != nil {
		return err
	}
	s, err := openBucket(ctx, env, o.bucket, forReading)
	if err != nil {
		return err
	}
	if err := requireChannel(ctx, s, o.channel); err != nil {
		return err
	}
	now := time.Now()
	v, err := channel.Check(ctx, s, o.channel, trust, now)
	if err != nil {
		return o.rejected(env, err)
	}
	p := v.Payload
	if o.json {
		return writeJSON(env.Stdout, verifyResult{Channel: o.channel, Accepted: true, SignedBy: v.KeyIDs, revisionJSON: newRevisionJSON(*p)})
	}
	fmt.Fprintf(env.Stdout, "ok: channel %s revision %d, %s, signed by %s, expires in %s\n",
		p.Channel, p.Revision, strings.Join(p.StorePaths(), " "), strings.Join(v.KeyIDs, ","), humanDuration(p.ExpiresAt.Sub(now)))
	return nil
}

// rejected is the error for a manifest that did not verify, with what to
// do about an expired one; with --json the verdict is printed too.
func (o *verifyOptions) rejected(env *Env, err error) error {
	if errors.Is(err, manifest.ErrExpired) {
		err = fmt.Errorf("%w; re-sign it: nix-ota resign --channel %s", err, o.channel)
	}
	err = fmt.Errorf("channel %q: rejected: %w", o.channel, err)
	if o.json && isRejection(err) {
		res := verifyResult{Channel: o.channel, Reason: rejectionReason(err), Error: oneLine(explain(err).Error(), 2000)}
		if jerr := writeJSON(env.Stdout, res); jerr != nil {
			return jerr
		}
	}
	return err
}
