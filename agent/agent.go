// Package agent is nix-ota-agent, the device side: poll the channel,
// verify, fetch the closure with Nix, switch, health-check, roll back on
// failure, check in.
//
// Threat model (docs/design.md, Trust model): the bucket is untrusted. The agent acts only
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
	"crypto/ed25519"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
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

// Limits of text the agent writes, after status.Clean: one status field
// (what status.Parse keeps), one log line.
const (
	maxText    = 1024
	maxLogLine = 4096
)

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
	// key signs check-ins (Load reads it); only Load and checkin use it.
	key ed25519.PrivateKey
	// saveErr is the first failed save; from then on the agent refuses
	// to poll (see ErrStateNotSaved). saveReported: the status says so.
	saveErr      error
	saveReported bool
	// statusErr is the first status write that failed in this poll.
	statusErr error
}

func (a *Agent) beforeWork() {
	if a.BeforeWork != nil {
		a.BeforeWork()
	}
}

// logf logs one line, passed through status.Clean: errors quote bucket,
// manifest and command output, which must not forge or break log lines.
func (a *Agent) logf(format string, args ...any) {
	if a.Logf != nil {
		a.Logf("%s", status.Clean(fmt.Sprintf(format, args...), maxLogLine))
	}
}

func (a *Agent) now() time.Time {
	if a.Now != nil {
		return a.Now()
	}
	return time.Now()
}

// Load reads the identity key (creating it on the first start) and the
// state file; call it once before Recover and Poll. It warns when the
// status will never reach the bucket.
func (a *Agent) Load() error {
	id, err := loadIdentity(&a.Config)
	if err != nil {
		return err
	}
	if id.Generated {
		a.logf("%s", id.generatedLine(a.Config.DeviceID))
	}
	a.key = id.Key
	s, err := loadState(a.Config.StateDir)
	if err != nil {
		return err
	}
	a.state = s
	if a.Status == nil {
		a.logf("warning: no statusBucket: %s is read-only, so this device's status is never written to the bucket, only to %s; set statusBucket (s3:// or file://) and statusCredentials for publishers and rollouts to see it",
			a.Store, filepath.Join(a.Config.StateDir, "status.json"))
	}
	return nil
}

// save writes the state file; it is the only way to it. Its error must be
// handled (agent TestSavesAreChecked): a failure stops the agent, and is
// also kept (saveErr) so that the poll ends with ExitStateNotSaved and a
// status saying why even if a caller carried on.
func (a *Agent) save() error {
	err := saveState(a.Config.StateDir, a.state)
	if err == nil {
		return nil
	}
	err = fmt.Errorf("%w: %v; the agent stops and acts again only once it can write %s (free space, or fix its mount)", ErrStateNotSaved, err, a.Config.StateDir)
	if a.saveErr == nil {
		a.saveErr = err
		a.logf("state: %v", err)
	}
	return err
}

// refused is the outcome of a Poll or Recover after a failed save, which
// may have happened outside them (noteConfig); settle reports it.
func (a *Agent) refused(ctx context.Context) Outcome {
	return a.settle(ctx, Outcome{Result: ResultFailed, Err: a.saveErr})
}

// settle finishes a Poll or Recover: an unsaved state file is reported
// once (the status says failed, and why) and carried in the outcome, as
// is a status that could not be written.
func (a *Agent) settle(ctx context.Context, out Outcome) Outcome {
	if a.saveErr != nil {
		out.SaveErr = a.saveErr
		if !a.saveReported {
			a.saveReported = true
			why := a.saveErr
			if out.Err != nil && errors.Is(out.Err, ErrStateNotSaved) {
				why = out.Err
			}
			a.report(context.WithoutCancel(ctx), status.Failed, why, "")
		}
	}
	out.StatusErr = a.statusErr
	return out
}

func (a *Agent) device() Device {
	return Device{ID: a.Config.DeviceID, Class: a.Config.DeviceClass, Channel: a.Config.Channel, Trust: a.Trust, ForceBoot: a.Config.Switch == manifest.SwitchBoot, AllowedSubstituters: a.Config.AllowedSubstituters}
}

// Poll runs one poll (docs/design.md, Agent steps).
func (a *Agent) Poll(ctx context.Context) Outcome {
	if a.saveErr != nil {
		return a.refused(ctx)
	}
	a.statusErr = nil
	return a.settle(ctx, a.poll(ctx))
}

func (a *Agent) poll(ctx context.Context) Outcome {
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
		return Outcome{Result: ResultRejected, Err: err, Request: 1}
	case err != nil:
		err = fmt.Errorf("fetch manifest %s from %s: %w", key, a.Store, err)
		a.logf("poll %s: %v", a.Config.Channel, err)
		st := a.state.Status.State
		if st == "" {
			st = status.Failed
		}
		a.report(ctx, st, err, "")
		return Outcome{Result: ResultFailed, Err: err, Request: 1}
	}
	current, err := a.System.ProfileTarget(a.Config.Profile)
	if err != nil {
		a.report(ctx, status.Failed, err, "")
		return Outcome{Result: ResultFailed, Err: err, Request: 1}
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
		return Outcome{Result: ResultIdle, Err: err, Request: 1}
	}
	if a.heartbeatDue(now) {
		a.report(ctx, st.State, errorFromText(st.LastError), st.Note)
	}
	if a.Config.AllowReboot && (st.State == status.WaitingReboot || st.NeedsReboot) && st.StorePath != "" {
		a.maybeReboot(ctx, st.StorePath)
	}
	return Outcome{Result: ResultIdle, Request: 1}
}

func errorFromText(s string) error {
	if s == "" {
		return nil
	}
	return errors.New(s)
}

func (a *Agent) act(ctx context.Context, cs *ChannelState, d Decision, etag, current string) Outcome {
	if d.Action == Reject {
		return a.reject(ctx, cs, d.Err, etag)
	}
	// The manifest is valid: raise the anti-rollback memory first, durably.
	ch, p := a.Config.Channel, d.Verified.Payload
	cs.Revision, cs.PayloadDigest, cs.ExpiresAt = p.Revision, d.Verified.PayloadDigest, p.ExpiresAt
	if d.Action != Apply {
		cs.ETag = etag
	}
	if err := a.save(); err != nil {
		return halted(ResultFailed, nil, err)
	}
	if pd := a.state.Pending; pd != nil && pd.Installed && pd.StorePath == d.StorePath && (d.Action == UpToDate || d.Action == Apply) {
		return a.waitReboot(ctx, pd)
	}
	switch d.Action {
	case UpToDate:
		if a.state.Applied == nil || a.state.Applied.StorePath != d.StorePath || a.state.Applied.Revision != p.Revision {
			a.state.Applied = &Applied{Channel: ch, Revision: p.Revision, StorePath: d.StorePath, At: a.now()}
			if err := a.save(); err != nil {
				return halted(ResultUpToDate, nil, err)
			}
		}
		a.logf("poll %s: revision %d: already running %s", ch, p.Revision, d.StorePath)
		a.report(ctx, status.UpToDate, nil, "")
		return Outcome{Result: ResultUpToDate}
	case SkipBad:
		a.logf("poll %s: %v", ch, d.Err)
		a.report(ctx, a.state.Status.State, d.Err, "")
		return Outcome{Result: ResultSkippedBad, Err: d.Err}
	case NotCohort:
		note := fmt.Sprintf("revision %d is rolling out to %d%% of devices, not this one yet", p.Revision, p.Rollout.Percent)
		a.logf("poll %s: %s", ch, note)
		a.report(ctx, status.UpToDate, nil, note)
		return Outcome{Result: ResultNotInCohort}
	}
	return a.apply(ctx, cs, d, etag, current)
}

// reject logs and reports a manifest that failed a rule. Its ETag is
// remembered so the same bad bytes are not re-verified on every poll; a
// new publish changes it.
func (a *Agent) reject(ctx context.Context, cs *ChannelState, why error, etag string) Outcome {
	if errors.Is(why, manifest.ErrEquivocation) || errors.Is(why, manifest.ErrRollback) {
		a.logf("SECURITY: poll %s: rejected: %v", a.Config.Channel, why)
	} else {
		a.logf("poll %s: rejected: %v", a.Config.Channel, why)
	}
	cs.ETag = etag
	if err := a.save(); err != nil {
		return halted(ResultRejected, why, err)
	}
	a.report(ctx, status.Rejected, why, "")
	return Outcome{Result: ResultRejected, Err: why}
}

// apply fetches, switches and health-checks a new system (docs/design.md,
// Agent steps 5-8). The pending update is saved before the profile moves, and
// again once it has moved (ProfileSet), so that a start after a crash or
// a failed save can tell an update that never started from one that was
// rolled back.
func (a *Agent) apply(ctx context.Context, cs *ChannelState, d Decision, etag, previous string) Outcome {
	a.beforeWork()
	ch, p := a.Config.Channel, d.Verified.Payload
	a.logf("poll %s: revision %d: new system %s (%s), fetching closure", ch, p.Revision, d.StorePath, status.Clean(p.Message, 200))
	if why, ok := cs.BadPaths[d.StorePath]; ok {
		a.logf("poll %s: revision %d sets retry: trying %s again, rolled back here before (%s)", ch, p.Revision, d.StorePath, why)
	}
	a.state.Attempted = p.Revision
	a.report(ctx, status.Downloading, nil, fmt.Sprintf("fetching revision %d", p.Revision))
	fetch := a.fetchDeltas(ctx, p.Revision, d.StorePath, a.substituters(p), a.Config.TrustedCacheKeys)
	if err := a.System.Realise(ctx, d.StorePath, a.substituters(p), a.Config.TrustedCacheKeys); err != nil {
		// Transient (cache down, path not pushed yet): retried next poll.
		err = fmt.Errorf("fetch closure of revision %d: %w", p.Revision, err)
		a.logf("poll %s: %v; will retry", ch, err)
		a.report(ctx, status.Failed, err, "")
		return Outcome{Result: ResultFailed, Err: err}
	}
	if old := a.state.Pending; old != nil && old.Installed {
		// Replacing an update that never booted: roll back to what runs.
		previous = old.Previous
	}
	a.state.Fetch = fetch
	pd := &Pending{Channel: ch, Revision: p.Revision, StorePath: d.StorePath, Previous: previous, Mode: d.Mode, Attempts: 1, StartedAt: a.now()}
	a.state.Pending = pd
	if err := a.save(); err != nil {
		a.state.Pending = nil
		return halted(ResultFailed, nil, err)
	}
	a.report(ctx, status.Switching, nil, fmt.Sprintf("switching to revision %d", p.Revision))
	a.logf("poll %s: revision %d: setting profile %s and running switch-to-configuration %s", ch, p.Revision, a.Config.Profile, d.Mode)
	if err := a.System.SetProfile(ctx, a.Config.Profile, d.StorePath); err != nil {
		a.state.Pending = nil
		cs.ETag = ""
		err = fmt.Errorf("set profile: %w", err)
		if serr := a.save(); serr != nil {
			return halted(ResultFailed, err, serr)
		}
		a.report(ctx, status.Failed, err, "")
		return Outcome{Result: ResultFailed, Err: err}
	}
	pd.ProfileSet = true
	if err := a.save(); err != nil {
		return a.undoProfile(ctx, pd, err)
	}
	return a.finish(ctx, etag)
}

// substituters are the configured caches plus the manifest's.
func (a *Agent) substituters(p *manifest.Payload) []string {
	subs := slices.Clone(a.Config.Substituters)
	for _, s := range p.Substituters {
		if !slices.Contains(subs, s) {
			subs = append(subs, s)
		}
	}
	return subs
}

// undoProfile moves the profile back when its move could not be recorded:
// nothing was activated yet, and the state file then says what is true,
// an update that had not started. If this fails too, the next start finds
// the profile moved and finishes the update, as after a crash.
func (a *Agent) undoProfile(ctx context.Context, pd *Pending, saveErr error) Outcome {
	if pd.Previous != "" {
		if err := a.System.SetProfile(ctx, a.Config.Profile, pd.Previous); err != nil {
			a.logf("poll %s: set profile back to %s: %v", pd.Channel, pd.Previous, err)
		}
	}
	return halted(ResultFailed, fmt.Errorf("revision %d not switched to", pd.Revision), saveErr)
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
		if err := a.save(); err != nil {
			return halted(ResultWaitingReboot, nil, err)
		}
		a.logf("poll %s: revision %d installed for the next boot; it is confirmed after that boot", pd.Channel, pd.Revision)
		return a.waitReboot(ctx, pd)
	}
	if err := a.healthCheck(ctx, pd); err != nil {
		return a.rollback(ctx, err, etag)
	}
	out := a.commit(ctx, pd, etag)
	if out.Result == ResultApplied {
		a.maybeReboot(ctx, pd.StorePath)
	}
	return out
}

// commit records a healthy update, then cleans up and reports. A system
// that was marked bad and proved healthy on a retry is no longer bad.
func (a *Agent) commit(ctx context.Context, pd *Pending, etag string) Outcome {
	a.state.Applied = &Applied{Channel: pd.Channel, Revision: pd.Revision, StorePath: pd.StorePath, At: a.now()}
	a.state.Pending = nil
	cs := a.state.channel(pd.Channel)
	cs.ETag = etag
	delete(cs.BadPaths, pd.StorePath)
	if err := a.save(); err != nil {
		return halted(ResultApplied, fmt.Errorf("revision %d is healthy but not recorded; the next start checks it again", pd.Revision), err)
	}
	a.logf("poll %s: revision %d is healthy; now running %s", pd.Channel, pd.Revision, pd.StorePath)
	if err := a.cleanup(ctx); err != nil {
		return halted(ResultApplied, nil, err)
	}
	a.report(ctx, status.UpToDate, nil, "")
	return Outcome{Result: ResultApplied}
}

// interrupted ends a poll that a stop signal (systemctl stop, shutdown) cut
// short in the middle of an update. A failure caused by being stopped says
// nothing about the update, so nothing is marked bad and nothing is rolled
// back: the pending transaction stays in the state file and the next start
// finishes or undoes it (Recover), as after a crash.
func (a *Agent) interrupted(ctx context.Context, pd *Pending, cause error) Outcome {
	err := fmt.Errorf("stopped during the update to revision %d (%v); the next start resumes it", pd.Revision, cause)
	a.logf("poll %s: %v", pd.Channel, err)
	if serr := a.save(); serr != nil {
		return halted(ResultInterrupted, err, serr)
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	a.report(rctx, status.Switching, err, "")
	return Outcome{Result: ResultInterrupted, Err: err}
}

// cleanup keeps small devices from filling up after months of updates:
// old generations go, and the store is collected when space runs low.
// Only a failed save of what it did is an error.
func (a *Agent) cleanup(ctx context.Context) error {
	minFree, _ := ParseSize(a.Config.MinFreeSpace) // checked with the config
	done, err := a.System.Cleanup(ctx, a.Config.Profile, a.Config.KeepGenerations, minFree)
	if err != nil {
		a.logf("cleanup: %v", err)
		return nil
	}
	if done == "" {
		return nil
	}
	a.logf("cleanup: %s", done)
	a.state.Cleanup = fmt.Sprintf("%s (%s)", done, a.now().UTC().Format(time.RFC3339))
	return a.save()
}

// waitReboot reports an installed boot-mode update and applies the reboot
// policy.
func (a *Agent) waitReboot(ctx context.Context, pd *Pending) Outcome {
	a.report(ctx, status.WaitingReboot, nil, fmt.Sprintf("revision %d installed; reboot to activate", pd.Revision))
	a.maybeReboot(ctx, pd.StorePath)
	return Outcome{Result: ResultWaitingReboot}
}

// maybeReboot applies the reboot policy (RebootDecision) to a system that
// needs a reboot to be fully active: a boot-mode update, or a switch that
// changed the kernel, initrd or modules. Never with an unsaved state.
func (a *Agent) maybeReboot(ctx context.Context, storePath string) {
	if a.saveErr != nil {
		return
	}
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

// rollback returns to the previous system and marks the revision and its
// system bad (docs/design.md, Agent steps, step 8): neither is tried again,
// unless a later revision sets retry. If the mark cannot be saved, the
// next start still sees the pending update with its profile moved back,
// and marks it bad then (Recover).
func (a *Agent) rollback(ctx context.Context, reason error, etag string) Outcome {
	pd := a.state.Pending
	if ctx.Err() != nil {
		return a.interrupted(ctx, pd, reason)
	}
	cs := a.state.channel(pd.Channel)
	a.logf("poll %s: revision %d failed: %v; rolling back to %s", pd.Channel, pd.Revision, reason, orNone(pd.Previous))
	cs.markBad(pd.Revision, pd.StorePath, status.Clean(reason.Error(), maxText))
	cs.ETag = etag
	rbErr := a.restore(ctx, pd.Previous)
	a.state.Pending = nil
	res, err := ResultRolledBack, fmt.Errorf("revision %d rolled back: %v", pd.Revision, reason)
	switch {
	case pd.Previous == "":
		res, err = ResultFailed, fmt.Errorf("%v; no previous system to roll back to", reason)
	case rbErr != nil:
		res, err = ResultFailed, fmt.Errorf("%v; ROLLBACK FAILED: %v", reason, rbErr)
		a.logf("poll %s: %v", pd.Channel, err)
	}
	if serr := a.save(); serr != nil {
		return halted(res, err, serr)
	}
	st := status.RolledBack
	if res == ResultFailed {
		st = status.Failed
	}
	a.report(ctx, st, err, "")
	return Outcome{Result: res, Err: err}
}

// restore points the profile at the previous system and activates it.
func (a *Agent) restore(ctx context.Context, previous string) error {
	if previous == "" {
		return nil
	}
	if err := a.System.SetProfile(ctx, a.Config.Profile, previous); err != nil {
		return fmt.Errorf("set profile back: %w", err)
	}
	if err := a.System.Switch(ctx, previous, manifest.SwitchNow); err != nil {
		return fmt.Errorf("switch back: %w", err)
	}
	return nil
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
		return fmt.Errorf("health check %q: %v: %s", command, err, status.Clean(lastBytes(out.String(), 300), maxText))
	}
	return nil
}

// Recover finishes or rolls back an update that a crash, a stop or a
// failed save left pending. It runs before any poll.
func (a *Agent) Recover(ctx context.Context) Outcome {
	if a.saveErr != nil {
		return a.refused(ctx)
	}
	a.statusErr = nil
	return a.settle(ctx, a.recover(ctx))
}

func (a *Agent) recover(ctx context.Context) Outcome {
	pd := a.state.Pending
	if pd == nil {
		return Outcome{Result: ResultIdle}
	}
	a.beforeWork()
	current, err := a.System.ProfileTarget(a.Config.Profile)
	if err != nil {
		return Outcome{Result: ResultFailed, Err: err}
	}
	moved := pd.ProfileSet || pd.Installed
	if moved && current != pd.StorePath && current == pd.Previous && current != "" {
		return a.recordRollback(ctx, pd)
	}
	if pd.Installed {
		return a.confirmBoot(ctx, pd)
	}
	a.logf("recover: found an unfinished update to revision %d (%s), attempt %d", pd.Revision, pd.StorePath, pd.Attempts)
	a.state.channel(pd.Channel).ETag = "" // re-read the manifest on the next poll whatever happens
	if current != pd.StorePath {
		// The profile never moved (or was moved elsewhere by hand):
		// nothing of this update runs. Forget it; the next poll decides.
		a.logf("recover: the profile points at %s; the update had not started", orNone(current))
		a.state.Pending = nil
		if err := a.save(); err != nil {
			return halted(ResultFailed, nil, err)
		}
		return Outcome{Result: ResultIdle}
	}
	if pd.Attempts >= 2 {
		return a.rollback(ctx, fmt.Errorf("the update was interrupted %d times while switching", pd.Attempts), "")
	}
	pd.Attempts++
	if err := a.save(); err != nil {
		return halted(ResultFailed, nil, err)
	}
	a.logf("recover: re-running switch-to-configuration %s for revision %d", pd.Mode, pd.Revision)
	return a.finish(ctx, "")
}

// recordRollback finishes a rollback whose outcome was not saved (or that
// a crash interrupted): the profile moved to the update and is back on the
// previous system, which only a rollback does. The revision is marked bad
// first, durably; then the previous system is activated again, in case
// the rollback's own activation did not complete.
func (a *Agent) recordRollback(ctx context.Context, pd *Pending) Outcome {
	a.logf("recover: revision %d (%s) was rolled back to %s but that was not recorded; marking it bad", pd.Revision, pd.StorePath, pd.Previous)
	reason := fmt.Errorf("revision %d rolled back: the rollback to %s was not recorded before the agent stopped", pd.Revision, pd.Previous)
	cs := a.state.channel(pd.Channel)
	cs.markBad(pd.Revision, pd.StorePath, reason.Error())
	cs.ETag = ""
	a.state.Pending = nil
	if err := a.save(); err != nil {
		return halted(ResultRolledBack, reason, err)
	}
	if err := a.System.Switch(ctx, pd.Previous, manifest.SwitchNow); err != nil {
		err = fmt.Errorf("%v; switch back: %v", reason, err)
		a.report(ctx, status.Failed, err, "")
		return Outcome{Result: ResultFailed, Err: err}
	}
	a.report(ctx, status.RolledBack, reason, "")
	return Outcome{Result: ResultRolledBack, Err: reason}
}

// confirmBoot finishes a boot-mode update: once the device runs it, health
// checks decide between commit and rollback; before that, keep waiting.
func (a *Agent) confirmBoot(ctx context.Context, pd *Pending) Outcome {
	booted, err := a.System.Booted()
	if err != nil {
		return Outcome{Result: ResultFailed, Err: err}
	}
	if booted != pd.StorePath {
		return Outcome{Result: ResultWaitingReboot}
	}
	a.logf("recover: booted into revision %d (%s); checking its health", pd.Revision, pd.StorePath)
	if err := a.healthCheck(ctx, pd); err != nil {
		return a.rollback(ctx, fmt.Errorf("after booting it: %w", err), pd.ETag)
	}
	return a.commit(ctx, pd, pd.ETag)
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

func lastBytes(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}
