package channel_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nix-ota/nix-ota/channel"
	"github.com/nix-ota/nix-ota/internal/testenv"
	"github.com/nix-ota/nix-ota/manifest"
	"github.com/nix-ota/nix-ota/status"
)

// rolloutHistory publishes prod: revision 1 system A at 100%, revisions 2
// and 3 system B at 50% then 100%; and mixed: revision 1 with a system per
// class. It returns the steps of prod revisions 2 and 3 and mixed 1.
func rolloutHistory(t *testing.T) (half, full, mixed channel.Step, published time.Time) {
	ctx := context.Background()
	st := fileStore(t)
	s, pub := testenv.NewSigner(t, "k")
	for i, pct := range []int{100, 50, 100} {
		sys := sysB
		if i == 0 {
			sys = sysA
		}
		p := testenv.Payload("prod", 0, sys)
		p.Rollout = manifest.Rollout{Percent: pct, Salt: "s"}
		if _, err := testenv.PublishSigned(ctx, st, nil, p, s); err != nil {
			t.Fatal(err)
		}
	}
	p := testenv.Payload("mixed", 0, "")
	p.StorePath, p.Systems = "", manifest.Systems{"rpi4": sysA, "x86": sysB}
	if _, err := testenv.PublishSigned(ctx, st, nil, p, s); err != nil {
		t.Fatal(err)
	}
	h, err := channel.Load(ctx, st, "prod", trustOf(pub))
	if err != nil {
		t.Fatal(err)
	}
	e2, _ := h.Find(2)
	e3, _ := h.Find(3)
	hm, err := channel.Load(ctx, st, "mixed", trustOf(pub))
	if err != nil {
		t.Fatal(err)
	}
	em, _ := hm.Current()
	return h.StepOf(e2), h.StepOf(e3), hm.StepOf(em), e3.Payload().PublishedAt
}

const (
	sysA = "/nix/store/0c5lq2n9xqbq6yv5q9r1lxg7b8c7wjsz-nixos-system-a"
	sysB = "/nix/store/1c5lq2n9xqbq6yv5q9r1lxg7b8c7wjsz-nixos-system-b"
	sysC = "/nix/store/2c5lq2n9xqbq6yv5q9r1lxg7b8c7wjsz-nixos-system-c"
)

// outsideHalf is a device id outside the 50% cohort of salt "s".
func outsideHalf() string {
	for i := 0; ; i++ {
		if id := fmt.Sprintf("kiosk-%d", i); !(manifest.Rollout{Percent: 50, Salt: "s"}).Includes(id) {
			return id
		}
	}
}

// TestClassify is the table of the one rollout rule.
func TestClassify(t *testing.T) {
	half, full, mixed, published := rolloutHistory(t)
	if full.First != 2 || half.First != 2 {
		t.Fatalf("run starts at %d/%d, want 2", full.First, half.First)
	}
	before, after := published.Add(-time.Hour), published.Add(time.Minute)
	dev := func(mut func(*status.Status)) status.Status {
		s := status.Status{DeviceID: "kiosk-1", Channel: "prod", State: status.UpToDate, Revision: 3, StorePath: sysB, CheckedAt: after}
		mut(&s)
		return s
	}
	cases := []struct {
		name    string
		step    channel.Step
		st      status.Status
		offline bool
		want    channel.Verdict
	}{
		{"on the system at the revision", full, dev(func(*status.Status) {}), false, channel.Done},
		{"on the system at an earlier step of the run", full, dev(func(s *status.Status) { s.Revision = 2 }), false, channel.Done},
		{"on the system at a later revision", full, dev(func(s *status.Status) { s.Revision = 9 }), false, channel.Done},
		{"waiting for the reboot into it", full, dev(func(s *status.Status) { s.State = status.WaitingReboot }), false, channel.Done},
		{"still on the old system", full, dev(func(s *status.Status) { s.Revision, s.StorePath = 1, sysA }), false, channel.Pending},
		{"same store path, revision before the run", full, dev(func(s *status.Status) { s.Revision = 1 }), false, channel.Pending},
		{"downloading", full, dev(func(s *status.Status) { s.State, s.Revision, s.StorePath = status.Downloading, 1, sysA }), false, channel.Pending},
		{"switching", full, dev(func(s *status.Status) { s.State = status.Switching; s.Revision, s.StorePath = 1, sysA }), false, channel.Pending},
		{"offline on the old system", full, dev(func(s *status.Status) { s.Revision, s.StorePath = 1, sysA }), true, channel.Pending},
		{"offline but done", full, dev(func(*status.Status) {}), true, channel.Done},
		{"failed this run", full, dev(func(s *status.Status) { s.State, s.Attempted, s.Revision, s.StorePath = status.Failed, 2, 1, sysA }), false, channel.Failed},
		{"rolled back at this revision", full, dev(func(s *status.Status) { s.State, s.Attempted, s.Revision, s.StorePath = status.RolledBack, 3, 1, sysA }), false, channel.Failed},
		{"rolled back before the run", full, dev(func(s *status.Status) { s.State, s.Attempted, s.Revision, s.StorePath = status.RolledBack, 1, 1, sysC }), false, channel.Pending},
		{"rejected after publish", full, dev(func(s *status.Status) { s.State, s.Revision, s.StorePath = status.Rejected, 1, sysA }), false, channel.Pending},
		{"rejected before publish", full, dev(func(s *status.Status) {
			s.State, s.Revision, s.StorePath, s.CheckedAt = status.Rejected, 1, sysA, before
		}), false, channel.Pending},
		{"another channel", full, dev(func(s *status.Status) { s.Channel = "staging" }), false, channel.Outside},
		{"outside the 50% cohort", half, dev(func(s *status.Status) { s.DeviceID = outsideHalf() }), false, channel.Outside},
		{"mixed: my class's system", mixed, dev(func(s *status.Status) { s.Channel, s.Class, s.Revision, s.StorePath = "mixed", "rpi4", 1, sysA }), false, channel.Done},
		{"mixed: another class's system", mixed, dev(func(s *status.Status) { s.Channel, s.Class, s.Revision, s.StorePath = "mixed", "rpi4", 1, sysB }), false, channel.Pending},
		{"mixed: class without a system", mixed, dev(func(s *status.Status) { s.Channel, s.Class = "mixed", "arm32" }), false, channel.Failed},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got, why := c.step.Classify(channel.Report{Status: c.st, Offline: c.offline}); got != c.want {
				t.Fatalf("%v (%s), want %v", got, why, c.want)
			}
		})
	}
}

// TestJudge: failures over the limit halt; a step with fewer reporting
// devices than required never passes; words never call failures healthy.
func TestJudge(t *testing.T) {
	pct := func(s string) channel.Limit {
		l, err := channel.ParseLimit(s)
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	cases := []struct {
		name     string
		gate     channel.Gate
		tally    channel.Tally
		waitOver bool
		want     channel.Outcome
	}{
		{"all done", channel.Gate{Limit: pct("0"), MinDevices: 1}, channel.Tally{Cohort: 3, Done: 3}, false, channel.Passed},
		{"one failed over 2%", channel.Gate{Limit: pct("2%"), MinDevices: 1}, channel.Tally{Cohort: 3, Done: 2, Failed: 1}, false, channel.Halt},
		{"one failed within a count of 1", channel.Gate{Limit: pct("1"), MinDevices: 1}, channel.Tally{Cohort: 3, Done: 2, Failed: 1}, false, channel.Passed},
		{"empty cohort keeps waiting", channel.Gate{Limit: pct("2%"), MinDevices: 1}, channel.Tally{}, false, channel.Waiting},
		{"empty cohort at the end", channel.Gate{Limit: pct("2%"), MinDevices: 1}, channel.Tally{}, true, channel.Unproven},
		{"too few done at the end", channel.Gate{Limit: pct("2%"), MinDevices: 3}, channel.Tally{Cohort: 5, Done: 2, Pending: 3}, true, channel.Unproven},
		{"enough done, some pending at the end", channel.Gate{Limit: pct("2%"), MinDevices: 2}, channel.Tally{Cohort: 5, Done: 2, Pending: 3}, true, channel.Passed},
		{"every device required, some pending", channel.Gate{Limit: pct("0"), MinDevices: 1, RequireAll: true}, channel.Tally{Cohort: 5, Done: 4, Pending: 1}, true, channel.Unproven},
		{"pending, time left", channel.Gate{Limit: pct("0"), MinDevices: 1}, channel.Tally{Cohort: 5, Done: 4, Pending: 1}, false, channel.Waiting},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, why := c.gate.Judge(c.tally, c.waitOver)
			if got != c.want {
				t.Fatalf("%v (%s), want %v", got, why, c.want)
			}
			if c.tally.Failed > 0 && (got == channel.Passed) && !containsAll(why, "within limit", fmt.Sprintf("%d of %d failed", c.tally.Failed, c.tally.Cohort)) {
				t.Fatalf("a pass with failures says %q", why)
			}
		})
	}
	for _, bad := range []string{"", "x", "-1", "101%", "%"} {
		if _, err := channel.ParseLimit(bad); err == nil {
			t.Errorf("ParseLimit(%q) accepted", bad)
		}
	}
}

func containsAll(s string, subs ...string) bool {
	for _, x := range subs {
		if !strings.Contains(s, x) {
			return false
		}
	}
	return true
}
