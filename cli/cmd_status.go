package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/pflag"

	dashboard "github.com/nix-ota/nix-ota/dashboard-static"
	"github.com/nix-ota/nix-ota/manifest"
)

type statusOptions struct {
	bkt      string
	ch       string
	asJSON   bool
	tf       trustFlags
	watch    bool
	interval time.Duration
}

func statusCmd() *command {
	o := &statusOptions{}
	return &command{
		name:    "status",
		summary: "show channels and devices in the terminal",
		about: `Prints what the dashboard shows, as terminal tables: each channel's current
revision, expiry and rollout progress, then every device (problems first)
with its state, revision, last check-in and last error. --json prints the
same data as dashboard.json. --watch refreshes every --interval until
interrupted: the serverless way to watch a rollout happen.`,
		examples: `  nix-ota status --bucket file:///srv/nix-ota
  nix-ota status --channel prod --watch
  nix-ota status --json | jq '.devices[] | select(.state=="failed")'`,
		flags: o.flags,
		run:   o.run,
	}
}

func (o *statusOptions) flags(fs *pflag.FlagSet) {
	fs.StringVar(&o.bkt, "bucket", "", "bucket URL (or $NIX_OTA_BUCKET)")
	fs.StringVar(&o.ch, "channel", "", "only this channel and its devices")
	fs.BoolVar(&o.asJSON, "json", false, "print JSON instead of tables")
	o.tf = addTrustFlags(fs)
	fs.BoolVar(&o.watch, "watch", false, "refresh every --interval until interrupted")
	fs.DurationVar(&o.interval, "interval", 5*time.Second, "refresh interval with --watch")
}

func (o *statusOptions) run(ctx context.Context, env *Env, args []string) error {
	if o.ch != "" {
		if err := manifest.ValidateName("channel", o.ch); err != nil {
			return err
		}
	}
	trust, s, err := openForReading(ctx, env, args, o.tf, o.bkt)
	if err != nil {
		return err
	}
	if o.ch != "" {
		if err := requireChannel(ctx, s, o.ch); err != nil {
			return err
		}
	}
	for {
		f, err := dashboard.Collect(ctx, s, dashboard.Options{Trust: trust, Channel: o.ch})
		if err != nil {
			return err
		}
		if o.watch && !o.asJSON {
			fmt.Fprint(env.Stdout, "\033[H\033[2J")
		}
		if o.asJSON {
			b, err := dashboard.JSON(f)
			if err != nil {
				return err
			}
			env.Stdout.Write(b)
		} else {
			printFleet(env.Stdout, f)
		}
		if !o.watch || !sleepCtx(ctx, o.interval) {
			return nil
		}
	}
}

// printFleet renders the fleet as tables. Device-supplied strings pass
// through oneLine, which removes control characters: a device must not be
// able to send escape sequences to the operator's terminal.
func printFleet(w io.Writer, f *dashboard.Fleet) {
	c := f.Counts
	fmt.Fprintf(w, "%s at %s: %d devices: %d up to date, %d behind, %d updating, %d failed, %d offline, %d need reboot, %d invalid\n\n",
		f.Bucket, f.GeneratedAt.Format("2006-01-02 15:04:05 UTC"), c.Devices, c.UpToDate, c.Behind, c.Updating, c.Failed, c.Offline, c.NeedsReboot, c.Invalid)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CHANNEL\tREV\tSYSTEM\tPUBLISHED\tEXPIRES\tROLLOUT\tPROGRESS\tSIGNATURE\tNOTE")
	for _, ch := range f.Channels {
		sys := ch.StorePath
		var classes []string
		for k, v := range ch.Systems {
			classes = append(classes, k+"="+filepath.Base(v))
		}
		sort.Strings(classes)
		if sys == "" {
			sys = strings.Join(classes, " ")
		} else {
			sys = filepath.Base(sys)
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%d%%\t%d/%d current, %d behind, %d failed\t%s\t%s\n", ch.Name, ch.Revision, oneLine(sys, 60),
			ago(f.GeneratedAt, ch.PublishedAt), humanDuration(ch.ExpiresAt.Sub(f.GeneratedAt)), ch.Rollout, ch.Current, ch.Devices, ch.BehindN, ch.FailedN, oneLine(ch.Signature, 40), oneLine(ch.Problem, 50))
	}
	tw.Flush()
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "DEVICE\tSTATE\tCHANNEL\tREV\tLAST SEEN\tREBOOT\tLAST ERROR / NOTE")
	for _, d := range f.Devices {
		reboot := ""
		if d.NeedsReboot {
			reboot = "needed"
		}
		msg := d.LastError
		if msg == "" {
			msg = d.Note
		}
		seen := "-"
		if !d.CheckedAt.IsZero() {
			seen = ago(f.GeneratedAt, d.CheckedAt)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\n", oneLine(d.ID, 64), terminalPalette(w, os.Getenv).state(d.State), oneLine(d.Channel, 40), d.Revision, seen, reboot, oneLine(msg, 100))
	}
	tw.Flush()
}
