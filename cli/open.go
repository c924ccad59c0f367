package cli

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"unicode"

	"github.com/spf13/pflag"

	"github.com/nix-ota/nix-ota/bucket"
	"github.com/nix-ota/nix-ota/bucket/awscreds"
	"github.com/nix-ota/nix-ota/bucket/s3store"
	"github.com/nix-ota/nix-ota/manifest"
)

// bucketUse is what a command does with the bucket it opens, which decides
// what a missing file:// directory means.
type bucketUse int

const (
	// forReading: status, verify, history, dashboard, doctor. A missing
	// directory is a typo; init there would make a new, empty fleet.
	forReading bucketUse = iota
	// forWriting: publish, push, rollout, rollback, resign, gc. A missing
	// directory may be a bucket not made yet: the error suggests init.
	forWriting
	// forInit: init, which creates a file:// bucket's directory.
	forInit
)

// bucketURL is --bucket, or $NIX_OTA_BUCKET when the flag is not given.
func bucketURL(env *Env, raw string) string {
	if raw == "" {
		raw = env.Getenv("NIX_OTA_BUCKET")
	}
	return raw
}

// openBucket opens --bucket (or $NIX_OTA_BUCKET). s3:// URLs get the full
// AWS credential chain, including the URL's profile= parameter.
func openBucket(ctx context.Context, env *Env, raw string, use bucketUse) (bucket.Store, error) {
	raw = bucketURL(env, raw)
	if raw == "" {
		return nil, usagef("--bucket is required (or set $NIX_OTA_BUCKET), e.g. file:///srv/nix-ota or s3://fleet?endpoint=minio.lan:9000")
	}
	if use == forReading {
		if err := checkFileBucket(raw); err != nil {
			return nil, err
		}
	}
	opts := bucket.Options{Create: use == forInit}
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

// checkFileBucket refuses a file:// URL whose directory is missing with a
// message for a reading command: check the path, rather than the "run
// nix-ota init" a writing command gets.
func checkFileBucket(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "file" || !filepath.IsAbs(u.Path) {
		return nil // bucket.Open says what is wrong with it
	}
	if _, err := os.Stat(u.Path); errors.Is(err, fs.ErrNotExist) {
		return noBucketError{raw}
	}
	return nil
}

// noBucketError is a reading command's missing file:// directory; it is a
// bucket.ErrUnreachable.
type noBucketError struct{ url string }

func (e noBucketError) Error() string {
	return fmt.Sprintf("no nix-ota bucket at %s (no such directory); check the path", e.url)
}

func (e noBucketError) Is(target error) bool { return target == bucket.ErrUnreachable }

// publicKeyEnv names the variable holding trusted public keys: the
// default --public-key of reading commands, extra trust for signing ones.
const publicKeyEnv = "NIX_OTA_PUBLIC_KEY"

// envPublicKeys splits $NIX_OTA_PUBLIC_KEY at whitespace and commas.
func envPublicKeys(env *Env) []string {
	return strings.FieldsFunc(env.Getenv(publicKeyEnv), func(r rune) bool { return r == ',' || unicode.IsSpace(r) })
}

// parsePublicKeys parses --public-key values, then those of
// $NIX_OTA_PUBLIC_KEY, naming the variable when one of its keys is bad.
func parsePublicKeys(flagKeys, envKeys []string) ([]manifest.PublicKey, error) {
	var out []manifest.PublicKey
	for i, k := range append(append([]string{}, flagKeys...), envKeys...) {
		pk, err := manifest.ParsePublicKey(k)
		if err != nil {
			if i >= len(flagKeys) {
				return nil, usagef("$%s: %v", publicKeyEnv, err)
			}
			return nil, usageError{err}
		}
		out = append(out, pk)
	}
	return out, nil
}

// trustFlags are the flags that describe what a device trusts.
type trustFlags struct {
	keys      *[]string
	threshold *int
}

func addTrustFlags(fs *pflag.FlagSet) trustFlags {
	return trustFlags{
		keys:      fs.StringArray("public-key", nil, "trusted public key NAME:BASE64 (repeatable; default $"+publicKeyEnv+")"),
		threshold: fs.Int("threshold", 1, "how many distinct trusted keys must have signed"),
	}
}

// keyList is --public-key, or the keys of $NIX_OTA_PUBLIC_KEY when the
// flag is not given.
func (t trustFlags) keyList(env *Env) (flagKeys, envKeys []string) {
	if len(*t.keys) > 0 {
		return *t.keys, nil
	}
	return nil, envPublicKeys(env)
}

func (t trustFlags) trust(env *Env) (manifest.Trust, error) {
	flagKeys, envKeys := t.keyList(env)
	if len(flagKeys)+len(envKeys) == 0 {
		return manifest.Trust{}, usagef("--public-key is required (the NAME:BASE64 line nix-ota keygen printed; or set $%s)", publicKeyEnv)
	}
	keys, err := parsePublicKeys(flagKeys, envKeys)
	if err != nil {
		return manifest.Trust{}, err
	}
	tr := manifest.Trust{Threshold: *t.threshold, Keys: keys}
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
	trust, err := optionalTrust(env, tf)
	if err != nil {
		return nil, nil, err
	}
	s, err := openBucket(ctx, env, bkt, forReading)
	return trust, s, err
}

// optionalTrust is the trust of --public-key or $NIX_OTA_PUBLIC_KEY, or
// nil when neither names a key (contents are then shown unverified).
func optionalTrust(env *Env, tf trustFlags) (*manifest.Trust, error) {
	if f, e := tf.keyList(env); len(f)+len(e) == 0 {
		return nil, nil
	}
	t, err := tf.trust(env)
	if err != nil {
		return nil, err
	}
	return &t, nil
}

// addBucketFlag binds --bucket; note adds to the help text.
func addBucketFlag(fs *pflag.FlagSet, dst *string, note string) {
	fs.StringVar(dst, "bucket", "", "bucket URL (or $NIX_OTA_BUCKET)"+note)
}
