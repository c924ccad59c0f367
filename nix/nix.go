// Package nix holds every side effect nix-ota-agent has on a device's
// system, behind one small interface (System), so the agent's decisions are
// tested without Nix and this implementation is tested with real Nix.
//
// Trust: closures are fetched with Nix, which checks every path against the
// device's trusted cache keys; the manifest may add substituters (it is
// signed) but never keys. Every command runs through exec.CommandContext
// with a timeout, and arguments are passed as a vector, never via a shell.
//
// This directory also holds the Nix-language side (package.nix, the NixOS
// module and VM tests); Go ignores those files.
package nix

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

// System is what the agent needs from the device's Nix and NixOS.
type System interface {
	// Realise makes storePath and its closure valid in the local store,
	// substituting from the given caches and trusting the given keys in
	// addition to the device's own configuration.
	Realise(ctx context.Context, storePath string, substituters, trustedKeys []string) error
	// ProfileTarget is the store path the system profile points at ("" if
	// the profile does not exist).
	ProfileTarget(profile string) (string, error)
	// SetProfile makes storePath the profile's new generation.
	SetProfile(ctx context.Context, profile, storePath string) error
	// Switch runs storePath/bin/switch-to-configuration action (switch or
	// boot) and waits for it.
	Switch(ctx context.Context, storePath, action string) error
	// Booted is the system the device booted (/run/booted-system), "" if
	// unknown.
	Booted() (string, error)
	// NeedsReboot reports whether the kernel, initrd or kernel modules of
	// storePath differ from the booted system's.
	NeedsReboot(storePath string) (bool, error)
	// Reboot asks the init system to reboot the device.
	Reboot(ctx context.Context) error
	// Cleanup deletes all but the newest keep generations of profile
	// (Nix never deletes the current one; /run/booted-system is a GC root
	// of its own) and, when the store's file system has less than minFree
	// bytes free, collects garbage. It says what it freed.
	Cleanup(ctx context.Context, profile string, keep int, minFree uint64) (string, error)
	// Invalid returns which of paths are not valid in the local store.
	Invalid(ctx context.Context, paths []string) (map[string]bool, error)
	// NarHash is the NAR hash the local store has for a valid path.
	NarHash(ctx context.Context, storePath string) (string, error)
	// Dump writes a valid path's NAR (nix-store --dump) to w.
	Dump(ctx context.Context, storePath string, w io.Writer) error
	// TrustedKeys are the cache keys the device's Nix trusts.
	TrustedKeys(ctx context.Context) ([]string, error)
}

// ErrCommand wraps a failed external command; the message carries the tail
// of its output.
var ErrCommand = errors.New("command failed")

// Local is the real System: nix-store, nix-env and the system's own
// switch-to-configuration, optionally inside a transient systemd unit.
type Local struct {
	// BinDir holds nix-store and nix-env; "" means $PATH.
	BinDir string
	// SwitchVia says where switch-to-configuration runs; "" is
	// SwitchViaAuto.
	SwitchVia SwitchVia
	// BootedLink is /run/booted-system unless set (tests).
	BootedLink string
	// Env is added to every command's environment.
	Env []string
	// Timeouts; zero values get defaults.
	RealiseTimeout, SwitchTimeout, CommandTimeout time.Duration
	// Log receives one line per command run; nil discards.
	Log func(format string, args ...any)
	// GCStore is passed as --store to the garbage collection only ("" =
	// the system's store); tests point it at a store of their own.
	GCStore string
}

var _ System = (*Local)(nil)

// SwitchVia says where switch-to-configuration runs. In a transient
// systemd unit of its own the switch survives the new system restarting or
// stopping the agent's unit, as nixos-rebuild does. The words are the
// agent configuration's switchVia.
type SwitchVia string

const (
	SwitchViaAuto       SwitchVia = "auto"        // systemd-run when systemd is PID 1, else direct
	SwitchViaSystemdRun SwitchVia = "systemd-run" // always in a transient unit
	SwitchViaDirect     SwitchVia = "direct"      // as a child of the agent
)

// SwitchVias lists the valid SwitchVia values.
var SwitchVias = []SwitchVia{SwitchViaAuto, SwitchViaSystemdRun, SwitchViaDirect}

// ErrSwitchVia: a SwitchVia that is none of SwitchVias.
var ErrSwitchVia = errors.New("unknown switchVia")

// ParseSwitchVia returns s as a SwitchVia, or ErrSwitchVia.
func ParseSwitchVia(s string) (SwitchVia, error) {
	for _, v := range SwitchVias {
		if s == string(v) {
			return v, nil
		}
	}
	return "", fmt.Errorf("%w %q (want auto, systemd-run or direct)", ErrSwitchVia, s)
}

// SwitchUnit is the transient unit a systemd-run switch runs in.
const SwitchUnit = "nix-ota-switch-to-configuration"

func (l *Local) bin(name string) string {
	if l.BinDir == "" {
		return name
	}
	return filepath.Join(l.BinDir, name)
}

func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

func (l *Local) logf(format string, args ...any) {
	if l.Log != nil {
		l.Log(format, args...)
	}
}

// run executes a command with a timeout and returns a one-line error with
// the tail of its output on failure.
func (l *Local) run(ctx context.Context, timeout time.Duration, name string, args ...string) error {
	_, err := l.output(ctx, timeout, name, args...)
	return err
}

// tail keeps the last lines of command output, folded onto one line.
func tail(b []byte) string {
	s := strings.TrimSpace(string(b))
	if len(s) > 600 {
		s = "…" + s[len(s)-600:]
	}
	return strings.Join(strings.Fields(strings.ReplaceAll(s, "\n", " | ")), " ")
}

func (l *Local) Realise(ctx context.Context, storePath string, substituters, trustedKeys []string) error {
	args := []string{"--realise", storePath,
		"--option", "narinfo-cache-negative-ttl", "0",
		"--option", "connect-timeout", "15",
	}
	if len(substituters) > 0 {
		args = append(args, "--option", "extra-substituters", strings.Join(substituters, " "))
	}
	if len(trustedKeys) > 0 {
		args = append(args, "--option", "extra-trusted-public-keys", strings.Join(trustedKeys, " "))
	}
	return l.run(ctx, orDefault(l.RealiseTimeout, time.Hour), l.bin("nix-store"), args...)
}

func (l *Local) ProfileTarget(profile string) (string, error) {
	p, err := filepath.EvalSymlinks(profile)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	return p, err
}

func (l *Local) SetProfile(ctx context.Context, profile, storePath string) error {
	if err := os.MkdirAll(filepath.Dir(profile), 0o755); err != nil {
		return err
	}
	return l.run(ctx, orDefault(l.CommandTimeout, 2*time.Minute), l.bin("nix-env"), "--profile", profile, "--set", storePath)
}

func (l *Local) useSystemd() (bool, error) {
	switch l.SwitchVia {
	case SwitchViaSystemdRun:
		return true, nil
	case SwitchViaDirect:
		return false, nil
	case SwitchViaAuto, "":
	default:
		_, err := ParseSwitchVia(string(l.SwitchVia))
		return false, fmt.Errorf("switch: %w", err)
	}
	if _, err := os.Stat("/run/systemd/system"); err != nil {
		return false, nil
	}
	_, err := exec.LookPath("systemd-run")
	return err == nil, nil
}

func (l *Local) Switch(ctx context.Context, storePath, action string) error {
	if action != "switch" && action != "boot" {
		return fmt.Errorf("switch: unknown action %q", action)
	}
	script := filepath.Join(storePath, "bin", "switch-to-configuration")
	if _, err := os.Stat(script); err != nil {
		return fmt.Errorf("switch: %s is not a NixOS system: %w", storePath, err)
	}
	timeout := orDefault(l.SwitchTimeout, 30*time.Minute)
	systemd, err := l.useSystemd()
	if err != nil {
		return err
	}
	if !systemd {
		return l.run(ctx, timeout, script, action)
	}
	// A switch left running by an agent that died must finish first.
	l.waitUnit(ctx, timeout)
	args := []string{"--unit", SwitchUnit, "--collect", "--wait", "--quiet", "--no-ask-password",
		"--service-type=exec", "-p", "KillMode=mixed"}
	for _, e := range []string{"LOCALE_ARCHIVE", "NIXOS_INSTALL_BOOTLOADER"} {
		if v, ok := os.LookupEnv(e); ok {
			args = append(args, "--setenv", e+"="+v)
		}
	}
	args = append(args, "--", script, action)
	return l.run(ctx, timeout, "systemd-run", args...)
}

// waitUnit waits (bounded) while a previous switch unit is still active.
func (l *Local) waitUnit(ctx context.Context, timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		out, _ := exec.CommandContext(ctx, "systemctl", "is-active", SwitchUnit).Output()
		state := strings.TrimSpace(string(out))
		if state != "active" && state != "activating" && state != "deactivating" {
			return
		}
		l.logf("waiting for a running %s.service to finish", SwitchUnit)
		time.Sleep(2 * time.Second)
	}
}

func (l *Local) Booted() (string, error) {
	link := l.BootedLink
	if link == "" {
		link = "/run/booted-system"
	}
	p, err := filepath.EvalSymlinks(link)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	return p, err
}

func (l *Local) Reboot(ctx context.Context) error {
	return l.run(ctx, orDefault(l.CommandTimeout, 2*time.Minute), "systemctl", "reboot")
}

func (l *Local) Cleanup(ctx context.Context, profile string, keep int, minFree uint64) (string, error) {
	var done []string
	if keep > 0 {
		out, err := l.output(ctx, orDefault(l.CommandTimeout, 5*time.Minute), l.bin("nix-env"), "--profile", profile, "--delete-generations", fmt.Sprintf("+%d", keep))
		if err != nil {
			return "", err
		}
		if n := strings.Count(out, "removing profile version"); n > 0 {
			done = append(done, fmt.Sprintf("removed %d old generations", n))
		}
	}
	if minFree > 0 {
		free, err := FreeSpace(builtinStoreDir)
		if err != nil {
			return strings.Join(done, "; "), err
		}
		if free < minFree {
			args := []string{"--gc"}
			if l.GCStore != "" {
				args = append([]string{"--store", l.GCStore}, args...)
			}
			out, err := l.output(ctx, orDefault(l.CommandTimeout, 30*time.Minute), l.bin("nix-store"), args...)
			if err != nil {
				return strings.Join(done, "; "), err
			}
			done = append(done, fmt.Sprintf("store GC (free %s < %s): %s", bytesText(free), bytesText(minFree), lastLine(out)))
		}
	}
	return strings.Join(done, "; "), nil
}

const builtinStoreDir = "/nix/store"

// FreeSpace is the space available to root on path's file system.
func FreeSpace(path string) (uint64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(path, &st); err != nil {
		return 0, err
	}
	return st.Bavail * uint64(st.Bsize), nil
}

func bytesText(n uint64) string { return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30)) }

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}

// output runs a command like run and returns its combined output.
func (l *Local) output(ctx context.Context, timeout time.Duration, name string, args ...string) (string, error) {
	return l.exec(ctx, timeout, nil, name, args...)
}

// exec runs a command with a timeout, its stdout going to stdout, or, when
// that is nil, with stderr into the output it returns. A failure is one
// line that names the command and ends with the tail of what it printed.
func (l *Local) exec(ctx context.Context, timeout time.Duration, stdout io.Writer, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), l.Env...)
	cmd.WaitDelay = 5 * time.Second
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = stdout, &out
	if stdout == nil {
		cmd.Stdout = &out
	}
	shown := args
	if len(shown) > 8 {
		shown = append(slices.Clip(shown[:8]), fmt.Sprintf("… (%d more)", len(args)-8))
	}
	l.logf("run: %s %s", name, strings.Join(shown, " "))
	err := cmd.Run()
	if err == nil {
		return out.String(), nil
	}
	if ctx.Err() == context.DeadlineExceeded {
		return out.String(), fmt.Errorf("%w: %s: timed out after %s: %s", ErrCommand, filepath.Base(name), timeout, tail(out.Bytes()))
	}
	return out.String(), fmt.Errorf("%w: %s: %v: %s", ErrCommand, filepath.Base(name), err, tail(out.Bytes()))
}

// bootFiles are what a running kernel cannot pick up without a reboot.
var bootFiles = []string{"kernel", "initrd", "kernel-modules"}

func (l *Local) NeedsReboot(storePath string) (bool, error) {
	booted, err := l.Booted()
	if err != nil || booted == "" {
		return false, err
	}
	return BootFilesDiffer(booted, storePath), nil
}

// BootFilesDiffer compares the resolved kernel, initrd and kernel-modules
// links of two system paths; a file missing on both sides is equal.
func BootFilesDiffer(a, b string) bool {
	for _, f := range bootFiles {
		ra, ea := filepath.EvalSymlinks(filepath.Join(a, f))
		rb, eb := filepath.EvalSymlinks(filepath.Join(b, f))
		if (ea == nil) != (eb == nil) || ra != rb {
			return true
		}
	}
	return false
}
