// Command deltaupdate measures what package delta saves on real updates of
// real store paths: for each case it builds an old and a new closure in the
// Nix store with Nix, does the publisher's work for every path the new
// closure adds (NAR.zst as `nix-ota push` compresses it, and a delta
// against the path PickBase chooses, sent only when at most half the
// NAR.zst), and rebuilds every delta as a device does, in a child process
// that dumps the base with nix-store --dump and applies the delta. It
// writes the "delta" section of bench/results.json.
//
//	go run ./bench/deltaupdate [-runs 3] [-cases go-toolchain,rebuild-cascade,project-binaries]
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// targetRatio is the saving a delta must reach: full bytes / delta bytes.
const targetRatio = 5

func main() {
	rebuild := flag.String("rebuild", "", "child mode: rebuild the jobs of this file (internal)")
	runs := flag.Int("runs", 3, "encodes and rebuilds per case")
	cases := flag.String("cases", "go-toolchain,rebuild-cascade,project-binaries", "cases to run, comma-separated")
	timeout := flag.Duration("timeout", 15*time.Minute, "give up after this long")
	flag.Parse()
	if *rebuild != "" {
		if err := rebuildChild(*rebuild); err != nil {
			fmt.Fprintf(os.Stderr, "deltaupdate rebuild: %v\n", err)
			os.Exit(1)
		}
		return
	}
	if *runs < 1 {
		fmt.Fprintln(os.Stderr, "bench/deltaupdate: -runs must be at least 1")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	err := run(ctx, *runs, strings.Split(*cases, ","))
	cancel()
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench/deltaupdate: %v\n", err)
		os.Exit(1)
	}
}

// builders make each case's closures in the store.
var builders = map[string]func(context.Context, *store, string) (caseSpec, error){
	"go-toolchain":     toolchainCase,
	"rebuild-cascade":  cascadeCase,
	"project-binaries": projectCase,
}

func run(ctx context.Context, runs int, names []string) error {
	for _, n := range names {
		if builders[n] == nil {
			return fmt.Errorf("unknown case %q (want go-toolchain, rebuild-cascade or project-binaries)", n)
		}
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	work, err := os.MkdirTemp("", "nix-ota-deltaupdate-")
	if err != nil {
		return fmt.Errorf("temp dir: %w", err)
	}
	defer os.RemoveAll(work)
	s := &store{roots: filepath.Join(work, "gcroots")}
	if err := os.MkdirAll(s.roots, 0o755); err != nil {
		return err
	}
	defer s.cleanup()
	var results []caseResult
	for _, n := range names {
		t0 := time.Now()
		cr, err := runCase(ctx, s, self, filepath.Join(work, n), n, runs)
		if err != nil {
			return fmt.Errorf("case %s: %w", n, err)
		}
		logf("%s: done after %.1f s", n, time.Since(t0).Seconds())
		results = append(results, cr)
	}
	printTable(results)
	return save(ctx, runs, results)
}

// runCase builds one case's closures and measures it.
func runCase(ctx context.Context, s *store, self, dir, name string, runs int) (caseResult, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return caseResult{}, err
	}
	defer os.RemoveAll(dir)
	t0 := time.Now()
	cs, err := builders[name](ctx, s, dir)
	if err != nil {
		return caseResult{}, err
	}
	logf("%s: closures in the store after %.1f s", name, time.Since(t0).Seconds())
	return measureCase(ctx, cs, self, dir, runs)
}

// logf reports progress on stderr; stdout has the table.
func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "deltaupdate: "+format+"\n", args...)
}
