package agent

import (
	"context"
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
func (f *fakeSystem) Booted() (string, error)          { return "", nil }
func (f *fakeSystem) NeedsReboot(string) (bool, error) { return f.needsReboot, nil }
func (f *fakeSystem) Reboot(ctx context.Context) error { f.reboots++; return nil }

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
