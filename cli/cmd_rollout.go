package cli

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/nix-ota/nix-ota/channel"
	dashboard "github.com/nix-ota/nix-ota/dashboard-static"
	"github.com/nix-ota/nix-ota/manifest"
	"github.com/nix-ota/nix-ota/status"
)

type rolloutOptions struct {
	bkt       string
	kf        keyFlags
	tf        signTrustFlags
	ch        string
	stepsFlag string
	wait      time.Duration
	maxFailed string
	interval  time.Duration
	expires   time.Duration
}

func rolloutCmd() *command {
	o := &rolloutOptions{}
	return &command{
		name:    "rollout",
		summary: "advance a staged rollout step by step, halting on failures",
		about: `The serverless circuit breaker. Takes the channel's current system (published
with a small --rollout) through --steps: at each step it republishes the
same system, same cohort salt, with the step's percentage as a new revision,
then follows the devices in the cohort until they all run it or --wait
passes. If the share of cohort devices that failed or rolled the system back
exceeds --max-failed, it halts: it republishes the last earlier system at
100% (or, with none, the same system at 0%) and exits 1. It keeps no state
outside the bucket: run it again after a crash and it continues from the
channel's current percentage. Cohorts are hash(salt, device id), so raising
the percentage only adds devices.`,
		examples: `  nix-ota publish --channel prod --store-path ./result --rollout 5 --key sign.key
  nix-ota rollout --channel prod --steps 5,25,100 --wait 15m --max-failed 2% --key sign.key`,
		flags: o.flags,
		run:   o.run,
	}
}

func (o *rolloutOptions) flags(fs *pflag.FlagSet) {
	fs.StringVar(&o.bkt, "bucket", "", "bucket URL (or $NIX_OTA_BUCKET)")
	o.kf = addKeyFlags(fs)
	o.tf = addSignTrustFlags(fs)
	fs.StringVar(&o.ch, "channel", "", "channel name (required)")
	fs.StringVar(&o.stepsFlag, "steps", "5,25,100", "rollout percentages, ascending")
	fs.DurationVar(&o.wait, "wait", 15*time.Minute, "how long to follow each step before judging it")
	fs.StringVar(&o.maxFailed, "max-failed", "2%", "halt when more than this share (N%) or number (N) of the step's cohort failed")
	fs.DurationVar(&o.interval, "interval", 10*time.Second, "how often to read device statuses")
	fs.DurationVar(&o.expires, "expires", 720*time.Hour, "validity of each manifest")
}

func (o *rolloutOptions) run(ctx context.Context, env *Env, args []string) error {
	if err := noArgs(args); err != nil {
		return err
	}
	steps, err := parseSteps(o.stepsFlag)
	if err != nil {
		return err
	}
	limit, err := parseLimit(o.maxFailed)
	if err != nil {
		return err
	}
	c, err := openSigned(ctx, env, o.bkt, o.kf, o.tf, o.ch)
	if err != nil {
		return err
	}
	r := &rollout{env: env, c: c, ch: o.ch, wait: o.wait, interval: o.interval, limit: limit, expires: o.expires}
	return r.run(ctx, steps)
}

func parseSteps(s string) ([]int, error) {
	var steps []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(f), "%"))
		if err != nil || n < 1 || n > 100 {
			return nil, usagef("--steps %q: want percentages 1-100 separated by commas", s)
		}
		if len(steps) > 0 && n <= steps[len(steps)-1] {
			return nil, usagef("--steps %q: percentages must increase", s)
		}
		steps = append(steps, n)
	}
	return steps, nil
}

// failLimit is --max-failed: a share (percent) or a count.
type failLimit struct {
	percent float64
	count   int
	isPct   bool
}

func parseLimit(s string) (failLimit, error) {
	if p, ok := strings.CutSuffix(s, "%"); ok {
		v, err := strconv.ParseFloat(p, 64)
		if err != nil || v < 0 || v > 100 {
			return failLimit{}, usagef("--max-failed %q: want N%% or N", s)
		}
		return failLimit{percent: v, isPct: true}, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return failLimit{}, usagef("--max-failed %q: want N%% or N", s)
	}
	return failLimit{count: n}, nil
}

func (l failLimit) exceeded(failed, cohort int) bool {
	if l.isPct {
		return cohort > 0 && float64(failed)*100 > l.percent*float64(cohort)
	}
	return failed > l.count
}

func (l failLimit) String() string {
	if l.isPct {
		return strconv.FormatFloat(l.percent, 'f', -1, 64) + "%"
	}
	return strconv.Itoa(l.count)
}

type rollout struct {
	env            *Env
	c              *signedChannel
	ch             string
	wait, interval time.Duration
	expires        time.Duration
	limit          failLimit
}

// tally of the devices in a step's cohort.
type tally struct{ cohort, done, failed, pending int }

func (r *rollout) run(ctx context.Context, steps []int) error {
	cur, err := r.c.current()
	if err != nil {
		return err
	}
	first := r.c.h.RunStart(cur)
	pct := cur.Payload().Rollout.Percent
	fmt.Fprintf(r.env.Stderr, "rollout %s: %s, revisions %d..%d, now at %d%%; steps %v, halt above %s failed\n", r.ch, cur.Systems(), first, cur.Revision(), pct, steps, r.limit)
	// Judge the step already published, then take the next ones.
	todo := []int{pct}
	for _, st := range steps {
		if st > pct {
			todo = append(todo, st)
		}
	}
	for i, pct := range todo {
		if i > 0 {
			if cur, err = r.step(ctx, cur, pct); err != nil {
				return err
			}
		}
		if pct == 0 {
			continue
		}
		p := cur.Payload()
		t, err := r.follow(ctx, &p, first, cur.Revision())
		if err != nil {
			return err
		}
		if r.limit.exceeded(t.failed, t.cohort) {
			return r.halt(ctx, cur, first, pct, t)
		}
		fmt.Fprintf(r.env.Stderr, "rollout %s: step %d%% healthy: %d of %d cohort devices done, %d failed, %d pending\n", r.ch, pct, t.done, t.cohort, t.failed, t.pending)
	}
	fmt.Fprintf(r.env.Stdout, "rollout of %s on channel %s complete at %d%% (revision %d)\n", cur.Systems(), r.ch, cur.Payload().Rollout.Percent, cur.Revision())
	return nil
}

// step republishes the verified current revision at pct and returns the
// entry it wrote.
func (r *rollout) step(ctx context.Context, cur channel.Entry, pct int) (channel.Entry, error) {
	d := cur.Draft(r.expires)
	d.Edit(func(p *manifest.Payload) {
		p.Rollout.Percent = pct
		p.Message = fmt.Sprintf("rollout step %d%%: %s", pct, strings.TrimPrefix(stripStep(p.Message), ": "))
	})
	res, err := r.c.publish(ctx, d, false)
	if err != nil {
		return channel.Entry{}, err
	}
	fmt.Fprintf(r.env.Stderr, "rollout %s: revision %d now at %d%%\n", r.ch, res.Revision, pct)
	return r.c.h.Find(res.Revision)
}

func stripStep(msg string) string {
	if strings.HasPrefix(msg, "rollout step ") {
		if _, rest, ok := strings.Cut(msg, ": "); ok {
			return rest
		}
	}
	return msg
}

// follow reads device statuses until every cohort device is done or
// failed, the failures already exceed the limit, or the wait is over.
func (r *rollout) follow(ctx context.Context, cur *manifest.Payload, first, rev uint64) (tally, error) {
	deadline := time.Now().Add(r.wait)
	for {
		f, err := dashboard.Collect(ctx, r.c.s, dashboard.Options{Channel: r.ch})
		if err != nil {
			return tally{}, err
		}
		var t tally
		for _, d := range f.Devices {
			if d.State == dashboard.Invalid || !cur.Rollout.Includes(d.ID) {
				continue
			}
			t.cohort++
			rep := d.Reported
			switch {
			case d.Revision >= first && d.StorePath != "" && containsPath(cur, d.StorePath) && (rep == status.UpToDate || rep == status.WaitingReboot):
				t.done++
			case (rep == status.Failed || rep == status.RolledBack) && d.Attempted >= first,
				rep == status.Rejected && d.Revision >= first:
				t.failed++
			default:
				t.pending++
			}
		}
		fmt.Fprintf(r.env.Stderr, "rollout %s revision %d at %d%%: %d done, %d pending, %d failed of %d in the cohort\n", r.ch, rev, cur.Rollout.Percent, t.done, t.pending, t.failed, t.cohort)
		if t.pending == 0 || r.limit.exceeded(t.failed, t.cohort) || time.Now().After(deadline) {
			return t, nil
		}
		if !sleepCtx(ctx, r.interval) {
			return t, ctx.Err()
		}
	}
}

func containsPath(p *manifest.Payload, sp string) bool {
	for _, x := range p.StorePaths() {
		if x == sp {
			return true
		}
	}
	return false
}

// halt reverts the channel: the newest verified system from before this
// rollout at 100%, or the same system at 0% when there is none, so no
// further device applies it.
func (r *rollout) halt(ctx context.Context, cur channel.Entry, first uint64, pct int, t tally) error {
	why := fmt.Sprintf("%d of %d devices in the %d%% cohort failed (limit %s)", t.failed, t.cohort, pct, r.limit)
	d := cur.Draft(r.expires)
	d.Edit(func(p *manifest.Payload) {
		p.Rollout.Percent = 0
		p.Message = fmt.Sprintf("rollout halted at %d%%: %s; no earlier system, paused at 0%%", pct, why)
	})
	for _, e := range r.c.h.Before(first) {
		if e.Systems() != cur.Systems() {
			d = e.Draft(r.expires)
			d.Edit(func(p *manifest.Payload) {
				p.Rollout.Percent = 100
				p.Message = fmt.Sprintf("rollout of %s halted at %d%%: %s; reverted", cur.Systems(), pct, why)
			})
			break
		}
	}
	d.Edit(func(p *manifest.Payload) { p.Publisher = publisherName() })
	res, err := r.c.publish(ctx, d, false)
	if err != nil {
		return fmt.Errorf("rollout halted (%s) but the revert failed: %w", why, err)
	}
	return fmt.Errorf("rollout of channel %s halted: %s; published revision %d: %s", r.ch, why, res.Revision, strings.Join(res.Payload.StorePaths(), " "))
}
