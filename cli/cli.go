// Package cli is the `nix-ota` command: the publisher's side. It signs and
// publishes channel manifests into a bucket, verifies what a bucket serves,
// and reads history. It runs on a laptop or in CI; there is no server.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/pflag"

	"github.com/nix-ota/nix-ota/bucket"
	"github.com/nix-ota/nix-ota/channel"
	"github.com/nix-ota/nix-ota/manifest"
)

// Version is set at build time with -ldflags "-X .../cli.Version=…".
var Version = "dev"

// Exit codes, documented in `nix-ota --help` and the README.
const (
	ExitOK       = 0 // success
	ExitFailure  = 1 // an operation failed (bucket, file, key, Nix)
	ExitUsage    = 2 // bad flags or arguments (or a --channel the bucket lacks); nothing was done
	ExitRejected = 3 // a manifest fails verification: an agent would reject it
	ExitConflict = 4 // a publish lost too many races with concurrent publishers
)

// usageError marks errors in the command line itself.
type usageError struct{ error }

func (u usageError) Unwrap() error { return u.error }

func usagef(format string, a ...any) error { return usageError{fmt.Errorf(format, a...)} }

// command is one subcommand. Each lives in its own cmd_<name>.go: an
// options struct, a flags method that binds it, and a run method.
type command struct {
	name     string
	summary  string
	about    string // one paragraph for --help
	examples string
	flags    func(fs *pflag.FlagSet)
	run      func(ctx context.Context, env *Env, args []string) error
}

// Env is what a command may touch: its output streams and the process
// environment, so tests can run commands in-process.
type Env struct {
	Stdout, Stderr io.Writer
	Getenv         func(string) string
}

func commands() []*command {
	return []*command{
		keygenCmd(), pubkeyCmd(), initCmd(), pushCmd(), publishCmd(), rolloutCmd(), rollbackCmd(), resignCmd(), doctorCmd(), verifyCmd(), historyCmd(), statusCmd(), dashboardCmd(), forgetCmd(), deviceCmd(), gcCmd(), versionCmd(), completionCmd(),
	}
}

// Main runs the CLI with the process's arguments and exits.
func Main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := Run(ctx, os.Args[1:], &Env{Stdout: os.Stdout, Stderr: os.Stderr, Getenv: os.Getenv})
	stop()
	os.Exit(code)
}

// Run executes one command line and returns the exit code.
func Run(ctx context.Context, args []string, env *Env) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" && len(args) == 1 {
		mainUsage(env.Stdout)
		if len(args) == 0 {
			return ExitUsage
		}
		return ExitOK
	}
	if args[0] == "help" {
		args = []string{args[1], "--help"}
	}
	if args[0] == "--version" {
		args[0] = "version"
	}
	cmd := findCommand(args[0])
	if cmd == nil {
		fmt.Fprintf(env.Stderr, "nix-ota: unknown command %q%s (see nix-ota --help)\n", args[0], didYouMean(args[0], commandNames(), "; ", ""))
		return ExitUsage
	}
	fs := newFlagSet(cmd)
	fs.Usage = func() { commandUsage(env.Stdout, cmd, fs) }
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, pflag.ErrHelp) { // fs.Usage already printed it
			return ExitOK
		}
		fmt.Fprintf(env.Stderr, "nix-ota %s: %v%s (see nix-ota %s --help)\n", cmd.name, err, flagHint(err, fs), cmd.name)
		return ExitUsage
	}
	err := cmd.run(ctx, env, fs.Args())
	if err == nil {
		return ExitOK
	}
	msg := strings.ReplaceAll(explain(err).Error(), "\n", " ")
	fmt.Fprintf(env.Stderr, "nix-ota %s: %s\n", cmd.name, msg)
	return exitCode(err)
}

func findCommand(name string) *command {
	for _, c := range commands() {
		if c.name == name {
			return c
		}
	}
	return nil
}

func commandNames() []string {
	var names []string
	for _, c := range commands() {
		names = append(names, c.name)
	}
	return names
}

// newFlagSet binds cmd's flags to a fresh set.
func newFlagSet(cmd *command) *pflag.FlagSet {
	fs := pflag.NewFlagSet(cmd.name, pflag.ContinueOnError)
	fs.SortFlags = false
	fs.SetOutput(io.Discard)
	if cmd.flags != nil {
		cmd.flags(fs)
	}
	return fs
}

// flagHint offers the nearest flag name for pflag's "unknown flag: --x".
func flagHint(err error, fs *pflag.FlagSet) string {
	name, ok := strings.CutPrefix(err.Error(), "unknown flag: --")
	if !ok {
		return ""
	}
	var names []string
	fs.VisitAll(func(f *pflag.Flag) { names = append(names, "--"+f.Name) })
	return didYouMean("--"+name, names, "; ", "")
}

func exitCode(err error) int {
	var ue usageError
	switch {
	case errors.As(err, &ue), errors.Is(err, manifest.ErrInvalidName), errors.Is(err, bucket.ErrInvalidURL):
		return ExitUsage
	case errors.Is(err, channel.ErrConflict):
		return ExitConflict
	case isRejection(err):
		return ExitRejected
	}
	return ExitFailure
}

// rejections are the errors of a manifest an agent would reject (exit 3).
var rejections = []error{manifest.ErrTooLarge, manifest.ErrMalformed, manifest.ErrPayloadType, manifest.ErrSignature,
	manifest.ErrWrongChannel, manifest.ErrRollback, manifest.ErrEquivocation, manifest.ErrExpired, manifest.ErrInvalidStorePath,
	channel.ErrUnverified}

func isRejection(err error) bool { return rejectionReason(err) != "" }

func mainUsage(w io.Writer) {
	fmt.Fprintf(w, `nix-ota %s: over-the-air updates for NixOS fleets, with no server.

An object bucket (S3, MinIO, R2 or a directory) holds signed channel
manifests, a Nix binary cache and per-device status. This command signs and
publishes manifests; devices run nix-ota-agent, which polls its channel,
verifies the signature, switches, health-checks and reports.

Usage: nix-ota COMMAND [flags]   (nix-ota COMMAND --help for details)

Commands:
`, Version)
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-10s %s\n", c.name, c.summary)
	}
	fmt.Fprint(w, `
Bucket URLs (--bucket, or $NIX_OTA_BUCKET):
  file:///abs/path                              a directory (air-gapped fleets, demos)
  s3://BUCKET[/PREFIX]?endpoint=HOST:PORT&region=R&scheme=http|https&profile=P
                                                S3, MinIO, R2; credentials from the AWS chain
  https://HOST/PREFIX                           read-only (verify, status; history needs listing)

Environment:
  NIX_OTA_BUCKET        default --bucket
  NIX_OTA_KEY           default --key of the signing commands
  NIX_OTA_KEY_PASSWORD  password of an encrypted --key
  NIX_OTA_CACHE_KEY     default --cache-key (push, publish --push)
  NIX_OTA_PUBLIC_KEY    trusted keys NAME:BASE64, separated by spaces or commas: the default
                        --public-key of status, verify, history, dashboard and doctor, and
                        extra trust for publish, rollout, rollback and resign
  NO_COLOR              set: no colour, even on a terminal

Exit codes: 0 ok, 1 failed, 2 usage error (bad flags or arguments, or a --channel
the bucket does not have; nothing was done), 3 manifest rejected, 4 publish conflict.
Shell completion: nix-ota completion bash|zsh|fish.
`)
}

func commandUsage(w io.Writer, c *command, fs *pflag.FlagSet) {
	flags := fs.FlagUsagesWrapped(100)
	if flags == "" {
		flags = "      --help   show this help\n"
	}
	fmt.Fprintf(w, "nix-ota %s: %s\n\n%s\n\nFlags:\n%s", c.name, c.summary, strings.TrimSpace(c.about), flags)
	if c.examples != "" {
		fmt.Fprintf(w, "\nExamples:\n%s\n", strings.TrimRight(c.examples, "\n"))
	}
}

// noArgs rejects stray positional arguments, a common typo source
// (`--store-path a b`).
func noArgs(args []string) error {
	if len(args) > 0 {
		return usagef("unexpected argument %q", args[0])
	}
	return nil
}

// checkChannel refuses a missing or malformed --channel before any I/O.
func checkChannel(name string) error {
	if err := required("channel", name); err != nil {
		return err
	}
	return manifest.ValidateName("channel", name)
}

func required(name, value string) error {
	if value == "" {
		return usagef("--%s is required", name)
	}
	return nil
}
