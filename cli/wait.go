package cli

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nix-ota/nix-ota/bucket"
	dashboard "github.com/nix-ota/nix-ota/dashboard-static"
	"github.com/nix-ota/nix-ota/manifest"
	"github.com/nix-ota/nix-ota/status"
)

// waitRollout follows a published revision until every device of the
// channel inside the rollout cohort runs it, one fails it, or time runs
// out: `publish --wait` for CI jobs that gate on a rollout.
func waitRollout(ctx context.Context, env *Env, s bucket.Store, ch string, rev uint64, rollout manifest.Rollout, published time.Time, timeout, interval time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		f, err := dashboard.Collect(ctx, s, dashboard.Options{Channel: ch})
		if err != nil {
			return err
		}
		var done, pending, failed []string
		for _, d := range f.Devices {
			if d.State == dashboard.Invalid || !rollout.Includes(d.ID) {
				continue
			}
			rep := d.Reported
			switch {
			case d.Revision >= rev && (rep == status.UpToDate || rep == status.WaitingReboot):
				done = append(done, d.ID)
			case (rep == status.Failed || rep == status.RolledBack) && d.Attempted == rev,
				rep == status.Rejected && d.CheckedAt.After(published):
				failed = append(failed, fmt.Sprintf("%s (%s: %s)", d.ID, rep, oneLine(d.LastError, 120)))
			default:
				pending = append(pending, d.ID)
			}
		}
		fmt.Fprintf(env.Stderr, "rollout %s revision %d: %d done, %d pending, %d failed (devices in the %d%% cohort)\n", ch, rev, len(done), len(pending), len(failed), rollout.Percent)
		if len(failed) > 0 {
			return fmt.Errorf("rollout of %s revision %d: %d device(s) failed: %s", ch, rev, len(failed), strings.Join(failed, "; "))
		}
		if len(pending) == 0 {
			if len(done) == 0 {
				fmt.Fprintf(env.Stderr, "note: no device of channel %s in the cohort has checked in\n", ch)
			}
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("rollout of %s revision %d: %w after %s: %d device(s) still pending: %s", ch, rev, errWaitTimeout, timeout, len(pending), strings.Join(first(pending, 20), ", "))
		}
		if !sleepCtx(ctx, interval) {
			return ctx.Err()
		}
	}
}

var errWaitTimeout = errors.New("timed out")
