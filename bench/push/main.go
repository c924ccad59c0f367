// Command push measures closure upload: `nix-ota push` into a real MinIO
// bucket (only new paths, zstd, signed) against Nix's own `nix copy --to
// file://…?compression=zstd` of the same closure, in the same run, on the
// same machine (MinIO shares its cores with the CLI). Two closures: a
// realistic one of 12 store paths of mixed sizes (some compressible, some
// not, many small files in one, a dependency graph like a system's), and
// one 64 MiB path. Every method runs -runs times, interleaved, after one
// unrecorded warm-up round; figures are min/median/max, in MiB/s of NAR
// bytes (what nix path-info reports for the closure).
//
//	go run ./bench/push [-runs 7] [-mib 64] [-xz]
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/nix-ota/nix-ota/cache"
	"github.com/nix-ota/nix-ota/internal/benchutil"
	"github.com/nix-ota/nix-ota/internal/testenv"
)

func main() {
	runs := flag.Int("runs", 7, "recorded runs of each method")
	mib := flag.Int("mib", 64, "size of the single-path closure (half random, half zeros)")
	scale := flag.Int("closure-scale", 1, "make the 12-path closure this many times larger (1: about 70 MiB of NAR)")
	xz := flag.Bool("xz", false, "also time one nix copy with Nix's default compression (xz: about 30 s)")
	flag.Parse()
	log.SetFlags(0)
	if err := run(*runs, *mib, *scale, *xz); err != nil {
		log.Fatalf("bench/push: %v", err)
	}
}

// sh runs a command off the network and returns its wall time.
func sh(env []string, name string, args ...string) (time.Duration, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(append(os.Environ(), "NIX_CONFIG=substituters ="), env...)
	start := time.Now()
	out, err := cmd.CombinedOutput()
	if err != nil {
		return 0, "", fmt.Errorf("%s %v: %v\n%s", name, args, err, out)
	}
	return time.Since(start), string(out), nil
}

// closure is a built closure: its top path and NAR bytes.
type closure struct {
	name     string
	top      string
	paths    int
	narBytes int64
}

func describe(name, top string) (closure, error) {
	infos, err := cache.LocalNix{}.Closure(context.Background(), []string{top})
	if err != nil {
		return closure{}, err
	}
	c := closure{name: name, top: top, paths: len(infos)}
	for _, i := range infos {
		c.narBytes += int64(i.NarSize)
	}
	return c, nil
}

func (c closure) mib() float64 { return float64(c.narBytes) / (1 << 20) }

// bench holds what every measurement shares.
type bench struct {
	ctx      context.Context
	dir, bin string
	key      string
	m        *testenv.MinIO
	n        int // buckets and directories made so far
}

func run(runs, mib, closureScale int, xz bool) error {
	b := &bench{ctx: context.Background()}
	var err error
	if b.dir, err = os.MkdirTemp("", "nix-ota-bench-push-"); err != nil {
		return err
	}
	defer os.RemoveAll(b.dir)
	if err := b.setup(); err != nil {
		return err
	}
	defer b.m.Stop()
	nonce := fmt.Sprint(time.Now().UnixNano())
	mixed, err := b.build("closure.nix", mixedClosure(nonce, closureScale))
	if err != nil {
		return err
	}
	single, err := b.build("single.nix", singlePath(nonce, mib))
	if err != nil {
		return err
	}
	results := map[string]any{"runs": runs}
	scale := map[string]any{}
	for _, c := range []closure{mixed, single} {
		fmt.Printf("\n%s: %d paths, %.1f MiB of NAR; %d runs (after a warm-up round), interleaved\n", c.name, c.paths, c.mib(), runs)
		rows, err := b.measure(c, runs)
		if err != nil {
			return err
		}
		results[c.name] = rows
		if c.name == mixed.name {
			scale["push_mib_s"] = rows["nix-ota push -> MinIO (zstd)"].(map[string]any)["mib_per_s"]
			scale["nix_copy_file_zstd_mib_s"] = rows["nix copy --to file:// (zstd)"].(map[string]any)["mib_per_s"]
		}
	}
	if xz {
		if err := b.xz(mixed, results); err != nil {
			return err
		}
	}
	if err := benchutil.SaveResult("push", results); err != nil {
		return err
	}
	return benchutil.MergeResult("scale", scale)
}

// setup builds nix-ota, makes a cache key and starts MinIO.
func (b *bench) setup() error {
	b.bin = filepath.Join(b.dir, "nix-ota")
	if _, _, err := sh(nil, "go", "build", "-o", b.bin, "./cmd/nix-ota"); err != nil {
		return err
	}
	b.key = filepath.Join(b.dir, "cache.sk")
	if _, _, err := sh(nil, "nix-store", "--generate-binary-cache-key", "bench-1", b.key, b.key+".pub"); err != nil {
		return err
	}
	var err error
	b.m, err = benchutil.StartMinIOBucket(b.ctx, "fleet")
	return err
}

// build writes a Nix expression and builds it.
func (b *bench) build(file, expr string) (closure, error) {
	f := filepath.Join(b.dir, file)
	if err := os.WriteFile(f, []byte(expr), 0o644); err != nil {
		return closure{}, err
	}
	_, out, err := sh(nil, "nix-build", "--no-out-link", f)
	if err != nil {
		return closure{}, err
	}
	out = strings.TrimSpace(out)
	top := out[strings.LastIndex(out, "\n")+1:]
	name := "closure of 12 paths"
	if strings.HasPrefix(file, "single") {
		name = "one path"
	}
	return describe(name, top)
}
