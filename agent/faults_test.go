package agent_test

// Fault injection with real parts: MinIO behind a fault proxy, real Nix,
// the real agent binary. After every fault the device is on a good system,
// its state is consistent, its status truthful, and the bucket unchanged
// by anything half-done.

import (
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nix-ota/nix-ota/agent"
	"github.com/nix-ota/nix-ota/internal/testenv"
	"github.com/nix-ota/nix-ota/status"
)

// consistent checks the state file after a fault: no update left pending,
// and the profile is the system the state says it applied.
func consistent(t *testing.T, d *device, want string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(d.stateDir, "state.json"))
	if err != nil {
		t.Fatal(err)
	}
	var st struct {
		Pending *json.RawMessage
		Applied *struct{ StorePath string }
	}
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatal(err)
	}
	if st.Pending != nil {
		t.Fatalf("an update is still pending:\n%s", b)
	}
	if d.current(t) != want {
		t.Fatalf("profile -> %s, want %s", d.current(t), want)
	}
	if st.Applied != nil && st.Applied.StorePath != want {
		t.Fatalf("state says %s is applied, the profile runs %s", st.Applied.StorePath, want)
	}
}

func TestFaults(t *testing.T) {
	f := newFleet(t, "minio")
	px := f.viaProxy(t)
	d := f.device(t, "kiosk-1")
	f.publish(t, f.a)
	d.mustOnce(t, 0)
	consistent(t, d, f.a)

	t.Run("bucket down during poll", func(t *testing.T) {
		f.publish(t, f.b)
		px.Set(testenv.Down, nil)
		r := d.mustOnce(t, 1)
		px.Set(testenv.Pass, nil)
		consistent(t, d, f.a)
		if st := d.localStatus(t); !strings.Contains(st.LastError, "unreachable") || st.StorePath != f.a {
			t.Fatalf("status: %+v\n%s", st, r.stderr)
		}
		d.mustOnce(t, 0)
		consistent(t, d, f.b)
	})

	t.Run("bucket down during closure fetch", func(t *testing.T) {
		f.publish(t, f.c)
		px.Set(testenv.Down, testenv.PathHas("", "/cache/"))
		d.mustOnce(t, 1)
		px.Set(testenv.Pass, nil)
		consistent(t, d, f.b)
		if st := d.remoteStatus(t); st.State != status.Failed || !strings.Contains(st.LastError, "fetch closure") {
			t.Fatalf("status: %+v", st)
		}
		d.mustOnce(t, 0) // not marked bad: fetched and applied now
		consistent(t, d, f.c)
	})

	t.Run("bucket down during status write", func(t *testing.T) {
		f.publish(t, f.d)
		px.Set(testenv.Down, testenv.PathHas("PUT", "/devices/"))
		r := d.mustOnce(t, agent.ExitStatusNotWritten) // the update itself succeeds
		if !strings.Contains(r.stderr, "status: write devices/") || !strings.Contains(r.stderr, "/kiosk-1.json") {
			t.Fatalf("the failed status write is not logged:\n%s", r.stderr)
		}
		px.Set(testenv.Pass, nil)
		consistent(t, d, f.d)
		if st := d.localStatus(t); st.State != status.UpToDate || st.StorePath != f.d {
			t.Fatalf("local status: %+v", st)
		}
		if st := d.remoteStatus(t); st.StorePath == f.d {
			t.Fatal("the remote status was written through a down bucket?")
		}
		d.mustOnce(t, 0) // idle poll: the unwritten status goes out now
		if st := d.remoteStatus(t); st.StorePath != f.d || st.State != status.UpToDate {
			t.Fatalf("remote status not caught up: %+v", st)
		}
	})

	t.Run("MinIO answers 500", func(t *testing.T) {
		f.publish(t, f.a)
		px.Set(testenv.Error500, nil)
		d.mustOnce(t, 1)
		px.Set(testenv.Pass, nil)
		consistent(t, d, f.d)
		d.mustOnce(t, 0)
		consistent(t, d, f.a)
	})

	t.Run("slow responses", func(t *testing.T) {
		f.publish(t, f.b)
		px.Delay = 700 * time.Millisecond
		px.Set(testenv.Slow, nil)
		start := time.Now()
		d.mustOnce(t, 0)
		px.Set(testenv.Pass, nil)
		if time.Since(start) < 700*time.Millisecond {
			t.Fatal("the slow proxy was not in the path")
		}
		consistent(t, d, f.b)
	})

	t.Run("closure missing from the cache", func(t *testing.T) {
		missing := testenv.BuildSystem(t, "never-pushed", testenv.SystemOptions{})
		testenv.Forget(t, missing)
		f.publish(t, missing)
		d.mustOnce(t, 1)
		consistent(t, d, f.b)
		if st := d.remoteStatus(t); st.State != status.Failed || !strings.Contains(st.LastError, "fetch closure") || st.StorePath != f.b {
			t.Fatalf("status: %+v", st)
		}
	})

	t.Run("agent killed while fetching the closure", func(t *testing.T) {
		fresh := f.newSystem(t, "fresh")
		f.publish(t, fresh)
		px.Set(testenv.Hang, testenv.PathHas("GET", "/cache/"))
		cmd := d.start(t)
		px.WaitHanging(t, 60*time.Second)
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
		px.Set(testenv.Pass, nil)
		consistent(t, d, f.b)
		time.Sleep(200 * time.Millisecond) // the orphaned nix-store gives up its lock
		d.mustOnce(t, 0)
		consistent(t, d, fresh)
	})

	t.Run("agent killed during the health check", func(t *testing.T) {
		f.publish(t, f.d)
		hold := filepath.Join(t.TempDir(), "hold")
		os.WriteFile(hold, nil, 0o644)
		check := "n=0; while [ -e " + hold + " ] && [ $n -lt 300 ]; do sleep 0.1; n=$((n+1)); done"
		cmd := d.start(t, "--health-check", check, "--health-timeout", "60s")
		waitFor(t, func() bool { return strings.Contains(lastSwitch(t, d), f.d) })
		time.Sleep(300 * time.Millisecond) // inside the health check now
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
		os.Remove(hold)
		r := d.mustOnce(t, 0, "--health-check", check)
		if !strings.Contains(r.stderr, "recover:") {
			t.Fatalf("no recovery:\n%s", r.stderr)
		}
		consistent(t, d, f.d)
		if st := d.remoteStatus(t); st.State != status.UpToDate || st.StorePath != f.d {
			t.Fatalf("status: %+v", st)
		}
	})

	t.Run("agent killed while writing its status", func(t *testing.T) {
		f.publish(t, f.a)
		px.Set(testenv.Hang, testenv.PathHas("PUT", "/devices/"))
		cmd := d.start(t)
		// The first status write (downloading) hangs: the update has not
		// started. Kill there.
		px.WaitHanging(t, 60*time.Second)
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
		px.Set(testenv.Pass, nil)
		consistent(t, d, f.d)
		d.mustOnce(t, 0)
		consistent(t, d, f.a)
		if st := d.remoteStatus(t); st.StorePath != f.a || st.State != status.UpToDate {
			t.Fatalf("status: %+v", st)
		}
	})

	t.Run("agent killed after recording the update, before the profile moves", func(t *testing.T) {
		fresh := f.newSystem(t, "fresh2")
		f.publish(t, fresh)
		// The second status write of an apply ("switching") comes after the
		// pending record is saved and before the profile is set: hang it.
		var puts atomic.Int32
		px.Set(testenv.Hang, func(r *http.Request) bool {
			return r.Method == "PUT" && strings.Contains(r.URL.Path, "/devices/") && puts.Add(1) == 2
		})
		cmd := d.start(t)
		px.WaitHanging(t, 60*time.Second)
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
		px.Set(testenv.Pass, nil)
		b, _ := os.ReadFile(filepath.Join(d.stateDir, "state.json"))
		if !strings.Contains(string(b), `"pending"`) {
			t.Fatalf("no pending record at the kill point:\n%s", b)
		}
		if d.current(t) != f.a {
			t.Fatal("the profile moved before the kill point")
		}
		r := d.mustOnce(t, 0)
		if !strings.Contains(r.stderr, "the update had not started") {
			t.Fatalf("recovery did not notice:\n%s", r.stderr)
		}
		consistent(t, d, fresh)
	})

	t.Run("state directory full", func(t *testing.T) {
		// The state dir on a tiny tmpfs, filled up.
		small := filepath.Join(t.TempDir(), "small")
		os.MkdirAll(small, 0o755)
		if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", small).CombinedOutput(); err != nil {
			t.Fatalf("mount a small tmpfs for the full-disk test: %v %s", err, out)
		}
		defer exec.Command("umount", "-l", small).Run()
		for _, name := range []string{"state.json", "status.json", "lock", "identity.key"} {
			b, _ := os.ReadFile(filepath.Join(d.stateDir, name))
			os.WriteFile(filepath.Join(small, name), b, 0o600)
		}
		old := d.stateDir
		d.stateDir = small
		defer func() { d.stateDir = old }()
		before := d.current(t)
		filler := filepath.Join(small, "filler")
		exec.Command("dd", "if=/dev/zero", "of="+filler, "bs=4k", "count=1000").Run()
		f.publish(t, f.b)
		d.mustOnce(t, agent.ExitStateNotSaved)
		consistent(t, d, before) // could not record the new revision: did not switch
		if st := d.remoteStatus(t); !strings.Contains(st.LastError, "no space left") {
			t.Fatalf("status does not say why: %+v", st)
		}
		os.Remove(filler)
		d.mustOnce(t, 0)
		consistent(t, d, f.b)
	})
}

// newSystem builds a system, puts it into the fleet's cache (and MinIO's
// cache/), and removes it from the local store.
func (f *fleet) newSystem(t *testing.T, name string) string {
	sp := testenv.BuildSystem(t, name, testenv.SystemOptions{})
	f.cache.Add(t, sp)
	if f.minio != nil {
		testenv.UploadDir(t, f.store, "cache/", f.cache.Dir)
	}
	testenv.Forget(t, sp)
	return sp
}

// start runs `nix-ota-agent once` in the background.
func (d *device) start(t *testing.T, extra ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(agentBin, append(d.args(), extra...)...)
	cmd.Env = append(os.Environ(), "NIX_OTA_TEST_LOG="+d.sw, "AWS_EC2_METADATA_DISABLED=true")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill() })
	return cmd
}

func lastSwitch(t *testing.T, d *device) string {
	s := d.switches(t)
	if len(s) == 0 {
		return ""
	}
	return s[len(s)-1]
}

func waitFor(t *testing.T, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatal("timed out waiting")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestSIGTERMDuringUpdate: stopping the agent (systemctl stop, shutdown)
// while an update's health check runs neither marks the revision bad nor
// strands the device: the next start finishes the transaction.
func TestSIGTERMDuringUpdate(t *testing.T) {
	f := newFleet(t, "file")
	d := f.device(t, "kiosk-1")
	f.publish(t, f.a)
	d.mustOnce(t, 0)
	f.publish(t, f.b)
	marker := filepath.Join(t.TempDir(), "checking")
	cmd := d.start(t, "--health-check", "touch "+marker+"; sleep 30")
	waitFor(t, func() bool { _, err := os.Stat(marker); return err == nil })
	start := time.Now()
	cmd.Process.Signal(syscall.SIGTERM)
	err := cmd.Wait()
	if time.Since(start) > 10*time.Second {
		t.Fatalf("agent took %s to stop", time.Since(start))
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("agent after SIGTERM: %v, want exit code 1 (not killed by the signal)", err)
	}
	if st := d.localStatus(t); st.State != status.Switching || !strings.Contains(st.LastError, "next start resumes it") {
		t.Fatalf("status after SIGTERM: %+v", st)
	}
	if d.current(t) != f.b {
		t.Fatalf("profile moved back to %s; a stop must not roll back", d.current(t))
	}
	// The next start, with a passing health check, completes revision 2
	// (not marked bad, not rolled back).
	d.mustOnce(t, 0)
	expectSwitches(t, d, "switch "+f.a, "switch "+f.b, "switch "+f.b)
	if d.current(t) != f.b {
		t.Fatalf("after restart: on %s, want B", d.current(t))
	}
	if st := d.localStatus(t); st.State != status.UpToDate || st.Revision != 2 {
		t.Fatalf("status %+v", st)
	}
}
