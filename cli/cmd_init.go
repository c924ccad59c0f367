package cli

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/pflag"

	"github.com/nix-ota/nix-ota/bucket"
)

type initOptions struct {
	bucket string
	json   bool
}

// initResult is init --json.
type initResult struct {
	Bucket  string `json:"bucket"`
	Created bool   `json:"created"` // false: it was initialised already
}

func initCmd() *command {
	o := &initOptions{}
	return &command{
		name:    "init",
		summary: "prepare a bucket for nix-ota",
		about: `Writes the layout marker (nix-ota.json) into a bucket, creating a file://
bucket's directory if needed. Every other command refuses a bucket without
the marker, so a typo in a URL is an error rather than a new, empty fleet.
Running init again on an initialised bucket changes nothing. For S3 and
MinIO the bucket itself must exist (create it with your usual tooling).
--json prints {"bucket", "created"} on stdout.`,
		examples: `  nix-ota init --bucket file:///srv/nix-ota
  nix-ota init --bucket 's3://fleet?endpoint=minio.lan:9000&scheme=http'`,
		flags: func(fs *pflag.FlagSet) {
			addBucketFlag(fs, &o.bucket, "")
			fs.BoolVar(&o.json, "json", false, "print the result as one JSON object on stdout")
		},
		run: o.run,
	}
}

func (o *initOptions) run(ctx context.Context, env *Env, args []string) error {
	if err := noArgs(args); err != nil {
		return err
	}
	s, err := openBucket(ctx, env, o.bucket, forInit)
	if err != nil {
		return err
	}
	created, err := bucket.Init(ctx, s, publisherName(), time.Now())
	if err != nil {
		return err
	}
	switch {
	case o.json:
		return writeJSON(env.Stdout, initResult{Bucket: s.String(), Created: created})
	case created:
		fmt.Fprintf(env.Stdout, "initialised %s\n", s)
	default:
		fmt.Fprintf(env.Stdout, "%s is already initialised; nothing changed\n", s)
	}
	return nil
}
