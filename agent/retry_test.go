package agent_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nix-ota/nix-ota/manifest"
	"github.com/nix-ota/nix-ota/status"
)

// failsFor is a health check that fails on system sp only.
func failsFor(sp string) string {
	return `test "$NIX_OTA_STORE_PATH" != "` + sp + `" || { echo "this system is broken" >&2; exit 1; }`
}

// retry sets the signed retry field.
func retry(p *manifest.Payload) { p.Retry = true }

// badMarks reads the state's bad revisions and bad systems of channel prod.
func badMarks(t *testing.T, d *device) (revisions, systems map[string]string) {
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
	return st.Channels["prod"].Bad, st.Channels["prod"].BadPaths
}

// TestRetry, with real Nix: a system rolled back on a device is skipped
// when republished, and tried again only under a revision that sets the
// signed retry field; a retry revision that fails here too is rolled back
// and not tried again at that revision, only at a later retry revision.
// A system that proved healthy on a retry is no longer held against.
func TestRetry(t *testing.T) {
	f := newFleet(t, "file")
	d := f.device(t, "kiosk-1")
	f.publish(t, f.a) // 1
	d.mustOnce(t, 0)
	sw := []string{"switch " + f.a}

	f.publish(t, f.b) // 2: its health check fails here
	d.mustOnce(t, 1, "--health-check", failsFor(f.b))
	sw = append(sw, "switch "+f.b, "switch "+f.a)
	expectSwitches(t, d, sw...)

	f.publish(t, f.b, func(p *manifest.Payload) { p.Message = "B again" }) // 3: no retry
	r := d.mustOnce(t, 0)
	expectSwitches(t, d, sw...)
	if st := d.localStatus(t); st.State != status.RolledBack || !strings.Contains(st.LastError, "marked bad") || !strings.Contains(r.stderr, "with retry set") {
		t.Fatalf("B republished without retry: status %+v\n%s", st, r.stderr)
	}

	f.publish(t, f.b, retry) // 4: retry, and the health check is fixed
	r = d.mustOnce(t, 0, "--health-check", failsFor(f.c))
	sw = append(sw, "switch "+f.b)
	expectSwitches(t, d, sw...)
	consistent(t, d, f.b)
	if !strings.Contains(r.stderr, "revision 4 sets retry: trying "+f.b+" again") {
		t.Fatalf("the retry is not logged:\n%s", r.stderr)
	}
	if st := d.localStatus(t); st.State != status.UpToDate || st.Revision != 4 || st.LastError != "" {
		t.Fatalf("status after the retry: %+v", st)
	}
	if _, systems := badMarks(t, d); systems[f.b] != "" {
		t.Fatalf("B is still marked bad after it proved healthy: %v", systems)
	}

	f.publish(t, f.c) // 5: fails
	d.mustOnce(t, 1, "--health-check", failsFor(f.c))
	f.publish(t, f.c, retry) // 6: retry, still fails
	r = d.mustOnce(t, 1, "--health-check", failsFor(f.c))
	sw = append(sw, "switch "+f.c, "switch "+f.b, "switch "+f.c, "switch "+f.b)
	expectSwitches(t, d, sw...)
	consistent(t, d, f.b)
	if revs, _ := badMarks(t, d); revs["5"] == "" || revs["6"] == "" {
		t.Fatalf("revisions 5 and 6 not both marked bad: %v", revs)
	}
	// Revision 6 is not tried again, even read afresh with a passing check.
	forgetETag(t, d)
	d.mustOnce(t, 0, "--health-check", "true")
	expectSwitches(t, d, sw...)
	if st := d.localStatus(t); !strings.Contains(st.LastError, "revision 6 (or its system) was rolled back") {
		t.Fatalf("status does not say why revision 6 is skipped: %+v", st)
	}

	f.publish(t, f.c, retry) // 7: another retry revision, now healthy
	d.mustOnce(t, 0, "--health-check", "true")
	sw = append(sw, "switch "+f.c)
	expectSwitches(t, d, sw...)
	consistent(t, d, f.c)

	f.publish(t, f.b) // 8: B without retry; it proved healthy at revision 4
	d.mustOnce(t, 0)
	sw = append(sw, "switch "+f.b)
	expectSwitches(t, d, sw...)
	consistent(t, d, f.b)
}
