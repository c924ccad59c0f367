package dashboard_test

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/nix-ota/nix-ota/bucket"
	"github.com/nix-ota/nix-ota/bucket/s3store"
	dashboard "github.com/nix-ota/nix-ota/dashboard-static"
	"github.com/nix-ota/nix-ota/internal/testenv"
	"github.com/nix-ota/nix-ota/manifest"
	"github.com/nix-ota/nix-ota/status"
)

var update = flag.Bool("update", false, "rewrite golden files")

func TestMain(m *testing.M) { testenv.Main(m) }

var (
	now = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	spA = "/nix/store/0c5lq2n9xqbq6yv5q9r1lxg7b8c7wjsz-nixos-system-kiosk-2.2"
	spB = "/nix/store/1m8v1fvjz0w4mkrq3p5kqk3n2b9ffx6l-nixos-system-kiosk-2.3"
)

// xss is put into every string a device controls.
const xss = `<script>document.body.setAttribute('data-pwned','1')</script><img src=x onerror="document.body.setAttribute('data-pwned','2')">"'&`

func blob(t testing.TB, s status.Status) []byte {
	if s.HeartbeatSeconds == 0 {
		s.HeartbeatSeconds = 900
	}
	if s.CheckedAt.IsZero() {
		s.CheckedAt = now.Add(-2 * time.Minute)
	}
	s.ChangedAt = s.CheckedAt
	return testenv.MustJSON(t, s)
}

// fixture fills a store with two channels and a device in every state.
func fixture(t testing.TB, st bucket.Store) {
	ctx := context.Background()
	s, _ := testenv.NewSigner(t, "fleet-1")
	p := testenv.Payload("prod", 0, spA)
	p.PublishedAt, p.ExpiresAt = now.Add(-48*time.Hour), now.Add(-47*time.Hour+720*time.Hour)
	testenv.Publish(t, st, s, p)
	p = testenv.Payload("prod", 0, spB)
	p.PublishedAt, p.ExpiresAt, p.Message = now.Add(-3*time.Hour), now.Add(72*time.Hour), "kiosk 2.3 "+xss
	testenv.Publish(t, st, s, p)
	q := testenv.Payload("canary", 0, spB)
	q.PublishedAt, q.ExpiresAt = now.Add(-time.Hour), now.Add(30*24*time.Hour)
	testenv.Publish(t, st, s, q)

	put := func(id string, b []byte) {
		if _, err := bucket.PutBytes(ctx, st, bucket.StatusKey(id), b, bucket.PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	put("kiosk-01", blob(t, status.Status{DeviceID: "kiosk-01", Channel: "prod", State: status.UpToDate, Revision: 2, StorePath: spB, AgentVersion: "1.0"}))
	put("kiosk-02", blob(t, status.Status{DeviceID: "kiosk-02", Channel: "prod", State: status.UpToDate, Revision: 1, StorePath: spA, AgentVersion: "1.0", Note: "revision 2 is rolling out to 50% of devices, not this one yet"}))
	put("kiosk-03", blob(t, status.Status{DeviceID: "kiosk-03", Channel: "prod", State: status.Failed, Revision: 1, StorePath: spA, LastError: "fetch closure of revision 2: nix-store: exit status 1", Attempted: 2}))
	put("kiosk-04", blob(t, status.Status{DeviceID: "kiosk-04", Channel: "prod", State: status.RolledBack, Revision: 1, StorePath: spA, LastError: `revision 2 rolled back: health check "curl localhost": exit status 7`, Attempted: 2}))
	put("kiosk-05", blob(t, status.Status{DeviceID: "kiosk-05", Channel: "prod", State: status.Rejected, Revision: 2, StorePath: spB, LastError: "signature not trusted: signed by [\"intruder\"]"}))
	put("kiosk-06", blob(t, status.Status{DeviceID: "kiosk-06", Channel: "prod", State: status.UpToDate, Revision: 2, StorePath: spB, CheckedAt: now.Add(-3 * time.Hour)}))
	put("kiosk-07", blob(t, status.Status{DeviceID: "kiosk-07", Channel: "prod", State: status.UpToDate, Revision: 2, StorePath: spB, NeedsReboot: true}))
	put("kiosk-08", blob(t, status.Status{DeviceID: "kiosk-08", Channel: "prod", State: status.Switching, Revision: 1, StorePath: spA, Note: "switching to revision 2"}))
	put("kiosk-09", []byte(`{"deviceId": "kiosk-09", "state": `))                                                       // malformed
	put("kiosk-10", bytes.Repeat([]byte("x"), status.MaxSize+1))                                                        // oversized
	put("kiosk-11", blob(t, status.Status{DeviceID: "kiosk-01", Channel: "prod", State: status.UpToDate, Revision: 2})) // forged id
	put("kiosk-12", blob(t, status.Status{DeviceID: "kiosk-12", Channel: "canary", State: status.WaitingReboot, Revision: 1, StorePath: spB, NeedsReboot: true}))
	put("kiosk-13", blob(t, status.Status{DeviceID: "kiosk-13", Channel: "prod" + xss, Class: xss, State: status.Failed, Revision: 2, StorePath: spB + xss,
		LastError: xss, Note: xss, AgentVersion: xss, BootedStorePath: xss}))
}

func collect(t testing.TB, st bucket.Store) *dashboard.Fleet {
	f, err := dashboard.Collect(context.Background(), st, dashboard.Options{Now: now})
	if err != nil {
		t.Fatal(err)
	}
	f.Bucket = "s3://fleet?endpoint=minio.example.org"
	return f
}

func fileStore(t testing.TB) bucket.Store {
	st, err := bucket.Open("file://"+filepath.Join(t.TempDir(), "b"), bucket.Options{Create: true})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func TestCollect(t *testing.T) {
	m := testenv.SharedMinIO(t)
	_, url := m.NewBucket(t)
	s3, err := s3store.Open(url, bucket.Options{}, m.Creds())
	if err != nil {
		t.Fatal(err)
	}
	for name, st := range map[string]bucket.Store{"file": fileStore(t), "minio": s3} {
		t.Run(name, func(t *testing.T) {
			fixture(t, st)
			f := collect(t, st)
			c := f.Counts
			want := dashboard.Counts{Devices: 13, UpToDate: 2, Behind: 1, Updating: 2, Failed: 4, Offline: 1, NeedsReboot: 2, Invalid: 3}
			if c != want {
				t.Fatalf("counts %+v\nwant   %+v", c, want)
			}
			states := map[string]string{}
			for _, d := range f.Devices {
				states[d.ID] = d.State
			}
			for id, st := range map[string]string{"kiosk-02": "behind", "kiosk-06": "offline", "kiosk-09": "invalid", "kiosk-10": "invalid", "kiosk-11": "invalid", "kiosk-04": "rolled-back"} {
				if states[id] != st {
					t.Errorf("%s: %s, want %s", id, states[id], st)
				}
			}
			if f.Devices[0].State != dashboard.Invalid || f.Devices[len(f.Devices)-1].State != status.UpToDate {
				t.Errorf("not sorted problems first: %s ... %s", f.Devices[0].State, f.Devices[len(f.Devices)-1].State)
			}
			var prod dashboard.Channel
			for _, ch := range f.Channels {
				if ch.Name == "prod" {
					prod = ch
				}
			}
			if prod.Revision != 2 || prod.Devices != 8 || prod.Current != 4 || prod.FailedN != 2 || prod.BehindN != 2 || prod.Problem == "" {
				t.Errorf("prod: %+v", prod)
			}
			// One LIST per prefix, one GET per channel and per device.
			if f.Requests != 2+2+13 {
				t.Errorf("%d requests, want %d", f.Requests, 2+2+13)
			}
		})
	}
}

func TestGolden(t *testing.T) {
	st := fileStore(t)
	fixture(t, st)
	html, err := dashboard.HTML(collect(t, st))
	if err != nil {
		t.Fatal(err)
	}
	golden := filepath.Join("testdata", "fleet.golden.html")
	if *update {
		os.MkdirAll("testdata", 0o755)
		if err := os.WriteFile(golden, html, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test ./dashboard-static -run TestGolden -update)", err)
	}
	if !bytes.Equal(html, want) {
		t.Fatalf("HTML differs from %s; if the change is intended: go test ./dashboard-static -run TestGolden -update", golden)
	}
	for _, forbidden := range []string{"<script", "<img", "http://", "https://", "@import", "url("} {
		if bytes.Contains(bytes.ToLower(html), []byte(forbidden)) {
			t.Errorf("page contains %q: not self-contained or not escaped", forbidden)
		}
	}
}

func chromium(t *testing.T) string {
	for _, c := range []string{os.Getenv("NIX_OTA_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"} {
		if c == "" {
			continue
		}
		if p, err := exec.LookPath(c); err == nil {
			return p
		}
	}
	t.Fatal("headless Chromium is required for this test: run `make test-deps` (installs Debian's chromium)")
	return ""
}

func headless(t *testing.T, bin string, args ...string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	base := []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
		"--disable-sync", "--no-first-run", "--disable-quic", "--user-data-dir=" + t.TempDir()}
	cmd := exec.CommandContext(ctx, bin, append(base, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("chromium %v: %v\n%s", args, err, errb.String())
	}
	return out.String()
}

// TestChromium renders the fleet in real headless Chromium: the counts and
// rows are in the DOM, no injected script ran, and a screenshot is kept.
func TestChromium(t *testing.T) {
	bin := chromium(t)
	dir := t.TempDir()

	// Control: this Chromium does run inline script from file:// pages, so
	// the absence of its effect below means something.
	control := filepath.Join(dir, "control.html")
	os.WriteFile(control, []byte(`<html><body><script>document.body.setAttribute('data-pwned','1')</script></body></html>`), 0o644)
	if dom := headless(t, bin, "--dump-dom", "file://"+control); !strings.Contains(dom, `data-pwned="1"`) {
		t.Fatalf("control page: script did not run, the check below would prove nothing:\n%s", dom)
	}

	st := fileStore(t)
	fixture(t, st)
	html, err := dashboard.HTML(collect(t, st))
	if err != nil {
		t.Fatal(err)
	}
	page := filepath.Join(dir, "index.html")
	os.WriteFile(page, html, 0o644)
	dom := headless(t, bin, "--dump-dom", "file://"+page)
	if strings.Contains(dom, "data-pwned=") || strings.Contains(dom, "<script") || strings.Contains(dom, "<img") {
		t.Fatalf("injected markup became live in the DOM")
	}
	if n := strings.Count(dom, `<tr class="device"`); n != 13 {
		t.Fatalf("%d device rows in the DOM, want 13", n)
	}
	if n := strings.Count(dom, `<tr class="channel"`); n != 2 {
		t.Fatalf("%d channel rows, want 2", n)
	}
	for id, n := range map[string]string{"c-devices": "13", "c-failed": "4", "c-offline": "1", "c-invalid": "3", "c-behind": "1", "c-needs-reboot": "2"} {
		re := regexp.MustCompile(`id="` + id + `"><b>(\d+)</b>`)
		m := re.FindStringSubmatch(dom)
		if m == nil || m[1] != n {
			t.Errorf("count %s = %v, want %s", id, m, n)
		}
	}
	if !strings.Contains(dom, "&lt;script&gt;document.body.setAttribute") {
		t.Fatal("the device's text is not shown (escaped) at all")
	}
	for _, state := range []string{"up to date", "behind", "failed", "rolled back", "rejected", "offline", "invalid", "switching", "waiting for reboot"} {
		if !strings.Contains(dom, ">"+state+"</span>") {
			t.Errorf("state word %q not in the page", state)
		}
	}

	artifacts := filepath.Join(testenv.RepoRoot(), "test-artifacts")
	os.MkdirAll(artifacts, 0o755)
	for _, size := range []string{"1400,1100", "420,900"} {
		shot := filepath.Join(artifacts, fmt.Sprintf("dashboard-%s.png", strings.Replace(size, ",", "x", 1)))
		headless(t, bin, "--screenshot="+shot, "--window-size="+size, "--hide-scrollbars", "file://"+page)
		if fi, err := os.Stat(shot); err != nil || fi.Size() < 10000 {
			t.Fatalf("screenshot %s: %v", shot, err)
		}
		t.Logf("screenshot: %s", shot)
	}
}

// TestVerifiedChannels marks a channel whose signature does not verify.
func TestVerifiedChannels(t *testing.T) {
	st := fileStore(t)
	fixture(t, st)
	_, pub := testenv.NewSigner(t, "other")
	f, err := dashboard.Collect(context.Background(), st, dashboard.Options{Now: now, Trust: &manifest.Trust{Keys: []manifest.PublicKey{pub}}})
	if err != nil {
		t.Fatal(err)
	}
	for _, ch := range f.Channels {
		if !strings.HasPrefix(ch.Signature, "REJECTED") {
			t.Errorf("%s: signature %q with an untrusted key", ch.Name, ch.Signature)
		}
	}
}

// TestRowCap: a large fleet's page lists the first MaxRows devices,
// problems first, and says how many it left out; the JSON has them all.
func TestRowCap(t *testing.T) {
	f := &dashboard.Fleet{GeneratedAt: now}
	for i := range dashboard.MaxRows + 500 {
		state := status.UpToDate
		if i%1000 == 999 {
			state = status.Failed
		}
		f.Devices = append(f.Devices, dashboard.Device{ID: fmt.Sprintf("d%05d", i), State: state})
	}
	// Problems first, as Collect sorts them.
	sort.SliceStable(f.Devices, func(i, j int) bool { return f.Devices[i].State == status.Failed && f.Devices[j].State != status.Failed })
	html, err := dashboard.HTML(f)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(html), `<tr class="device"`); n != dashboard.MaxRows {
		t.Fatalf("%d rows, want %d", n, dashboard.MaxRows)
	}
	if !strings.Contains(string(html), "500 more devices") || !strings.Contains(string(html), `data-device="d00999"`) {
		t.Fatal("the cap hid a failed device or did not say what it left out")
	}
	js, _ := dashboard.JSON(f)
	if n := strings.Count(string(js), `"id":`); n != dashboard.MaxRows+500 {
		t.Fatalf("dashboard.json has %d devices", n)
	}
}
