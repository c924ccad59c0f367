package cli

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/pflag"

	"github.com/nix-ota/nix-ota/bucket"
	dashboard "github.com/nix-ota/nix-ota/dashboard-static"
	"github.com/nix-ota/nix-ota/manifest"
)

type forgetOptions struct {
	bucket string
	json   bool
}

// forgetResult is forget --json.
type forgetResult struct {
	Forgotten []string `json:"forgotten"`
	Deleted   int      `json:"deletedCheckins"`
}

func forgetCmd() *command {
	o := &forgetOptions{}
	return &command{
		name:    "forget",
		summary: "remove retired devices from the fleet view",
		about: `Usage: nix-ota forget [flags] DEVICE...
Removes devices from status, the dashboard and rollout counts: records them in
forgotten-devices.json (so every reader, incremental or not, drops them at
once) and deletes their check-ins. A forgotten device that checks in again
is back. Deleting check-ins by hand works too, but readers notice that only
at their next full read (hourly, or dashboard --full).
--json prints {"forgotten", "deletedCheckins"} on stdout.`,
		examples: `  nix-ota forget --bucket s3://fleet kiosk-lobby-02 kiosk-old-7`,
		flags: func(fs *pflag.FlagSet) {
			addBucketFlag(fs, &o.bucket, "")
			fs.BoolVar(&o.json, "json", false, "print the result as one JSON object on stdout")
		},
		run: o.run,
	}
}

func (o *forgetOptions) run(ctx context.Context, env *Env, args []string) error {
	if len(args) == 0 {
		return usagef("name at least one device to forget")
	}
	for _, id := range args {
		if err := manifest.ValidateName("device id", id); err != nil {
			return usagef("%v", err)
		}
	}
	s, err := openBucket(ctx, env, o.bucket, forWriting)
	if err != nil {
		return err
	}
	if err := bucket.CheckLayout(ctx, s); err != nil {
		return err
	}
	n, err := dashboard.Forget(ctx, s, args, time.Now())
	if err != nil {
		return err
	}
	if o.json {
		return writeJSON(env.Stdout, forgetResult{Forgotten: args, Deleted: n})
	}
	fmt.Fprintf(env.Stdout, "forgot %d device(s), deleted %d check-in(s)\n", len(args), n)
	return nil
}
