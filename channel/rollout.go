package channel

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/nix-ota/nix-ota/status"
)

// Verdict is where one device stands in a rollout step.
type Verdict int

const (
	Outside Verdict = iota // another channel, or outside the step's cohort
	Pending                // in the cohort, not on the step's system yet
	Done                   // runs the step's system, or waits to reboot into it
	Failed                 // tried the system and failed or rolled back, or refused the manifest
)

func (v Verdict) String() string {
	return [...]string{"outside", "pending", "done", "failed"}[v]
}

// Step is one published revision of a rollout as the rules judge it: the
// verified entry and where the run of revisions with its system began, so a
// failure at any earlier step of the same system counts.
type Step struct {
	Entry Entry
	First uint64
}

// StepOf is the step a verified entry stands for in h.
func (h *History) StepOf(e Entry) Step { return Step{Entry: e, First: h.RunStart(e)} }

// Report is one device's check-in as the rollout rules see it. Offline is
// decided by the reader (it depends on the clock and the heartbeat).
type Report struct {
	Status  status.Status
	Offline bool
	// Contested: a registered device whose newest check-in the device
	// registry does not back (another key, a replay): Status is its last
	// verified one, or empty when the reader has none. Its real state is
	// unknown, so it holds a step back and can neither pass nor fail it.
	Contested bool
}

// Classify is the one rule for "done, pending or failed" that rollout,
// publish --wait, status and the dashboard share. It is pure.
func (s Step) Classify(r Report) (Verdict, string) {
	p := s.Entry.v.Payload
	d := r.Status
	if r.Contested && (d.Channel == p.Channel || d.Channel == "") && p.Rollout.Includes(d.DeviceID) {
		// A device of unknown channel counts in every channel's cohort.
		return Pending, "a newer check-in under its id was refused; its state is unknown until it writes a verified one"
	}
	if d.Channel != p.Channel || !p.Rollout.Includes(d.DeviceID) {
		return Outside, ""
	}
	want, ok := p.StorePathFor(d.Class)
	switch {
	case !ok:
		return Failed, fmt.Sprintf("revision %d has no system for class %q", p.Revision, d.Class)
	case (d.State == status.UpToDate || d.State == status.WaitingReboot) && d.StorePath == want && d.Revision >= s.First:
		return Done, d.State
	case (d.State == status.Failed || d.State == status.RolledBack) && d.Attempted >= s.First:
		return Failed, d.State + ": " + d.LastError
	case d.State == status.Rejected && d.CheckedAt.After(p.PublishedAt):
		// Pending, not failed: a mirror serving junk makes honest devices
		// reject, and that must not halt a rollout or mark a system bad.
		return Pending, "rejected the manifest: " + d.LastError
	case r.Offline:
		return Pending, "offline since " + d.CheckedAt.UTC().Format("2006-01-02 15:04 UTC")
	}
	return Pending, d.State
}

// Tally counts a step's cohort.
type Tally struct {
	Cohort, Done, Failed, Pending int
	Contested                     int      // of Pending: devices whose newest check-in was refused
	Failures                      []string // "id (why)"
	Waiting                       []string // ids still pending
}

// Tally classifies every report.
func (s Step) Tally(reports []Report) Tally {
	var t Tally
	for _, r := range reports {
		v, why := s.Classify(r)
		switch v {
		case Outside:
			continue
		case Done:
			t.Done++
		case Failed:
			t.Failed++
			t.Failures = append(t.Failures, fmt.Sprintf("%s (%s)", r.Status.DeviceID, why))
		case Pending:
			t.Pending++
			t.Waiting = append(t.Waiting, r.Status.DeviceID)
			if r.Contested {
				t.Contested++
			}
		}
		t.Cohort++
	}
	return t
}

// String says where a step stands, in words that never call failures
// healthy.
func (t Tally) String() string {
	return fmt.Sprintf("%d of %d cohort devices done, %d failed, %d pending", t.Done, t.Cohort, t.Failed, t.Pending)
}

// Limit is how many cohort failures a step tolerates: a share or a count.
type Limit struct {
	Percent float64
	Count   int
	IsShare bool
}

// ParseLimit reads "2%" or "3".
func ParseLimit(s string) (Limit, error) {
	if p, ok := strings.CutSuffix(s, "%"); ok {
		v, err := strconv.ParseFloat(p, 64)
		if err != nil || v < 0 || v > 100 {
			return Limit{}, fmt.Errorf("%q: want N%% (0-100) or a count N", s)
		}
		return Limit{Percent: v, IsShare: true}, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return Limit{}, fmt.Errorf("%q: want N%% (0-100) or a count N", s)
	}
	return Limit{Count: n}, nil
}

// Exceeded reports whether failed of cohort is over the limit.
func (l Limit) Exceeded(failed, cohort int) bool {
	if l.IsShare {
		return cohort > 0 && float64(failed)*100 > l.Percent*float64(cohort)
	}
	return failed > l.Count
}

func (l Limit) String() string {
	if l.IsShare {
		return strconv.FormatFloat(l.Percent, 'f', -1, 64) + "%"
	}
	return strconv.Itoa(l.Count)
}

// Outcome is the decision about a step.
type Outcome int

const (
	Waiting  Outcome = iota // keep following
	Passed                  // the step may go on
	Halt                    // too many failures: revert
	Unproven                // the wait is over and too few cohort devices reported
)

func (o Outcome) String() string {
	return [...]string{"waiting", "passed", "halt", "unproven"}[o]
}

// Gate is what a step needs to pass.
type Gate struct {
	Limit      Limit // failures tolerated
	MinDevices int   // cohort devices that must have reported done
	RequireAll bool  // every cohort device must be done (publish --wait), not just MinDevices
}

// Judge decides a step from its tally. Failures over the limit halt at
// once. The step passes when nothing is pending and at least MinDevices are
// done, or at the end of the wait when enough are done, not every one is
// required and no pending device is contested; it is unproven when the
// wait ends short of that.
func (g Gate) Judge(t Tally, waitOver bool) (Outcome, string) {
	within := fmt.Sprintf("within limit (%d of %d failed, limit %s)", t.Failed, t.Cohort, g.Limit)
	switch {
	case g.Limit.Exceeded(t.Failed, t.Cohort):
		return Halt, fmt.Sprintf("%d of %d cohort devices failed (limit %s)", t.Failed, t.Cohort, g.Limit)
	case t.Pending == 0 && t.Done >= g.MinDevices:
		return Passed, fmt.Sprintf("%d of %d done, %s", t.Done, t.Cohort, within)
	case waitOver && t.Contested > 0:
		return Unproven, fmt.Sprintf("%d cohort device(s) have a newer check-in the device registry does not back (nix-ota device list shows why), so their state is unknown; %s", t.Contested, t)
	case waitOver && t.Done < g.MinDevices:
		return Unproven, fmt.Sprintf("only %d cohort device(s) reported done, %d needed; %s", t.Done, g.MinDevices, t)
	case waitOver && g.RequireAll:
		return Unproven, fmt.Sprintf("%d cohort device(s) still pending; %s", t.Pending, t)
	case waitOver:
		return Passed, fmt.Sprintf("%d of %d done, %d still pending, %s", t.Done, t.Cohort, t.Pending, within)
	}
	return Waiting, t.String()
}
