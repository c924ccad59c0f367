package agent

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/spf13/pflag"

	"github.com/nix-ota/nix-ota/bucket"
	"github.com/nix-ota/nix-ota/manifest"
	"github.com/nix-ota/nix-ota/status"
)

const checkConfigUsage = "usage: nix-ota-agent check-config [--files] [--online] FILE"

// checkConfig runs `check-config [--files] [--online] FILE`. Without flags
// it checks the file's content only: that is what the NixOS module runs
// when it builds the file, where the device's secrets do not exist yet.
// --files, on the device, also checks every file and directory the
// configuration names; --online (which implies --files) also reads and
// verifies the channel manifest and writes the device's status blob.
func checkConfig(ctx context.Context, args []string, stdout io.Writer, logger *log.Logger) int {
	var files, online bool
	fs := pflag.NewFlagSet("check-config", pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.BoolVar(&files, "files", false, "check that every file the configuration names is there and usable")
	fs.BoolVar(&online, "online", false, "also read and verify the channel manifest and write the status blob")
	if err := fs.Parse(args); err != nil || fs.NArg() != 1 {
		logger.Printf("nix-ota-agent check-config: %s", checkConfigUsage)
		return ExitUsage
	}
	path := fs.Arg(0)
	c, err := LoadConfig(path)
	if err != nil {
		logger.Printf("nix-ota-agent check-config: %v", err)
		return ExitUsage
	}
	c.withDefaults()
	trust, err := c.Check()
	if err != nil {
		logger.Printf("nix-ota-agent check-config: %s: %v", path, err)
		return ExitUsage
	}
	if files || online {
		if bad := c.checkFiles(); len(bad) > 0 {
			for _, p := range bad {
				logger.Printf("nix-ota-agent check-config: %s: %s", path, p)
			}
			return ExitUsage
		}
	}
	names := make([]string, len(trust.Keys))
	for i, k := range trust.Keys {
		names[i] = k.Name
	}
	fmt.Fprintf(stdout, "ok: %s: device %s follows channel %s on %s, trusting %s (threshold %d), polling every %s, checking in at least every %s\n",
		path, c.DeviceID, c.Channel, c.Bucket, strings.Join(names, ","), c.Threshold, c.Interval.Duration, c.Heartbeat.Duration)
	if !online {
		return ExitOK
	}
	return checkOnline(ctx, c, trust, stdout, logger)
}

// checkFiles lists, one line each, the files and directories the
// configuration names that the agent could not use: the status
// credentials (read and parsed), the Prometheus textfile's directory, the
// state directory and the profile's directory (writable), and file://
// buckets (the channel's readable, the status one writable).
func (c *Config) checkFiles() problems {
	var errs problems
	if c.StatusCredentials != "" {
		if _, err := bucket.FileCredentials(c.StatusCredentials, "default")(context.Background()); err != nil {
			errs.add("statusCredentials %s: %v; put the device's keys there ([default], aws_access_key_id, aws_secret_access_key) or fix the path", c.StatusCredentials, err)
		}
	}
	if c.PrometheusFile != "" {
		if err := writableDir(filepath.Dir(c.PrometheusFile), false); err != nil {
			errs.add("prometheusFile %s: %v; point it into node_exporter's textfile directory", c.PrometheusFile, err)
		}
	}
	if err := writableDir(c.StateDir, true); err != nil {
		errs.add("stateDir: %v; the agent must be able to write it", err)
	}
	c.checkIdentityFile(&errs)
	if err := writableDir(filepath.Dir(c.Profile), true); err != nil {
		errs.add("profile %s: %v; the agent must be able to write it", c.Profile, err)
	}
	if dir, ok := fileBucket(c.Bucket); ok {
		if err := syscall.Access(dir, 4 /* R_OK */); err != nil {
			errs.add("bucket %s: %s: %v (run nix-ota init, or mount it)", c.Bucket, dir, err)
		}
	}
	if dir, ok := fileBucket(c.StatusBucket); ok {
		if err := writableDir(dir, false); err != nil {
			errs.add("statusBucket %s: %v (run nix-ota init, or mount it)", c.StatusBucket, err)
		}
	}
	return errs
}

// checkIdentityFile: an identity key that is there must be one the agent
// uses (readIdentity says why not and what to do); one that is not must be
// creatable.
func (c *Config) checkIdentityFile(errs *problems) {
	_, err := readIdentity(c.identityPath(), c.DeviceID)
	switch {
	case errors.Is(err, errNoIdentity):
		if err := writableDir(filepath.Dir(c.identityPath()), true); err != nil {
			errs.add("identityKey %s: not there yet and cannot be created: %v; the agent creates it on its first start", c.identityPath(), err)
		}
	case err != nil:
		errs.add("%v", err)
	}
}

// fileBucket is the directory of a file:// bucket URL.
func fileBucket(raw string) (string, bool) {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "file" {
		return "", false
	}
	return u.Path, true
}

// writableDir checks that dir is a directory this process may write; with
// create, a missing one is fine if the agent can create it (the nearest
// existing parent is writable).
func writableDir(dir string, create bool) error {
	st, err := os.Stat(dir)
	if create && errors.Is(err, fs.ErrNotExist) {
		for parent := filepath.Dir(dir); ; parent = filepath.Dir(parent) {
			if _, perr := os.Stat(parent); perr == nil || parent == "/" {
				return writableDir(parent, false)
			}
		}
	}
	switch {
	case err != nil:
		return err
	case !st.IsDir():
		return fmt.Errorf("%s is not a directory", dir)
	}
	if err := syscall.Access(dir, 2 /* W_OK */); err != nil {
		return fmt.Errorf("directory %s is not writable: %v", dir, err)
	}
	return nil
}

// checkOnline reads and verifies the channel manifest as the next poll
// would, without changing the state, and writes the device's status blob:
// exit 3 for a rejected manifest, 1 when the bucket cannot be read, 5 when
// the status could not be written.
func checkOnline(ctx context.Context, c *Config, trust manifest.Trust, stdout io.Writer, logger *log.Logger) int {
	st, err := loadState(c.StateDir)
	if err != nil {
		logger.Printf("nix-ota-agent check-config --online: %v", err)
		return ExitFailed
	}
	store, statusStore, err := openBuckets(*c)
	if err != nil {
		logger.Printf("nix-ota-agent check-config --online: %v", err)
		return ExitFailed
	}
	a := &Agent{Config: *c, Trust: trust, Store: store, Status: statusStore, System: localSystem(*c, nil), state: st}
	if statusStore != nil {
		// The blob it writes is a check-in like any other: signed with
		// the key the agent signs with, made here if this is the first.
		id, err := loadIdentity(c)
		if err != nil {
			logger.Printf("nix-ota-agent check-config --online: %v", err)
			return ExitFailed
		}
		if id.Generated {
			logger.Printf("nix-ota-agent check-config --online: %s", id.generatedLine(c.DeviceID))
		}
		a.key = id.Key
	}
	code := a.checkManifest(ctx, stdout, logger)
	if sc := a.checkStatusWrite(ctx, stdout, logger); code == ExitOK {
		code = sc
	}
	return code
}

// checkManifest fetches the channel manifest and says what the next poll
// would do with it (Decide), against the remembered state, unchanged.
func (a *Agent) checkManifest(ctx context.Context, stdout io.Writer, logger *log.Logger) int {
	key := bucket.ChannelKey(a.Config.Channel)
	gctx, cancel := context.WithTimeout(ctx, RequestTimeout)
	obj, err := a.Store.Get(gctx, key, bucket.GetOptions{MaxSize: manifest.MaxBodySize})
	cancel()
	if err != nil {
		logger.Printf("nix-ota-agent check-config --online: manifest: read %s from %s: %v", key, a.Store, err)
		return ExitFailed
	}
	current, err := a.System.ProfileTarget(a.Config.Profile)
	if err != nil {
		logger.Printf("nix-ota-agent check-config --online: profile %s: %v", a.Config.Profile, err)
		return ExitFailed
	}
	d := Decide(a.device(), *a.state.channel(a.Config.Channel), current, obj.Data, a.now())
	if d.Action == Reject {
		logger.Printf("nix-ota-agent check-config --online: manifest: %s on %s is rejected: %v", key, a.Store, d.Err)
		return ExitRejected
	}
	verdict := d.Action.String()
	if d.Err != nil {
		verdict += " (" + d.Err.Error() + ")"
	}
	fmt.Fprintf(stdout, "ok: manifest: %s on %s: revision %d verifies; for system %s this device would: %s\n",
		key, a.Store, d.Verified.Payload.Revision, d.StorePath, status.Clean(verdict, maxText))
	return ExitOK
}

// checkStatusWrite writes the device's status blob: the last status the
// agent wrote, with its facts as of now (a first one says no poll ran
// yet). Only the bucket's copy is written, not the state.
func (a *Agent) checkStatusWrite(ctx context.Context, stdout io.Writer, logger *log.Logger) int {
	if a.Status == nil {
		fmt.Fprintf(stdout, "ok: status: no statusBucket; %s is read-only, so nothing is written to a bucket\n", a.Store)
		return ExitOK
	}
	prev, now := a.state.Status, a.now().UTC()
	note := prev.Note
	if prev.CheckedAt.IsZero() {
		note = "written by check-config --online; the agent has not polled yet"
	}
	st := a.statusNow(prev.State, errorFromText(prev.LastError), note, now)
	st.ChangedAt = prev.ChangedAt
	if st.ChangedAt.IsZero() {
		st.ChangedAt = now
	}
	if err := a.putCheckin(ctx, st); err != nil {
		logger.Printf("nix-ota-agent check-config --online: status: %v; check statusCredentials and the device's bucket policy", err)
		return ExitStatusNotWritten
	}
	fmt.Fprintf(stdout, "ok: status: wrote %s to %s (state %s), signed by %s\n", bucket.CheckinKey(st.DeviceID, st.CheckedAt), a.Status, st.State, status.Fingerprint(a.key.Public().(ed25519.PublicKey)))
	return ExitOK
}
