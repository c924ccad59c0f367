// Command fleetsim runs N simulated devices against one MinIO: each is the
// real agent poll code (agent.Agent) with its own device id, state
// directory and profile, polling at a fixed interval from a random phase.
// After a warm-up (each device's first poll: full read, verification,
// status write) it measures one interval of idle polls: polls per second
// achieved, errors, p50/p99 latency, and the CPU MinIO spent.
//
//	go run ./bench/fleetsim [-n 100,1000,10000] [-interval 60s]
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nix-ota/nix-ota/agent"
	"github.com/nix-ota/nix-ota/bucket"
	"github.com/nix-ota/nix-ota/bucket/s3store"
	"github.com/nix-ota/nix-ota/internal/benchutil"
	"github.com/nix-ota/nix-ota/nix"
)

func main() {
	sizes := flag.String("n", "100,1000,10000", "fleet sizes")
	interval := flag.Duration("interval", 60*time.Second, "poll interval (and measured window)")
	flag.Parse()
	log.SetFlags(0)
	if err := run(*sizes, *interval); err != nil {
		log.Fatalf("bench/fleetsim: %v", err)
	}
}

// cpuTicks reads a process's user+system CPU time in clock ticks.
func cpuTicks(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	u, _ := strconv.ParseInt(f[11], 10, 64)
	s, _ := strconv.ParseInt(f[12], 10, 64)
	return u + s
}

func run(sizes string, interval time.Duration) error {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "nix-ota-fleetsim-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	m, err := benchutil.StartMinIOBucket(ctx, "fleet")
	if err != nil {
		return err
	}
	defer m.Stop()
	url := fmt.Sprintf("s3://fleet?endpoint=%s&scheme=http&region=us-east-1", m.Endpoint)
	store, err := s3store.Open(url, bucket.Options{}, m.Creds())
	if err != nil {
		return err
	}
	sys, err := benchutil.BuildSystem("fleetsim")
	if err != nil {
		return err
	}
	// The devices' side: the built-in S3 client the agent binary uses. Real
	// devices each hold their own connection; here they share one process,
	// so the pool keeps as many idle connections as the warm-up runs
	// devices at once instead of redialling (a harness detail).
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 64
	devStore, err := bucket.Open(url, bucket.Options{
		Credentials: bucket.StaticCredentials(m.AccessKey, m.SecretKey, ""),
		HTTPClient:  &http.Client{Transport: tr, Timeout: agent.RequestTimeout},
	})
	if err != nil {
		return err
	}
	pub, _, err := benchutil.PublishChannel(ctx, store, sys)
	if err != nil {
		return err
	}
	profile := filepath.Join(dir, "profile")
	os.Symlink(sys, profile)
	tick := int64(100) // USER_HZ on Linux
	results := map[string]any{}
	fmt.Printf("fleet simulation: N devices (real agent poll code), one MinIO on loopback, one poll per device per %s\n\n", interval)
	fmt.Printf("%8s %10s %10s %8s %10s %10s %10s %14s %12s\n", "devices", "warm-up", "polls", "errors", "polls/s", "p50 ms", "p99 ms", "MinIO CPU s", "MinIO CPU %")
	for _, f := range strings.Split(sizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil {
			return err
		}
		agents := make([]*agent.Agent, n)
		for i := range agents {
			cfg := agent.Config{Bucket: url, Channel: "prod", PublicKeys: []string{pub.String()}, DeviceID: fmt.Sprintf("sim-%d-%05d", n, i),
				StateDir: filepath.Join(dir, fmt.Sprintf("s%d-%d", n, i)), Profile: profile, SwitchVia: "direct", Interval: agent.Duration{Duration: interval}}
			trust, err := cfg.Prepare()
			if err != nil {
				return err
			}
			os.MkdirAll(cfg.StateDir, 0o700)
			a := &agent.Agent{Config: cfg, Trust: trust, Store: devStore, Status: devStore, System: &nix.Local{SwitchVia: nix.SwitchViaDirect}}
			if err := a.Load(); err != nil {
				return err
			}
			agents[i] = a
		}
		// Warm-up: every device's first poll, 64 at a time.
		start := time.Now()
		var warmErr atomic.Int64
		work := make(chan *agent.Agent)
		var wg sync.WaitGroup
		for range 64 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for a := range work {
					if out := a.Poll(ctx); out.Err != nil || out.Result != agent.ResultUpToDate {
						warmErr.Add(1)
					}
				}
			}()
		}
		for _, a := range agents {
			work <- a
		}
		close(work)
		wg.Wait()
		warm := time.Since(start)
		if warmErr.Load() > 0 {
			return fmt.Errorf("%d devices failed their first poll", warmErr.Load())
		}
		// One interval of idle polls, each device at a random phase.
		lat := make([]time.Duration, n)
		var errs atomic.Int64
		cpu0 := cpuTicks(m.PID())
		var self0, self1 syscall.Rusage
		syscall.Getrusage(syscall.RUSAGE_SELF, &self0)
		start = time.Now()
		for i, a := range agents {
			wg.Add(1)
			go func() {
				defer wg.Done()
				time.Sleep(time.Duration(rand.Int64N(int64(interval))))
				t0 := time.Now()
				out := a.Poll(ctx)
				lat[i] = time.Since(t0)
				if out.Err != nil || out.Result != agent.ResultIdle {
					errs.Add(1)
				}
			}()
		}
		wg.Wait()
		window := time.Since(start)
		syscall.Getrusage(syscall.RUSAGE_SELF, &self1)
		minioCPU := float64(cpuTicks(m.PID())-cpu0) / float64(tick)
		sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
		p50, p99 := lat[n/2], lat[n*99/100]
		rate := float64(n) / window.Seconds()
		fmt.Printf("%8d %9.1fs %10d %8d %10.1f %10.1f %10.1f %14.2f %11.1f%%\n", n, warm.Seconds(), n, errs.Load(), rate,
			float64(p50.Microseconds())/1000, float64(p99.Microseconds())/1000, minioCPU, 100*minioCPU/window.Seconds())
		results[strconv.Itoa(n)] = map[string]any{"polls": n, "errors": errs.Load(), "polls_per_s": rate, "p50_ms": float64(p50.Microseconds()) / 1000,
			"p99_ms": float64(p99.Microseconds()) / 1000, "minio_cpu_s": minioCPU, "window_s": window.Seconds(), "warmup_s": warm.Seconds(),
			"sim_cpu_s": float64(self1.Utime.Nano()+self1.Stime.Nano()-self0.Utime.Nano()-self0.Stime.Nano()) / 1e9}
	}
	return benchutil.SaveResult("fleet_simulation", results)
}
