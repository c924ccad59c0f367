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
	"strings"
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
  nix-ota-agent check-config FILE   validate a JSON config and exit

One poll: GET the channel manifest (one conditional request when nothing
changed); verify its signature, channel, revision and expiry; if this device
is in the rollout and not already on it, fetch the closure with Nix from the
substituters (checked against the trusted cache keys), set the profile, run
switch-to-configuration, run the health checks, and roll back to the
previous system if any of that fails. The device's status goes to
devices/<device-id>/status.json, <state-dir>/status.json and, if set, a
Prometheus textfile.

Flags (each overrides the same field of --config):
%s
Exit codes (once): 0 ok, 1 failed or rolled back, 2 usage, 3 manifest rejected,
4 state file not saved (the agent stopped; daemon too), 5 status not written.
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

func flagSet(c *Config, configFile *string) *pflag.FlagSet {
	fs := pflag.NewFlagSet("nix-ota-agent", pflag.ContinueOnError)
	fs.SortFlags = false
	fs.SetOutput(io.Discard)
	fs.StringVar(configFile, "config", "", "JSON config file (as written by the NixOS module)")
	fs.StringVar(&c.Bucket, "bucket", "", "bucket URL to read channels/ from: https://, s3:// or file://")
	fs.StringVar(&c.Channel, "channel", "", "channel to follow")
	fs.StringArrayVar(&c.PublicKeys, "public-key", nil, "trusted manifest key NAME:BASE64 (repeatable)")
	fs.IntVar(&c.Threshold, "threshold", 0, "distinct trusted keys that must sign (default 1)")
	fs.StringVar(&c.DeviceID, "device-id", "", "this device's id (default: hostname)")
	fs.StringVar(&c.DeviceClass, "device-class", "", "device class for mixed-fleet manifests (default \"default\")")
	fs.StringVar(&c.StateDir, "state-dir", "", "state directory (default "+DefaultStateDir+")")
	fs.StringVar(&c.Profile, "profile", "", "system profile (default "+DefaultProfile+")")
	fs.StringArrayVar(&c.Substituters, "substituter", nil, "binary cache to fetch closures from, besides the manifest's (repeatable)")
	fs.StringArrayVar(&c.AllowedSubstituters, "allowed-substituter", nil, "URL prefix a manifest's substituters must start with (repeatable; default: any that passes the policy)")
	fs.StringArrayVar(&c.TrustedCacheKeys, "trusted-cache-key", nil, "binary cache public key NAME:BASE64 (repeatable)")
	fs.StringArrayVar(&c.HealthChecks, "health-check", nil, "command run with sh -c after a switch; non-zero means roll back (repeatable)")
	fs.DurationVar(&c.HealthTimeout.Duration, "health-timeout", 0, "time limit of each health check (default 60s)")
	fs.StringVar(&c.StatusBucket, "status-bucket", "", "writable bucket for devices/<id>/status.json (default: --bucket if writable)")
	fs.StringVar(&c.StatusCredentials, "status-credentials", "", "AWS-style credentials file ([default] aws_access_key_id=…) for s3:// buckets")
	fs.StringVar(&c.Switch, "switch", "", "switch (activate now, default) or boot (only at next boot)")
	fs.StringVar(&c.SwitchVia, "switch-via", "", "auto, systemd-run or direct (default auto)")
	fs.DurationVar(&c.Interval.Duration, "interval", 0, "daemon poll interval (default 60s)")
	fs.DurationVar(&c.Jitter.Duration, "jitter", 0, "daemon random extra delay, up to (default interval/4)")
	fs.DurationVar(&c.Heartbeat.Duration, "heartbeat", 0, "write the status at least this often (default 15m)")
	fs.StringVar(&c.PrometheusFile, "prometheus-file", "", "write metrics to this node_exporter textfile")
	fs.BoolVar(&c.AllowReboot, "allow-reboot", false, "reboot by itself when a new kernel/initrd or a boot-mode update needs it")
	fs.StringVar(&c.RebootWindow, "reboot-window", "", "local time window for reboots, HH:MM-HH:MM (default: any time)")
	fs.IntVar(&c.KeepGenerations, "keep-generations", 0, "system generations to keep after an update (default 10)")
	fs.StringVar(&c.MinFreeSpace, "min-free-space", "", "collect Nix store garbage when less than this is free, e.g. 2G (default: never)")
	return fs
}

// Run executes one agent command line and returns the exit code.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return run(ctx, args, stdout, stderr, nil)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer, beforeWork func()) int {
	logger := log.New(stderr, "", 0)
	var flagCfg Config
	var configFile string
	fs := flagSet(&flagCfg, &configFile)
	usage := func() { fmt.Fprintf(stdout, usageText, Version, fs.FlagUsagesWrapped(100)) }
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage()
		if len(args) == 0 {
			return ExitUsage
		}
		return ExitOK
	}
	cmd, rest := args[0], args[1:]
	if cmd == "version" || cmd == "--version" {
		fmt.Fprintf(stdout, "nix-ota-agent %s\n", Version)
		return ExitOK
	}
	if cmd == "check-config" {
		if len(rest) != 1 {
			logger.Printf("nix-ota-agent check-config: want exactly one FILE")
			return ExitUsage
		}
		return checkConfig(rest[0], stdout, logger)
	}
	if cmd != "once" && cmd != "daemon" && cmd != "status" {
		logger.Printf("nix-ota-agent: unknown command %q (see nix-ota-agent --help)", cmd)
		return ExitUsage
	}
	if err := fs.Parse(rest); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			usage()
			return ExitOK
		}
		logger.Printf("nix-ota-agent %s: %v", cmd, err)
		return ExitUsage
	}
	if fs.NArg() > 0 {
		logger.Printf("nix-ota-agent %s: unexpected argument %q", cmd, fs.Arg(0))
		return ExitUsage
	}
	src := &configSource{path: configFile, flags: &flagCfg, fs: fs}
	cfg, err := src.load()
	if err != nil {
		logger.Printf("nix-ota-agent %s: %v", cmd, err)
		return ExitUsage
	}
	if cmd == "status" {
		return printStatus(cfg, stdout, logger)
	}
	trust, err := cfg.Check()
	if err != nil {
		logger.Printf("nix-ota-agent %s: %v", cmd, err)
		return ExitUsage
	}
	a, unlock, err := New(*cfg, trust, logger.Printf)
	if err != nil {
		logger.Printf("nix-ota-agent %s: %v", cmd, err)
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
	if configFile == "" {
		src = nil // nothing to reread
	}
	return a.Daemon(ctx, src)
}

// overlay copies the flags that were set on the command line over the
// file's values.
func overlay(dst, src *Config, fs *pflag.FlagSet) {
	set := func(name string, f func()) {
		if fs.Changed(name) {
			f()
		}
	}
	set("bucket", func() { dst.Bucket = src.Bucket })
	set("channel", func() { dst.Channel = src.Channel })
	set("public-key", func() { dst.PublicKeys = src.PublicKeys })
	set("threshold", func() { dst.Threshold = src.Threshold })
	set("device-id", func() { dst.DeviceID = src.DeviceID })
	set("device-class", func() { dst.DeviceClass = src.DeviceClass })
	set("state-dir", func() { dst.StateDir = src.StateDir })
	set("profile", func() { dst.Profile = src.Profile })
	set("substituter", func() { dst.Substituters = src.Substituters })
	set("allowed-substituter", func() { dst.AllowedSubstituters = src.AllowedSubstituters })
	set("trusted-cache-key", func() { dst.TrustedCacheKeys = src.TrustedCacheKeys })
	set("health-check", func() { dst.HealthChecks = src.HealthChecks })
	set("health-timeout", func() { dst.HealthTimeout = src.HealthTimeout })
	set("status-bucket", func() { dst.StatusBucket = src.StatusBucket })
	set("status-credentials", func() { dst.StatusCredentials = src.StatusCredentials })
	set("switch", func() { dst.Switch = src.Switch })
	set("switch-via", func() { dst.SwitchVia = src.SwitchVia })
	set("interval", func() { dst.Interval = src.Interval })
	set("jitter", func() { dst.Jitter = src.Jitter })
	set("heartbeat", func() { dst.Heartbeat = src.Heartbeat })
	set("prometheus-file", func() { dst.PrometheusFile = src.PrometheusFile })
	set("allow-reboot", func() { dst.AllowReboot = src.AllowReboot })
	set("reboot-window", func() { dst.RebootWindow = src.RebootWindow })
	set("keep-generations", func() { dst.KeepGenerations = src.KeepGenerations })
	set("min-free-space", func() { dst.MinFreeSpace = src.MinFreeSpace })
}

// New builds an agent from a checked configuration, taking the state
// directory's lock so a timer run and a manual run never overlap.
func New(cfg Config, trust manifest.Trust, logf func(string, ...any)) (*Agent, func(), error) {
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, nil, fmt.Errorf("state dir: %w", err)
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

func localSystem(cfg Config, logf func(string, ...any)) *nix.Local {
	via := map[string]string{"auto": "auto", "systemd-run": "always", "direct": "never"}[cfg.SwitchVia]
	return &nix.Local{SystemdRun: via, Log: logf}
}

// lockDir takes an exclusive, non-blocking flock in the state directory.
func lockDir(dir string) (func(), error) {
	f, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
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

func checkConfig(path string, stdout io.Writer, logger *log.Logger) int {
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
	names := make([]string, len(trust.Keys))
	for i, k := range trust.Keys {
		names[i] = k.Name
	}
	fmt.Fprintf(stdout, "ok: %s: device %s follows channel %s on %s, trusting %s (threshold %d), polling every %s\n",
		path, c.DeviceID, c.Channel, c.Bucket, strings.Join(names, ","), c.Threshold, c.Interval.Duration)
	return ExitOK
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
