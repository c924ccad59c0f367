package cli

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/nix-ota/nix-ota/channel"
)

type verifyOptions struct {
	bucket, channel string
	trust           trustFlags
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
with these keys would accept the manifest; exit 3 with the reason if not.`,
		examples: `  nix-ota verify --bucket file:///srv/nix-ota --channel prod --public-key "$(cat sign.pub)"
  nix-ota verify --bucket https://fleet.example.org --channel prod \
      --public-key old:AAAA… --public-key new:BBBB… --threshold 2`,
		flags: o.flags,
		run:   o.run,
	}
}

func (o *verifyOptions) flags(fs *pflag.FlagSet) {
	addBucketFlag(fs, &o.bucket, "; https:// works")
	fs.StringVar(&o.channel, "channel", "", "channel name (required)")
	o.trust = addTrustFlags(fs)
}

func (o *verifyOptions) run(ctx context.Context, env *Env, args []string) error {
	if err := noArgs(args); err != nil {
		return err
	}
	if err := checkChannel(o.channel); err != nil {
		return err
	}
	trust, err := o.trust.trust()
	if err != nil {
		return err
	}
	s, err := openBucket(ctx, env, o.bucket, false)
	if err != nil {
		return err
	}
	now := time.Now()
	v, err := channel.Check(ctx, s, o.channel, trust, now)
	if err != nil {
		return fmt.Errorf("channel %q: rejected: %w", o.channel, err)
	}
	p := v.Payload
	fmt.Fprintf(env.Stdout, "ok: channel %s revision %d, %s, signed by %s, expires in %s\n",
		p.Channel, p.Revision, strings.Join(p.StorePaths(), " "), strings.Join(v.KeyIDs, ","), humanDuration(p.ExpiresAt.Sub(now)))
	return nil
}
