package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/pflag"

	"github.com/nix-ota/nix-ota/bucket"
	dashboard "github.com/nix-ota/nix-ota/dashboard-static"
	"github.com/nix-ota/nix-ota/internal/atomicfile"
	"github.com/nix-ota/nix-ota/manifest"
	"github.com/nix-ota/nix-ota/status"
)

func dashboardCmd() *command {
	return &command{
		name:    "dashboard",
		summary: "regenerate the static fleet dashboard",
		about: `Reads every channel and device status in the bucket (one listing plus one read
per device, 16 at a time) and writes index.html, one self-contained page with
no script and no outside requests, plus dashboard.json. By default both go
into the bucket itself (serve them from its website endpoint, a CDN or any
static host); --out writes them to a directory instead. Every publish
regenerates the dashboard too. With --watch it regenerates every --interval
until interrupted. Device-supplied text is escaped and length-capped; a
status blob that is malformed, oversized or claims another id is shown as
"invalid".`,
		examples: `  nix-ota dashboard --bucket s3://fleet?endpoint=minio.lan:9000
  nix-ota dashboard --bucket file:///srv/nix-ota --out /var/www/fleet --watch`,
		flags: func(fs *pflag.FlagSet) func(context.Context, *Env, []string) error {
			bkt := fs.String("bucket", "", "bucket URL (or $NIX_OTA_BUCKET)")
			out := fs.String("out", "", "write index.html and dashboard.json to this directory instead of the bucket")
			tf := addTrustFlags(fs)
			watch := fs.Bool("watch", false, "regenerate every --interval until interrupted")
			interval := fs.Duration("interval", 10*time.Second, "regeneration interval with --watch")
			return func(ctx context.Context, env *Env, args []string) error {
				trust, s, err := openForReading(ctx, env, args, tf, *bkt)
				if err != nil {
					return err
				}
				for {
					where, f, err := regenerate(ctx, s, *out, trust)
					if err != nil {
						return err
					}
					fmt.Fprintf(env.Stdout, "dashboard: %d devices (%d need attention), %d channels, %d bucket requests; wrote %s\n",
						f.Counts.Devices, f.Counts.Failed+f.Counts.Offline+f.Counts.Invalid, len(f.Channels), f.Requests, where)
					if !*watch {
						fmt.Fprintln(env.Stdout, openHint(where))
						return nil
					}
					if !sleepCtx(ctx, *interval) {
						return nil
					}
				}
			}
		},
	}
}

// openForReading is the start of the commands that read a fleet: no stray
// arguments, optional trusted keys (to check signatures), the bucket.
func openForReading(ctx context.Context, env *Env, args []string, tf trustFlags, bkt string) (*manifest.Trust, bucket.Store, error) {
	if err := noArgs(args); err != nil {
		return nil, nil, err
	}
	trust, err := optionalTrust(tf)
	if err != nil {
		return nil, nil, err
	}
	s, err := openBucket(ctx, env, bkt, false)
	return trust, s, err
}

func optionalTrust(tf trustFlags) (*manifest.Trust, error) {
	if len(*tf.keys) == 0 {
		return nil, nil
	}
	t, err := tf.trust()
	if err != nil {
		return nil, err
	}
	return &t, nil
}

// regenerate collects the fleet and writes the page and its JSON, to a
// directory or into the bucket.
func regenerate(ctx context.Context, s bucket.Store, outDir string, trust *manifest.Trust) (string, *dashboard.Fleet, error) {
	f, err := dashboard.Collect(ctx, s, dashboard.Options{Trust: trust})
	if err != nil {
		return "", nil, err
	}
	html, err := dashboard.HTML(f)
	if err != nil {
		return "", nil, err
	}
	js, err := dashboard.JSON(f)
	if err != nil {
		return "", nil, err
	}
	if outDir != "" {
		if err := os.MkdirAll(outDir, 0o755); err != nil {
			return "", nil, err
		}
		abs, _ := filepath.Abs(outDir)
		if err := atomicfile.WriteFile(filepath.Join(abs, bucket.DashboardJSON), js, 0o644); err != nil {
			return "", nil, err
		}
		if err := atomicfile.WriteFile(filepath.Join(abs, bucket.DashboardKey), html, 0o644); err != nil {
			return "", nil, err
		}
		return filepath.Join(abs, bucket.DashboardKey), f, nil
	}
	if _, err := bucket.PutBytes(ctx, s, bucket.DashboardJSON, js, bucket.JSONPut()); err != nil {
		return "", nil, fmt.Errorf("write dashboard: %w", err)
	}
	if _, err := bucket.PutBytes(ctx, s, bucket.DashboardKey, html, bucket.PutOptions{ContentType: "text/html; charset=utf-8", CacheControl: bucket.NoCache}); err != nil {
		return "", nil, fmt.Errorf("write dashboard: %w", err)
	}
	return s.String() + "/" + bucket.DashboardKey, f, nil
}

func openHint(where string) string {
	switch {
	case strings.HasPrefix(where, "/"):
		return "open it: xdg-open file://" + where + "  (or serve the directory with any static web server)"
	case strings.HasPrefix(where, "file://"):
		return "open it: xdg-open " + where
	}
	return "serve it from the bucket's website endpoint, a CDN or any static host (it needs anonymous read of index.html only)"
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	select {
	case <-ctx.Done():
		return false
	case <-time.After(d):
		return true
	}
}

func statusCmd() *command {
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
		flags: func(fs *pflag.FlagSet) func(context.Context, *Env, []string) error {
			bkt := fs.String("bucket", "", "bucket URL (or $NIX_OTA_BUCKET)")
			ch := fs.String("channel", "", "only this channel and its devices")
			asJSON := fs.Bool("json", false, "print JSON instead of tables")
			tf := addTrustFlags(fs)
			watch := fs.Bool("watch", false, "refresh every --interval until interrupted")
			interval := fs.Duration("interval", 5*time.Second, "refresh interval with --watch")
			return func(ctx context.Context, env *Env, args []string) error {
				if *ch != "" {
					if err := manifest.ValidateName("channel", *ch); err != nil {
						return err
					}
				}
				trust, s, err := openForReading(ctx, env, args, tf, *bkt)
				if err != nil {
					return err
				}
				for {
					f, err := dashboard.Collect(ctx, s, dashboard.Options{Trust: trust, Channel: *ch})
					if err != nil {
						return err
					}
					if *watch && !*asJSON {
						fmt.Fprint(env.Stdout, "\033[H\033[2J")
					}
					if *asJSON {
						b, err := dashboard.JSON(f)
						if err != nil {
							return err
						}
						env.Stdout.Write(b)
					} else {
						printFleet(env.Stdout, f)
					}
					if !*watch || !sleepCtx(ctx, *interval) {
						return nil
					}
				}
			}
		},
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
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\n", oneLine(d.ID, 64), d.State, oneLine(d.Channel, 40), d.Revision, seen, reboot, oneLine(msg, 100))
	}
	tw.Flush()
}

func ago(now, t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return humanDuration(now.Sub(t)) + " ago"
}

// waitRollout follows a published revision until every device of the
// channel inside the rollout cohort runs it, one fails it, or time runs
// out: `publish --wait` for CI jobs that gate on a rollout.
func waitRollout(ctx context.Context, env *Env, s bucket.Store, ch string, rev uint64, rollout manifest.Rollout, published time.Time, timeout, interval time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		f, err := dashboard.Collect(ctx, s, dashboard.Options{Channel: ch})
		if err != nil {
			return err
		}
		var done, pending, failed []string
		for _, d := range f.Devices {
			if d.State == dashboard.Invalid || !rollout.Includes(d.ID) {
				continue
			}
			rep := d.Reported
			switch {
			case d.Revision >= rev && (rep == status.UpToDate || rep == status.WaitingReboot):
				done = append(done, d.ID)
			case (rep == status.Failed || rep == status.RolledBack) && d.Attempted == rev,
				rep == status.Rejected && d.CheckedAt.After(published):
				failed = append(failed, fmt.Sprintf("%s (%s: %s)", d.ID, rep, oneLine(d.LastError, 120)))
			default:
				pending = append(pending, d.ID)
			}
		}
		fmt.Fprintf(env.Stderr, "rollout %s revision %d: %d done, %d pending, %d failed (devices in the %d%% cohort)\n", ch, rev, len(done), len(pending), len(failed), rollout.Percent)
		if len(failed) > 0 {
			return fmt.Errorf("rollout of %s revision %d: %d device(s) failed: %s", ch, rev, len(failed), strings.Join(failed, "; "))
		}
		if len(pending) == 0 {
			if len(done) == 0 {
				fmt.Fprintf(env.Stderr, "note: no device of channel %s in the cohort has checked in\n", ch)
			}
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("rollout of %s revision %d: %w after %s: %d device(s) still pending: %s", ch, rev, errWaitTimeout, timeout, len(pending), strings.Join(first(pending, 20), ", "))
		}
		if !sleepCtx(ctx, interval) {
			return ctx.Err()
		}
	}
}

var errWaitTimeout = errors.New("timed out")

func first(xs []string, n int) []string {
	if len(xs) > n {
		return append(xs[:n:n], fmt.Sprintf("… %d more", len(xs)-n))
	}
	return xs
}
