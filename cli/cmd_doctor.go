package cli

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/nix-ota/nix-ota/bucket"
	"github.com/nix-ota/nix-ota/cache"
	"github.com/nix-ota/nix-ota/channel"
	dashboard "github.com/nix-ota/nix-ota/dashboard-static"
	"github.com/nix-ota/nix-ota/manifest"
)

type doctorOptions struct {
	bkt        string
	publicURL  string
	readOnly   bool
	warnWithin time.Duration
	tf         trustFlags
	json       bool
}

func doctorCmd() *command {
	o := &doctorOptions{}
	return &command{
		name:    "doctor",
		summary: "check that a bucket is ready to serve a fleet",
		about: `Checks that a bucket can serve a fleet: the bucket is reachable,
the credentials can list and write (a probe object is written and deleted,
unless --read-only), the layout marker is there, the binary cache has its
nix-cache-info, every channel's manifest verifies (with --public-key) and is
not about to expire, devices can read the channels anonymously at
--public-url (default for s3://: the endpoint's path-style URL), and how many
devices are failing or offline. Prints one line per check; exits 1 if any
check FAILs (warnings do not fail).

--json prints one object on stdout instead of the lines: {"bucket",
"checks": [{"status": "ok"|"warn"|"fail", "message"}], "failed",
"warnings", "passed"}.`,
		examples: `  nix-ota doctor --bucket s3://fleet?endpoint=minio.lan:9000 --public-key "$(cat sign.pub)"
  nix-ota doctor --bucket s3://fleet --public-url https://fleet.example.org --read-only
  nix-ota doctor --json | jq -r '.checks[] | select(.status != "ok") | .message'`,
		flags: o.flags,
		run:   o.run,
	}
}

func (o *doctorOptions) flags(fs *pflag.FlagSet) {
	fs.StringVar(&o.bkt, "bucket", "", "bucket URL (or $NIX_OTA_BUCKET)")
	fs.StringVar(&o.publicURL, "public-url", "", "where devices read the bucket anonymously (https://…); \"none\" skips the check")
	fs.BoolVar(&o.readOnly, "read-only", false, "do not test writing")
	fs.DurationVar(&o.warnWithin, "expiry-warning", 7*24*time.Hour, "warn when a manifest expires within this long")
	o.tf = addTrustFlags(fs)
	fs.BoolVar(&o.json, "json", false, "print the checks as one JSON object on stdout")
}

func (o *doctorOptions) run(ctx context.Context, env *Env, args []string) error {
	trust, s, err := openForReading(ctx, env, args, o.tf, o.bkt)
	if err != nil {
		return err
	}
	d := &doctor{env: env, json: o.json, pal: newPalette(env, env.Stdout), bucketURL: bucketURL(env, o.bkt)}
	d.run(ctx, s, o, trust)
	if o.json {
		res := doctorResult{Bucket: s.String(), Checks: d.checks, Failed: d.failed, Warnings: d.warned, Passed: d.failed == 0}
		if err := writeJSON(env.Stdout, res); err != nil {
			return err
		}
	}
	if d.failed > 0 {
		return fmt.Errorf("%d check(s) failed, %d warning(s)", d.failed, d.warned)
	}
	fmt.Fprintf(humanOut(env, o.json), "doctor: all checks passed (%d warning(s))\n", d.warned)
	return nil
}

// doctorResult is doctor --json.
type doctorResult struct {
	Bucket   string        `json:"bucket"`
	Checks   []doctorCheck `json:"checks"`
	Failed   int           `json:"failed"`
	Warnings int           `json:"warnings"`
	Passed   bool          `json:"passed"`
}

type doctorCheck struct {
	Status  string `json:"status"` // ok, warn or fail
	Message string `json:"message"`
}

type doctor struct {
	env            *Env
	json           bool
	pal            palette
	bucketURL      string // --bucket or $NIX_OTA_BUCKET, as given
	checks         []doctorCheck
	failed, warned int
}

// report records one check's line, printed at once unless --json.
func (d *doctor) report(status, label, colour, format string, a ...any) {
	msg := fmt.Sprintf(format, a...)
	d.checks = append(d.checks, doctorCheck{Status: status, Message: msg})
	if !d.json {
		fmt.Fprintf(d.env.Stdout, "%s%s%s\n", d.pal.paint(colour, label), strings.Repeat(" ", 6-len(label)), msg)
	}
}

func (d *doctor) ok(format string, a ...any) { d.report("ok", "ok", green, format, a...) }
func (d *doctor) warn(format string, a ...any) {
	d.warned++
	d.report("warn", "WARN", yellow, format, a...)
}
func (d *doctor) fail(format string, a ...any) {
	d.failed++
	d.report("fail", "FAIL", red, format, a...)
}

func (d *doctor) run(ctx context.Context, s bucket.Store, o *doctorOptions, trust *manifest.Trust) {
	if !d.checkReach(ctx, s) {
		return
	}
	channels := d.listChannels(ctx, s)
	if !o.readOnly {
		d.checkWrite(ctx, s)
	}
	d.checkCache(ctx, s)
	now := time.Now()
	for _, ch := range channels {
		if p, ok := d.checkChannel(ctx, s, ch, trust, now); ok {
			d.checkExpiry(ch, p, now, o.warnWithin)
		}
	}
	d.checkAnonymous(ctx, d.bucketURL, o.publicURL, channels)
	if len(channels) > 0 {
		d.checkDevices(ctx, s, trust)
	}
}

func (d *doctor) checkReach(ctx context.Context, s bucket.Store) bool {
	if _, err := s.Stat(ctx, bucket.LayoutKey); err != nil && !errors.Is(err, bucket.ErrNotFound) {
		d.fail("reach %s: %s", s, oneLine(explain(err).Error(), 400))
		return false
	}
	d.ok("reach %s", s)
	if err := bucket.CheckLayout(ctx, s); err != nil {
		d.fail("layout marker: %s", oneLine(err.Error(), 200))
		return false
	}
	d.ok("layout marker %s", bucket.LayoutKey)
	return true
}

func (d *doctor) listChannels(ctx context.Context, s bucket.Store) []string {
	channels, invalid, err := channel.List(ctx, s)
	switch {
	case errors.Is(err, bucket.ErrUnsupported):
		d.warn("list: %s cannot list (read-only URL); channel and device checks need s3:// or file://", s)
	case err != nil:
		d.fail("list channels/: %s", oneLine(err.Error(), 200))
	default:
		d.ok("list channels/ (%d channels)", len(channels))
	}
	for _, n := range invalid {
		d.warn("channel object %q has an invalid name; agents cannot follow it", oneLine(n, 80))
	}
	return channels
}

func (d *doctor) checkWrite(ctx context.Context, s bucket.Store) {
	probe := "doctor/probe-" + randomHex(6) + ".txt"
	if _, err := bucket.PutBytes(ctx, s, probe, []byte("nix-ota doctor write probe\n"), bucket.PutOptions{ContentType: "text/plain"}); err != nil {
		d.fail("write %s: %s", probe, oneLine(err.Error(), 200))
	} else if err := s.Delete(ctx, probe); err != nil {
		d.fail("delete %s: %s", probe, oneLine(err.Error(), 200))
	} else {
		d.ok("credentials can write and delete")
	}
}

func (d *doctor) checkCache(ctx context.Context, s bucket.Store) {
	if o, err := s.Get(ctx, cache.InfoKey, bucket.GetOptions{MaxSize: 4096}); err != nil {
		d.warn("binary cache: no %s (fine if devices use another cache; nix-ota push creates it)", cache.InfoKey)
	} else if !strings.Contains(string(o.Data), "StoreDir: /nix/store") {
		d.fail("binary cache: %s does not say StoreDir: /nix/store", cache.InfoKey)
	} else {
		d.ok("binary cache %s", cache.InfoKey)
	}
}

func (d *doctor) checkExpiry(ch string, p *manifest.Payload, now time.Time, warnWithin time.Duration) {
	switch left := p.ExpiresAt.Sub(now); {
	case left <= 0:
		d.fail("channel %s revision %d expired %s ago: devices refuse it; run nix-ota resign --channel %s", ch, p.Revision, humanDuration(-left), ch)
	case left < warnWithin:
		d.warn("channel %s revision %d expires in %s: run nix-ota resign --channel %s (e.g. from a scheduled job)", ch, p.Revision, humanDuration(left), ch)
	default:
		d.ok("channel %s revision %d: %s, expires in %s", ch, p.Revision, strings.Join(p.StorePaths(), " "), humanDuration(left))
	}
}

func (d *doctor) checkDevices(ctx context.Context, s bucket.Store, trust *manifest.Trust) {
	f, err := readFleet(ctx, d.env, s, dashboard.Options{Trust: trust})
	if err != nil {
		d.warn("devices: %s", oneLine(err.Error(), 200))
		return
	}
	if n := f.Read.Unrecognised; n > 0 {
		d.warn("devices: %d object(s) under %s are not check-ins (%s<window>/<id>.json) and are ignored: agents older than this layout write %s<id>/status.json; update them", n, bucket.DevicesPrefix, bucket.DevicesPrefix, bucket.DevicesPrefix)
	}
	d.checkRegistry(f)
	c := f.Counts
	msg := fmt.Sprintf("devices: %d checked in, %d failed, %d offline, %d invalid status", c.Devices, c.Failed, c.Offline, c.Invalid)
	if c.Failed+c.Offline+c.Invalid > 0 {
		d.warn("%s (nix-ota status shows which)", msg)
	} else {
		d.ok("%s", msg)
	}
}

// checkRegistry reports what the device registry leaves uncounted.
func (d *doctor) checkRegistry(f *dashboard.Fleet) {
	pending := 0
	for _, u := range f.Unverified {
		if u.Trust == dashboard.TrustPending {
			pending++
		}
	}
	switch r := f.Registry; {
	case r.Problem != "":
		d.warn("device registry: %s; no device status counts until then", oneLine(r.Problem, 300))
	case !r.Present && f.Counts.Devices == 0:
	case !r.Present:
		d.warn("device registry: none; any holder of a check-in credential can write any device's status. Approve your devices: nix-ota device approve --all-pending")
	case f.Counts.Unverified > pending:
		d.warn("device registry version %d: %d registered; %d check-in(s) refused (another key, a replay, unsigned): nix-ota device list shows why", r.Version, r.Devices, f.Counts.Unverified-pending)
	default:
		d.ok("device registry version %d: %d registered devices", r.Version, r.Devices)
	}
	if pending > 0 {
		d.warn("devices: %d pending approval: nix-ota device list, then nix-ota device approve", pending)
	}
}

// checkChannel reports a channel's history objects that are not verified
// revisions, and returns its current payload: verified with trust when
// given (devices would accept it), else as the bucket has it.
func (d *doctor) checkChannel(ctx context.Context, s bucket.Store, ch string, trust *manifest.Trust, now time.Time) (*manifest.Payload, bool) {
	if trust == nil {
		_, junk, err := channel.ListHistory(ctx, s, ch)
		if err != nil {
			d.fail("channel %s: list history: %s", ch, oneLine(err.Error(), 200))
		}
		d.warnSkipped(junk)
		p, err := peekPointer(ctx, s, ch)
		if err != nil {
			d.fail("channel %s: %s", ch, oneLine(err.Error(), 200))
			return nil, false
		}
		return p, true
	}
	h, err := channel.Load(ctx, s, ch, *trust)
	if err != nil {
		d.fail("channel %s: %s", ch, oneLine(err.Error(), 200))
		return nil, false
	}
	d.warnSkipped(h.Skipped)
	if h.Pointer == nil {
		d.fail("channel %s: nothing published (%s is missing)", ch, bucket.ChannelKey(ch))
		return nil, false
	}
	if _, err := manifest.Verify(*trust, ch, manifest.State{}, h.Pointer.Body, now); err != nil {
		hint := ""
		if errors.Is(err, manifest.ErrExpired) {
			hint = "; run nix-ota resign --channel " + ch
		}
		d.fail("channel %s: devices would reject it: %s%s", ch, oneLine(err.Error(), 200), hint)
		return nil, false
	}
	cur, err := h.Current()
	if err != nil {
		d.fail("channel %s: %s", ch, oneLine(err.Error(), 200))
		return nil, false
	}
	p := cur.Payload()
	return &p, true
}

func (d *doctor) warnSkipped(junk []channel.Skipped) {
	for _, j := range junk {
		d.warn("%s is not a verified revision and is ignored: %s (delete it)", oneLine(j.Key, 200), oneLine(j.Reason, 160))
	}
}

// checkAnonymous reads a channel without credentials, as devices polling
// over https do.
func (d *doctor) checkAnonymous(ctx context.Context, rawURL, publicURL string, channels []string) {
	if publicURL == "none" || len(channels) == 0 {
		return
	}
	if publicURL == "" && strings.HasPrefix(rawURL, "s3://") {
		if c, err := bucket.ParseS3URL(rawURL); err == nil {
			scheme := "https"
			if !c.Secure {
				scheme = "http"
			}
			publicURL = fmt.Sprintf("%s://%s/%s", scheme, c.Endpoint, c.Bucket)
			if c.Prefix != "" {
				publicURL += "/" + c.Prefix
			}
		}
	}
	if publicURL == "" {
		return
	}
	h, err := bucket.Open(publicURL, bucket.Options{HTTPClient: &http.Client{Timeout: 15 * time.Second}})
	if err != nil {
		d.fail("anonymous read: %s", oneLine(err.Error(), 200))
		return
	}
	key := bucket.ChannelKey(channels[0])
	if _, err := h.Get(ctx, key, bucket.GetOptions{MaxSize: manifest.MaxBodySize}); err != nil {
		d.warn("anonymous read of %s/%s: %s (devices then need credentials to poll)", publicURL, key, oneLine(err.Error(), 160))
		return
	}
	d.ok("anonymous read of %s/%s (how devices poll over https)", publicURL, key)
}
