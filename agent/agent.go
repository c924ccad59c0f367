// Package agent is nix-ota-agent, the device side: poll the channel,
// verify, fetch the closure with Nix, switch, health-check, roll back on
// failure, check in.
//
// Threat model (DESIGN.md §1): the bucket is untrusted. The agent acts only
// on manifests that pass manifest.Verify against the keys in its own
// configuration, remembers the highest revision per channel so nothing
// older is ever accepted, and fetches closures through Nix with its own
// trusted cache keys. A rejected manifest changes nothing on the device.
// Its status credentials may write only devices/<its id>/.
//
// Structure: Decide (decide.go) is the whole policy as a pure function;
// Agent wires it to a bucket.Store, a nix.System and the state file.
package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/nix-ota/nix-ota/bucket"
	"github.com/nix-ota/nix-ota/manifest"
	"github.com/nix-ota/nix-ota/nix"
	"github.com/nix-ota/nix-ota/status"
)

// Version is set at build time with -ldflags.
var Version = "dev"

// RequestTimeout bounds each bucket request (manifest, reachability check,
// status write), so a hung bucket cannot hang the agent.
const RequestTimeout = 60 * time.Second

// Agent is one device's agent.
type Agent struct {
	Config Config
	Trust  manifest.Trust
	Store  bucket.Store // where channels/ is read
	Status bucket.Store // where devices/<id>/status.json goes; nil: local only
	System nix.System
	Now    func() time.Time
	Logf   func(format string, args ...any)
	// BeforeWork, if set, is called before the agent starts changing
	// the system (fetch and switch, crash recovery). Main starts catching
	// SIGINT and SIGTERM there rather than at start: an idle poll has
	// nothing to protect, and catching signals costs every timer-driven
	// poll two threads (docs/perf.md).
	BeforeWork func()
	state      *State
}

func (a *Agent) beforeWork() {
	if a.BeforeWork != nil {
		a.BeforeWork()
	}
}

// Outcome summarises one poll, for exit codes and tests.
type Outcome struct {
	Action  string // idle, reject, skip-bad, not-in-cohort, up-to-date, applied, failed, rolled-back, waiting-reboot, interrupted
	Err     error
	Request int // bucket requests made for the manifest
}

func (a *Agent) logf(format string, args ...any) {
	if a.Logf != nil {
		a.Logf(format, args...)
	}
}

func (a *Agent) now() time.Time {
	if a.Now != nil {
		return a.Now()
	}
	return time.Now()
}

// Load reads the state file; call it once before Recover and Poll.
func (a *Agent) Load() error {
	s, err := loadState(a.Config.StateDir)
	if err != nil {
		return err
	}
	a.state = s
	return nil
}

func (a *Agent) save() error {
	if err := saveState(a.Config.StateDir, a.state); err != nil {
		return fmt.Errorf("save state: %w", err)
	}
	return nil
}

func (a *Agent) device() Device {
	return Device{ID: a.Config.DeviceID, Class: a.Config.DeviceClass, Channel: a.Config.Channel, Trust: a.Trust, ForceBoot: a.Config.Switch == manifest.SwitchBoot, AllowedSubstituters: a.Config.AllowedSubstituters}
}

// Poll runs one poll (DESIGN.md §5).
func (a *Agent) Poll(ctx context.Context) Outcome {
	cs := a.state.channel(a.Config.Channel)
	key := bucket.ChannelKey(a.Config.Channel)
	gctx, cancel := context.WithTimeout(ctx, RequestTimeout)
	obj, err := a.Store.Get(gctx, key, bucket.GetOptions{MaxSize: manifest.MaxBodySize, IfNoneMatch: cs.ETag})
	cancel()
	switch {
	case errors.Is(err, bucket.ErrNotModified):
		return a.idle(ctx, cs)
	case errors.Is(err, bucket.ErrTooLarge):
		err = fmt.Errorf("%w: %v", manifest.ErrTooLarge, err)
		a.logf("poll %s: rejected: %v", a.Config.Channel, err)
		a.report(ctx, status.Rejected, err, "")
		return Outcome{Action: "reject", Err: err, Request: 1}
	case err != nil:
		err = fmt.Errorf("fetch manifest %s from %s: %w", key, a.Store, err)
		a.logf("poll %s: %v", a.Config.Channel, err)
		st := a.state.Status.State
		if st == "" {
			st = status.Failed
		}
		a.report(ctx, st, err, "")
		return Outcome{Action: "failed", Err: err, Request: 1}
	}
	current, err := a.System.ProfileTarget(a.Config.Profile)
	if err != nil {
		a.report(ctx, status.Failed, err, "")
		return Outcome{Action: "failed", Err: err, Request: 1}
	}
	d := Decide(a.device(), *cs, current, obj.Data, a.now())
	out := a.act(ctx, cs, d, obj.ETag, current)
	out.Request = 1
	return out
}

// idle handles a 304: nothing changed in the bucket, and an idle poll
// costs that one request. Only the local clock can make news: the accepted
// manifest expiring, or a heartbeat falling due (which also notices a
// system changed by hand).
func (a *Agent) idle(ctx context.Context, cs *ChannelState) Outcome {
	st := a.state.Status
	now := a.now()
	if !cs.ExpiresAt.IsZero() && !now.Before(cs.ExpiresAt) {
		err := fmt.Errorf("%w: the channel manifest expired at %s and was not re-signed; staying on the current system", manifest.ErrExpired, cs.ExpiresAt.UTC().Format(time.RFC3339))
		a.report(ctx, st.State, err, st.Note)
		return Outcome{Action: "idle", Err: err, Request: 1}
	}
	if a.state.RemoteAt.IsZero() || now.Sub(a.state.RemoteAt) >= a.Config.Heartbeat.Duration || a.state.RemoteStale {
		a.report(ctx, st.State, errorFromText(st.LastError), st.Note)
	}
	if a.Config.AllowReboot && (st.State == status.WaitingReboot || st.NeedsReboot) && st.StorePath != "" {
		a.maybeReboot(ctx, st.StorePath)
	}
	return Outcome{Action: "idle", Request: 1}
}

func errorFromText(s string) error {
	if s == "" {
		return nil
	}
	return errors.New(s)
}

func (a *Agent) act(ctx context.Context, cs *ChannelState, d Decision, etag, current string) Outcome {
	ch := a.Config.Channel
	if d.Action == Reject {
		if errors.Is(d.Err, manifest.ErrEquivocation) || errors.Is(d.Err, manifest.ErrRollback) {
			a.logf("SECURITY: poll %s: rejected: %v", ch, d.Err)
		} else {
			a.logf("poll %s: rejected: %v", ch, d.Err)
		}
		// Remember the ETag so the same bad bytes are not re-verified on
		// every poll; a new publish changes it.
		cs.ETag = etag
		a.save()
		a.report(ctx, status.Rejected, d.Err, "")
		return Outcome{Action: "reject", Err: d.Err}
	}
	// The manifest is valid: raise the anti-rollback memory first, durably.
	p := d.Verified.Payload
	cs.Revision, cs.PayloadDigest, cs.ExpiresAt = p.Revision, d.Verified.PayloadDigest, p.ExpiresAt
	if d.Action != Apply {
		cs.ETag = etag
	}
	if err := a.save(); err != nil {
		a.report(ctx, status.Failed, err, "")
		return Outcome{Action: "failed", Err: err}
	}
	if pd := a.state.Pending; pd != nil && pd.Installed && pd.StorePath == d.StorePath && (d.Action == UpToDate || d.Action == Apply) {
		return a.waitReboot(ctx, pd)
	}
	switch d.Action {
	case UpToDate:
		if a.state.Applied == nil || a.state.Applied.StorePath != d.StorePath || a.state.Applied.Revision != p.Revision {
			a.state.Applied = &Applied{Channel: ch, Revision: p.Revision, StorePath: d.StorePath, At: a.now()}
			a.save()
		}
		a.logf("poll %s: revision %d: already running %s", ch, p.Revision, d.StorePath)
		a.report(ctx, status.UpToDate, nil, "")
		return Outcome{Action: "up-to-date"}
	case SkipBad:
		a.logf("poll %s: %v", ch, d.Err)
		a.report(ctx, a.state.Status.State, d.Err, "")
		return Outcome{Action: "skip-bad", Err: d.Err}
	case NotCohort:
		note := fmt.Sprintf("revision %d is rolling out to %d%% of devices, not this one yet", p.Revision, p.Rollout.Percent)
		a.logf("poll %s: %s", ch, note)
		a.report(ctx, status.UpToDate, nil, note)
		return Outcome{Action: "not-in-cohort"}
	}
	return a.apply(ctx, cs, d, etag, current)
}

// apply fetches, switches and health-checks a new system (DESIGN.md §5
// steps 4-6).
func (a *Agent) apply(ctx context.Context, cs *ChannelState, d Decision, etag, previous string) Outcome {
	a.beforeWork()
	ch, p := a.Config.Channel, d.Verified.Payload
	a.logf("poll %s: revision %d: new system %s (%s), fetching closure", ch, p.Revision, d.StorePath, oneLine(p.Message))
	a.state.Attempted = p.Revision
	a.report(ctx, status.Downloading, nil, fmt.Sprintf("fetching revision %d", p.Revision))
	subs := slices.Clone(a.Config.Substituters)
	for _, s := range p.Substituters {
		if !slices.Contains(subs, s) {
			subs = append(subs, s)
		}
	}
	if err := a.System.Realise(ctx, d.StorePath, subs, a.Config.TrustedCacheKeys); err != nil {
		// Transient (cache down, path not pushed yet): retried next poll.
		err = fmt.Errorf("fetch closure of revision %d: %w", p.Revision, err)
		a.logf("poll %s: %v; will retry", ch, err)
		a.report(ctx, status.Failed, err, "")
		return Outcome{Action: "failed", Err: err}
	}
	if old := a.state.Pending; old != nil && old.Installed {
		// Replacing an update that never booted: roll back to what runs.
		previous = old.Previous
	}
	a.state.Pending = &Pending{Channel: ch, Revision: p.Revision, StorePath: d.StorePath, Previous: previous, Mode: d.Mode, Attempts: 1, StartedAt: a.now()}
	if err := a.save(); err != nil {
		a.state.Pending = nil
		a.report(ctx, status.Failed, err, "")
		return Outcome{Action: "failed", Err: err}
	}
	a.report(ctx, status.Switching, nil, fmt.Sprintf("switching to revision %d", p.Revision))
	a.logf("poll %s: revision %d: setting profile %s and running switch-to-configuration %s", ch, p.Revision, a.Config.Profile, d.Mode)
	if err := a.System.SetProfile(ctx, a.Config.Profile, d.StorePath); err != nil {
		a.state.Pending = nil
		cs.ETag = ""
		a.save()
		err = fmt.Errorf("set profile: %w", err)
		a.report(ctx, status.Failed, err, "")
		return Outcome{Action: "failed", Err: err}
	}
	return a.finish(ctx, etag)
}

// finish runs the switch and health check of the pending update and
// commits or rolls back. Recover calls it too, after a crash.
func (a *Agent) finish(ctx context.Context, etag string) Outcome {
	pd := a.state.Pending
	if err := a.System.Switch(ctx, pd.StorePath, pd.Mode); err != nil {
		return a.rollback(ctx, fmt.Errorf("switch-to-configuration %s failed: %w", pd.Mode, err), etag)
	}
	if pd.Mode == manifest.SwitchBoot {
		// Stays pending until the device boots into it (Recover confirms).
		pd.Installed, pd.ETag = true, etag
		a.state.channel(pd.Channel).ETag = etag
		a.save()
		a.logf("poll %s: revision %d installed for the next boot; it is confirmed after that boot", pd.Channel, pd.Revision)
		return a.waitReboot(ctx, pd)
	}
	if err := a.healthCheck(ctx, pd); err != nil {
		return a.rollback(ctx, err, etag)
	}
	a.commit(etag)
	a.logf("poll %s: revision %d is healthy; now running %s", pd.Channel, pd.Revision, pd.StorePath)
	a.cleanup(ctx)
	a.report(ctx, status.UpToDate, nil, "")
	a.maybeReboot(ctx, pd.StorePath)
	return Outcome{Action: "applied"}
}

// interrupted ends a poll that a stop signal (systemctl stop, shutdown) cut
// short in the middle of an update. A failure caused by being stopped says
// nothing about the update, so nothing is marked bad and nothing is rolled
// back: the pending transaction stays in the state file and the next start
// finishes or undoes it (Recover), as after a crash.
func (a *Agent) interrupted(ctx context.Context, pd *Pending, cause error) Outcome {
	err := fmt.Errorf("stopped during the update to revision %d (%v); the next start resumes it", pd.Revision, cause)
	a.logf("poll %s: %v", pd.Channel, err)
	a.save()
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	a.report(rctx, status.Switching, err, "")
	return Outcome{Action: "interrupted", Err: err}
}

// cleanup keeps small devices from filling up after months of updates:
// old generations go, and the store is collected when space runs low.
func (a *Agent) cleanup(ctx context.Context) {
	minFree, _ := ParseSize(a.Config.MinFreeSpace) // checked with the config
	done, err := a.System.Cleanup(ctx, a.Config.Profile, a.Config.KeepGenerations, minFree)
	if err != nil {
		a.logf("cleanup: %v", err)
		return
	}
	if done != "" {
		a.logf("cleanup: %s", done)
		a.state.Cleanup = fmt.Sprintf("%s (%s)", done, a.now().UTC().Format(time.RFC3339))
		a.save()
	}
}

// waitReboot reports an installed boot-mode update and applies the reboot
// policy.
func (a *Agent) waitReboot(ctx context.Context, pd *Pending) Outcome {
	a.report(ctx, status.WaitingReboot, nil, fmt.Sprintf("revision %d installed; reboot to activate", pd.Revision))
	a.maybeReboot(ctx, pd.StorePath)
	return Outcome{Action: "waiting-reboot"}
}

// maybeReboot applies the reboot policy (RebootDecision) to a system that
// needs a reboot to be fully active: a boot-mode update, or a switch that
// changed the kernel, initrd or modules.
func (a *Agent) maybeReboot(ctx context.Context, storePath string) {
	needs := a.state.Status.State == status.WaitingReboot
	if !needs {
		nr, err := a.System.NeedsReboot(storePath)
		needs = err == nil && nr
	}
	w, _ := ParseWindow(a.Config.RebootWindow) // checked with the config
	reboot, why := RebootDecision(needs, a.Config.AllowReboot, w, a.now().Local())
	if why == "" {
		return
	}
	a.logf("reboot: %s", why)
	if !reboot {
		return
	}
	if err := a.System.Reboot(ctx); err != nil {
		a.logf("reboot: %v", err)
	}
}

func (a *Agent) commit(etag string) {
	pd := a.state.Pending
	a.state.Applied = &Applied{Channel: pd.Channel, Revision: pd.Revision, StorePath: pd.StorePath, At: a.now()}
	a.state.Pending = nil
	a.state.channel(pd.Channel).ETag = etag
	a.save()
}

// rollback returns to the previous system and marks the revision bad so it
// is never retried (DESIGN.md §5 step 6).
func (a *Agent) rollback(ctx context.Context, reason error, etag string) Outcome {
	pd := a.state.Pending
	if ctx.Err() != nil {
		return a.interrupted(ctx, pd, reason)
	}
	cs := a.state.channel(pd.Channel)
	a.logf("poll %s: revision %d failed: %v; rolling back to %s", pd.Channel, pd.Revision, reason, orNone(pd.Previous))
	cs.markBad(pd.Revision, pd.StorePath, oneLine(reason.Error()))
	cs.ETag = etag
	if pd.Previous == "" {
		a.state.Pending = nil
		a.save()
		err := fmt.Errorf("%v; no previous system to roll back to", reason)
		a.report(ctx, status.Failed, err, "")
		return Outcome{Action: "failed", Err: err}
	}
	var rbErr error
	if err := a.System.SetProfile(ctx, a.Config.Profile, pd.Previous); err != nil {
		rbErr = fmt.Errorf("set profile back: %w", err)
	} else if err := a.System.Switch(ctx, pd.Previous, manifest.SwitchNow); err != nil {
		rbErr = fmt.Errorf("switch back: %w", err)
	}
	a.state.Pending = nil
	a.save()
	if rbErr != nil {
		err := fmt.Errorf("%v; ROLLBACK FAILED: %v", reason, rbErr)
		a.logf("poll %s: %v", pd.Channel, err)
		a.report(ctx, status.Failed, err, "")
		return Outcome{Action: "failed", Err: err}
	}
	err := fmt.Errorf("revision %d rolled back: %v", pd.Revision, reason)
	a.report(ctx, status.RolledBack, err, "")
	return Outcome{Action: "rolled-back", Err: err}
}

// healthCheck runs the configured commands, then checks the bucket is
// still reachable: a system that lost the network cannot be fixed by the
// next publish, so it is rolled back.
func (a *Agent) healthCheck(ctx context.Context, pd *Pending) error {
	for _, c := range a.Config.HealthChecks {
		if err := runHealthCheck(ctx, c, a.Config.HealthTimeout.Duration, pd); err != nil {
			return err
		}
	}
	gctx, cancel := context.WithTimeout(ctx, RequestTimeout)
	defer cancel()
	_, err := a.Store.Get(gctx, bucket.ChannelKey(pd.Channel), bucket.GetOptions{MaxSize: manifest.MaxBodySize, IfNoneMatch: a.state.channel(pd.Channel).ETag})
	if err != nil && !errors.Is(err, bucket.ErrNotModified) {
		return fmt.Errorf("health check: bucket unreachable after the switch: %w", err)
	}
	return nil
}

func runHealthCheck(ctx context.Context, command string, timeout time.Duration, pd *Pending) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", command)
	cmd.Env = append(os.Environ(), "NIX_OTA_STORE_PATH="+pd.StorePath, fmt.Sprintf("NIX_OTA_REVISION=%d", pd.Revision), "NIX_OTA_CHANNEL="+pd.Channel)
	// Kill the whole process group on timeout, not just the shell.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 2 * time.Second
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if ctx.Err() == context.DeadlineExceeded {
		return fmt.Errorf("health check %q: timed out after %s", command, timeout)
	}
	if err != nil {
		return fmt.Errorf("health check %q: %v: %s", command, err, oneLine(lastBytes(out.String(), 300)))
	}
	return nil
}

// Recover finishes or rolls back an update a crash left pending. It runs
// before any poll.
func (a *Agent) Recover(ctx context.Context) Outcome {
	pd := a.state.Pending
	if pd == nil {
		return Outcome{Action: "idle"}
	}
	a.beforeWork()
	if pd.Installed {
		return a.confirmBoot(ctx, pd)
	}
	a.logf("recover: found an unfinished update to revision %d (%s), attempt %d", pd.Revision, pd.StorePath, pd.Attempts)
	current, err := a.System.ProfileTarget(a.Config.Profile)
	if err != nil {
		return Outcome{Action: "failed", Err: err}
	}
	cs := a.state.channel(pd.Channel)
	cs.ETag = "" // re-read the manifest on the next poll whatever happens
	if current != pd.StorePath {
		// The profile never moved: nothing was switched. Forget it; the
		// next poll starts the update again.
		a.logf("recover: the profile still points at %s; the update had not started", orNone(current))
		a.state.Pending = nil
		a.save()
		return Outcome{Action: "idle"}
	}
	if pd.Attempts >= 2 {
		return a.rollback(ctx, fmt.Errorf("the update was interrupted %d times while switching", pd.Attempts), "")
	}
	pd.Attempts++
	if err := a.save(); err != nil {
		return Outcome{Action: "failed", Err: err}
	}
	a.logf("recover: re-running switch-to-configuration %s for revision %d", pd.Mode, pd.Revision)
	return a.finish(ctx, "")
}

// confirmBoot finishes a boot-mode update: once the device runs it, health
// checks decide between commit and rollback; before that, keep waiting.
func (a *Agent) confirmBoot(ctx context.Context, pd *Pending) Outcome {
	booted, err := a.System.Booted()
	if err != nil {
		return Outcome{Action: "failed", Err: err}
	}
	if booted != pd.StorePath {
		return Outcome{Action: "waiting-reboot"}
	}
	a.logf("recover: booted into revision %d (%s); checking its health", pd.Revision, pd.StorePath)
	if err := a.healthCheck(ctx, pd); err != nil {
		return a.rollback(ctx, fmt.Errorf("after booting it: %w", err), pd.ETag)
	}
	a.commit(pd.ETag)
	a.logf("recover: revision %d is healthy after boot", pd.Revision)
	a.cleanup(ctx)
	a.report(ctx, status.UpToDate, nil, "")
	return Outcome{Action: "applied"}
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

func lastBytes(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}
