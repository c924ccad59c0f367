package cli

import (
	"bytes"
	"regexp"
	"strings"
	"testing"
	"time"

	dashboard "github.com/nix-ota/nix-ota/dashboard-static"
)

// TestPrintFleet: the terminal view says when the data is from, raises
// failures above the tables, gives each device one state with its detail
// apart, keeps errors and notes in their own columns, shows absolute times
// beside ages and labels unverified progress.
func TestPrintFleet(t *testing.T) {
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	f := &dashboard.Fleet{GeneratedAt: now, Bucket: "file:///srv/b",
		ByState: map[string]int{"up-to-date": 1, "rolled-back": 1, "offline": 1},
		Counts:  dashboard.Counts{Devices: 3, UpToDate: 1, Failed: 1, Offline: 1},
		Channels: []dashboard.Channel{
			{Name: "prod", Revision: 3, PublishedAt: now.Add(-time.Hour), ExpiresAt: now.Add(72 * time.Hour), Rollout: 100, Signature: "ok", Devices: 3,
				Progress: dashboard.Progress{Verified: true, Since: 2, Cohort: 3, Done: 1, Failed: 1, Pending: 1}},
			{Name: "canary", Revision: 1, Signature: "unverified", Devices: 0},
		},
		Devices: []dashboard.Device{
			{ID: "kiosk-05", Channel: "prod", State: "rolled-back", Revision: 1, CheckedAt: now.Add(-2 * time.Minute), LastError: "health check failed"},
			{ID: "kiosk-06", Channel: "prod", State: "offline", Detail: "last reported up-to-date", Revision: 1, CheckedAt: now.Add(-5 * time.Hour)},
			{ID: "kiosk-07", Channel: "prod", State: "up-to-date", Revision: 3, CheckedAt: now.Add(-2 * time.Minute), Note: "routine note"},
		},
	}
	var b bytes.Buffer
	printFleet(&b, f)
	out := b.String()
	for _, want := range []string{
		"file:///srv/b as of 2026-11-25 12:00 UTC: 3 devices",
		"ATTENTION: 1 rolled-back: kiosk-05\n",
		"1/3 done, 1 failed, 1 pending",
		"0/0 current, 0 behind, 0 failed (unverified)",
		"1h 0m ago (2026-11-25 11:00 UTC)",
		"5h 0m ago (2026-11-25 07:00 UTC)",
		"ERROR",
		"NOTE",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	lines := map[string]string{}
	for _, l := range strings.Split(out, "\n") {
		if id, _, ok := strings.Cut(l, " "); ok {
			lines[id] = l
		}
	}
	if f := strings.Fields(lines["kiosk-06"]); len(f) < 3 || f[1] != "offline" || !strings.Contains(lines["kiosk-06"], "last reported up-to-date") {
		t.Errorf("kiosk-06: %q", lines["kiosk-06"])
	}
	if l := lines["kiosk-07"]; !regexp.MustCompile(` -\s+routine note$`).MatchString(l) {
		t.Errorf("kiosk-07's note is not apart from its (empty) error: %q", l)
	}
	if l := lines["kiosk-05"]; !regexp.MustCompile(` health check failed\s+-$`).MatchString(l) {
		t.Errorf("kiosk-05's error is not in the error column: %q", l)
	}
}
