package cli_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nix-ota/nix-ota/bucket"
	"github.com/nix-ota/nix-ota/internal/testenv"
	"github.com/nix-ota/nix-ota/status"
)

func writeStatus(t *testing.T, s bucket.Store, st status.Status) {
	t.Helper()
	st.ChangedAt, st.HeartbeatSeconds = time.Now().UTC(), 900
	b, _ := json.Marshal(st)
	testenv.PutCheckin(t, s, st.DeviceID, time.Now(), b)
}

// TestStatusAndDashboard: publish regenerates the dashboard in the bucket;
// status prints the fleet with device text stripped of control characters;
// dashboard --out writes a directory.
func TestStatusAndDashboard(t *testing.T) {
	for name, mk := range fixtures(t) {
		t.Run(name, func(t *testing.T) {
			f := mk(t)
			key, _ := keygen(t, "fleet-1")
			sp := storePath("system-a")
			mustRun(t, f.env, "publish", "--skip-closure-check", "--bucket", f.url, "--key", key, "--channel", "prod", "--store-path", sp)
			page := getObj(t, f.store, "index.html")
			if !strings.Contains(string(page), "<title>nix-ota fleet: 0 devices") {
				t.Fatalf("publish did not write the dashboard:\n%.300s", page)
			}
			writeStatus(t, f.store, status.Status{DeviceID: "kiosk-1", Channel: "prod", State: status.UpToDate, Revision: 1, StorePath: sp})
			writeStatus(t, f.store, status.Status{DeviceID: "kiosk-2", Channel: "prod", State: status.Failed, Revision: 0, LastError: "boom\x1b[31mRED\x1b]0;title\x07"})
			out := mustRun(t, f.env, "status", "--bucket", f.url)
			if strings.ContainsAny(out, "\x1b\x07") {
				t.Fatalf("control characters from a device reached the terminal: %q", out)
			}
			if !strings.Contains(out, "kiosk-2") || !strings.Contains(out, "failed") || !strings.Contains(out, "1/2 current") {
				t.Fatalf("status:\n%s", out)
			}
			js := mustRun(t, f.env, "status", "--bucket", f.url, "--json", "--channel", "prod")
			var fleet struct {
				Counts struct{ Devices, Failed int }
			}
			if err := json.Unmarshal([]byte(js), &fleet); err != nil || fleet.Counts.Devices != 2 || fleet.Counts.Failed != 1 {
				t.Fatalf("status --json: %v %s", err, js)
			}
			dir := filepath.Join(t.TempDir(), "site")
			mustRun(t, f.env, "dashboard", "--bucket", f.url, "--out", dir)
			html, err := os.ReadFile(filepath.Join(dir, "index.html"))
			if err != nil || !strings.Contains(string(html), `data-device="kiosk-2"`) {
				t.Fatalf("dashboard --out: %v", err)
			}
			if _, err := os.Stat(filepath.Join(dir, "dashboard.json")); err != nil {
				t.Fatal(err)
			}
			mustRun(t, f.env, "dashboard", "--bucket", f.url)
			if !strings.Contains(string(getObj(t, f.store, "index.html")), "2 devices") {
				t.Fatal("dashboard did not update the bucket's page")
			}
		})
	}
}

// TestPublishWait: publish --wait follows the rollout and gates on it.
func TestPublishWait(t *testing.T) {
	f := fixtures(t)["file"](t)
	key, _ := keygen(t, "fleet-1")
	sp1, sp2 := storePath("system-a"), storePath("system-b")
	wait := func(sp string, extra ...string) (*exec.Cmd, *strings.Builder) {
		args := append([]string{"publish", "--skip-closure-check", "--bucket", f.url, "--key", key, "--channel", "prod", "--store-path", sp, "--wait-interval", "200ms"}, extra...)
		cmd := exec.Command(nixOta, args...)
		cmd.Env = append(os.Environ(), "AWS_EC2_METADATA_DISABLED=true")
		var se strings.Builder
		cmd.Stderr = &se
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd, &se
	}
	exitOf := func(cmd *exec.Cmd) int {
		err := cmd.Wait()
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode()
		}
		if err != nil {
			t.Fatal(err)
		}
		return 0
	}
	// Two devices: pending until both report revision 1.
	writeStatus(t, f.store, status.Status{DeviceID: "d1", Channel: "prod", State: status.UpToDate})
	writeStatus(t, f.store, status.Status{DeviceID: "d2", Channel: "prod", State: status.UpToDate})
	cmd, se := wait(sp1, "--wait=30s")
	time.Sleep(700 * time.Millisecond)
	writeStatus(t, f.store, status.Status{DeviceID: "d1", Channel: "prod", State: status.UpToDate, Revision: 1, StorePath: sp1})
	time.Sleep(500 * time.Millisecond)
	writeStatus(t, f.store, status.Status{DeviceID: "d2", Channel: "prod", State: status.UpToDate, Revision: 1, StorePath: sp1})
	if code := exitOf(cmd); code != 0 || !strings.Contains(se.String(), "2 of 2 cohort devices done, 0 failed, 0 pending") || !strings.Contains(se.String(), "1 of 2 cohort devices done, 0 failed, 1 pending") {
		t.Fatalf("wait for a healthy rollout: exit %d\n%s", code, se)
	}
	// A device rolls the new revision back: the publish fails.
	cmd, se = wait(sp2, "--wait=30s")
	time.Sleep(500 * time.Millisecond)
	writeStatus(t, f.store, status.Status{DeviceID: "d1", Channel: "prod", State: status.RolledBack, Revision: 1, Attempted: 2, LastError: "revision 2 rolled back: health check failed"})
	if code := exitOf(cmd); code != 1 || !strings.Contains(se.String(), "d1 (rolled-back") {
		t.Fatalf("wait for a failing rollout: exit %d\n%s", code, se)
	}
	// Devices that do not move: not confirmed.
	cmd, se = wait(sp1, "--wait=1s")
	if code := exitOf(cmd); code != 1 || !strings.Contains(se.String(), "not confirmed") || !strings.Contains(se.String(), "2 pending") {
		t.Fatalf("wait timeout: exit %d\n%s", code, se)
	}
	// A channel no device follows: a gate that checked nothing fails...
	args := []string{"publish", "--skip-closure-check", "--bucket", f.url, "--key", key, "--channel", "empty", "--store-path", sp1, "--wait=1s", "--wait-interval", "200ms"}
	if r := run(t, nil, args...); r.code != 1 || !strings.Contains(r.stderr, "only 0 cohort device(s) reported done") || !strings.Contains(r.stderr, "--allow-empty") {
		t.Fatalf("wait with nobody reporting: exit %d\n%s", r.code, r.stderr)
	}
	// ...unless the operator says an empty cohort is fine.
	if r := run(t, nil, append(args, "--allow-empty")...); r.code != 0 {
		t.Fatalf("--allow-empty: exit %d\n%s", r.code, r.stderr)
	}
}

// TestForget: a forgotten device leaves status and the dashboard at once,
// on file:// and MinIO, and forget --json says what it did.
func TestForget(t *testing.T) {
	for name, mk := range fixtures(t) {
		t.Run(name, func(t *testing.T) {
			f := mk(t)
			for _, id := range []string{"kiosk-1", "kiosk-2"} {
				writeStatus(t, f.store, status.Status{DeviceID: id, Channel: "prod", State: status.UpToDate, Revision: 1})
			}
			var dash struct{ Devices int }
			if out := mustRun(t, f.env, "dashboard", "--bucket", f.url, "--out", t.TempDir(), "--json"); json.Unmarshal([]byte(out), &dash) != nil || dash.Devices != 2 {
				t.Fatalf("before: %s", out)
			}
			var res struct {
				Forgotten []string `json:"forgotten"`
				Deleted   int      `json:"deletedCheckins"`
			}
			if err := json.Unmarshal([]byte(mustRun(t, f.env, "forget", "--bucket", f.url, "--json", "kiosk-2")), &res); err != nil || res.Deleted != 1 || len(res.Forgotten) != 1 {
				t.Fatalf("forget --json: %+v %v", res, err)
			}
			out := mustRun(t, f.env, "status", "--bucket", f.url, "--json")
			if !strings.Contains(out, `"kiosk-1"`) || strings.Contains(out, `"kiosk-2"`) {
				t.Fatalf("status after forget:\n%.600s", out)
			}
			if r := run(t, f.env, "forget", "--bucket", f.url, "bad id"); r.code != 2 {
				t.Fatalf("forget of an invalid id: exit %d", r.code)
			}
		})
	}
}
