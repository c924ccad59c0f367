package cli

import (
	"context"
	"strings"

	"github.com/spf13/pflag"

	"github.com/nix-ota/nix-ota/bucket"
	"github.com/nix-ota/nix-ota/bucket/awscreds"
	"github.com/nix-ota/nix-ota/bucket/s3store"
	"github.com/nix-ota/nix-ota/manifest"
)

// openBucket opens --bucket (or $NIX_OTA_BUCKET). s3:// URLs get the full
// AWS credential chain, including the URL's profile= parameter.
func openBucket(ctx context.Context, env *Env, raw string, create bool) (bucket.Store, error) {
	if raw == "" {
		raw = env.Getenv("NIX_OTA_BUCKET")
	}
	if raw == "" {
		return nil, usagef("--bucket is required (or set $NIX_OTA_BUCKET), e.g. file:///srv/nix-ota or s3://fleet?endpoint=minio.lan:9000")
	}
	opts := bucket.Options{Create: create}
	if strings.HasPrefix(raw, "s3://") {
		cfg, err := bucket.ParseS3URL(raw)
		if err != nil {
			return nil, err
		}
		creds, err := awscreds.New(ctx, cfg.Profile)
		if err != nil {
			return nil, err
		}
		return s3store.Open(raw, opts, creds)
	}
	return bucket.Open(raw, opts)
}

// trustFlags are the flags that describe what a device trusts.
type trustFlags struct {
	keys      *[]string
	threshold *int
}

func addTrustFlags(fs *pflag.FlagSet) trustFlags {
	return trustFlags{
		keys:      fs.StringArray("public-key", nil, "trusted public key NAME:BASE64 (repeatable)"),
		threshold: fs.Int("threshold", 1, "how many distinct trusted keys must have signed"),
	}
}

func (t trustFlags) trust() (manifest.Trust, error) {
	if len(*t.keys) == 0 {
		return manifest.Trust{}, usagef("--public-key is required (the NAME:BASE64 line nix-ota keygen printed)")
	}
	tr := manifest.Trust{Threshold: *t.threshold}
	for _, k := range *t.keys {
		pk, err := manifest.ParsePublicKey(k)
		if err != nil {
			return manifest.Trust{}, usageError{err}
		}
		tr.Keys = append(tr.Keys, pk)
	}
	if err := tr.Check(); err != nil {
		return manifest.Trust{}, usageError{err}
	}
	return tr, nil
}

// openForReading is the start of the commands that read a fleet: no stray
// arguments, optional trusted keys (to check signatures), the bucket.
func openForReading(ctx context.Context, env *Env, args []string, tf trustFlags, bkt string) (*manifest.Trust, bucket.Store, error) {
	if err := noArgs(args); err != nil {
		return nil, nil, err
	}
	trust, err := optionalTrust(tf)
	if err != nil {
		return nil, nil, err
	}
	s, err := openBucket(ctx, env, bkt, false)
	return trust, s, err
}

func optionalTrust(tf trustFlags) (*manifest.Trust, error) {
	if len(*tf.keys) == 0 {
		return nil, nil
	}
	t, err := tf.trust()
	if err != nil {
		return nil, err
	}
	return &t, nil
}

// addBucketFlag binds --bucket; note adds to the help text.
func addBucketFlag(fs *pflag.FlagSet, dst *string, note string) {
	fs.StringVar(dst, "bucket", "", "bucket URL (or $NIX_OTA_BUCKET)"+note)
}
