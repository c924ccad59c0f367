// Command push measures closure upload: `nix-ota push` of a closure into a
// real MinIO bucket (only new paths, zstd, signed) against Nix's own `nix
// copy --to file://` (zstd and Nix's default xz), for the same closure.
//
//	go run ./bench/push [-mib 64]
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

	"github.com/nix-ota/nix-ota/bucket"
	"github.com/nix-ota/nix-ota/bucket/s3store"
	"github.com/nix-ota/nix-ota/internal/benchutil"
)

func main() {
	mib := flag.Int("mib", 64, "size of the closure's payload (half random, half zeros)")
	flag.Parse()
	log.SetFlags(0)
	if err := run(*mib); err != nil {
		log.Fatalf("bench/push: %v", err)
	}
}

func sh(env []string, name string, args ...string) (time.Duration, string, error) {
	cmd := exec.Command(name, args...)
	cmd.Env = append(append(os.Environ(), "NIX_CONFIG=substituters ="), env...)
	start := time.Now()
	out, err := cmd.CombinedOutput()
	if err != nil {
		return 0, "", fmt.Errorf("%s %v: %v\n%s", name, args, err, out)
	}
	return time.Since(start), string(out), nil
}

func run(mib int) error {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "nix-ota-bench-push-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	expr := filepath.Join(dir, "payload.nix")
	os.WriteFile(expr, []byte(fmt.Sprintf(`derivation { name = "bench-payload-%d"; system = builtins.currentSystem; builder = "/bin/sh";
  nonce = "%d"; args = [ "-c" "/bin/mkdir -p $out && /bin/dd if=/dev/urandom of=$out/random bs=1M count=%d 2>/dev/null && /bin/dd if=/dev/zero of=$out/zeros bs=1M count=%d 2>/dev/null" ]; }`,
		mib, time.Now().UnixNano(), mib/2, mib-mib/2)), 0o644)
	_, out, err := sh(nil, "nix-build", "--no-out-link", expr)
	if err != nil {
		return err
	}
	path := strings.TrimSpace(out[strings.LastIndex(strings.TrimSpace(out), "\n")+1:])
	bin := filepath.Join(dir, "nix-ota")
	if _, _, err := sh(nil, "go", "build", "-o", bin, "./cmd/nix-ota"); err != nil {
		return err
	}
	key := filepath.Join(dir, "cache.sk")
	if _, _, err := sh(nil, "nix-store", "--generate-binary-cache-key", "bench-1", key, key+".pub"); err != nil {
		return err
	}
	m, err := benchutil.StartMinIOBucket(ctx, "fleet")
	if err != nil {
		return err
	}
	defer m.Stop()
	url := fmt.Sprintf("s3://fleet?endpoint=%s&scheme=http", m.Endpoint)
	if _, _, err := sh(m.Env(), bin, "init", "--bucket", url); err != nil {
		return err
	}
	narBytes := float64(mib) * (1 << 20)
	fmt.Printf("closure upload of %s (%d MiB: half random, half zeros)\n\n", filepath.Base(path), mib)
	fmt.Printf("%-44s %10s %12s %10s\n", "method", "wall s", "MiB/s (NAR)", "objects")
	results := map[string]any{}
	line := func(name string, d time.Duration, objects int) {
		fmt.Printf("%-44s %10.2f %12.1f %10d\n", name, d.Seconds(), narBytes/(1<<20)/d.Seconds(), objects)
		results[name] = map[string]any{"wall_s": d.Seconds(), "mib_per_s": narBytes / (1 << 20) / d.Seconds(), "objects": objects}
	}
	d, _, err := sh(m.Env(), bin, "push", "--bucket", url, "--store-path", path, "--cache-key", key)
	if err != nil {
		return err
	}
	store, _ := s3store.Open(url, bucket.Options{}, m.Creds())
	n := 0
	store.List(ctx, "cache/", func(bucket.Info) error { n++; return nil })
	line("nix-ota push -> MinIO (zstd)", d, n)
	d, _, err = sh(m.Env(), bin, "push", "--bucket", url, "--store-path", path, "--cache-key", key)
	if err != nil {
		return err
	}
	line("nix-ota push again (nothing new)", d, 0)
	for _, c := range []struct{ name, q string }{{"nix copy --to file:// (zstd)", "&compression=zstd"}, {"nix copy --to file:// (xz, Nix's default)", ""}} {
		target := filepath.Join(dir, "nixcopy-"+strings.Fields(c.name)[len(strings.Fields(c.name))-1])
		d, _, err := sh(nil, "nix", "--extra-experimental-features", "nix-command", "copy", "--to", "file://"+target+"?secret-key="+key+c.q, path)
		if err != nil {
			return err
		}
		files := 0
		filepath.Walk(target, func(_ string, fi os.FileInfo, _ error) error {
			if fi != nil && !fi.IsDir() {
				files++
			}
			return nil
		})
		line(c.name, d, files)
	}
	return benchutil.SaveResult("push", results)
}
