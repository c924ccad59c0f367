package agent

import (
	"errors"
	"fmt"
)

// Result is what one poll (or Recover) did. Its String is the word logs,
// JSON and tests use; code compares the constants.
type Result int

const (
	ResultIdle          Result = iota // nothing new, or nothing to recover
	ResultRejected                    // the manifest failed a rule; nothing changed
	ResultSkippedBad                  // valid, but rolled back here before
	ResultNotInCohort                 // valid, but this device is outside the rollout
	ResultUpToDate                    // valid, and the device already runs it
	ResultApplied                     // switched, healthy, committed
	ResultFailed                      // fetch, switch or rollback failed; retried next poll
	ResultRolledBack                  // unhealthy; back on the previous system, revision marked bad
	ResultWaitingReboot               // a boot-mode update is installed
	ResultInterrupted                 // a stop signal cut an update short; the next start resumes it
)

var resultNames = [...]string{"idle", "reject", "skip-bad", "not-in-cohort", "up-to-date", "applied", "failed", "rolled-back", "waiting-reboot", "interrupted"}

func (r Result) String() string {
	if r >= 0 && int(r) < len(resultNames) {
		return resultNames[r]
	}
	return fmt.Sprintf("Result(%d)", int(r))
}

// MarshalText writes the Result's word in JSON.
func (r Result) MarshalText() ([]byte, error) { return []byte(r.String()), nil }

// Outcome summarises one poll, for exit codes and tests.
type Outcome struct {
	Result  Result
	Err     error
	Request int // bucket requests made for the manifest
	// SaveErr: the state file could not be written (ErrStateNotSaved).
	// The agent did nothing more after it and refuses to poll again in
	// this process; the exit code is ExitStateNotSaved.
	SaveErr error
	// StatusErr: the status could not be written to the bucket, the local
	// status.json or the Prometheus textfile; the exit code is
	// ExitStatusNotWritten unless something worse happened.
	StatusErr error
}

// ExitCode maps the outcome of `once` to the documented exit codes (see
// main.go): an unsaved state first, then the poll's own failure, then an
// unwritten status.
func (o Outcome) ExitCode() int {
	switch {
	case o.SaveErr != nil:
		return ExitStateNotSaved
	case o.Result == ResultRejected:
		return ExitRejected
	case o.Result == ResultFailed, o.Result == ResultRolledBack, o.Result == ResultInterrupted:
		return ExitFailed
	case o.StatusErr != nil:
		return ExitStatusNotWritten
	}
	return ExitOK
}

// ErrStateNotSaved: the state file could not be written. The agent stops
// at the first such failure: what it did since the last save is not
// durable, and acting on memory that the next start will not have could
// lose a bad mark or the anti-rollback memory. Every update step is
// recorded before it is taken, so the next start recovers from the last
// saved state without applying a rolled-back revision again.
var ErrStateNotSaved = errors.New("state not saved")

// halted is the outcome of a step whose state could not be saved: what
// happened, and why the agent stops there.
func halted(r Result, cause, saveErr error) Outcome {
	if cause == nil {
		return Outcome{Result: r, Err: saveErr}
	}
	return Outcome{Result: r, Err: fmt.Errorf("%v; %w", cause, saveErr)}
}
