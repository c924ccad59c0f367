// Command agentpoll measures what an idle poll of nix-ota-agent costs: the
// whole `once` process a systemd timer runs (requests and bytes on the
// wire, CPU, peak RSS, wall time) and the in-process poll of `daemon` mode
// (CPU and allocations per poll), plus the stripped agent binary's size.
// It starts its own MinIO on loopback, builds a test system with real Nix,
// and prints min/median/max over repeated runs.
//
//	go run ./bench/agentpoll [-runs 20]
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/nix-ota/nix-ota/agent"
	"github.com/nix-ota/nix-ota/internal/benchutil"
	"github.com/nix-ota/nix-ota/internal/testenv"
	"github.com/nix-ota/nix-ota/nix"
)

func main() {
	runs := flag.Int("runs", 20, "whole-process idle polls to measure")
	flag.Parse()
	log.SetFlags(0)
	if err := run(*runs); err != nil {
		log.Fatalf("agentpoll: %v", err)
	}
}

type sample struct {
	cpu, wall time.Duration
	rss       int64 // KiB
	reqs      int64
	up, down  int64
}

func run(runs int) error {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "nix-ota-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	// The agent binary, as shipped: static, stripped.
	bin := filepath.Join(dir, "nix-ota-agent")
	if err := testenv.BuildAgent(bin); err != nil {
		return err
	}
	fi, err := os.Stat(bin)
	if err != nil {
		return err
	}

	m, err := benchutil.StartMinIOBucket(ctx, "fleet")
	if err != nil {
		return err
	}
	defer m.Stop()
	px, url, store, err := benchutil.ProxiedBucket(ctx, m)
	if err != nil {
		return err
	}
	sys, err := benchutil.BuildSystem("bench")
	if err != nil {
		return fmt.Errorf("build test system with nix-build: %w", err)
	}
	pub, signer, err := benchutil.PublishChannel(ctx, store, sys)
	if err != nil {
		return err
	}
	profile := filepath.Join(dir, "profile")
	if err := os.Symlink(sys, profile); err != nil {
		return err
	}
	creds := filepath.Join(dir, "creds")
	os.WriteFile(creds, []byte(fmt.Sprintf("[default]\naws_access_key_id=%s\naws_secret_access_key=%s\n", m.AccessKey, m.SecretKey)), 0o600)
	stateDir := filepath.Join(dir, "state")
	args := []string{"once", "--bucket", url, "--channel", "prod", "--public-key", pub.String(), "--device-id", "bench-1",
		"--state-dir", stateDir, "--profile", profile, "--status-credentials", creds, "--switch-via", "direct"}

	// once runs the agent. Unwrapped, CPU comes from wait4 (µs); wrapped in
	// GNU time, peak RSS is the agent's own and CPU has 10 ms resolution
	// (see benchutil.WrapTime).
	once := func(wrap bool) (sample, error) {
		px.Reset()
		cmd := exec.Command(bin, args...)
		var read func() (benchutil.Timed, error)
		if wrap {
			var err error
			if read, err = benchutil.WrapTime(cmd); err != nil {
				return sample{}, err
			}
		}
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		start := time.Now()
		if err := cmd.Run(); err != nil {
			return sample{}, fmt.Errorf("agent once: %v\n%s", err, stderr.String())
		}
		wall := time.Since(start)
		ru := cmd.ProcessState.SysUsage().(*syscall.Rusage)
		s := sample{cpu: time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), wall: wall}
		if wrap {
			t, err := read()
			if err != nil {
				return sample{}, err
			}
			s.cpu, s.rss = t.CPU, t.PeakRSSKiB
		}
		time.Sleep(20 * time.Millisecond) // let the proxy finish counting
		s.reqs, s.up, s.down = px.Requests.Load(), px.Up.Load(), px.Down.Load()
		return s, nil
	}
	first, err := once(true) // up-to-date: records the revision and writes the first status
	if err != nil {
		return err
	}
	var samples []sample
	for i := 0; i < runs; i++ {
		s, err := once(false)
		if err != nil {
			return err
		}
		samples = append(samples, s)
	}
	var rss []int64 // a separate pass under GNU time
	for i := 0; i < 3; i++ {
		s, err := once(true)
		if err != nil {
			return err
		}
		rss = append(rss, s.rss)
	}
	r1, r2, r3 := benchutil.MinMedMax(rss)

	fmt.Printf("nix-ota-agent idle poll (manifest unchanged), %d whole-process runs of `nix-ota-agent once` against MinIO on loopback\n\n", runs)
	fmt.Printf("%-34s %12s %12s %12s\n", "metric", "min", "median", "max")
	col := func(name string, f func(sample) int64, unit string) {
		a, b, c := benchutil.Column(samples, f)
		fmt.Printf("%-34s %12s %12s %12s\n", name, fmt.Sprint(a)+unit, fmt.Sprint(b)+unit, fmt.Sprint(c)+unit)
	}
	col("HTTP requests per poll", func(s sample) int64 { return s.reqs }, "")
	col("bytes sent (request)", func(s sample) int64 { return s.up }, " B")
	col("bytes received (response)", func(s sample) int64 { return s.down }, " B")
	col("bytes on the wire, total", func(s sample) int64 { return s.up + s.down }, " B")
	col("CPU time (user+sys)", func(s sample) int64 { return s.cpu.Microseconds() / 1000 }, " ms")
	col("wall time", func(s sample) int64 { return s.wall.Milliseconds() }, " ms")
	mib := func(kib int64) string { return fmt.Sprintf("%.1f MiB", float64(kib)/1024) }
	fmt.Printf("%-34s %12s %12s %12s\n", "peak RSS (3 runs, GNU time)", mib(r1), mib(r2), mib(r3))
	fmt.Printf("\nfirst poll (verify, up-to-date, status write): %d requests, %d B, CPU %d ms, peak RSS %s\n",
		first.reqs, first.up+first.down, first.cpu.Milliseconds(), mib(first.rss))
	fmt.Printf("agent binary (static, stripped): %.1f MB (%d bytes; target <= 12 MB)\n", float64(fi.Size())/1e6, fi.Size())

	// One apply: a new system (already in the store, so no download):
	// verify, set the profile with nix-env, run its switch-to-configuration,
	// health-check, write the status. Peak RSS is the largest of the agent
	// and the commands it waited for.
	sys2, err := benchutil.BuildSystem("bench-apply")
	if err != nil {
		return err
	}
	os.Remove(profile)
	if out, err := exec.Command("nix-env", "--profile", profile, "--set", sys).CombinedOutput(); err != nil {
		return fmt.Errorf("nix-env: %v %s", err, out)
	}
	if _, err := benchutil.PublishChannelAs(ctx, store, sys2, pub, signer); err != nil {
		return err
	}
	apply, err := once(true)
	if err != nil {
		return err
	}
	if cur, _ := filepath.EvalSymlinks(profile); cur != sys2 {
		return fmt.Errorf("the apply did not switch the profile (%s)", cur)
	}
	fmt.Printf("one apply (verify, nix-env --set, switch-to-configuration, health check, status): %d requests, CPU %d ms, wall %d ms, peak RSS %s\n\n",
		apply.reqs, apply.cpu.Milliseconds(), apply.wall.Milliseconds(), mib(apply.rss))

	// In-process (daemon mode): the same idle poll, measured by testing.Benchmark.
	cfg := agent.Config{Bucket: url, Channel: "prod", PublicKeys: []string{pub.String()}, DeviceID: "bench-2",
		StateDir: filepath.Join(dir, "state2"), Profile: profile, SwitchVia: "direct"}
	trust, err := cfg.Prepare()
	if err != nil {
		return err
	}
	os.MkdirAll(cfg.StateDir, 0o700)
	a := &agent.Agent{Config: cfg, Trust: trust, Store: store, System: &nix.Local{SwitchVia: nix.SwitchViaDirect}}
	if err := a.Load(); err != nil {
		return err
	}
	if out := a.Poll(ctx); out.Err != nil {
		return out.Err
	}
	px.Reset()
	var ruBefore, ruAfter syscall.Rusage
	var polls, totalPolls int
	res := testing.Benchmark(func(b *testing.B) {
		b.ReportAllocs()
		syscall.Getrusage(syscall.RUSAGE_SELF, &ruBefore)
		for i := 0; i < b.N; i++ {
			if out := a.Poll(ctx); out.Result != agent.ResultIdle {
				b.Fatalf("poll was not idle: %+v", out)
			}
		}
		syscall.Getrusage(syscall.RUSAGE_SELF, &ruAfter)
		polls = b.N
		totalPolls += b.N
	})
	cpu := time.Duration(ruAfter.Utime.Nano()+ruAfter.Stime.Nano()-ruBefore.Utime.Nano()-ruBefore.Stime.Nano()) / time.Duration(polls)
	fmt.Printf("daemon mode, in-process idle poll (testing.Benchmark, %d polls):\n", res.N)
	fmt.Printf("  %d ns/poll wall, %d µs CPU/poll (incl. the HTTP client), %d allocs/poll, %d B allocated/poll\n",
		res.NsPerOp(), cpu.Microseconds(), res.AllocsPerOp(), res.AllocedBytesPerOp())
	fmt.Printf("  HTTP requests: %d for %d idle polls\n", px.Requests.Load(), totalPolls)
	c1, c2, c3 := benchutil.Column(samples, func(s sample) int64 { return s.cpu.Microseconds() })
	return benchutil.SaveResult("agent", map[string]any{
		"binary_bytes": fi.Size(), "once_idle_cpu_us": []int64{c1, c2, c3}, "once_idle_peak_rss_kib": []int64{r1, r2, r3},
		"once_idle_wire_bytes_s3": samples[0].up + samples[0].down, "once_idle_response_bytes_s3": samples[0].down, "first_poll_requests": first.reqs, "first_poll_bytes": first.up + first.down,
		"apply_cpu_us": apply.cpu.Microseconds(), "apply_peak_rss_kib": apply.rss,
		"daemon_idle_cpu_us": cpu.Microseconds(), "daemon_idle_allocs": res.AllocsPerOp(), "daemon_idle_bytes_alloc": res.AllocedBytesPerOp(),
	})
}
