package dashboard_test

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/nix-ota/nix-ota/bucket"
	"github.com/nix-ota/nix-ota/bucket/s3store"
	"github.com/nix-ota/nix-ota/channel"
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

// blob is a status as an agent writes it to the bucket: without its
// check-in time, which is the object's.
func blob(t testing.TB, s status.Status) []byte {
	if s.HeartbeatSeconds == 0 {
		s.HeartbeatSeconds = 900
	}
	s.ChangedAt = checkedAt(s)
	s.CheckedAt = time.Time{}
	return testenv.MustJSON(t, s)
}

// checkedAt is when a fixture's device checked in: its CheckedAt, or two
// minutes before now.
func checkedAt(s status.Status) time.Time {
	if s.CheckedAt.IsZero() {
		return now.Add(-2 * time.Minute)
	}
	return s.CheckedAt
}

// readNow is the time a test reads a fixture at: now on file:// buckets,
// whose check-ins the fixture dates; the real time on MinIO, which dates
// them itself (a fixture device that must look offline there has a short
// heartbeat).
func readNow(st bucket.Store) time.Time {
	if strings.HasPrefix(st.String(), "file://") {
		return now
	}
	return time.Now().Add(5 * time.Second)
}

// fixture fills a store with two channels and a device in every state; it
// returns the trust that verifies the channels.
func fixture(t testing.TB, st bucket.Store) manifest.Trust {
	ctx := context.Background()
	s, pub := testenv.NewSigner(t, "fleet-1")
	p := testenv.Payload("prod", 0, spA)
	p.PublishedAt, p.ExpiresAt = now.Add(-48*time.Hour), now.Add(-47*time.Hour+720*time.Hour)
	testenv.Publish(t, st, s, p)
	p = testenv.Payload("prod", 0, spB)
	p.PublishedAt, p.ExpiresAt, p.Message = now.Add(-3*time.Hour), now.Add(72*time.Hour), "kiosk 2.3 "+xss
	testenv.Publish(t, st, s, p)
	q := testenv.Payload("canary", 0, spB)
	q.PublishedAt, q.ExpiresAt = now.Add(-time.Hour), now.Add(30*24*time.Hour)
	testenv.Publish(t, st, s, q)

	put := func(id string, b []byte) { testenv.PutCheckin(t, st, id, now.Add(-2*time.Minute), b) }
	_ = ctx
	put("kiosk-01", blob(t, status.Status{DeviceID: "kiosk-01", Channel: "prod", State: status.UpToDate, Revision: 2, StorePath: spB, AgentVersion: "1.0"}))
	put("kiosk-02", blob(t, status.Status{DeviceID: "kiosk-02", Channel: "prod", State: status.UpToDate, Revision: 1, StorePath: spA, AgentVersion: "1.0", Note: "revision 2 is rolling out to 50% of devices, not this one yet"}))
	put("kiosk-03", blob(t, status.Status{DeviceID: "kiosk-03", Channel: "prod", State: status.Failed, Revision: 1, StorePath: spA, LastError: "fetch closure of revision 2: nix-store: exit status 1", Attempted: 2}))
	put("kiosk-04", blob(t, status.Status{DeviceID: "kiosk-04", Channel: "prod", State: status.RolledBack, Revision: 1, StorePath: spA, LastError: `revision 2 rolled back: health check "curl localhost": exit status 7`, Attempted: 2}))
	put("kiosk-05", blob(t, status.Status{DeviceID: "kiosk-05", Channel: "prod", State: status.Rejected, Revision: 2, StorePath: spB, LastError: "signature not trusted: signed by [\"intruder\"]"}))
	off := status.Status{DeviceID: "kiosk-06", Channel: "prod", State: status.UpToDate, Revision: 2, StorePath: spB, CheckedAt: now.Add(-3 * time.Hour), HeartbeatSeconds: 1}
	testenv.PutCheckin(t, st, off.DeviceID, off.CheckedAt, blob(t, off))
	put("kiosk-07", blob(t, status.Status{DeviceID: "kiosk-07", Channel: "prod", State: status.UpToDate, Revision: 2, StorePath: spB, NeedsReboot: true}))
	put("kiosk-08", blob(t, status.Status{DeviceID: "kiosk-08", Channel: "prod", State: status.Switching, Revision: 1, StorePath: spA, Note: "switching to revision 2"}))
	put("kiosk-09", []byte(`{"deviceId": "kiosk-09", "state": `))                                                       // malformed
	put("kiosk-10", bytes.Repeat([]byte("x"), status.MaxSize+1))                                                        // oversized
	put("kiosk-11", blob(t, status.Status{DeviceID: "kiosk-01", Channel: "prod", State: status.UpToDate, Revision: 2})) // forged id
	put("kiosk-12", blob(t, status.Status{DeviceID: "kiosk-12", Channel: "canary", State: status.WaitingReboot, Revision: 1, StorePath: spB, NeedsReboot: true}))
	put("kiosk-13", blob(t, status.Status{DeviceID: "kiosk-13", Channel: "prod" + xss, Class: xss, State: status.Failed, Revision: 2, StorePath: spB + xss,
		LastError: xss, Note: xss, AgentVersion: xss, BootedStorePath: xss}))
	return manifest.Trust{Keys: []manifest.PublicKey{pub}}
}

func put(t testing.TB, st bucket.Store, s status.Status) {
	testenv.PutCheckin(t, st, s.DeviceID, checkedAt(s), blob(t, s))
}

// Long ids for the layout checks.
const (
	longID  = "kiosk-cafeteria-east-entrance-ground-floor-03"
	solidID = "k0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopq" // 64 characters, no break point
)

// rollout is a fleet after a rollout with one rolled-back device: prod
// moved from system A (revision 1) to B at 50% (revision 2) and 100%
// (revision 3); most devices run B, one rolled B back, one is offline, one
// waits for a reboot with a routine note.
func rollout(t testing.TB, st bucket.Store) manifest.Trust {
	s, pub := testenv.NewSigner(t, "fleet-1")
	for i, p := range []*manifest.Payload{testenv.Payload("prod", 0, spA), testenv.Payload("prod", 0, spB), testenv.Payload("prod", 0, spB)} {
		p.PublishedAt, p.ExpiresAt = now.Add(time.Duration(i-3)*time.Hour), now.Add(time.Duration(29-i)*24*time.Hour)
		p.Message = []string{"kiosk 2.2", "kiosk 2.3: new menu board", "kiosk 2.3 to everyone"}[i]
		p.Publisher = "ci@build-7"
		if i == 1 {
			p.Rollout.Percent = 50
		}
		testenv.Publish(t, st, s, p)
	}
	c := testenv.Payload("canary", 0, spB)
	c.PublishedAt, c.ExpiresAt = now.Add(-26*time.Hour), now.Add(29*24*time.Hour)
	testenv.Publish(t, st, s, c)

	up := func(id string, rev uint64) status.Status {
		return status.Status{DeviceID: id, Channel: "prod", State: status.UpToDate, Revision: rev, StorePath: spB, AgentVersion: "1.4.0"}
	}
	put(t, st, up("kiosk-lobby-01", 3))
	put(t, st, up("kiosk-lobby-02", 3))
	put(t, st, up(longID, 2)) // same system as revision 3: done
	put(t, st, up("kiosk-04", 3))
	put(t, st, status.Status{DeviceID: "kiosk-05", Channel: "prod", State: status.RolledBack, Revision: 1, StorePath: spA, Attempted: 2,
		LastError: `revision 2 rolled back: health check "curl -fsS localhost:8080/healthz": exit status 7`})
	put(t, st, status.Status{DeviceID: "kiosk-06", Channel: "prod", State: status.UpToDate, Revision: 1, StorePath: spA, CheckedAt: now.Add(-5 * time.Hour)})
	put(t, st, status.Status{DeviceID: "kiosk-07", Channel: "prod", State: status.WaitingReboot, Revision: 3, StorePath: spB, NeedsReboot: true,
		Note: "revision 3 installed; reboot to activate"})
	put(t, st, status.Status{DeviceID: solidID, Channel: "canary", State: status.UpToDate, Revision: 1, StorePath: spB})
	return manifest.Trust{Keys: []manifest.PublicKey{pub}}
}

func collect(t testing.TB, st bucket.Store) *dashboard.Fleet {
	f, err := dashboard.Collect(context.Background(), st, dashboard.Options{Now: readNow(st)})
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

// fileAndMinIO are an empty file:// bucket and an empty bucket on the
// shared real MinIO.
func fileAndMinIO(t *testing.T) map[string]bucket.Store {
	m := testenv.SharedMinIO(t)
	_, url := m.NewBucket(t)
	s3, err := s3store.Open(url, bucket.Options{}, m.Creds())
	if err != nil {
		t.Fatal(err)
	}
	return map[string]bucket.Store{"file": fileStore(t), "minio": s3}
}

func TestCollect(t *testing.T) {
	for name, st := range fileAndMinIO(t) {
		t.Run(name, func(t *testing.T) {
			fixture(t, st)
			f := collect(t, st)
			c := f.Counts
			wantCounts := dashboard.Counts{Devices: 13, UpToDate: 2, Behind: 1, Updating: 2, Failed: 4, Offline: 1, NeedsReboot: 2, Invalid: 3}
			if c != wantCounts {
				t.Fatalf("counts %+v\nwant   %+v", c, wantCounts)
			}
			states := map[string]string{}
			for _, d := range f.Devices {
				states[d.ID] = d.State
			}
			for id, st := range map[string]string{"kiosk-02": "behind", "kiosk-06": "offline", "kiosk-09": "invalid", "kiosk-10": "invalid",
				"kiosk-11": "invalid", "kiosk-04": "rolled-back", "kiosk-08": "updating", "kiosk-12": "waiting-reboot"} {
				if states[id] != st {
					t.Errorf("%s: %s, want %s", id, states[id], st)
				}
			}
			details := map[string]string{}
			for _, d := range f.Devices {
				details[d.ID] = d.Detail
			}
			for id, want := range map[string]string{"kiosk-02": "channel is at revision 2", "kiosk-06": "last reported up-to-date", "kiosk-08": "switching", "kiosk-01": "", "kiosk-04": ""} {
				if details[id] != want {
					t.Errorf("%s: detail %q, want %q", id, details[id], want)
				}
			}
			wantStates := map[string]int{"up-to-date": 2, "behind": 1, "updating": 1, "waiting-reboot": 1, "failed": 2, "rolled-back": 1, "rejected": 1, "offline": 1, "invalid": 3}
			if !reflect.DeepEqual(f.ByState, wantStates) {
				t.Errorf("by state %v\nwant        %v", f.ByState, wantStates)
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
			// Unverified: counted by revision; a rejection is pending.
			want := dashboard.Progress{Cohort: 8, Done: 3, Pending: 3, Failed: 2}
			if prod.Revision != 2 || prod.Devices != 8 || prod.Progress != want || prod.Problem == "" {
				t.Errorf("prod: %+v\nwant progress %+v", prod, want)
			}
			// One LIST per prefix, one GET per channel, of the device
			// registry, of the forgotten devices and per device.
			if f.Requests != 2+2+1+1+13 {
				t.Errorf("%d requests, want %d", f.Requests, 2+2+1+1+13)
			}
		})
	}
}

// TestGolden pins the page of both fleets: every state and hostile text
// (unverified), and the verified fleet after a rollout.
func TestGolden(t *testing.T) {
	for name, mk := range map[string]func(bucket.Store) *dashboard.Fleet{
		"fleet":   func(st bucket.Store) *dashboard.Fleet { fixture(t, st); return collect(t, st) },
		"rollout": func(st bucket.Store) *dashboard.Fleet { return collectTrusted(t, st, rollout(t, st)) },
	} {
		t.Run(name, func(t *testing.T) {
			html, err := dashboard.HTML(mk(fileStore(t)))
			if err != nil {
				t.Fatal(err)
			}
			golden := filepath.Join("testdata", name+".golden.html")
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
		})
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
// rows are in the DOM, no injected script ran, the layout holds at phone
// and desktop widths, and screenshots are kept.
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
	hostile := writePage(t, dir, "hostile", collect(t, st))
	dom := headless(t, bin, "--dump-dom", "file://"+hostile)
	if strings.Contains(dom, "data-pwned=") || strings.Contains(dom, "<script") || strings.Contains(dom, "<img") {
		t.Fatalf("injected markup became live in the DOM")
	}
	checkDOM(t, dom)

	st = fileStore(t)
	after := writePage(t, dir, "rollout", collectTrusted(t, st, rollout(t, st)))
	for _, c := range []struct {
		page  string
		width int
	}{{hostile, 420}, {hostile, 1400}, {after, 420}, {after, 800}, {after, 1000}, {after, 1400}} {
		if got := layout(t, bin, c.page, c.width); got != "ok" {
			t.Errorf("%s at %d px: %s", filepath.Base(c.page), c.width, got)
		}
	}

	artifacts := filepath.Join(testenv.RepoRoot(), "test-artifacts")
	os.MkdirAll(artifacts, 0o755)
	for _, size := range []string{"1400,1100", "420,900", "420,2400"} {
		shot := filepath.Join(artifacts, fmt.Sprintf("dashboard-%s.png", strings.Replace(size, ",", "x", 1)))
		headless(t, bin, "--screenshot="+shot, "--window-size="+size, "--hide-scrollbars", "file://"+after)
		if fi, err := os.Stat(shot); err != nil || fi.Size() < 10000 {
			t.Fatalf("screenshot %s: %v", shot, err)
		}
		t.Logf("screenshot: %s", shot)
	}
}

func writePage(t *testing.T, dir, name string, f *dashboard.Fleet) string {
	html, err := dashboard.HTML(f)
	if err != nil {
		t.Fatal(err)
	}
	page := filepath.Join(dir, name+".html")
	if err := os.WriteFile(page, html, 0o644); err != nil {
		t.Fatal(err)
	}
	return page
}

// checkDOM checks the hostile fleet's page as Chromium parsed it.
func checkDOM(t *testing.T, dom string) {
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
	for _, state := range dashboard.States {
		if !strings.Contains(dom, `">`+state+"</span>") {
			t.Errorf("state %q not in the page", state)
		}
	}
	if !strings.Contains(dom, `id="alarm"`) || !strings.Contains(dom, "7 devices need attention: 3 invalid, 2 failed, 1 rolled-back, 1 rejected") {
		t.Error("no red banner for the failed and invalid devices")
	}
	for id, row := range rowsOf(t, dom) {
		if n := strings.Count(row, `class="state `); n != 1 {
			t.Errorf("%s: %d states in its row", id, n)
		}
	}
}

// layoutProbe loads the page in an iframe of the given width and reports
// what a reader of that width would suffer: sideways scrolling of the page
// or of any part of it, and device or channel ids broken inside a word.
// The page itself runs no script; the probe is the parent document.
const layoutProbe = `<!doctype html><html><body style="margin:0">
<iframe id="f" src="PAGE" style="width:WIDTHpx;height:900px;border:0"></iframe>
<script>
document.getElementById('f').addEventListener('load', function () {
  var d = this.contentDocument, w = this.contentWindow, out = [];
  if (!d) { document.body.setAttribute('data-result', 'no access to the page'); return; }
  var root = d.documentElement;
  function clipped(el) { // inside a box that hides its overflow and fits
    for (; el && el != d.body; el = el.parentNode)
      if (w.getComputedStyle(el).overflowX != 'visible') return el.getBoundingClientRect().right <= root.clientWidth;
    return false;
  }
  if (root.scrollWidth > root.clientWidth) {
    out.push('page scrolls sideways: ' + root.scrollWidth + ' > ' + root.clientWidth + ' px');
    var wide = Array.prototype.filter.call(d.querySelectorAll('body *'), function (el) {
      return el.getBoundingClientRect().right > root.clientWidth && !Array.prototype.some.call(el.children, function (c) { return c.getBoundingClientRect().right > root.clientWidth; });
    });
    var walk = d.createTreeWalker(d.body, NodeFilter.SHOW_TEXT), n;
    while ((n = walk.nextNode()) && wide.length < 5) {
      var r = d.createRange(); r.selectNodeContents(n);
      if (r.getBoundingClientRect().right > root.clientWidth && !clipped(n.parentNode)) wide.push(n.parentNode);
    }
    wide.slice(0, 5).forEach(function (el) { out.push('too wide: ' + el.tagName + '.' + el.className + ' in ' + ((el.closest('table') || {}).id || '?') + ' column ' + ((el.closest('td') || {}).cellIndex + 1)); });
  }
  d.querySelectorAll('body *').forEach(function (el) {
    var o = w.getComputedStyle(el).overflowX;
    if ((o == 'auto' || o == 'scroll') && el.scrollWidth > el.clientWidth) out.push(el.tagName + '#' + el.id + ' scrolls sideways');
  });
  d.querySelectorAll('tr.device > td:first-child b, tr.channel > td:first-child b').forEach(function (b) {
    b.childNodes.forEach(function (n) {
      if (n.nodeType != 3) return;
      var r = d.createRange(); r.selectNodeContents(n);
      var tops = {}; Array.prototype.forEach.call(r.getClientRects(), function (x) { tops[Math.round(x.top)] = 1; });
      if (Object.keys(tops).length > 1) out.push('id ' + b.textContent + ' broken inside "' + n.data + '"');
    });
  });
  document.body.setAttribute('data-result', out.length ? out.join('; ') : 'ok');
});
</script></body></html>`

func layout(t *testing.T, bin, page string, width int) string {
	probe := filepath.Join(filepath.Dir(page), fmt.Sprintf("probe-%d.html", width))
	html := strings.NewReplacer("PAGE", filepath.Base(page), "WIDTH", fmt.Sprint(width)).Replace(layoutProbe)
	if err := os.WriteFile(probe, []byte(html), 0o644); err != nil {
		t.Fatal(err)
	}
	dom := headless(t, bin, "--allow-file-access-from-files", fmt.Sprintf("--window-size=%d,1000", width+40), "--dump-dom", "file://"+probe)
	m := regexp.MustCompile(`data-result="([^"]*)"`).FindStringSubmatch(dom)
	if m == nil {
		t.Fatalf("layout probe of %s reported nothing:\n%.2000s", page, dom)
	}
	return m[1]
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

func collectTrusted(t testing.TB, st bucket.Store, trust manifest.Trust) *dashboard.Fleet {
	f, err := dashboard.Collect(context.Background(), st, dashboard.Options{Now: now, Trust: &trust})
	if err != nil {
		t.Fatal(err)
	}
	f.Bucket = "s3://fleet?endpoint=minio.example.org"
	return f
}

func byID(f *dashboard.Fleet) map[string]dashboard.Device {
	m := map[string]dashboard.Device{}
	for _, d := range f.Devices {
		m[d.ID] = d
	}
	return m
}

func channelOf(t testing.TB, f *dashboard.Fleet, name string) dashboard.Channel {
	for _, c := range f.Channels {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no channel %s", name)
	return dashboard.Channel{}
}

// TestVerifiedProgress: with a trust, a channel's progress is the rollout
// rule itself (channel.Step.Tally over the verified current revision and
// its run start), and a device on an earlier revision of the same system
// is done, not behind.
func TestVerifiedProgress(t *testing.T) {
	st := fileStore(t)
	trust := rollout(t, st)
	f := collectTrusted(t, st, trust)

	h, err := channel.Load(context.Background(), st, "prod", trust)
	if err != nil {
		t.Fatal(err)
	}
	cur, err := h.Current()
	if err != nil {
		t.Fatal(err)
	}
	tally := h.StepOf(cur).Tally(f.Reports())
	prod := channelOf(t, f, "prod")
	want := dashboard.Progress{Verified: true, Since: 2, Cohort: tally.Cohort, Done: tally.Done, Pending: tally.Pending, Failed: tally.Failed}
	if prod.Progress != want || want.Cohort != 7 || want.Done != 5 || want.Failed != 1 || want.Pending != 1 {
		t.Fatalf("prod progress %+v\nwant (Step.Tally) %+v, cohort 7: 5 done, 1 failed, 1 pending", prod.Progress, want)
	}
	if prod.Signature != "ok" || prod.Revision != 3 {
		t.Errorf("prod: signature %q revision %d", prod.Signature, prod.Revision)
	}
	devs := byID(f)
	for id, w := range map[string][2]string{longID: {"up-to-date", "done"}, "kiosk-05": {"rolled-back", "failed"},
		"kiosk-06": {"offline", "pending"}, "kiosk-07": {"waiting-reboot", "done"}} {
		if d := devs[id]; d.State != w[0] || d.Rollout != w[1] {
			t.Errorf("%s: state %s, rollout %s; want %s, %s", id, d.State, d.Rollout, w[0], w[1])
		}
	}
	// One LIST of channels/, what channel.Load reads per channel, a GET
	// of the registry and of the forgotten devices, one LIST of devices/
	// and a GET per device.
	if want := 1 + loadRequests(t, st, "prod", trust) + loadRequests(t, st, "canary", trust) + 1 + 1 + 1 + 8; f.Requests != want {
		t.Errorf("%d requests, want %d", f.Requests, want)
	}

	// Without a trust the same fleet is counted by revision and says so.
	u := collect(t, st)
	up := channelOf(t, u, "prod").Progress
	if up.Verified || up != (dashboard.Progress{Cohort: 7, Done: 4, Pending: 2, Failed: 1}) {
		t.Errorf("unverified progress %+v", up)
	}
	if d := byID(u)[longID]; d.State != dashboard.Behind || d.Rollout != "" {
		t.Errorf("unverified: %s is %s (rollout %q), want behind by revision", longID, d.State, d.Rollout)
	}
}

// loadRequests is how many requests channel.Load makes for a channel.
func loadRequests(t *testing.T, st bucket.Store, name string, trust manifest.Trust) int64 {
	c := &bucket.Counting{Store: st}
	if _, err := channel.Load(context.Background(), c, name, trust); err != nil {
		t.Fatal(err)
	}
	if n := c.Requests(); n < 4 {
		t.Fatalf("channel.Load of %s made %d requests: it reads pointer, history and its entries", name, n)
	}
	return c.Requests()
}

// TestGivenSteps: a caller that holds the step (publish --wait, rollout)
// gets verified progress without a history read at every poll.
func TestGivenSteps(t *testing.T) {
	st := fileStore(t)
	trust := rollout(t, st)
	h, err := channel.Load(context.Background(), st, "prod", trust)
	if err != nil {
		t.Fatal(err)
	}
	cur, _ := h.Current()
	f, err := dashboard.Collect(context.Background(), st, dashboard.Options{Now: now, Trust: &trust, Channel: "prod",
		Steps: map[string]channel.Step{"prod": h.StepOf(cur)}})
	if err != nil {
		t.Fatal(err)
	}
	if p := channelOf(t, f, "prod").Progress; !p.Verified || p.Done != 5 {
		t.Errorf("progress %+v", p)
	}
	if want := 1 + 1 + 1 + 1 + 1 + 8; f.Requests != int64(want) {
		t.Errorf("%d requests, want %d (no history read)", f.Requests, want)
	}
}

// TestPageFacts: the page shows when it was generated prominently and an
// absolute time beside every age; exactly one state per device with the
// detail apart; errors apart from notes.
func TestPageFacts(t *testing.T) {
	st := fileStore(t)
	fixture(t, st)
	page, err := dashboard.HTML(collect(t, st))
	if err != nil {
		t.Fatal(err)
	}
	html := string(page)
	for _, want := range []string{
		`<p class="asof" id="as-of">as of <time datetime="2026-11-25T12:00:00Z">2026-11-25 12:00 UTC</time></p>`,
		`3h ago<div class="abs">2026-11-25 09:00 UTC</div>`, // prod published
		`in 3d<div class="abs">2026-11-28 12:00 UTC</div>`,  // prod expires
		`2m ago<div class="abs">2026-11-25 11:58 UTC</div>`, // a check-in
		`3h ago<div class="abs">2026-11-25 09:00 UTC</div>`, // the offline device's
	} {
		if !strings.Contains(html, want) {
			t.Errorf("page lacks %s", want)
		}
	}
	rows := rowsOf(t, html)
	for id, row := range rows {
		if n := strings.Count(row, `class="state `); n != 1 {
			t.Errorf("%s: %d state badges", id, n)
		}
	}
	for id, want := range map[string]string{
		"kiosk-02": `<span class="state s-behind">behind</span><div class="detail">channel is at revision 2</div>`,
		"kiosk-06": `<span class="state s-offline">offline</span><div class="detail">last reported up-to-date</div>`,
		"kiosk-08": `<span class="state s-updating">updating</span><div class="detail">switching</div>`,
		"kiosk-01": `<span class="state s-up-to-date">up-to-date</span></td>`,
	} {
		if !strings.Contains(rows[id], want) {
			t.Errorf("%s: state cell lacks %s\n%s", id, want, rows[id])
		}
	}
	note := "revision 2 is rolling out to 50% of devices, not this one yet"
	if !strings.Contains(rows["kiosk-02"], `<td class="err"></td>`) || !strings.Contains(rows["kiosk-02"], `class="note">`+note+`</td>`) {
		t.Errorf("kiosk-02's routine note is not apart from errors:\n%s", rows["kiosk-02"])
	}
	if !strings.Contains(rows["kiosk-03"], `class="err">fetch closure of revision 2: nix-store: exit status 1</td>`) {
		t.Errorf("kiosk-03's error is not in the error column:\n%s", rows["kiosk-03"])
	}
}

// rowsOf maps each device row of a page to its HTML.
func rowsOf(t testing.TB, html string) map[string]string {
	rows := map[string]string{}
	for _, m := range regexp.MustCompile(`(?s)<tr class="device" data-device="([^"]*)".*?</tr>`).FindAllStringSubmatch(html, -1) {
		rows[m[1]] = m[0]
	}
	if len(rows) == 0 {
		t.Fatal("no device rows")
	}
	return rows
}

// TestAlarm: nothing red when nothing failed; one rolled-back device turns
// its card red and raises a banner that names it.
func TestAlarm(t *testing.T) {
	healthy := &dashboard.Fleet{GeneratedAt: now, ByState: map[string]int{"up-to-date": 1}, Counts: dashboard.Counts{Devices: 1, UpToDate: 1},
		Devices: []dashboard.Device{{ID: "kiosk-1", State: "up-to-date"}}}
	page, err := dashboard.HTML(healthy)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(page), `id="alarm"`) || !strings.Contains(string(page), `<div class="count zero" id="c-failed">`) ||
		!strings.Contains(string(page), `<div class="count ok" id="c-up-to-date">`) {
		t.Fatalf("a healthy fleet: banner or wrong card styles:\n%s", page)
	}

	st := fileStore(t)
	f := collectTrusted(t, st, rollout(t, st))
	page, err = dashboard.HTML(f)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`<div class="alarm" id="alarm" role="alert"><p id="alarm-devices">1 device needs attention: 1 rolled-back</p><div><b>kiosk-05</b></div></div>`,
		`<div class="count bad" id="c-failed"><b>1</b>`,
		`<div class="count warn" id="c-offline"><b>1</b>`,
		`<div class="count zero" id="c-invalid"><b>0</b>`,
		`<title>nix-ota fleet: 8 devices, 3 need attention (1 rolled-back), as of 2026-11-25 12:00 UTC</title>`,
	} {
		if !strings.Contains(string(page), want) {
			t.Errorf("page lacks %s", want)
		}
	}
	a := f.Alarm(dashboard.AlarmIDs)
	if a.Devices != 1 || len(a.Channels) != 0 {
		t.Errorf("alarm %+v", a)
	}
}

// TestJSON: dashboard.json carries each device's one state and detail and
// each channel's progress, with absolute times.
func TestJSON(t *testing.T) {
	st := fileStore(t)
	f := collectTrusted(t, st, rollout(t, st))
	js, err := dashboard.JSON(f)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		GeneratedAt time.Time      `json:"generatedAt"`
		ByState     map[string]int `json:"byState"`
		Channels    []struct {
			Name     string         `json:"name"`
			Progress map[string]any `json:"progress"`
		} `json:"channels"`
		Devices []map[string]any `json:"devices"`
	}
	if err := json.Unmarshal(js, &doc); err != nil {
		t.Fatal(err)
	}
	if !doc.GeneratedAt.Equal(now) || doc.ByState["rolled-back"] != 1 || doc.ByState["offline"] != 1 {
		t.Errorf("generatedAt %v, byState %v", doc.GeneratedAt, doc.ByState)
	}
	prod := doc.Channels[1].Progress
	if doc.Channels[1].Name != "prod" || prod["verified"] != true || prod["done"] != 5.0 || prod["failed"] != 1.0 || prod["since"] != 2.0 {
		t.Errorf("prod progress %v", prod)
	}
	for _, d := range doc.Devices {
		if d["id"] == "kiosk-06" && (d["state"] != "offline" || d["stateDetail"] != "last reported up-to-date" || d["reportedState"] != "up-to-date" ||
			d["rollout"] != "pending" || d["checkedAt"] != "2026-11-25T07:00:00Z") {
			t.Errorf("kiosk-06: %v", d)
		}
	}
}

// TestOfflineFailure: a device that rolled back and then stopped checking
// in stays rolled-back (offline is its detail) and stays in the banner; a
// healthy one that goes quiet is offline.
func TestOfflineFailure(t *testing.T) {
	st := fileStore(t)
	trust := rollout(t, st)
	f, err := dashboard.Collect(context.Background(), st, dashboard.Options{Now: now.Add(24 * time.Hour), Trust: &trust})
	if err != nil {
		t.Fatal(err)
	}
	devs := byID(f)
	if d := devs["kiosk-05"]; d.State != status.RolledBack || d.Detail != "offline since 2026-11-25 11:58 UTC" || !d.Offline {
		t.Errorf("kiosk-05: %s (%s), offline %v", d.State, d.Detail, d.Offline)
	}
	if d := devs["kiosk-04"]; d.State != dashboard.Offline || d.Detail != "last reported up-to-date" {
		t.Errorf("kiosk-04: %s (%s)", d.State, d.Detail)
	}
	if a := f.Alarm(dashboard.AlarmIDs); a.Devices != 1 || a.IDs[0] != "kiosk-05" {
		t.Errorf("alarm %+v", a)
	}
}

// TestReplayedPointer: a genuine older manifest copied over the pointer is
// not taken as the current revision: the channel shows the problem, the
// banner names it, and progress is not called verified.
func TestReplayedPointer(t *testing.T) {
	st := fileStore(t)
	trust := rollout(t, st)
	old, err := st.Get(context.Background(), bucket.RevisionKey("prod", 2), bucket.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bucket.PutBytes(context.Background(), st, bucket.ChannelKey("prod"), old.Data, bucket.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	f := collectTrusted(t, st, trust)
	prod := channelOf(t, f, "prod")
	if prod.Progress.Verified || !strings.Contains(prod.Problem, "replayed") || prod.Revision != 2 {
		t.Errorf("prod: revision %d, progress %+v, problem %q", prod.Revision, prod.Progress, prod.Problem)
	}
	if a := f.Alarm(dashboard.AlarmIDs); len(a.Channels) != 1 || !strings.HasPrefix(a.Channels[0], "prod: ") {
		t.Errorf("alarm channels %q", a.Channels)
	}
}
