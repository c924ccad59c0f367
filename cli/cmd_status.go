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
		f, err := readFleet(ctx, env, s, dashboard.Options{Trust: trust, Channel: o.ch})
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

// printFleet renders the fleet as tables: the same facts as the page, one
// state per device, errors apart from notes, absolute times beside ages.
// Device-supplied strings pass through oneLine, which removes control
// characters: a device must not be able to send escape sequences to the
// operator's terminal.
func printFleet(w io.Writer, f *dashboard.Fleet) {
	c := f.Counts
	fmt.Fprintf(w, "%s as of %s: %d devices: %d up-to-date, %d behind, %d updating, %d failed, %d offline, %d need reboot, %d invalid\n",
		f.Bucket, dashboard.At(f.GeneratedAt), c.Devices, c.UpToDate, c.Behind, c.Updating, c.Failed, c.Offline, c.NeedsReboot, c.Invalid)
	if t := f.Fetch; t.FullBytes > 0 {
		fmt.Fprintf(w, "last updates of %d devices downloaded %s (full NARs alone: %s); %d store paths came as deltas, %d deltas fell back to the full NAR\n",
			t.Devices, dashboard.Size(t.Bytes), dashboard.Size(t.FullBytes), t.DeltaPaths, t.Fallbacks)
	}
	if a := f.Alarm(10); a.Any() {
		if a.Devices > 0 {
			ids := strings.Join(a.IDs, ", ")
			if a.More > 0 {
				ids += fmt.Sprintf(" and %d more", a.More)
			}
			fmt.Fprintf(w, "ATTENTION: %s: %s\n", strings.Join(a.Parts, ", "), oneLine(ids, 400))
		}
		for _, ch := range a.Channels {
			fmt.Fprintf(w, "ATTENTION: channel %s\n", oneLine(ch, 200))
		}
	}
	printRegistry(w, f)
	fmt.Fprintln(w)
	printChannels(w, f)
	fmt.Fprintln(w)
	printDevices(w, f)
	if len(f.Unverified) > 0 {
		fmt.Fprintln(w)
		printUnverified(w, f)
	}
}

// printRegistry says which statuses count: those backed by the device
// registry, or, without one, every status by its id.
func printRegistry(w io.Writer, f *dashboard.Fleet) {
	switch r := f.Registry; {
	case r.Problem != "":
		fmt.Fprintf(w, "ATTENTION: no status counts: %s\n", oneLine(r.Problem, 400))
	case !r.Present:
		fmt.Fprintln(w, "no device registry: statuses count by device id alone (nix-ota device approve --all-pending creates one)")
	case f.Counts.Unverified > 0:
		fmt.Fprintf(w, "%d unverified check-ins, not counted (listed last; nix-ota device list)\n", f.Counts.Unverified)
	}
}

// printUnverified lists the check-ins the registry does not back, apart
// from the devices: what they claim never counts.
func printUnverified(w io.Writer, f *dashboard.Fleet) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "UNVERIFIED\tTRUST\tCLAIMS\tWRITTEN\tWHY")
	for _, d := range f.Unverified {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", oneLine(d.ID, 64), d.Trust, orDash(oneLine(d.Detail, 40)), agoAt(f.GeneratedAt, d.CheckedAt), oneLine(d.Verification, 200))
	}
	tw.Flush()
}

func printChannels(w io.Writer, f *dashboard.Fleet) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CHANNEL\tREV\tSYSTEM\tPUBLISHED\tEXPIRES\tROLLOUT\tPROGRESS\tSIGNATURE\tPROBLEM")
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
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%d%%\t%s\t%s\t%s\n", ch.Name, ch.Revision, oneLine(sys, 60),
			agoAt(f.GeneratedAt, ch.PublishedAt), untilAt(f.GeneratedAt, ch.ExpiresAt), ch.Rollout, progressText(ch), oneLine(ch.Signature, 40), oneLine(ch.Problem, 50))
	}
	tw.Flush()
}

// progressText is a channel's progress in words; unverified progress says so.
func progressText(ch dashboard.Channel) string {
	p := ch.Progress
	if !p.Verified {
		return fmt.Sprintf("%d/%d current, %d behind, %d failed (unverified)", p.Done, p.Cohort, p.Pending, p.Failed)
	}
	s := fmt.Sprintf("%d/%d done, %d failed, %d pending", p.Done, p.Cohort, p.Failed, p.Pending)
	if p.Outside > 0 {
		s += fmt.Sprintf(", %d outside", p.Outside)
	}
	return s
}

func printDevices(w io.Writer, f *dashboard.Fleet) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "DEVICE\tSTATE\tDETAIL\tCHANNEL\tREV\tLAST SEEN\tREBOOT\tERROR\tNOTE")
	for _, d := range f.Devices {
		reboot := "-"
		if d.NeedsReboot {
			reboot = "needed"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\n", oneLine(d.ID, 64), terminalPalette(w, os.Getenv).state(d.State), orDash(oneLine(d.Detail, 60)), orDash(oneLine(d.Channel, 40)),
			d.Revision, agoAt(f.GeneratedAt, d.CheckedAt), reboot, orDash(oneLine(d.LastError, 100)), orDash(oneLine(d.Note, 80)))
	}
	tw.Flush()
}

// agoAt is an age with its absolute time: "3h 0m ago (2026-11-25 09:00 UTC)".
func agoAt(now, t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return ago(now, t) + " (" + dashboard.At(t) + ")"
}

func untilAt(now, t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return humanDuration(t.Sub(now)) + " (" + dashboard.At(t) + ")"
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
