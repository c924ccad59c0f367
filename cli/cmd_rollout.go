package cli

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/nix-ota/nix-ota/channel"
	"github.com/nix-ota/nix-ota/manifest"
)

type rolloutOptions struct {
	bkt       string
	kf        keyFlags
	tf        signTrustFlags
	ch        string
	stepsFlag string
	maxFailed string
	expires   time.Duration
	gate      gateFlags
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
	addBucketFlag(fs, &o.bkt, "")
	o.kf = addKeyFlags(fs)
	o.tf = addSignTrustFlags(fs)
	fs.StringVar(&o.ch, "channel", "", "channel name (required)")
	fs.StringVar(&o.stepsFlag, "steps", "5,25,100", "rollout percentages, ascending")
	fs.StringVar(&o.maxFailed, "max-failed", "2%", "halt when more than this share (N%) or number (N) of the step's cohort failed")
	fs.DurationVar(&o.expires, "expires", 720*time.Hour, "validity of each manifest")
	o.gate.add(fs, 15*time.Minute, 10*time.Second)
}

func (o *rolloutOptions) run(ctx context.Context, env *Env, args []string) error {
	if err := noArgs(args); err != nil {
		return err
	}
	steps, err := parseSteps(o.stepsFlag)
	if err != nil {
		return err
	}
	limit, err := channel.ParseLimit(o.maxFailed)
	if err != nil {
		return usagef("--max-failed %v", err)
	}
	f, err := o.gate.follower(env, channel.Gate{Limit: limit})
	if err != nil {
		return err
	}
	c, err := openSigned(ctx, env, o.bkt, o.kf, o.tf, o.ch)
	if err != nil {
		return err
	}
	if _, err := c.current(); err != nil {
		return err
	}
	f.s, f.trust = c.s, &c.trust
	r := &rollout{env: env, c: c, f: f, expires: o.expires}
	defer c.refreshDashboard(ctx)
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

type rollout struct {
	env     *Env
	c       *signedChannel
	f       *follower
	expires time.Duration
}

func (r *rollout) run(ctx context.Context, steps []int) error {
	cur, err := r.c.current()
	if err != nil {
		return err
	}
	pct, last := cur.Payload().Rollout.Percent, steps[len(steps)-1]
	if pct >= last {
		fmt.Fprintf(r.env.Stdout, "channel %s revision %d is already at %d%%, the last step; nothing to do\n", r.c.name, cur.Revision(), pct)
		return nil
	}
	step := r.c.h.StepOf(cur)
	fmt.Fprintf(r.env.Stderr, "rollout %s: %s, revisions %d..%d, now at %d%%; steps %v, halt above %s failed\n", r.c.name, cur.Systems(), step.First, cur.Revision(), pct, steps, r.f.gate.Limit)
	todo := []int{pct} // judge the step already published, then take the next ones
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
		if err := r.judge(ctx, cur, pct); err != nil {
			return err
		}
	}
	r.c.attest(ctx, cur, true, fmt.Sprintf("rollout completed at %d%%", pct))
	fmt.Fprintf(r.env.Stdout, "rollout of %s on channel %s complete at %d%% (revision %d); recorded as known good\n", cur.Systems(), r.c.name, cur.Payload().Rollout.Percent, cur.Revision())
	return nil
}

// judge follows one step and acts on the outcome: nil to go on, or the
// error that ends the rollout (after a halt's revert).
func (r *rollout) judge(ctx context.Context, cur channel.Entry, pct int) error {
	out, why, _, err := r.f.follow(ctx, r.c.h.StepOf(cur))
	if err != nil {
		return err
	}
	switch out {
	case channel.Halt:
		return r.halt(ctx, cur, pct, why)
	case channel.Unproven:
		err := fmt.Errorf("rollout of channel %s stopped at %d%%: %s (nothing reverted; --allow-empty passes such steps)", r.c.name, pct, why)
		r.f.notify(ctx, "unproven", r.c.name, cur.Revision(), err.Error())
		return err
	}
	fmt.Fprintf(r.env.Stderr, "rollout %s: step %d%% passed: %s\n", r.c.name, pct, why)
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
	fmt.Fprintf(r.env.Stderr, "rollout %s: revision %d now at %d%%\n", r.c.name, res.Revision, pct)
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

// halt reverts the channel: the newest known-good system from before this
// rollout at 100%, or the same system at 0% when there is none, so no
// further device applies it; and records the halted system as bad.
func (r *rollout) halt(ctx context.Context, cur channel.Entry, pct int, why string) error {
	r.c.attest(ctx, cur, false, fmt.Sprintf("rollout halted at %d%%: %s", pct, why))
	d := cur.Draft(r.expires)
	d.Edit(func(p *manifest.Payload) {
		p.Rollout.Percent = 0
		p.Message = fmt.Sprintf("rollout halted at %d%%: %s; no known-good earlier system, paused at 0%%", pct, why)
	})
	if good, err := r.c.h.KnownGood(r.c.h.RunStart(cur), cur); err == nil {
		d = good.Draft(r.expires)
		d.Edit(func(p *manifest.Payload) {
			p.Rollout.Percent = 100
			p.Message = fmt.Sprintf("rollout of %s halted at %d%%: %s; reverted to revision %d", cur.Systems(), pct, why, good.Revision())
		})
	}
	d.Edit(func(p *manifest.Payload) { p.Publisher = publisherName() })
	res, err := r.c.publish(ctx, d, true)
	if err != nil {
		err = fmt.Errorf("rollout halted (%s) but the revert failed: %w", why, err)
	} else {
		err = fmt.Errorf("rollout of channel %s halted: %s; published revision %d: %s", r.c.name, why, res.Revision, strings.Join(res.Payload.StorePaths(), " "))
	}
	r.f.notify(ctx, "halted", r.c.name, cur.Revision(), err.Error())
	return err
}
