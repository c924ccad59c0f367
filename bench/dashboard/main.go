// Command dashboard measures the publisher's side on large fleets: the
// latency of `nix-ota publish` (sign, upload, dashboard) with 10, 1,000 and
// 10,000 device statuses in the bucket, and `nix-ota dashboard` over 10,000
// and 100,000 statuses in a real MinIO bucket (through a counting loopback
// proxy; also with --public-key, which reads each channel's signed history
// for verified progress) and in a file:// bucket: wall time, CPU, requests
// and peak RSS of the whole CLI process, min/median/max over repeated runs.
//
//	go run ./bench/dashboard [-devices 10000,100000] [-publish-at 10,1000,10000] [-runs 3]
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nix-ota/nix-ota/bucket"
	"github.com/nix-ota/nix-ota/bucket/s3store"
	"github.com/nix-ota/nix-ota/internal/benchutil"
	"github.com/nix-ota/nix-ota/status"
)

func main() {
	devices := flag.String("devices", "10000,100000", "fleet sizes for the dashboard")
	publishAt := flag.String("publish-at", "10,1000,10000", "fleet sizes for the publish latency")
	runs := flag.Int("runs", 3, "runs per measurement (1 for fleets over 50,000)")
	flag.Parse()
	log.SetFlags(0)
	if err := run(ints(*devices), ints(*publishAt), *runs); err != nil {
		log.Fatalf("bench/dashboard: %v", err)
	}
}

func ints(s string) []int {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil {
			log.Fatalf("bench/dashboard: %q is not a number", f)
		}
		out = append(out, n)
	}
	return out
}

const sp = "/nix/store/0c5lq2n9xqbq6yv5q9r1lxg7b8c7wjsz-nixos-system-bench"

// setup initialises a bucket and publishes a channel; it returns the key
// that signed it, which the CLI's publish must trust to build on it.
func setup(ctx context.Context, s bucket.Store) (string, error) {
	if _, err := bucket.Init(ctx, s, "bench", time.Now()); err != nil {
		return "", err
	}
	pub, _, err := benchutil.PublishChannel(ctx, s, sp)
	return pub.String(), err
}

// fill writes the status blobs of devices from..to-1, 32 at a time.
func fill(ctx context.Context, s bucket.Store, from, to int) error {
	now := time.Now().UTC().Truncate(time.Second)
	states := status.States
	work := make(chan int)
	errs := make(chan error, 1)
	var wg sync.WaitGroup
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				st := status.Status{DeviceID: fmt.Sprintf("device-%05d", i), Channel: "prod", State: states[i%len(states)], Revision: 1,
					StorePath: sp, CheckedAt: now, ChangedAt: now, AgentVersion: "bench", HeartbeatSeconds: 900}
				if i%7 == 0 {
					st.LastError = "fetch closure of revision 1: nix-store: exit status 1: error: unable to download narinfo"
				}
				b, _ := json.Marshal(st)
				if _, err := bucket.PutBytes(ctx, s, bucket.StatusKey(st.DeviceID), b, bucket.PutOptions{}); err != nil {
					select {
					case errs <- err:
					default:
					}
				}
			}
		}()
	}
	for i := from; i < to; i++ {
		work <- i
	}
	close(work)
	wg.Wait()
	select {
	case err := <-errs:
		return err
	default:
		return nil
	}
}

type sample struct{ wall, cpu, rssMiB, reqs int64 }

// measure runs the CLI under GNU time: its peak RSS and CPU (10 ms
// resolution) are the CLI's own, not this harness's (benchutil.WrapTime).
func measure(bin string, env []string, args ...string) (sample, error) {
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	read, err := benchutil.WrapTime(cmd)
	if err != nil {
		return sample{}, err
	}
	start := time.Now()
	out, err := cmd.CombinedOutput()
	if err != nil {
		return sample{}, fmt.Errorf("%v: %v\n%s", args, err, out)
	}
	wall := time.Since(start)
	t, err := read()
	if err != nil {
		return sample{}, err
	}
	return sample{wall: wall.Milliseconds(), cpu: t.CPU.Milliseconds(), rssMiB: t.PeakRSSKiB / 1024}, nil
}

func report(name string, ss []sample) {
	col := func(f func(sample) int64) (int64, int64, int64) { return benchutil.Column(ss, f) }
	w1, w2, w3 := col(func(s sample) int64 { return s.wall })
	c1, c2, c3 := col(func(s sample) int64 { return s.cpu })
	r1, r2, r3 := col(func(s sample) int64 { return s.rssMiB })
	q1, _, _ := col(func(s sample) int64 { return s.reqs })
	reqs := "n/a (no network)"
	if q1 > 0 {
		reqs = fmt.Sprint(q1)
	}
	fmt.Printf("%-8s wall %6d/%6d/%6d ms   CPU %6d/%6d/%6d ms   peak RSS %4d/%4d/%4d MiB   requests %s\n", name, w1, w2, w3, c1, c2, c3, r1, r2, r3, reqs)
}

func run(sizes, publishAt []int, runs int) error {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "nix-ota-bench-dash-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	bin := filepath.Join(dir, "nix-ota")
	if out, err := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", bin, "./cmd/nix-ota").CombinedOutput(); err != nil {
		return fmt.Errorf("build: %v\n%s", err, out)
	}
	keyFile := filepath.Join(dir, "sign.key")
	if out, err := exec.Command(bin, "keygen", "--out", keyFile).CombinedOutput(); err != nil {
		return fmt.Errorf("keygen: %v %s", err, out)
	}

	m, err := benchutil.StartMinIOBucket(ctx, "fleet")
	if err != nil {
		return err
	}
	defer m.Stop()
	direct, err := s3store.Open(fmt.Sprintf("s3://fleet?endpoint=%s&scheme=http", m.Endpoint), bucket.Options{}, m.Creds())
	if err != nil {
		return err
	}
	px, err := benchutil.StartProxy(m.Endpoint)
	if err != nil {
		return err
	}
	defer px.Close()
	s3URL := fmt.Sprintf("s3://fleet?endpoint=%s&scheme=http", px.Addr())
	fileURL := "file://" + filepath.Join(dir, "bucket")
	fs, err := bucket.Open(fileURL, bucket.Options{Create: true})
	if err != nil {
		return err
	}
	setupKey, err := setup(ctx, direct) // the store publish is measured on
	if err != nil {
		return err
	}
	if _, err := setup(ctx, fs); err != nil {
		return err
	}
	cliPub, err := exec.Command(bin, "pubkey", "--key", keyFile).Output()
	if err != nil {
		return err
	}
	results := map[string]any{}
	filled := 0
	grow := func(n int) error {
		if n <= filled {
			return nil
		}
		start := time.Now()
		if err := fill(ctx, direct, filled, n); err != nil {
			return err
		}
		if err := fill(ctx, fs, filled, n); err != nil {
			return err
		}
		fmt.Printf("(filled MinIO and file:// up to %d status blobs in %s)\n", n, time.Since(start).Round(time.Second))
		filled = n
		return nil
	}

	fmt.Printf("\nnix-ota publish (sign, upload, regenerate the dashboard) against MinIO, min/median/max of %d runs\n", runs)
	pub := map[string]any{}
	for _, n := range publishAt {
		if err := grow(n); err != nil {
			return err
		}
		var ss []sample
		for i := 0; i < runs; i++ {
			px.Reset()
			s, err := measure(bin, m.Env(), "publish", "--skip-closure-check", "--bucket", s3URL, "--key", keyFile, "--public-key", setupKey, "--channel", "prod", "--store-path", sp)
			if err != nil {
				return err
			}
			s.reqs = px.Requests.Load()
			ss = append(ss, s)
		}
		report(fmt.Sprintf("%d devices", n), ss)
		pub[strconv.Itoa(n)] = summary(ss)
	}
	results["publish"] = pub

	fmt.Printf("\nnix-ota dashboard (targets at 10,000: < 15 s, < 200 MiB)\n")
	dash := map[string]any{}
	for _, n := range sizes {
		if err := grow(n); err != nil {
			return err
		}
		r := runs
		if n > 50000 {
			r = 1
		}
		var s3s, files, verified []sample
		for i := 0; i < r; i++ {
			px.Reset()
			s, err := measure(bin, m.Env(), "dashboard", "--bucket", s3URL, "--out", filepath.Join(dir, "out-s3"))
			if err != nil {
				return err
			}
			s.reqs = px.Requests.Load()
			s3s = append(s3s, s)
			px.Reset()
			v, err := measure(bin, m.Env(), "dashboard", "--bucket", s3URL, "--public-key", setupKey, "--public-key", strings.TrimSpace(string(cliPub)), "--out", filepath.Join(dir, "out-v"))
			if err != nil {
				return err
			}
			v.reqs = px.Requests.Load()
			verified = append(verified, v)
			f, err := measure(bin, nil, "dashboard", "--bucket", fileURL, "--out", filepath.Join(dir, "out-file"))
			if err != nil {
				return err
			}
			files = append(files, f)
		}
		fmt.Printf("%d devices (%d run(s)):\n", n, r)
		report("  minio", s3s)
		report("  minio --public-key", verified)
		report("  file://", files)
		fi, _ := os.Stat(filepath.Join(dir, "out-s3", "index.html"))
		fmt.Printf("  index.html: %.1f MB\n", float64(fi.Size())/1e6)
		dash[strconv.Itoa(n)] = map[string]any{"minio": summary(s3s), "minio_verified": summary(verified), "file": summary(files), "html_bytes": fi.Size()}
	}
	results["dashboard"] = dash
	fmt.Println("requests: 1 LIST of channels/, 1 GET per channel, the LIST pages of devices/ (1000 keys each), 1 GET per device;")
	fmt.Println("with --public-key also per channel a LIST of its history, a GET per revision and its attestations")
	return benchutil.SaveResult("publisher", results)
}

func summary(ss []sample) map[string]any {
	col := func(f func(sample) int64) []int64 {
		a, b, c := benchutil.Column(ss, f)
		return []int64{a, b, c}
	}
	return map[string]any{"wall_ms": col(func(s sample) int64 { return s.wall }), "cpu_ms": col(func(s sample) int64 { return s.cpu }),
		"peak_rss_mib": col(func(s sample) int64 { return s.rssMiB }), "requests": col(func(s sample) int64 { return s.reqs })}
}
