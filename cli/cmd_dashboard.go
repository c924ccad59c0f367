package cli

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/nix-ota/nix-ota/bucket"
	dashboard "github.com/nix-ota/nix-ota/dashboard-static"
	"github.com/nix-ota/nix-ota/internal/atomicfile"
	"github.com/nix-ota/nix-ota/manifest"
)

type dashboardOptions struct {
	bkt      string
	out      string
	tf       trustFlags
	watch    bool
	interval time.Duration
	json     bool
}

// dashboardResult is dashboard --json.
type dashboardResult struct {
	Wrote     string `json:"wrote"` // the page's URL or path
	Devices   int    `json:"devices"`
	Attention int    `json:"attention"` // failed, offline or invalid
	Channels  int    `json:"channels"`
	Requests  int64  `json:"requests"` // bucket requests made
}

func dashboardCmd() *command {
	o := &dashboardOptions{}
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
"invalid".

--json (not with --watch) prints one object on stdout: {"wrote",
"devices", "attention" (failed, offline or invalid), "channels",
"requests"}.`,
		examples: `  nix-ota dashboard --bucket s3://fleet?endpoint=minio.lan:9000
  nix-ota dashboard --bucket file:///srv/nix-ota --out /var/www/fleet --watch`,
		flags: o.flags,
		run:   o.run,
	}
}

func (o *dashboardOptions) flags(fs *pflag.FlagSet) {
	fs.StringVar(&o.bkt, "bucket", "", "bucket URL (or $NIX_OTA_BUCKET)")
	fs.StringVar(&o.out, "out", "", "write index.html and dashboard.json to this directory instead of the bucket")
	o.tf = addTrustFlags(fs)
	fs.BoolVar(&o.watch, "watch", false, "regenerate every --interval until interrupted")
	fs.DurationVar(&o.interval, "interval", 10*time.Second, "regeneration interval with --watch")
	fs.BoolVar(&o.json, "json", false, "print what was written as one JSON object on stdout")
}

func (o *dashboardOptions) run(ctx context.Context, env *Env, args []string) error {
	if o.json && o.watch {
		return usagef("--json prints one result; it does not go with --watch")
	}
	trust, s, err := openForReading(ctx, env, args, o.tf, o.bkt)
	if err != nil {
		return err
	}
	for {
		where, f, err := regenerate(ctx, s, o.out, trust)
		if err != nil {
			return err
		}
		c := f.Counts
		if o.json {
			return writeJSON(env.Stdout, dashboardResult{Wrote: where, Devices: c.Devices, Attention: c.Failed + c.Offline + c.Invalid, Channels: len(f.Channels), Requests: f.Requests})
		}
		fmt.Fprintf(env.Stdout, "dashboard: %d devices (%d need attention), %d channels, %d bucket requests; wrote %s\n",
			f.Counts.Devices, f.Counts.Failed+f.Counts.Offline+f.Counts.Invalid, len(f.Channels), f.Requests, where)
		if !o.watch {
			fmt.Fprintln(env.Stdout, openHint(where))
			return nil
		}
		if !sleepCtx(ctx, o.interval) {
			return nil
		}
	}
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
