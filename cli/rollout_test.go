package cli_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nix-ota/nix-ota/agent"
	"github.com/nix-ota/nix-ota/bucket"
	"github.com/nix-ota/nix-ota/internal/testenv"
	"github.com/nix-ota/nix-ota/manifest"
	"github.com/nix-ota/nix-ota/status"
)

// simFleet runs n real agents (real agent code, real Nix profiles and
// switch scripts, each with its own state and device id) against one
// bucket, polling in a loop until the test ends (startAgent).
type simFleet struct {
	ids []string
}

func startFleet(t *testing.T, f fixture, pub string, n int, initial string) *simFleet {
	m := testenv.SharedMinIO(t)
	creds := filepath.Join(t.TempDir(), "creds")
	os.WriteFile(creds, []byte(fmt.Sprintf("[default]\naws_access_key_id=%s\naws_secret_access_key=%s\n", m.AccessKey, m.SecretKey)), 0o600)
	sf := &simFleet{}
	for i := range n {
		id := fmt.Sprintf("dev-%02d", i)
		sf.ids = append(sf.ids, id)
		startAgent(t, agent.Config{Bucket: f.url, DeviceID: id, StatusCredentials: creds,
			HealthChecks: []string{`case "$NIX_OTA_STORE_PATH" in *broken*) echo "kiosk does not start" >&2; exit 1;; esac`}}, pub, initial)
	}
	return sf
}

// statuses reads every device's status blob.
func statuses(t *testing.T, s bucket.Store, ids []string) map[string]*status.Status {
	out := map[string]*status.Status{}
	for _, id := range ids {
		latest, err := bucket.LatestCheckin(context.Background(), s, id)
		if err != nil {
			continue
		}
		o, err := s.Get(context.Background(), latest.Key, bucket.GetOptions{})
		if err != nil {
			continue
		}
		if st, err := status.Open(id, o.Data); err == nil {
			out[id] = st.Status
		}
	}
	return out
}

func waitAllOn(t *testing.T, s bucket.Store, ids []string, sp string) {
	deadline := time.Now().Add(60 * time.Second)
	for {
		n := 0
		for _, st := range statuses(t, s, ids) {
			if st.StorePath == sp && st.State == status.UpToDate {
				n++
			}
		}
		if n == len(ids) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d devices run %s", n, len(ids), sp)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// saltWithCohort finds a salt that puts between 1 and 2 of ids in a pct%
// cohort, so the first step of a test rollout always has a device in it.
func saltWithCohort(ids []string, pct int) string {
	for i := 0; ; i++ {
		salt := fmt.Sprintf("salt-%d", i)
		n := 0
		for _, id := range ids {
			if (manifest.Rollout{Percent: pct, Salt: salt}).Includes(id) {
				n++
			}
		}
		if n >= 1 && n <= 2 {
			return salt
		}
	}
}

// TestStagedRollout: over a simulated fleet of 10 real agents on MinIO, a
// healthy system advances through every step to 100%; a system that fails
// its health check halts the rollout at the first step and the channel is
// reverted, so most devices never touch it.
func TestStagedRollout(t *testing.T) {
	testenv.RequireNix(t)
	f := fixtures(t)["minio"](t)
	key, pub := keygen(t, "fleet-1")
	s0 := testenv.BuildSystem(t, "s0", testenv.SystemOptions{})
	good1 := testenv.BuildSystem(t, "good1", testenv.SystemOptions{})
	good2 := testenv.BuildSystem(t, "good2", testenv.SystemOptions{})
	broken := testenv.BuildSystem(t, "broken", testenv.SystemOptions{})
	fleet := startFleet(t, f, pub, 10, s0)
	publish := func(sp string, extra ...string) uint64 {
		out := mustRun(t, f.env, append([]string{"publish", "--skip-closure-check", "--bucket", f.url, "--key", key, "--channel", "prod", "--store-path", sp, "--no-dashboard"}, extra...)...)
		var rev uint64
		fmt.Sscanf(out[strings.Index(out, "revision ")+len("revision "):], "%d", &rev)
		return rev
	}
	publish(good1)
	waitAllOn(t, f.store, fleet.ids, good1)

	rollout := func(extra ...string) result {
		return run(t, f.env, append([]string{"rollout", "--bucket", f.url, "--key", key, "--channel", "prod", "--steps", "10,50,100",
			"--wait", "40s", "--max-failed", "20%", "--interval", "300ms"}, extra...)...)
	}
	// Healthy: 10% -> 50% -> 100%.
	publish(good2, "--rollout", "10", "--rollout-salt", saltWithCohort(fleet.ids, 10))
	r := rollout()
	if r.code != 0 || !strings.Contains(r.stdout, "complete at 100%") {
		t.Fatalf("healthy rollout: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	for _, step := range []string{"step 10% passed", "step 50% passed", "step 100% passed"} {
		if !strings.Contains(r.stderr, step) {
			t.Fatalf("healthy rollout did not pass %q:\n%s", step, r.stderr)
		}
	}
	waitAllOn(t, f.store, fleet.ids, good2)

	// Broken: halts at 10%, reverts to good2.
	brokenRev := publish(broken, "--rollout", "10", "--rollout-salt", saltWithCohort(fleet.ids, 10))
	r = rollout("--json")
	if r.code != 1 || !strings.Contains(r.stderr, "halted") {
		t.Fatalf("broken rollout: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	var halted struct {
		Outcome    string
		Revision   uint64
		Rollout    int
		RevertedTo uint64
		Steps      []struct {
			Outcome string
			Failed  int
		}
	}
	if err := json.Unmarshal([]byte(r.stdout), &halted); err != nil || halted.Outcome != "halted" || halted.RevertedTo == 0 ||
		halted.Revision != halted.RevertedTo || halted.Rollout != 100 || len(halted.Steps) != 1 || halted.Steps[0].Outcome != "halt" || halted.Steps[0].Failed == 0 {
		t.Fatalf("rollout --json of a halt: %v %+v\n%s", err, halted, r.stdout)
	}
	ptr := getObj(t, f.store, "channels/prod.json")
	v, err := manifest.CheckSigned(mustTrust(t, pub), "prod", ptr)
	if err != nil || v.Payload.StorePath != good2 || v.Payload.Rollout.Percent != 100 || !strings.Contains(v.Payload.Message, "halted at 10%") {
		t.Fatalf("channel after halt: %v %+v", err, v.Payload)
	}
	waitAllOn(t, f.store, fleet.ids, good2)
	touched := 0
	for _, st := range statuses(t, f.store, fleet.ids) {
		if st.Attempted >= brokenRev {
			touched++
		}
	}
	if touched == 0 || touched > 2 {
		t.Fatalf("%d devices tried the broken system, want the 1-2 of the 10%% cohort", touched)
	}
	// Already at the last step: nothing to do, nothing published.
	before := snapshotKeys(t, f.store, "channels/")
	if r := rollout(); r.code != 0 || !strings.Contains(r.stdout, "nothing to do") || snapshotKeys(t, f.store, "channels/") != before {
		t.Fatalf("rollout of a channel at 100%%: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	// A revert never goes to the halted system: the system before good2's
	// run is the broken one, recorded bad.
	if r := run(t, f.env, "rollback", "--bucket", f.url, "--key", key, "--channel", "prod"); r.code != 1 || !strings.Contains(r.stderr, "recorded bad") {
		t.Fatalf("rollback after a halt: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if r := run(t, f.env, "rollback", "--bucket", f.url, "--key", key, "--channel", "prod", "--to", fmt.Sprint(brokenRev)); r.code != 1 || !strings.Contains(r.stderr, "recorded bad") {
		t.Fatalf("rollback --to the halted revision: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if v, _ := manifest.CheckSigned(mustTrust(t, pub), "prod", getObj(t, f.store, "channels/prod.json")); v.Payload.StorePath != good2 {
		t.Fatalf("channel moved to %s", v.Payload.StorePath)
	}
}

// snapshotKeys lists the keys under prefix, for "nothing was written".
func snapshotKeys(t *testing.T, s bucket.Store, prefix string) string {
	var keys []string
	s.List(context.Background(), prefix, func(i bucket.Info) error { keys = append(keys, i.Key); return nil })
	return strings.Join(keys, " ")
}
