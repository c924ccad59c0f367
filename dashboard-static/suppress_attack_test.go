package dashboard_test

import (
	"context"
	"testing"
	"time"

	"github.com/nix-ota/nix-ota/bucket"
	"github.com/nix-ota/nix-ota/channel"
	dashboard "github.com/nix-ota/nix-ota/dashboard-static"
	"github.com/nix-ota/nix-ota/internal/testenv"
	"github.com/nix-ota/nix-ota/status"
)

// TestAttackSuppressFailure: a holder of the shared check-in credential
// who owns kiosk-1 (approved) overwrites kiosk-2's genuine "rolled-back"
// check-in (same key: same window) with junk. kiosk-2 is then contested:
// neither the publish --wait gate nor the rollout gate passes, with or
// without the reader's memory.
func TestAttackSuppressFailure(t *testing.T) {
	f := newSignedFleet(t)
	// A reader with memory accepted kiosk-2's pre-update status.
	before := f.read(t, nil)
	p := testenv.Payload("prod", 0, spB)
	p.PublishedAt, p.ExpiresAt = now.Add(-20*time.Minute), now.Add(30*24*time.Hour)
	testenv.Publish(t, f.st, f.signer, p)

	t1 := now.Add(-9 * time.Minute) // kiosk-1 (the attacker's own device) reports done
	testenv.PutSigned(t, f.st, f.k1, status.Status{DeviceID: "kiosk-1", Channel: "prod", State: status.UpToDate, Revision: 2, StorePath: spB, AgentVersion: "2.0", ChangedAt: t1}, t1)
	t2 := now.Add(-4 * time.Minute) // kiosk-2 genuinely fails
	fail := status.Status{DeviceID: "kiosk-2", Channel: "prod", State: status.RolledBack, Revision: 1, StorePath: spA, Attempted: 2, LastError: "health check failed", AgentVersion: "2.0", ChangedAt: t2}
	key := testenv.PutSigned(t, f.st, f.k2, fail, t2)

	// Sanity: without the attack, the failure is seen.
	if pr := f.read(t, nil).Channels[0].Progress; pr.Failed != 1 {
		t.Fatalf("no attack: progress %+v, want 1 failed", pr)
	}

	// The attacker overwrites the same key (same window) a second later.
	junk, _ := status.Sign(status.Status{DeviceID: "kiosk-2", Channel: "prod", State: status.UpToDate, CheckedAt: t2}, f.intruder)
	if _, err := bucket.PutBytes(context.Background(), f.st, key, junk, bucket.JSONPut()); err != nil {
		t.Fatal(err)
	}
	_ = bucket.Touch(f.st, key, t2.Add(time.Second))

	judge := func(name string, fl *dashboard.Fleet) {
		pr := fl.Channels[0].Progress
		tally := channel.Tally{Cohort: pr.Cohort, Done: pr.Done, Failed: pr.Failed, Pending: pr.Pending, Contested: pr.Contested}
		wait, _ := channel.Gate{Limit: channel.Limit{Count: 0}, MinDevices: 1, RequireAll: true}.Judge(tally, true)
		roll, _ := channel.Gate{Limit: channel.Limit{IsShare: true, Percent: 0}, MinDevices: 1}.Judge(tally, true)
		t.Logf("%s: progress %+v; publish --wait gate: %s; rollout gate: %s", name, pr, wait, roll)
		counted, apart := rows(fl)
		t.Logf("%s: kiosk-2 counted=%+v apart trust=%s", name, counted["kiosk-2"].Reported, apart["kiosk-2"].Trust)
		if pr.Failed == 0 && (wait == channel.Passed || roll == channel.Passed) {
			t.Errorf("%s: kiosk-2's genuine failure was suppressed and a gate passed", name)
		}
	}
	judge("stateless reader (CI publish --wait)", f.read(t, nil))
	judge("reader with snapshot memory (rollout)", f.read(t, before.Snapshot))
}

// TestAttackPruneGenuine: one junk check-in in a newer window must not make
// a reader without memory (a CI dashboard refresh) mark the device's
// genuine verified check-in superseded (pruning would delete it), nor
// drop the device from the counted rows.
func TestAttackPruneGenuine(t *testing.T) {
	f := newSignedFleet(t)
	later := f.at.Add(10 * time.Minute)
	testenv.PutCheckin(t, f.st, "kiosk-2", later, []byte(`junk`))
	fl := f.read(t, nil)
	for _, k := range fl.Read.Superseded {
		if k == bucket.CheckinKey("kiosk-2", f.at) {
			t.Errorf("kiosk-2's only verified check-in %s is marked superseded (pruned by the dashboard)", k)
		}
	}
	if _, ok := rowsCounted(fl)["kiosk-2"]; !ok {
		t.Errorf("kiosk-2 no longer counted by a stateless reader after one junk write")
	}
}

func rowsCounted(fl *dashboard.Fleet) map[string]dashboard.Device {
	c, _ := rows(fl)
	return c
}
