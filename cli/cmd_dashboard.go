package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
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
	full     bool
}

// dashboardResult is dashboard --json.
type dashboardResult struct {
	Wrote     string `json:"wrote"` // the page's URL or path
	Devices   int    `json:"devices"`
	Attention int    `json:"attention"` // failed, offline or invalid
	Channels  int    `json:"channels"`
	Requests  int64  `json:"requests"` // bucket requests made
	// Read is how the devices were read: full (every check-in window) or
	// incremental, check-ins listed, blobs read, superseded ones deleted.
	Read dashboard.ReadStats `json:"read"`
}

func dashboardCmd() *command {
	o := &dashboardOptions{}
	return &command{
		name:    "dashboard",
		summary: "regenerate the static fleet dashboard",
		about: `Reads every channel and device status in the bucket and writes index.html, one
self-contained page with no script and no outside requests, plus
dashboard.json. Devices are read incrementally: this machine keeps a
snapshot of the fleet ($NIX_OTA_CACHE_DIR, default ~/.cache/nix-ota; "off"
disables it), so a run lists only the check-in windows written since the
last one and reads only the status blobs that changed. Every hour (or with
--full) it lists every window, which also notices check-ins deleted by
hand; devices removed with "nix-ota forget" disappear at once. It then
deletes check-ins that newer ones of the same device replaced. By default both go
into the bucket itself (serve them from its website endpoint, a CDN or any
static host); --out writes them to a directory instead. Every publish
regenerates the dashboard too. With --watch it regenerates every --interval
until interrupted. Device-supplied text is escaped and length-capped; a
status blob that is malformed, oversized or claims another id is shown as
"invalid".

--json (not with --watch) prints one object on stdout: {"wrote",
"devices", "attention" (failed, offline or invalid), "channels",
"requests", "read": {"full", "listed", "fetched", "unrecognised",
"pruned"}}.`,
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
	fs.BoolVar(&o.full, "full", false, "list every check-in window, not only those since the last read")
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
		where, f, err := regenerate(ctx, env, s, dashSpec{out: o.out, trust: trust, full: o.full})
		if err != nil {
			return err
		}
		c := f.Counts
		if o.json {
			return writeJSON(env.Stdout, dashboardResult{Wrote: where, Devices: c.Devices, Attention: c.Failed + c.Offline + c.Invalid, Channels: len(f.Channels), Requests: f.Requests, Read: f.Read})
		}
		fmt.Fprintf(env.Stdout, "dashboard: %d devices (%d need attention), %d channels, %d bucket requests (%s); wrote %s\n",
			f.Counts.Devices, f.Counts.Failed+f.Counts.Offline+f.Counts.Invalid, len(f.Channels), f.Requests, readSummary(f.Read), where)
		if !o.watch {
			fmt.Fprintln(env.Stdout, openHint(where))
			return nil
		}
		if !sleepCtx(ctx, o.interval) {
			return nil
		}
	}
}

// dashSpec is what a dashboard is made from and where it goes.
type dashSpec struct {
	out   string // a directory, or "" for the bucket
	trust *manifest.Trust
	full  bool // read every check-in window
}

// regenerate reads the fleet (incrementally, through this machine's
// snapshot), writes the page and its JSON to a directory or into the
// bucket, then deletes the check-ins the read found superseded.
func regenerate(ctx context.Context, env *Env, s bucket.Store, spec dashSpec) (string, *dashboard.Fleet, error) {
	f, err := readFleet(ctx, env, s, dashboard.Options{Trust: spec.trust, Full: spec.full})
	if err != nil {
		return "", nil, err
	}
	where, err := writeDashboard(ctx, s, spec.out, f)
	if err != nil {
		return "", nil, err
	}
	pruneCheckins(ctx, env, s, f)
	return where, f, nil
}

// pruneCheckins deletes check-ins that newer ones of the same device
// replaced, so listing every window stays as cheap as the fleet is large.
// Credentials that may not delete leave them (quietly: readers skip them).
func pruneCheckins(ctx context.Context, env *Env, s bucket.Store, f *dashboard.Fleet) {
	n, err := bucket.DeleteAll(ctx, s, f.Read.Superseded)
	f.Read.Pruned = n
	if err != nil && !errors.Is(err, bucket.ErrAccessDenied) && !errors.Is(err, bucket.ErrReadOnly) {
		fmt.Fprintf(env.Stderr, "warning: %d superseded check-in(s) not deleted: %s\n", len(f.Read.Superseded)-n, oneLine(err.Error(), 300))
	}
}

// writeDashboard writes index.html and dashboard.json. The JSON goes
// through a temporary file: at 100,000 devices it is 30 MB, written as it
// is encoded rather than held in memory.
func writeDashboard(ctx context.Context, s bucket.Store, outDir string, f *dashboard.Fleet) (string, error) {
	html, err := dashboard.HTML(f)
	if err != nil {
		return "", err
	}
	tmpDir := ""
	if outDir != "" {
		if err := os.MkdirAll(outDir, 0o755); err != nil {
			return "", err
		}
		tmpDir, _ = filepath.Abs(outDir)
	}
	js, err := os.CreateTemp(tmpDir, atomicfile.TempPrefix+"*")
	if err != nil {
		return "", err
	}
	defer os.Remove(js.Name())
	defer js.Close()
	if err := dashboard.WriteJSON(js, f); err != nil {
		return "", err
	}
	if outDir != "" {
		return writeDashboardDir(tmpDir, js, html)
	}
	size, err := js.Seek(0, io.SeekCurrent)
	if err == nil {
		_, err = js.Seek(0, io.SeekStart)
	}
	if err == nil {
		_, err = s.Put(ctx, bucket.DashboardJSON, js, size, bucket.JSONPut())
	}
	if err != nil {
		return "", fmt.Errorf("write dashboard: %w", err)
	}
	if _, err := bucket.PutBytes(ctx, s, bucket.DashboardKey, html, bucket.PutOptions{ContentType: "text/html; charset=utf-8", CacheControl: bucket.NoCache}); err != nil {
		return "", fmt.Errorf("write dashboard: %w", err)
	}
	return s.String() + "/" + bucket.DashboardKey, nil
}

// writeDashboardDir moves the written JSON into dir and writes the page.
func writeDashboardDir(dir string, js *os.File, html []byte) (string, error) {
	if err := js.Chmod(0o644); err != nil {
		return "", err
	}
	if err := js.Sync(); err != nil {
		return "", err
	}
	if err := os.Rename(js.Name(), filepath.Join(dir, bucket.DashboardJSON)); err != nil {
		return "", err
	}
	if err := atomicfile.WriteFile(filepath.Join(dir, bucket.DashboardKey), html, 0o644); err != nil {
		return "", err
	}
	return filepath.Join(dir, bucket.DashboardKey), nil
}

// readSummary says how the devices were read, for humans.
func readSummary(r dashboard.ReadStats) string {
	kind := "incremental read"
	if r.Full {
		kind = "full read"
	}
	return fmt.Sprintf("%s: %d check-ins listed, %d status blobs read, %d superseded deleted", kind, r.Listed, r.Fetched, r.Pruned)
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
