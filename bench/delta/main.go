// Command delta measures candidate delta formats for store path updates:
// given the NAR a device already has (base) and the NAR it needs (target),
// how small is the delta, how long do encoding and rebuilding take, and how
// much memory does the rebuild need. Every rebuild runs in a child process
// so its peak RSS is its own, and is checked byte for byte against the
// target NAR.
//
//	go run ./bench/delta [-runs 3] [-cases go-toolchain,rebuild-cascade]
package main

import (
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nix-community/go-nix/pkg/nar"

	"github.com/nix-ota/nix-ota/internal/benchutil"
)

func main() {
	decode := flag.String("decode", "", "child mode: rebuild with this format (internal)")
	base := flag.String("base", "", "child mode: base NAR")
	delta := flag.String("delta", "", "child mode: delta file")
	out := flag.String("out", "", "child mode: rebuilt NAR")
	runs := flag.Int("runs", 3, "runs per measurement")
	cases := flag.String("cases", "go-toolchain,rebuild-cascade", "cases to run")
	flag.Var(&treePairs, "pair", "an extra case NAME=BASE_TREE,TARGET_TREE: two directories, serialised as NARs (repeatable)")
	only := flag.String("formats", "", "formats to measure besides full-zstd3 (comma-separated; empty: all)")
	flag.Parse()
	onlyFormats = *only
	if *decode != "" {
		if err := rebuild(*decode, *base, *delta, *out); err != nil {
			fmt.Fprintf(os.Stderr, "delta rebuild %s: %v\n", *decode, err)
			os.Exit(1)
		}
		return
	}
	names := strings.Split(*cases, ",")
	for name := range treePairs {
		names = append(names, name)
	}
	if err := run(*runs, names); err != nil {
		fmt.Fprintf(os.Stderr, "bench/delta: %v\n", err)
		os.Exit(1)
	}
}

// caseResult is one base/target pair and its formats' figures.
type caseResult struct {
	Name        string         `json:"name"`
	Description string         `json:"description"`
	BaseNAR     int64          `json:"base_nar_bytes"`
	TargetNAR   int64          `json:"target_nar_bytes"`
	FullBytes   int64          `json:"full_bytes"`
	Formats     []formatResult `json:"formats"`
	Skipped     []string       `json:"skipped,omitempty"`
}

func run(runs int, names []string) error {
	work, err := os.MkdirTemp("", "nix-ota-delta-bench-")
	if err != nil {
		return fmt.Errorf("temp dir: %w", err)
	}
	defer os.RemoveAll(work)
	var results []caseResult
	for _, name := range names {
		dir := filepath.Join(work, name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		basePath, targetPath, desc, err := buildCase(name, dir)
		if err != nil {
			return fmt.Errorf("case %s: %w", name, err)
		}
		cr, err := measureCase(name, desc, dir, basePath, targetPath, runs)
		if err != nil {
			return fmt.Errorf("case %s: %w", name, err)
		}
		printCase(cr)
		results = append(results, cr)
	}
	return benchutil.SaveResult("delta_formats", map[string]any{"runs": runs, "cases": results})
}

// treePairs are the -pair cases: name to base and target tree.
var treePairs = pairFlag{}

type pairFlag map[string][2]string

func (p pairFlag) String() string { return fmt.Sprint(map[string][2]string(p)) }

func (p pairFlag) Set(v string) error {
	name, trees, ok := strings.Cut(v, "=")
	base, target, ok2 := strings.Cut(trees, ",")
	if !ok || !ok2 || name == "" {
		return fmt.Errorf("want NAME=BASE_TREE,TARGET_TREE, got %q", v)
	}
	p[name] = [2]string{base, target}
	return nil
}

// buildCase writes base.nar and target.nar for one case into dir.
func buildCase(name, dir string) (string, string, string, error) {
	var baseTree, targetTree, desc string
	var err error
	switch pair, ok := treePairs[name]; {
	case ok:
		baseTree, targetTree, desc = pair[0], pair[1], "trees "+pair[0]+" -> "+pair[1]
	case name == "go-toolchain":
		baseTree, targetTree, desc, err = toolchainTrees()
	case name == "rebuild-cascade":
		baseTree, targetTree, desc, err = cascadeTrees(dir)
	default:
		return "", "", "", fmt.Errorf("unknown case (want go-toolchain or rebuild-cascade)")
	}
	if err != nil {
		return "", "", "", err
	}
	basePath, targetPath := filepath.Join(dir, "base.nar"), filepath.Join(dir, "target.nar")
	if err := writeNAR(basePath, baseTree); err != nil {
		return "", "", "", err
	}
	return basePath, targetPath, desc, writeNAR(targetPath, targetTree)
}

// writeNAR serialises tree to path as `nix-store --dump` would.
func writeNAR(path, tree string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := nar.DumpPath(f, tree); err != nil {
		f.Close()
		return fmt.Errorf("NAR of %s: %w", tree, err)
	}
	return f.Close()
}

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return -1
	}
	return fi.Size()
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
