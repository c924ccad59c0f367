package cli

import (
	"context"
	"fmt"

	"github.com/nix-ota/nix-ota/channel"
)

// waitPublished is publish --wait: follow the revision just published until
// every device of its cohort runs it (exit 0), one fails it, or the wait
// ends with devices pending or too few reporting (exit 1). A revision at
// 100% that every device took is recorded as known good; one a device
// failed is recorded bad.
func waitPublished(ctx context.Context, c *signedChannel, f *follower, rev uint64) error {
	defer c.refreshDashboard(ctx)
	e, err := c.h.Find(rev)
	if err != nil {
		return err
	}
	out, why, t, err := f.follow(ctx, c.h.StepOf(e))
	if err != nil {
		return err
	}
	p := e.Payload()
	switch out {
	case channel.Passed:
		if p.Rollout.Percent >= 100 && t.Done > 0 {
			c.attest(ctx, e, true, "publish --wait: "+why)
		}
		fmt.Fprintf(c.env.Stderr, "rollout %s revision %d: %s\n", c.name, rev, why)
		return nil
	case channel.Halt:
		c.attest(ctx, e, false, "publish --wait: "+why)
		err = fmt.Errorf("rollout of %s revision %d failed: %s", c.name, rev, why)
		f.notify(ctx, "failed", c.name, rev, err.Error())
	default:
		hint := ""
		if t.Cohort == 0 {
			hint = " (no device of the cohort has checked in; --allow-empty accepts that)"
		}
		err = fmt.Errorf("rollout of %s revision %d not confirmed: %s%s", c.name, rev, why, hint)
		f.notify(ctx, "unproven", c.name, rev, err.Error())
	}
	return err
}
