package cli

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/nix-ota/nix-ota/channel"
	"github.com/nix-ota/nix-ota/manifest"
	"github.com/nix-ota/nix-ota/status"
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
	noDash    bool
	json      bool
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
exceeds --max-failed, it halts: it records the system bad, republishes the
system that ran before it at 100% if that one is known good (or else the
same system at 0%), and exits 1. A step passes only when --min-devices
cohort devices run the system; a rollout that completes records it known
good. A channel already at the last step is left alone. It keeps no state
outside the bucket: run it again after a crash and it continues from the
channel's current percentage. Cohorts are hash(salt, device id), so raising
the percentage only adds devices.

--json prints one object on stdout when the rollout ends, also when it
halts (exit 1): {"channel", "outcome" ("complete", "already-done",
"halted", "unproven" or "failed"), "revision" and "rollout" (the channel's
current revision and percentage at the end), "storePaths" (the system
rolled out), "revertedTo" (the revision a halt published), "steps":
[{"rollout", "revision", "outcome" ("passed", "halt", "unproven"),
"reason", "cohort", "done", "failed", "pending"}], "error"}. Progress
lines go to stderr.`,
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
	fs.BoolVar(&o.noDash, "no-dashboard", false, "do not regenerate the dashboard after each step and at the end")
	fs.BoolVar(&o.json, "json", false, "print the outcome as one JSON object on stdout (progress goes to stderr)")
}

// rolloutResult is rollout --json.
type rolloutResult struct {
	Channel    string        `json:"channel"`
	Outcome    string        `json:"outcome"`
	Revision   uint64        `json:"revision"`
	Rollout    int           `json:"rollout"`
	StorePaths []string      `json:"storePaths"`
	RevertedTo uint64        `json:"revertedTo,omitempty"`
	Steps      []rolloutStep `json:"steps"`
	Error      string        `json:"error,omitempty"`
}

// rolloutStep is one judged step of rollout --json.
type rolloutStep struct {
	Rollout  int    `json:"rollout"`
	Revision uint64 `json:"revision"`
	Outcome  string `json:"outcome"`
	Reason   string `json:"reason"`
	Cohort   int    `json:"cohort"`
	Done     int    `json:"done"`
	Failed   int    `json:"failed"`
	Pending  int    `json:"pending"`
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
	c, cur, err := openDerived(ctx, env, o.bkt, o.kf, o.tf, o.ch, o.noDash)
	if err != nil {
		return err
	}
	f.s, f.trust = c.s, &c.trust
	p := cur.Payload()
	r := &rollout{env: env, out: humanOut(env, o.json), c: c, f: f, expires: o.expires,
		res: rolloutResult{Channel: c.name, StorePaths: p.StorePaths(), Steps: []rolloutStep{}}}
	defer c.refreshDashboard(ctx)
	err = r.run(ctx, steps)
	if o.json {
		r.finish(ctx, err)
		if jerr := writeJSON(env.Stdout, r.res); jerr != nil && err == nil {
			err = jerr
		}
	}
	return err
}

// finish fills in where the channel ended and, for a failure that did not
// set one, the outcome.
func (r *rollout) finish(ctx context.Context, err error) {
	if err != nil {
		r.res.Error = oneLine(explain(err).Error(), 4000)
		if r.res.Outcome == "" {
			r.res.Outcome = "failed"
		}
	}
	if e, cerr := r.c.current(ctx); cerr == nil {
		r.res.Revision, r.res.Rollout = e.Revision(), e.Payload().Rollout.Percent
	}
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
	out     io.Writer // stdout, or stderr under --json
	c       *signedChannel
	f       *follower
	expires time.Duration
	res     rolloutResult
}

func (r *rollout) run(ctx context.Context, steps []int) error {
	cur, err := r.c.current(ctx)
	if err != nil {
		return err
	}
	pct, last := cur.Payload().Rollout.Percent, steps[len(steps)-1]
	if pct >= last {
		r.res.Outcome = "already-done"
		fmt.Fprintf(r.out, "channel %s revision %d is already at %d%%, the last step; nothing to do\n", r.c.name, cur.Revision(), pct)
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
	r.res.Outcome = "complete"
	fmt.Fprintf(r.out, "rollout of %s on channel %s complete at %d%% (revision %d); recorded as known good\n", cur.Systems(), r.c.name, cur.Payload().Rollout.Percent, cur.Revision())
	return nil
}

// judge follows one step and acts on the outcome: nil to go on, or the
// error that ends the rollout (after a halt's revert).
func (r *rollout) judge(ctx context.Context, cur channel.Entry, pct int) error {
	out, why, t, err := r.f.follow(ctx, r.c.h.StepOf(cur))
	if err != nil {
		return err
	}
	r.res.Steps = append(r.res.Steps, rolloutStep{Rollout: pct, Revision: cur.Revision(), Outcome: out.String(), Reason: why,
		Cohort: t.Cohort, Done: t.Done, Failed: t.Failed, Pending: t.Pending})
	switch out {
	case channel.Halt:
		r.res.Outcome = "halted"
		return r.halt(ctx, cur, pct, why)
	case channel.Unproven:
		r.res.Outcome = "unproven"
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
	if err := r.c.still(ctx, cur); err != nil {
		return channel.Entry{}, err
	}
	d := cur.Draft(r.expires)
	d.Edit(func(p *manifest.Payload) {
		p.Rollout.Percent = pct
		p.Message = status.Clean(fmt.Sprintf("rollout step %d%%: %s", pct, strings.TrimPrefix(stripStep(p.Message), ": ")), 4000)
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
	if err := r.c.still(ctx, cur); err != nil {
		return fmt.Errorf("rollout halted (%s) but not reverted: %w", why, err)
	}
	r.c.attest(ctx, cur, false, fmt.Sprintf("rollout halted at %d%%: %s", pct, why))
	d := cur.Draft(r.expires)
	d.Edit(func(p *manifest.Payload) {
		p.Rollout.Percent = 0
		p.Message = status.Clean(fmt.Sprintf("rollout halted at %d%%: %s; no known-good earlier system, paused at 0%%", pct, why), 4000)
	})
	if good, err := r.c.h.PreviousGood(cur); err == nil {
		d = good.Draft(r.expires)
		d.Edit(func(p *manifest.Payload) {
			p.Rollout.Percent = 100
			p.Message = status.Clean(fmt.Sprintf("rollout of %s halted at %d%%: %s; reverted to revision %d", cur.Systems(), pct, why, good.Revision()), 4000)
		})
	}
	d.Edit(func(p *manifest.Payload) { p.Publisher = publisherName() })
	res, err := r.c.publish(ctx, d, true)
	if err != nil {
		err = fmt.Errorf("rollout halted (%s) but the revert failed: %w", why, err)
	} else {
		r.res.RevertedTo = res.Revision
		err = fmt.Errorf("rollout of channel %s halted: %s; published revision %d: %s", r.c.name, why, res.Revision, strings.Join(res.Payload.StorePaths(), " "))
	}
	r.f.notify(ctx, "halted", r.c.name, cur.Revision(), err.Error())
	return err
}
