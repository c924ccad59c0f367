package agent_test

// A state directory that turns read-only or full at the two saves that
// matter most, with real mounts, real Nix and the real agent binary: the
// commit of a healthy update, and the rollback that marks a revision bad.

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nix-ota/nix-ota/agent"
	"github.com/nix-ota/nix-ota/status"
)

// stateFault breaks and heals a device's state directory. The break runs
// as the update's health check, so it happens after the switch and before
// the save that commits or rolls back.
type stateFault struct {
	name    string
	prepare func(t *testing.T, dir string) // before the device's first poll
	breaks  func(dir string) string        // shell command that breaks dir
	heal    func(t *testing.T, dir string)
	reason  string // what the error says
	daemon  bool   // run the faulted poll under `daemon`, which must stop too
}

var stateFaults = []stateFault{
	{
		// A read-only bind mount of the directory over itself. The agent
		// holds its lock file open on the writable mount below, so only
		// new opens (the state file's temporary file) see the read-only one.
		name:    "read-only",
		prepare: func(t *testing.T, dir string) {},
		breaks: func(dir string) string {
			return "mount --bind " + dir + " " + dir + " && mount -o remount,bind,ro " + dir
		},
		heal:   func(t *testing.T, dir string) { mustRun(t, "umount", dir) },
		reason: "read-only file system",
	},
	{
		// The directory is a small tmpfs, filled up.
		name: "full",
		prepare: func(t *testing.T, dir string) {
			mustRun(t, "mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", dir)
		},
		breaks: func(dir string) string {
			return "dd if=/dev/zero of=" + filepath.Join(dir, "filler") + " bs=4k 2>/dev/null; true"
		},
		heal:   func(t *testing.T, dir string) { mustRemove(t, filepath.Join(dir, "filler")) },
		reason: "no space left on device",
		daemon: true,
	},
}

func mustRun(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v %s", name, strings.Join(args, " "), err, out)
	}
}

func mustRemove(t *testing.T, path string) {
	t.Helper()
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
}

// stateDevice is a device whose state directory exists before its first
// poll, prepared for fault, and unmounted at the end.
func stateDevice(t *testing.T, f *fleet, fault stateFault) *device {
	d := f.device(t, "kiosk-"+fault.name)
	if err := os.MkdirAll(d.stateDir, 0o700); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for exec.Command("umount", d.stateDir).Run() == nil {
		}
	})
	fault.prepare(t, d.stateDir)
	return d
}

// faulted runs the poll whose health check breaks the state directory, as
// `once` or `daemon`, and checks it ends with ExitStateNotSaved and says
// why on stderr and in the status.
func faulted(t *testing.T, d *device, fault stateFault, check string) {
	t.Helper()
	args := []string{"--health-check", check}
	r := d.runMode(t, fault.daemon, args...)
	if r.code != agent.ExitStateNotSaved {
		t.Fatalf("agent with a %s state directory: exit %d, want %d (ExitStateNotSaved)\n%s", fault.name, r.code, agent.ExitStateNotSaved, r.stderr)
	}
	if !strings.Contains(r.stderr, "state: state not saved: ") || !strings.Contains(r.stderr, fault.reason) || !strings.Contains(r.stderr, "the agent stops") {
		t.Fatalf("stderr does not say the state was not saved and why:\n%s", r.stderr)
	}
	if st := d.remoteStatus(t); st.State != status.Failed || !strings.Contains(st.LastError, "state not saved") || !strings.Contains(st.LastError, fault.reason) {
		t.Fatalf("status does not say the state was not saved: %+v", st)
	}
}

// runMode runs `once`, or `daemon` until it stops by itself.
func (d *device) runMode(t *testing.T, daemon bool, extra ...string) run {
	t.Helper()
	if !daemon {
		return d.once(t, extra...)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	args := append(d.args(), "--interval", "1s", "--jitter", "100ms")
	args[0] = "daemon"
	cmd := exec.CommandContext(ctx, agentBin, append(args, extra...)...)
	cmd.Env = append(os.Environ(), "NIX_OTA_TEST_LOG="+d.sw)
	var se strings.Builder
	cmd.Stderr = &se
	err := cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("daemon: %v, want it to stop with an exit code\n%s", err, se.String())
	}
	return run{code: ee.ExitCode(), stderr: se.String()}
}

// stillBroken polls while the directory is still broken: the agent must
// exit non-zero and switch nothing.
func stillBroken(t *testing.T, d *device, fault stateFault, switches []string) {
	t.Helper()
	r := d.once(t)
	if r.code == 0 || !strings.Contains(r.stderr, fault.reason) {
		t.Fatalf("poll with the state directory still %s: exit %d\n%s", fault.name, r.code, r.stderr)
	}
	expectSwitches(t, d, switches...)
}

func badRevisions(t *testing.T, d *device) map[string]string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(d.stateDir, "state.json"))
	if err != nil {
		t.Fatal(err)
	}
	var st struct {
		Channels map[string]struct{ Bad, BadPaths map[string]string }
	}
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatal(err)
	}
	return st.Channels["prod"].BadPaths
}

// TestStateNotSaved: when the commit or the rollback cannot be saved, the
// agent exits with ExitStateNotSaved, says why on stderr and in the
// status, does nothing more while the directory stays broken, and once it
// is writable again finishes from the last saved state: a healthy update
// is checked again and committed; a rolled-back revision is marked bad
// and never applied again, not even republished under a new revision.
func TestStateNotSaved(t *testing.T) {
	f := newFleet(t, "file")
	for _, fault := range stateFaults {
		t.Run(fault.name+"/commit", func(t *testing.T) {
			d := stateDevice(t, f, fault)
			f.publish(t, f.a)
			d.mustOnce(t, 0)
			f.publish(t, f.b)
			faulted(t, d, fault, fault.breaks(d.stateDir))
			if d.current(t) != f.b {
				t.Fatalf("profile -> %s after a healthy update, want B", d.current(t))
			}
			stillBroken(t, d, fault, []string{"switch " + f.a, "switch " + f.b})
			fault.heal(t, d.stateDir)
			r := d.mustOnce(t, 0)
			if !strings.Contains(r.stderr, "recover: re-running switch-to-configuration switch for revision") {
				t.Fatalf("the unrecorded update was not checked again:\n%s", r.stderr)
			}
			consistent(t, d, f.b)
			expectSwitches(t, d, "switch "+f.a, "switch "+f.b, "switch "+f.b)
			if st := d.remoteStatus(t); st.State != status.UpToDate || st.StorePath != f.b || st.LastError != "" {
				t.Fatalf("status after healing: %+v", st)
			}
		})
		t.Run(fault.name+"/rollback", func(t *testing.T) {
			d := stateDevice(t, f, fault)
			f.publish(t, f.a)
			d.mustOnce(t, 0)
			f.publish(t, f.c)
			faulted(t, d, fault, fault.breaks(d.stateDir)+"; echo broken >&2; exit 1")
			want := []string{"switch " + f.a, "switch " + f.c, "switch " + f.a}
			expectSwitches(t, d, want...)
			if d.current(t) != f.a {
				t.Fatalf("not rolled back: profile -> %s", d.current(t))
			}
			stillBroken(t, d, fault, want)
			fault.heal(t, d.stateDir)
			// The next start finds the rollback unrecorded: it marks C bad,
			// activates A again (the rollback's activation may not have
			// finished), and the poll skips C.
			r := d.mustOnce(t, 0)
			if !strings.Contains(r.stderr, "was rolled back to "+f.a+" but that was not recorded; marking it bad") {
				t.Fatalf("the unrecorded rollback was not noticed:\n%s", r.stderr)
			}
			want = append(want, "switch "+f.a)
			expectSwitches(t, d, want...)
			consistent(t, d, f.a)
			if _, ok := badRevisions(t, d)[f.c]; !ok {
				t.Fatalf("C is not marked bad: %v", badRevisions(t, d))
			}
			if st := d.remoteStatus(t); st.State != status.RolledBack || !strings.Contains(st.LastError, "rolled back") {
				t.Fatalf("status after healing: %+v", st)
			}
			// Never again: not at the next polls, not republished.
			d.mustOnce(t, 0)
			f.publish(t, f.c)
			d.mustOnce(t, 0)
			d.mustOnce(t, 0)
			expectSwitches(t, d, want...)
			consistent(t, d, f.a)
		})
	}
}
