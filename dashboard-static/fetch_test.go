package dashboard_test

import (
	"encoding/json"
	"strings"
	"testing"

	dashboard "github.com/nix-ota/nix-ota/dashboard-static"
	"github.com/nix-ota/nix-ota/internal/testenv"
	"github.com/nix-ota/nix-ota/status"
)

// TestFetchReported: what devices say their last update downloaded, and
// how much of it came as deltas, is summed at the top of the page and in
// dashboard.json, and shown on each row; a status with negative counts is
// refused as invalid, and its numbers are not summed.
func TestFetchReported(t *testing.T) {
	st := fileStore(t)
	fixture(t, st)
	withDelta := status.Fetch{Revision: 2, Paths: 12, Bytes: 3 << 20, DeltaPaths: 3, DeltaBytes: 40 << 10, FullBytes: 90 << 20, Fallbacks: 1, Fallback: "<b>its delta is against a path this device does not hold</b>"}
	full := status.Fetch{Revision: 2, Paths: 12, Bytes: 90 << 20, FullBytes: 90 << 20}
	put(t, st, status.Status{DeviceID: "kiosk-20", Channel: "prod", State: status.UpToDate, Revision: 2, StorePath: spB, Fetch: withDelta})
	put(t, st, status.Status{DeviceID: "kiosk-21", Channel: "prod", State: status.UpToDate, Revision: 2, StorePath: spB, Fetch: full})
	bad := status.Status{DeviceID: "kiosk-22", Channel: "prod", State: status.UpToDate, Revision: 2, Fetch: status.Fetch{Bytes: -1}}
	testenv.PutCheckin(t, st, bad.DeviceID, checkedAt(bad), blob(t, bad))

	f := collect(t, st)
	want := dashboard.FetchTotals{Devices: 2, Bytes: 93 << 20, FullBytes: 180 << 20, DeltaBytes: 40 << 10, DeltaPaths: 3, Fallbacks: 1}
	if f.Fetch != want {
		t.Fatalf("fleet fetch totals %+v, want %+v", f.Fetch, want)
	}
	rows := byID(f)
	if rows["kiosk-22"].State != dashboard.Invalid || !strings.Contains(rows["kiosk-22"].LastError, "fetch counts out of range") {
		t.Fatalf("negative counts: %+v", rows["kiosk-22"])
	}
	if got := rows["kiosk-20"].Fetched; got == nil || *got != withDelta {
		t.Fatalf("kiosk-20 fetched %+v, want %+v", got, withDelta)
	}
	js, err := json.Marshal(f)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(js), `"fetch":{"devices":2,"bytes":97517568,"fullBytes":188743680,"deltaBytes":40960,"deltaPaths":3,"fallbacks":1}`) {
		t.Fatalf("dashboard.json lacks the totals:\n%.600s", js)
	}
	page, err := dashboard.HTML(f)
	if err != nil {
		t.Fatal(err)
	}
	html := string(page)
	pageRows := rowsOf(t, html)
	for id, text := range map[string]string{
		"kiosk-20": "revision 2: downloaded 3.0 MiB (3 paths as deltas, not 90.0 MiB); deltas that fell back to the full NAR: 1",
		"kiosk-21": "revision 2: downloaded 90.0 MiB</div>",
	} {
		if !strings.Contains(pageRows[id], text) {
			t.Errorf("%s: row lacks %q:\n%s", id, text, pageRows[id])
		}
	}
	if !strings.Contains(html, "<b>93.0 MiB</b>last updates downloaded, not 180.0 MiB: deltas") {
		t.Error("page lacks the fleet's download card")
	}
	if strings.Contains(html, "its delta is against") {
		t.Error("the page shows a device's fallback text; it belongs in dashboard.json only")
	}
}
