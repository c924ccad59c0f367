package cli

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/spf13/pflag"

	"github.com/nix-ota/nix-ota/bucket"
	"github.com/nix-ota/nix-ota/channel"
	"github.com/nix-ota/nix-ota/manifest"
)

type historyOptions struct {
	bucket, channel string
	limit           int
	trust           trustFlags
}

func historyCmd() *command {
	o := &historyOptions{}
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
		flags: o.flags,
		run:   o.run,
	}
}

func (o *historyOptions) flags(fs *pflag.FlagSet) {
	addBucketFlag(fs, &o.bucket, "; needs listing (file:// or s3://)")
	fs.StringVar(&o.channel, "channel", "", "channel name (required)")
	fs.IntVar(&o.limit, "limit", 0, "show at most this many revisions (0: all)")
	o.trust = addTrustFlags(fs)
}

func (o *historyOptions) run(ctx context.Context, env *Env, args []string) error {
	if err := noArgs(args); err != nil {
		return err
	}
	if err := checkChannel(o.channel); err != nil {
		return err
	}
	trust, err := optionalTrust(o.trust)
	if err != nil {
		return err
	}
	s, err := openBucket(ctx, env, o.bucket, false)
	if err != nil {
		return err
	}
	revs, err := channel.Revisions(ctx, s, o.channel)
	if err != nil {
		return err
	}
	if len(revs) == 0 {
		return fmt.Errorf("channel %q: %w: no revisions published in %s", o.channel, bucket.ErrNotFound, s)
	}
	ptr, err := channel.ReadPointer(ctx, s, o.channel)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(env.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "REV\tPUBLISHED\tEXPIRES\tROLLOUT\tSTORE PATH\tSIGNATURE\tMESSAGE")
	for i, shown := len(revs)-1, 0; i >= 0 && (o.limit <= 0 || shown < o.limit); i, shown = i-1, shown+1 {
		body, err := channel.ReadRevision(ctx, s, o.channel, revs[i])
		if err != nil {
			fmt.Fprintf(tw, "%d\t-\t-\t-\t-\tunreadable: %s\t\n", revs[i], oneLine(err.Error(), 100))
			continue
		}
		historyRow(tw, o.channel, revs[i], body, ptr, trust)
	}
	return tw.Flush()
}

// historyRow prints one entry as the bucket has it, with its signature
// verdict when trust is given.
func historyRow(w io.Writer, ch string, rev uint64, body []byte, ptr *channel.Pointer, trust *manifest.Trust) {
	mark := " "
	if ptr != nil && bytes.Equal(ptr.Body, body) {
		mark = "*"
	}
	p, _, err := manifest.DecodeUnverified(body)
	if err != nil {
		fmt.Fprintf(w, "%d%s\t-\t-\t-\t-\tmalformed\t\n", rev, mark)
		return
	}
	sig := "unverified"
	if trust != nil {
		sig = "ok"
		if _, err := manifest.CheckSigned(*trust, ch, body); err != nil {
			sig = firstReason(err)
		} else if p.Revision != rev {
			sig = fmt.Sprintf("claims revision %d", p.Revision)
		}
	}
	fmt.Fprintf(w, "%d%s\t%s\t%s\t%d%%\t%s\t%s\t%s\n", rev, mark, p.PublishedAt.Format("2006-01-02 15:04"), p.ExpiresAt.Format("2006-01-02"),
		p.Rollout.Percent, strings.Join(p.StorePaths(), " "), sig, oneLine(p.Message, 60))
}
