package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/pflag"

	"github.com/nix-ota/nix-ota/bucket"
	"github.com/nix-ota/nix-ota/manifest"
	"github.com/nix-ota/nix-ota/nix"
)

// Exit codes of `once`.
const (
	ExitOK       = 0 // up to date, applied, waiting, or nothing new
	ExitFailed   = 1 // fetch failed, rolled back, bucket unreachable
	ExitUsage    = 2 // bad flags or configuration
	ExitRejected = 3 // the manifest was rejected
	// ExitStateNotSaved: the state file could not be written (disk full,
	// read-only); the agent stopped there. The next start recovers.
	ExitStateNotSaved = 4
	// ExitStatusNotWritten: the poll went well but its status could not be
	// written (bucket, local file or Prometheus textfile).
	ExitStatusNotWritten = 5
)

const usageText = `nix-ota-agent %s: keeps a NixOS device on its channel's signed system.

Usage:
  nix-ota-agent once   [flags]      one poll (for a systemd timer)
  nix-ota-agent daemon [flags]      poll every --interval (+ random jitter)
  nix-ota-agent status [flags]      print the local status
  nix-ota-agent check-config [--files] [--online] FILE
                                    validate a JSON config and exit; --files (on the
                                    device) also checks the files it names; --online
                                    also verifies the channel manifest and writes the
                                    status blob
  nix-ota-agent identity [--config FILE] [--json]
                                    print the device's public key and fingerprint
                                    (creating the key if there is none), for a
                                    publisher to register before the first check-in:
                                      nix-ota-agent identity --config /etc/nix-ota/agent.json
                                      nix-ota device add kiosk-1 --key ed25519:BASE64

One poll: GET the channel manifest (one conditional request when nothing
changed); verify its signature, channel, revision and expiry; if this device
is in the rollout and not already on it, fetch the closure with Nix from the
substituters (checked against the trusted cache keys), set the profile, run
switch-to-configuration, run the health checks, and roll back to the
previous system if any of that fails. The device's status goes to
devices/<window>/<device-id>.json (signed with the device's identity key,
<state-dir>/identity.key unless --identity-key says otherwise; made on the
first start), <state-dir>/status.json and, if set, a Prometheus textfile.

Flags (each overrides the same field of --config):
%s
once and daemon run as root (they install systems).

Exit codes (once): 0 ok, 1 failed or rolled back, 2 usage (or not root), 3 manifest
rejected, 4 state not saved (the agent stopped; daemon too), 5 status not written.
`

// Main runs the agent with the process's arguments and exits. SIGINT and
// SIGTERM cancel the work in progress (child processes are killed, a
// switch is rolled back); they are caught from the moment there is work,
// see Agent.BeforeWork. Before that the default action, exiting, is right.
func Main() {
	ctx, cancel := context.WithCancel(context.Background())
	catch := sync.OnceFunc(func() {
		sigs := make(chan os.Signal, 1)
		signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
		go func() {
			<-sigs
			cancel()
			signal.Stop(sigs) // a second signal exits at once
		}()
	})
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr, catch)
	cancel()
	os.Exit(code)
}

// flagSet binds the command line's flags onto c's fields. Each flag's
// default is the field's current value, so binding onto a configuration
// loaded from a file keeps the file's values for every flag not given, and
// a flag given overrides its field (a repeatable flag replaces the file's
// list). Usage text comes from a set bound onto an empty Config.
func flagSet(c *Config, configFile *string) *pflag.FlagSet {
	fs := pflag.NewFlagSet("nix-ota-agent", pflag.ContinueOnError)
	fs.SortFlags = false
	fs.SetOutput(io.Discard)
	fs.StringVar(configFile, "config", *configFile, "JSON config file (as written by the NixOS module)")
	fs.StringVar(&c.Bucket, "bucket", c.Bucket, "bucket URL to read channels/ from: https://, s3:// or file://")
	fs.StringVar(&c.Channel, "channel", c.Channel, "channel to follow")
	fs.StringArrayVar(&c.PublicKeys, "public-key", c.PublicKeys, "trusted manifest key NAME:BASE64 (repeatable)")
	fs.IntVar(&c.Threshold, "threshold", c.Threshold, "distinct trusted keys that must sign (default 1)")
	fs.StringVar(&c.DeviceID, "device-id", c.DeviceID, "this device's id (default: hostname)")
	fs.StringVar(&c.DeviceClass, "device-class", c.DeviceClass, "device class for mixed-fleet manifests (default \"default\")")
	fs.StringVar(&c.StateDir, "state-dir", c.StateDir, "state directory (default "+DefaultStateDir+")")
	fs.StringVar(&c.Profile, "profile", c.Profile, "system profile (default "+DefaultProfile+")")
	fs.StringArrayVar(&c.Substituters, "substituter", c.Substituters, "binary cache to fetch closures from, besides the manifest's (repeatable)")
	fs.StringArrayVar(&c.AllowedSubstituters, "allowed-substituter", c.AllowedSubstituters, "URL prefix a manifest's substituters must start with (repeatable; default: any that passes the policy)")
	fs.StringArrayVar(&c.TrustedCacheKeys, "trusted-cache-key", c.TrustedCacheKeys, "binary cache public key NAME:BASE64 (repeatable)")
	fs.StringArrayVar(&c.HealthChecks, "health-check", c.HealthChecks, "command run with sh -c after a switch; non-zero means roll back (repeatable)")
	fs.DurationVar(&c.HealthTimeout.Duration, "health-timeout", c.HealthTimeout.Duration, "time limit of each health check (default 60s)")
	fs.StringVar(&c.StatusBucket, "status-bucket", c.StatusBucket, "writable bucket for devices/<id>/status.json (default: --bucket if writable)")
	fs.StringVar(&c.StatusCredentials, "status-credentials", c.StatusCredentials, "AWS-style credentials file ([default] aws_access_key_id=…) for s3:// buckets")
	fs.StringVar(&c.Switch, "switch", c.Switch, "switch (activate now, default) or boot (only at next boot)")
	fs.StringVar(&c.SwitchVia, "switch-via", c.SwitchVia, "auto, systemd-run or direct (default auto)")
	fs.DurationVar(&c.Interval.Duration, "interval", c.Interval.Duration, "daemon poll interval (default 60s)")
	fs.DurationVar(&c.Jitter.Duration, "jitter", c.Jitter.Duration, "daemon random extra delay, up to (default interval/4)")
	fs.DurationVar(&c.Heartbeat.Duration, "heartbeat", c.Heartbeat.Duration, "write the status at least this often (default 8h, or the interval if longer)")
	fs.StringVar(&c.PrometheusFile, "prometheus-file", c.PrometheusFile, "write metrics to this node_exporter textfile")
	fs.BoolVar(&c.AllowReboot, "allow-reboot", c.AllowReboot, "reboot by itself when a new kernel/initrd or a boot-mode update needs it")
	fs.StringVar(&c.RebootWindow, "reboot-window", c.RebootWindow, "local time window for reboots, HH:MM-HH:MM (default: any time)")
	fs.IntVar(&c.KeepGenerations, "keep-generations", c.KeepGenerations, "system generations to keep after an update (default 10)")
	fs.StringVar(&c.MinFreeSpace, "min-free-space", c.MinFreeSpace, "collect Nix store garbage when less than this is free, e.g. 2G (default: never)")
	fs.StringVar(&c.IdentityKey, "identity-key", c.IdentityKey, "the device's ed25519 key, PKCS#8 PEM, made if missing (default <state-dir>/identity.key)")
	fs.BoolVar(&c.NoDeltas, "no-deltas", c.NoDeltas, "fetch whole NARs only, never deltas against paths this device holds")
	return fs
}

func usage(stdout io.Writer) {
	fmt.Fprintf(stdout, usageText, Version, flagSet(&Config{}, new(string)).FlagUsagesWrapped(100))
}

// Run executes one agent command line and returns the exit code.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return run(ctx, args, stdout, stderr, nil)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer, beforeWork func()) int {
	logger := log.New(stderr, "", 0)
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stdout)
		if len(args) == 0 {
			return ExitUsage
		}
		return ExitOK
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "version", "--version":
		fmt.Fprintf(stdout, "nix-ota-agent %s\n", Version)
		return ExitOK
	case "check-config":
		return checkConfig(ctx, rest, stdout, logger)
	case "identity":
		return identityCmd(rest, stdout, logger)
	case "once", "daemon", "status":
	default:
		logger.Printf("nix-ota-agent: unknown command %q (see nix-ota-agent --help)", cmd)
		return ExitUsage
	}
	src, code := parseFlags(cmd, rest, stdout, logger)
	if src == nil {
		return code
	}
	if cmd != "status" && os.Geteuid() != 0 {
		logger.Print(ErrNotRoot)
		return ExitUsage
	}
	cfg, err := src.load()
	if err != nil {
		logger.Printf("nix-ota-agent %s: %v", cmd, err)
		return ExitUsage
	}
	if cmd == "status" {
		return printStatus(cfg, stdout, logger)
	}
	return start(ctx, cmd, src, cfg, logger, beforeWork)
}

// ErrNotRoot: once and daemon need root. Said at start, rather than deep
// inside nix-store or nix-env after the manifest was fetched.
var ErrNotRoot = errors.New("nix-ota-agent must run as root (it installs systems); run it from the NixOS module's service or with sudo")

// parseFlags checks a command line's flags and returns where the
// configuration comes from; nil with the exit code when there is nothing
// more to do (help, or a usage error, which it reports).
func parseFlags(cmd string, args []string, stdout io.Writer, logger *log.Logger) (*configSource, int) {
	var path string
	fs := flagSet(&Config{}, &path)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			usage(stdout)
			return nil, ExitOK
		}
		logger.Printf("nix-ota-agent %s: %v", cmd, err)
		return nil, ExitUsage
	}
	if fs.NArg() > 0 {
		logger.Printf("nix-ota-agent %s: unexpected argument %q", cmd, fs.Arg(0))
		return nil, ExitUsage
	}
	return &configSource{path: path, args: args}, ExitOK
}

// start checks the configuration, builds the agent, recovers, and runs
// one poll (once) or polls until stopped (daemon).
func start(ctx context.Context, cmd string, src *configSource, cfg *Config, logger *log.Logger, beforeWork func()) int {
	trust, err := cfg.Check()
	if err != nil {
		logger.Printf("nix-ota-agent %s: %v", cmd, err)
		return ExitUsage
	}
	a, unlock, err := New(*cfg, trust, logger.Printf)
	if err != nil {
		logger.Printf("nix-ota-agent %s: %v", cmd, err)
		if errors.Is(err, ErrStateNotSaved) {
			return ExitStateNotSaved
		}
		return ExitFailed
	}
	defer unlock()
	a.noteConfig()
	a.BeforeWork = beforeWork
	if cmd == "daemon" {
		a.beforeWork()
	}
	if out := a.Recover(ctx); out.Err != nil {
		logger.Printf("nix-ota-agent: recover: %v", out.Err)
	}
	if cmd == "once" {
		return a.Poll(ctx).ExitCode()
	}
	if src.path == "" {
		src = nil // nothing to reread
	}
	return a.Daemon(ctx, src)
}

// New builds an agent from a checked configuration, taking the state
// directory's lock so a timer run and a manual run never overlap.
func New(cfg Config, trust manifest.Trust, logf func(string, ...any)) (*Agent, func(), error) {
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, nil, stateDirError(cfg.StateDir, err)
	}
	unlock, err := lockDir(cfg.StateDir)
	if err != nil {
		return nil, nil, err
	}
	store, statusStore, err := openBuckets(cfg)
	if err != nil {
		unlock()
		return nil, nil, err
	}
	a := &Agent{
		Config: cfg, Trust: trust, Store: store, Status: statusStore, Logf: logf,
		System: localSystem(cfg, logf),
	}
	if err := a.Load(); err != nil {
		unlock()
		return nil, nil, err
	}
	return a, unlock, nil
}

// openBuckets opens the bucket the channel is read from and, if set, the
// one the status is written to.
func openBuckets(cfg Config) (store, status bucket.Store, err error) {
	var creds bucket.CredentialsFunc // nil: the environment, else anonymous
	if cfg.StatusCredentials != "" {
		// Read on every request, so rotated keys need no restart; checked
		// once here so a broken file fails at start with its reason.
		creds = bucket.FileCredentials(cfg.StatusCredentials, "default")
		if _, err := creds(context.Background()); err != nil {
			return nil, nil, fmt.Errorf("status credentials: %w", err)
		}
	}
	if store, err = bucket.Open(cfg.Bucket, bucket.Options{Credentials: creds}); err != nil {
		return nil, nil, err
	}
	if cfg.StatusBucket != "" {
		if status, err = bucket.Open(cfg.StatusBucket, bucket.Options{Credentials: creds}); err != nil {
			return nil, nil, fmt.Errorf("status bucket: %w", err)
		}
	}
	return store, status, nil
}

// localSystem is the real System for a checked configuration.
func localSystem(cfg Config, logf func(string, ...any)) *nix.Local {
	return &nix.Local{SwitchVia: nix.SwitchVia(cfg.SwitchVia), Log: logf}
}

// stateDirError says that the state directory cannot be written at start:
// the agent must not act on what it could not remember.
func stateDirError(dir string, err error) error {
	return fmt.Errorf("%w: state directory %s: %v; the agent writes its state there before every step: make it writable (free space, or fix its mount or owner)", ErrStateNotSaved, dir, err)
}

// lockDir takes an exclusive, non-blocking flock in the state directory.
// A directory where the lock file cannot be opened (read-only, not ours)
// is ErrStateNotSaved.
func lockDir(dir string) (func(), error) {
	f, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, stateDirError(dir, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("another nix-ota-agent is running with state dir %s", dir)
	}
	return func() { f.Close() }, nil
}

// Daemon polls every interval plus random jitter until ctx ends. Before
// each poll after the first it rereads the configuration file (src; nil:
// none) and takes a changed, valid configuration (see reload).
func (a *Agent) Daemon(ctx context.Context, src *configSource) int {
	a.logf("daemon: following channel %s on %s every %s (+ up to %s jitter)", a.Config.Channel, a.Store, a.Config.Interval.Duration, a.Config.Jitter.Duration)
	for first := true; ; first = false {
		if !first && src != nil {
			a.reload(src)
		}
		pctx, cancel := context.WithTimeout(ctx, 2*time.Hour)
		out := a.Poll(pctx)
		cancel()
		if out.SaveErr != nil {
			return ExitStateNotSaved
		}
		wait := a.Config.Interval.Duration
		if j := a.Config.Jitter.Duration; j > 0 {
			wait += time.Duration(rand.Int64N(int64(j)))
		}
		select {
		case <-ctx.Done():
			a.logf("daemon: stopping")
			return ExitOK
		case <-time.After(wait):
		}
	}
}

func printStatus(cfg *Config, stdout io.Writer, logger *log.Logger) int {
	b, err := os.ReadFile(filepath.Join(cfg.StateDir, "status.json"))
	if err != nil {
		logger.Printf("nix-ota-agent status: no status yet in %s (has the agent run?): %v", cfg.StateDir, err)
		return ExitFailed
	}
	var st map[string]any
	if err := json.Unmarshal(b, &st); err != nil {
		logger.Printf("nix-ota-agent status: %v", err)
		return ExitFailed
	}
	for _, k := range []string{"deviceId", "channel", "state", "revision", "storePath", "bootedStorePath", "needsReboot", "lastError", "note", "checkedAt", "changedAt", "agentVersion"} {
		if v, ok := st[k]; ok {
			fmt.Fprintf(stdout, "%-16s %v\n", k+":", v)
		}
	}
	return ExitOK
}
