package benchutil

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// GNUTime is GNU time (Debian package "time"); make bench installs it.
const GNUTime = "/usr/bin/time"

// Timed is what GNU time measured of one command.
type Timed struct {
	CPU        time.Duration // user+system, 10 ms resolution
	PeakRSSKiB int64
}

// WrapTime rewrites cmd to run under GNU time and returns a function that
// reads the figures after cmd has run.
//
// Why: Go starts children with vfork, and the kernel records the parent's
// memory high-water mark as the child's own at exec, so a child's
// ru_maxrss is at least the benchmark harness's RSS. GNU time is a small C
// program that forks the command itself, so its peak RSS is the command's.
// Its CPU figures are the command's alone but only to 10 ms; idle polls are
// timed unwrapped, from wait4, and wrapped only for a separate RSS pass.
func WrapTime(cmd *exec.Cmd) (func() (Timed, error), error) {
	if _, err := os.Stat(GNUTime); err != nil {
		return nil, fmt.Errorf("%s is needed to measure peak RSS (apt-get install time; make bench installs it)", GNUTime)
	}
	f, err := os.CreateTemp("", "nix-ota-bench-time-")
	if err != nil {
		return nil, err
	}
	f.Close()
	cmd.Args = append([]string{GNUTime, "-f", "%U %S %M", "-o", f.Name(), cmd.Path}, cmd.Args[1:]...)
	cmd.Path = GNUTime
	cmd.Err = nil
	return func() (Timed, error) {
		defer os.Remove(f.Name())
		b, err := os.ReadFile(f.Name())
		if err != nil {
			return Timed{}, err
		}
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		fields := strings.Fields(lines[len(lines)-1]) // earlier lines: "Command exited with non-zero status"
		if len(fields) != 3 {
			return Timed{}, fmt.Errorf("GNU time wrote %q", b)
		}
		u, err1 := strconv.ParseFloat(fields[0], 64)
		s, err2 := strconv.ParseFloat(fields[1], 64)
		rss, err3 := strconv.ParseInt(fields[2], 10, 64)
		if err1 != nil || err2 != nil || err3 != nil {
			return Timed{}, fmt.Errorf("GNU time wrote %q", b)
		}
		return Timed{CPU: time.Duration((u + s) * float64(time.Second)), PeakRSSKiB: rss}, nil
	}, nil
}

// PeakRSS runs cmd under GNU time and returns its peak RSS in KiB.
func PeakRSS(cmd *exec.Cmd) (int64, error) {
	read, err := WrapTime(cmd)
	if err != nil {
		return 0, err
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		return 0, fmt.Errorf("%v: %v\n%s", cmd.Args, err, out)
	}
	t, err := read()
	return t.PeakRSSKiB, err
}
