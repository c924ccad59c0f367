package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/nix-ota/nix-ota/delta"
	"github.com/nix-ota/nix-ota/internal/benchutil"
)

// rebuildChild is the device side, run in a child process: for each job it
// dumps the base store path to a temporary file with nix-store --dump,
// applies the delta into a file and a sha256 hasher, and deletes the
// dumped base. It prints a childReport.
func rebuildChild(jobsFile string) error {
	b, err := os.ReadFile(jobsFile)
	if err != nil {
		return err
	}
	var jobs []job
	if err := json.Unmarshal(b, &jobs); err != nil {
		return fmt.Errorf("%s: %w", jobsFile, err)
	}
	var rep childReport
	for _, j := range jobs {
		sum, n, dumped, err := rebuildOne(j)
		if err != nil {
			return err
		}
		rep.SHA256, rep.Bytes = append(rep.SHA256, sum), append(rep.Bytes, n)
		rep.DumpedBytes += dumped
	}
	var self, kids syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &self)
	syscall.Getrusage(syscall.RUSAGE_CHILDREN, &kids)
	rep.SelfCPUMs, rep.SelfRSSKiB = cpuMs(self), self.Maxrss
	rep.DumpCPUMs, rep.DumpRSSKiB = cpuMs(kids), kids.Maxrss
	return json.NewEncoder(os.Stdout).Encode(rep)
}

func cpuMs(r syscall.Rusage) float64 {
	return float64(r.Utime.Nano()+r.Stime.Nano()) / 1e6
}

// rebuildOne rebuilds one NAR; it returns its hex sha256, its size and
// how many base bytes nix-store dumped.
func rebuildOne(j job) (string, int64, int64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	base, err := os.CreateTemp(filepath.Dir(j.Out), "base-*.nar")
	if err != nil {
		return "", 0, 0, err
	}
	defer os.Remove(base.Name())
	defer base.Close()
	cmd := exec.CommandContext(ctx, "nix-store", "--dump", j.Base)
	cmd.Stdout, cmd.Stderr = base, os.Stderr
	if err := cmd.Run(); err != nil {
		return "", 0, 0, fmt.Errorf("nix-store --dump %s: %w", j.Base, err)
	}
	size, err := base.Seek(0, io.SeekEnd)
	if err != nil {
		return "", 0, 0, err
	}
	d, err := os.Open(j.Delta)
	if err != nil {
		return "", 0, 0, err
	}
	defer d.Close()
	out, err := os.Create(j.Out)
	if err != nil {
		return "", 0, 0, err
	}
	defer out.Close()
	h := sha256.New()
	w := bufio.NewWriterSize(out, 256<<10)
	n, err := delta.Apply(io.MultiWriter(h, w), base, size, bufio.NewReaderSize(d, 64<<10), j.NarSize)
	if err != nil {
		return "", n, size, fmt.Errorf("delta.Apply %s on %s: %w", j.Delta, j.Base, err)
	}
	if err := w.Flush(); err != nil {
		return "", n, size, err
	}
	return fmt.Sprintf("%x", h.Sum(nil)), n, size, out.Close()
}

// childRun is one rebuild run as measured from outside.
type childRun struct {
	report    childReport
	wallMs    float64
	cpuMs     float64 // wait4 of GNU time: the child and its nix-store
	peakRSSKB int64   // GNU time %M: the larger of the child's and nix-store's peak
}

// runRebuild runs this program in rebuild mode under GNU time. Go starts
// children with vfork, so a child's own ru_maxrss would count this
// (large) process; GNU time forks the child afresh.
func runRebuild(ctx context.Context, self, jobsFile string) (childRun, error) {
	if _, err := os.Stat(benchutil.GNUTime); err != nil {
		return childRun{}, fmt.Errorf("%s is needed to measure peak RSS (apt-get install time; make bench installs it)", benchutil.GNUTime)
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	rssFile := jobsFile + ".time"
	defer os.Remove(rssFile)
	cmd := exec.CommandContext(ctx, benchutil.GNUTime, "-f", "%M", "-o", rssFile, self, "-rebuild", jobsFile)
	var stdout bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, os.Stderr
	t0 := time.Now()
	if err := cmd.Run(); err != nil {
		return childRun{}, fmt.Errorf("rebuild child: %w", err)
	}
	run := childRun{wallMs: ms(time.Since(t0)), cpuMs: ms(cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime())}
	b, err := os.ReadFile(rssFile)
	if err != nil {
		return run, err
	}
	if run.peakRSSKB, err = strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64); err != nil {
		return run, fmt.Errorf("GNU time wrote %q, not a peak RSS", b)
	}
	if err := json.Unmarshal(stdout.Bytes(), &run.report); err != nil {
		return run, fmt.Errorf("rebuild child printed %q: %w", stdout.String(), err)
	}
	return run, nil
}
