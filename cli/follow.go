package cli

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/nix-ota/nix-ota/bucket"
	"github.com/nix-ota/nix-ota/channel"
	dashboard "github.com/nix-ota/nix-ota/dashboard-static"
	"github.com/nix-ota/nix-ota/manifest"
	"github.com/nix-ota/nix-ota/status"
)

// gateFlags are the flags of the commands that follow a rollout step
// (rollout, publish --wait).
type gateFlags struct {
	wait, interval time.Duration
	minDevices     int
	allowEmpty     bool
	onFailure      string
}

func (g *gateFlags) add(fs *pflag.FlagSet, wait, interval time.Duration) {
	fs.DurationVar(&g.wait, "wait", wait, "how long to follow each step before judging it")
	fs.DurationVar(&g.interval, "interval", interval, "how often to read device statuses")
	g.addGate(fs)
}

// addGate binds what decides a step; publish binds its own --wait.
func (g *gateFlags) addGate(fs *pflag.FlagSet) {
	fs.IntVar(&g.minDevices, "min-devices", 1, "cohort devices that must report the new system before a step passes")
	fs.BoolVar(&g.allowEmpty, "allow-empty", false, "pass a step even when fewer than --min-devices reported (fleets with no devices yet)")
	fs.StringVar(&g.onFailure, "on-failure", "", "shell command to run when a step fails or halts; details in $NIX_OTA_EVENT, $NIX_OTA_CHANNEL, $NIX_OTA_REVISION, $NIX_OTA_REASON")
}

func (g *gateFlags) follower(env *Env, gate channel.Gate) (*follower, error) {
	if g.minDevices < 0 {
		return nil, usagef("--min-devices %d: want 0 or more", g.minDevices)
	}
	if g.wait <= 0 || g.interval <= 0 {
		return nil, usagef("--wait and --interval must be positive")
	}
	gate.MinDevices = g.minDevices
	if g.allowEmpty {
		gate.MinDevices = 0
	}
	return &follower{env: env, gate: gate, wait: g.wait, interval: g.interval, onFailure: g.onFailure}, nil
}

// follower reads device statuses for a step until its gate decides.
type follower struct {
	env            *Env
	s              bucket.Store
	trust          *manifest.Trust
	gate           channel.Gate
	wait, interval time.Duration
	onFailure      string
}

// follow returns the step's outcome (never Waiting), why, and the last tally.
func (f *follower) follow(ctx context.Context, step channel.Step) (channel.Outcome, string, channel.Tally, error) {
	e := step.Entry
	deadline := time.Now().Add(f.wait)
	for {
		// The step is given, so no history is read at each poll.
		fleet, err := readFleet(ctx, f.env, f.s, dashboard.Options{Channel: e.Payload().Channel, Trust: f.trust,
			Steps: map[string]channel.Step{e.Payload().Channel: step}})
		if err != nil {
			return 0, "", channel.Tally{}, err
		}
		t := step.Tally(fleet.Reports())
		out, why := f.gate.Judge(t, !time.Now().Before(deadline))
		fmt.Fprintf(f.env.Stderr, "%s revision %d at %d%%: %s\n", e.Payload().Channel, e.Revision(), e.Payload().Rollout.Percent, t)
		if len(t.Failures) > 0 && out != channel.Waiting {
			why += ": " + strings.Join(first(t.Failures, 10), "; ")
		}
		if out != channel.Waiting {
			return out, status.Clean(why, 1500), t, nil
		}
		if !sleepCtx(ctx, f.interval) {
			return 0, "", t, ctx.Err()
		}
	}
}

// notify runs --on-failure with the details in its environment. Its own
// failure is a warning: the rollout's outcome stands.
func (f *follower) notify(ctx context.Context, event, ch string, rev uint64, reason string) {
	if f.onFailure == "" {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "sh", "-c", f.onFailure)
	cmd.Env = append(os.Environ(), "NIX_OTA_EVENT="+event, "NIX_OTA_CHANNEL="+ch,
		"NIX_OTA_REVISION="+strconv.FormatUint(rev, 10), "NIX_OTA_REASON="+reason)
	cmd.Stdout, cmd.Stderr = f.env.Stderr, f.env.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintf(f.env.Stderr, "warning: --on-failure command failed: %v\n", err)
	}
}
