package agent

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"testing"
	"time"

	"github.com/nix-ota/nix-ota/bucket"
	"github.com/nix-ota/nix-ota/internal/testenv"
	"github.com/nix-ota/nix-ota/manifest"
	"github.com/nix-ota/nix-ota/status"
)

// fakeSystem records side effects, for unit tests of the agent's wiring
// that real Nix cannot exercise here (reboots). The same flows run with
// real Nix in e2e_test.go.
type fakeSystem struct {
	profile     string
	switches    []string
	reboots     int
	needsReboot bool
	booted      string
}

func (f *fakeSystem) Realise(context.Context, string, []string, []string) error { return nil }
func (f *fakeSystem) ProfileTarget(string) (string, error)                      { return f.profile, nil }
func (f *fakeSystem) SetProfile(_ context.Context, _, p string) error {
	f.profile = p
	return nil
}
func (f *fakeSystem) Switch(_ context.Context, p, action string) error {
	f.switches = append(f.switches, action+" "+p)
	return nil
}
func (f *fakeSystem) Booted() (string, error)                                      { return f.booted, nil }
func (f *fakeSystem) NeedsReboot(string) (bool, error)                             { return f.needsReboot, nil }
func (f *fakeSystem) Cleanup(context.Context, string, int, uint64) (string, error) { return "", nil }
func (f *fakeSystem) Invalid(context.Context, []string) (map[string]bool, error)   { return nil, nil }
func (f *fakeSystem) NarHash(context.Context, string) (string, error)              { return "", nil }
func (f *fakeSystem) Dump(context.Context, string, io.Writer) error                { return nil }
func (f *fakeSystem) TrustedKeys(context.Context) ([]string, error)                { return nil, nil }
func (f *fakeSystem) Reboot(ctx context.Context) error                             { f.reboots++; return nil }

func TestRebootWiring(t *testing.T) {
	ctx := context.Background()
	s, pub := testenv.NewSigner(t, "k")
	for _, c := range []struct {
		name         string
		mode         string
		needs, allow bool
		window       string
		wantReboots  int
		wantState    string
	}{
		{"boot mode, allowed, any time", manifest.SwitchBoot, false, true, "", 1, status.WaitingReboot},
		{"boot mode, reboots off", manifest.SwitchBoot, false, false, "", 0, status.WaitingReboot},
		{"new kernel by switch, allowed", manifest.SwitchNow, true, true, "", 1, status.UpToDate},
		{"new kernel, outside window", manifest.SwitchNow, true, true, windowExcluding(time.Now()), 0, status.UpToDate},
		{"same kernel", manifest.SwitchNow, false, true, "", 0, status.UpToDate},
	} {
		t.Run(c.name, func(t *testing.T) {
			url := "file://" + filepath.Join(t.TempDir(), "b")
			st, _ := bucket.Open(url, bucket.Options{Create: true})
			p := testenv.Payload("prod", 0, spB)
			p.Switch = c.mode
			testenv.Publish(t, st, s, p)
			cfg := Config{Bucket: url, Channel: "prod", PublicKeys: []string{pub.String()}, DeviceID: "d1",
				StateDir: t.TempDir(), Profile: "/nix/var/nix/profiles/system", AllowReboot: c.allow, RebootWindow: c.window}
			trust, err := cfg.Prepare()
			if err != nil {
				t.Fatal(err)
			}
			sys := &fakeSystem{profile: spA, needsReboot: c.needs}
			a := &Agent{Config: cfg, Trust: trust, Store: st, Status: st, System: sys}
			if err := a.Load(); err != nil {
				t.Fatal(err)
			}
			out := a.Poll(ctx)
			if out.Err != nil || sys.profile != spB {
				t.Fatalf("poll: %+v, profile %s", out, sys.profile)
			}
			if sys.reboots != c.wantReboots || a.state.Status.State != c.wantState {
				t.Fatalf("reboots %d (want %d), state %s (want %s), switches %v", sys.reboots, c.wantReboots, a.state.Status.State, c.wantState, sys.switches)
			}
		})
	}
}

// windowExcluding returns a one-hour window that does not contain t.
func windowExcluding(t time.Time) string {
	h := (t.Local().Hour() + 12) % 24
	return time.Date(0, 1, 1, h, 0, 0, 0, time.UTC).Format("15:04") + "-" + time.Date(0, 1, 1, (h+1)%24, 0, 0, 0, time.UTC).Format("15:04")
}

// TestBootConfirmation: a boot-mode update stays pending until the device
// boots into it; then health checks confirm it or roll it back.
func TestBootConfirmation(t *testing.T) {
	ctx := context.Background()
	s, pub := testenv.NewSigner(t, "k")
	for _, healthy := range []bool{true, false} {
		t.Run(fmt.Sprint("healthy=", healthy), func(t *testing.T) {
			url := "file://" + filepath.Join(t.TempDir(), "b")
			st, _ := bucket.Open(url, bucket.Options{Create: true})
			p := testenv.Payload("prod", 0, spB)
			p.Switch = manifest.SwitchBoot
			testenv.Publish(t, st, s, p)
			check := "true"
			if !healthy {
				check = "exit 1"
			}
			cfg := Config{Bucket: url, Channel: "prod", PublicKeys: []string{pub.String()}, DeviceID: "d1",
				StateDir: t.TempDir(), Profile: "/nix/var/nix/profiles/system", HealthChecks: []string{check}}
			trust, err := cfg.Prepare()
			if err != nil {
				t.Fatal(err)
			}
			sys := &fakeSystem{profile: spA, booted: spA}
			newAgent := func() *Agent {
				a := &Agent{Config: cfg, Trust: trust, Store: st, Status: st, System: sys}
				if err := a.Load(); err != nil {
					t.Fatal(err)
				}
				return a
			}
			a := newAgent()
			a.Recover(ctx)
			if out := a.Poll(ctx); out.Result != ResultWaitingReboot || a.state.Pending == nil || !a.state.Pending.Installed {
				t.Fatalf("first poll: %+v pending %+v", out, a.state.Pending)
			}
			// Not rebooted yet: the next run keeps waiting, switches nothing.
			a = newAgent()
			if out := a.Recover(ctx); out.Result != ResultWaitingReboot {
				t.Fatalf("recover before reboot: %+v", out)
			}
			forget(a)
			if out := a.Poll(ctx); out.Result != ResultWaitingReboot || len(sys.switches) != 1 {
				t.Fatalf("poll before reboot: %+v, switches %v", out, sys.switches)
			}
			// The device reboots into B.
			sys.booted = spB
			a = newAgent()
			out := a.Recover(ctx)
			if healthy {
				if out.Result != ResultApplied || a.state.Pending != nil || a.state.Applied.StorePath != spB || a.state.Status.State != status.UpToDate {
					t.Fatalf("healthy boot: %+v %+v", out, a.state)
				}
				return
			}
			if out.Result != ResultRolledBack || sys.profile != spA || a.state.Pending != nil || a.state.Status.State != status.RolledBack {
				t.Fatalf("unhealthy boot: %+v profile %s state %+v", out, sys.profile, a.state.Status)
			}
			if sys.switches[len(sys.switches)-1] != "switch "+spA {
				t.Fatalf("switches %v", sys.switches)
			}
		})
	}
}

// forget drops the remembered ETag so the next poll re-reads the manifest.
func forget(a *Agent) { a.state.channel("prod").ETag = "" }
