// Command dashboard measures the publisher's side on large fleets, in a
// real MinIO bucket behind a counting loopback proxy: the latency of
// `nix-ota publish` with 10, 10,000 and 100,000 devices in the bucket (until
// the channel moved, and the dashboard refresh after it), and `nix-ota
// dashboard --public-key` at 10,000 and 100,000 devices, cold (no
// snapshot: every check-in listed and read) and warm (1% of the devices
// changed since the previous run): wall time, CPU, requests and peak RSS of
// the whole CLI process, min/median/max over repeated runs. Results go to
// bench/results.json under "scale".
//
// Every check-in is signed with its device's identity key and the bucket
// holds a signed device registry of the whole fleet, so every read does
// the work of verifying them. The fill spreads check-ins over the windows
// of the last heartbeat, signed and stored (MinIO's source-mtime, as its
// replication sets it) at their times, as a running fleet leaves them.
//
//	go run ./bench/dashboard [-devices 10000,100000] [-publish-at 10,10000,100000] [-runs 3]
package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/nix-ota/nix-ota/bucket"
	"github.com/nix-ota/nix-ota/bucket/s3store"
	"github.com/nix-ota/nix-ota/internal/benchutil"
	"github.com/nix-ota/nix-ota/internal/testenv"
	"github.com/nix-ota/nix-ota/manifest"
	"github.com/nix-ota/nix-ota/manifest/signing"
	"github.com/nix-ota/nix-ota/status"
)

func main() {
	devices := flag.String("devices", "10000,100000", "fleet sizes for the dashboard")
	publishAt := flag.String("publish-at", "10,10000,100000", "fleet sizes for the publish latency")
	runs := flag.Int("runs", 3, "runs per measurement")
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
// that signed it, which the CLI's publish must trust to build on it, and
// which signs the device registry.
func setup(ctx context.Context, s bucket.Store) (string, signing.Key, error) {
	if _, err := bucket.Init(ctx, s, "bench", time.Now()); err != nil {
		return "", signing.Key{}, err
	}
	pub, signer, err := benchutil.PublishChannel(ctx, s, sp)
	return pub.String(), signer, err
}

// deviceKey is device i's identity key, the same in every run.
func deviceKey(i int) ed25519.PrivateKey {
	seed := sha256.Sum256([]byte(fmt.Sprintf("bench device %d", i)))
	return ed25519.NewKeyFromSeed(seed[:])
}

func deviceID(i int) string { return fmt.Sprintf("device-%05d", i) }

// register writes a device registry of devices 0..n-1, signed as
// nix-ota device approve would.
func register(ctx context.Context, s bucket.Store, signer signing.Key, n int) error {
	r := &manifest.Registry{Schema: manifest.Schema, Version: uint64(n), IssuedAt: time.Now().UTC()}
	for i := range n {
		r.Devices = append(r.Devices, manifest.DeviceEntry{ID: deviceID(i), Key: status.EncodeKey(deviceKey(i).Public().(ed25519.PublicKey)), At: r.IssuedAt})
	}
	body, err := signing.SignRegistry(ctx, r, signer)
	if err != nil {
		return err
	}
	_, err = bucket.PutBytes(ctx, s, bucket.RegistryVersionKey(r.Version), body, bucket.JSONPut())
	return err
}

// signedCheckin is device i's check-in as its agent writes it: signed at
// t, under t's window.
func signedCheckin(i int, st status.Status, t time.Time) (string, []byte, error) {
	st.CheckedAt = t.UTC().Truncate(time.Second)
	b, err := status.Sign(st, deviceKey(i))
	return bucket.CheckinKey(st.DeviceID, st.CheckedAt), b, err
}

// bucketName is the bench's bucket.
const bucketName = "fleet"

// heartbeat is the fleet's: the agent's default.
const heartbeat = 8 * 3600

// at is when device i last checked in: the fleet's check-ins are spread
// over one heartbeat's windows, as a running fleet leaves them.
func at(i int) time.Time {
	windows := heartbeat / int(bucket.CheckinWindow.Seconds())
	return time.Now().Add(-time.Duration(i%windows) * bucket.CheckinWindow)
}

// fill writes the status blobs of devices from..to-1, 32 at a time,
// each dated at its check-in time.
func fill(ctx context.Context, s *minio.Client, from, to int) error {
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
				st := status.Status{DeviceID: deviceID(i), Channel: "prod", State: states[i%len(states)], Revision: 1,
					StorePath: sp, ChangedAt: now, AgentVersion: "bench", HeartbeatSeconds: heartbeat}
				if i%7 == 0 {
					st.LastError = "fetch closure of revision 1: nix-store: exit status 1: error: unable to download narinfo"
				}
				key, b, err := signedCheckin(i, st, at(i))
				if err == nil {
					_, err = s.PutObject(ctx, bucketName, key, bytes.NewReader(b), int64(len(b)),
						minio.PutObjectOptions{Internal: minio.AdvancedPutOptions{SourceMTime: at(i)}})
				}
				if err != nil {
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

type sample struct{ wall, cpu, rssKiB, reqs int64 }

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
	return sample{wall: wall.Milliseconds(), cpu: t.CPU.Milliseconds(), rssKiB: t.PeakRSSKiB}, nil
}

func report(name string, ss []sample) {
	col := func(f func(sample) int64) (int64, int64, int64) { return benchutil.Column(ss, f) }
	w1, w2, w3 := col(func(s sample) int64 { return s.wall })
	c1, c2, c3 := col(func(s sample) int64 { return s.cpu })
	r1, r2, r3 := col(func(s sample) int64 { return s.rssKiB / 1024 })
	q1, _, _ := col(func(s sample) int64 { return s.reqs })
	reqs := "n/a (no network)"
	if q1 > 0 {
		reqs = fmt.Sprint(q1)
	}
	fmt.Printf("%-20s wall %6d/%6d/%6d ms   CPU %6d/%6d/%6d ms   peak RSS %4d/%4d/%4d MiB   requests %s\n", name, w1, w2, w3, c1, c2, c3, r1, r2, r3, reqs)
}

// bench is one benchmark run's shared parts: the CLI, a MinIO bucket
// behind a counting proxy, and what has been filled so far.
type bench struct {
	bin, dir, keyFile, setupKey string
	signer                      signing.Key
	m                           *testenv.MinIO
	px                          *benchutil.Proxy
	direct                      bucket.Store
	s3URL                       string
	filled                      int
}

func (b *bench) env(cache string) []string {
	return append(b.m.Env(), "NIX_OTA_CACHE_DIR="+cache)
}

// grow fills the bucket up to n devices, their check-ins spread over the
// last heartbeat's windows as a running fleet leaves them.
func (b *bench) grow(ctx context.Context, n int) error {
	if n <= b.filled {
		return nil
	}
	start := time.Now()
	if err := fill(ctx, b.m.Admin(), b.filled, n); err != nil {
		return err
	}
	if err := register(ctx, b.direct, b.signer, n); err != nil {
		return err
	}
	fmt.Printf("(filled MinIO up to %d check-ins in %s)\n", n, time.Since(start).Round(time.Second))
	b.filled = n
	return nil
}

// seed reads the whole fleet once into cache: a dashboard that has been
// running.
func (b *bench) seed(cache string) error {
	_, err := measure(b.bin, b.env(cache), "dashboard", "--full", "--bucket", b.s3URL, "--out", filepath.Join(b.dir, "out-seed"))
	return err
}

func run(sizes, publishAt []int, runs int) error {
	ctx := context.Background()
	b, stop, err := start(ctx)
	if err != nil {
		return err
	}
	defer stop()
	scale, pub := map[string]any{}, map[string]any{}
	all := append(slices.Clone(sizes), publishAt...)
	slices.Sort(all)
	for _, n := range slices.Compact(all) {
		if err := b.grow(ctx, n); err != nil {
			return err
		}
		if slices.Contains(publishAt, n) {
			if err := b.publishes(n, runs, pub); err != nil {
				return err
			}
		}
		if slices.Contains(sizes, n) {
			if err := b.dashboards(ctx, n, runs, scale); err != nil {
				return err
			}
		}
	}
	scale["publish_ms"] = pub
	return benchutil.MergeResult("scale", scale)
}

// start builds the CLI, a signing key, MinIO and a published channel.
func start(ctx context.Context) (*bench, func(), error) {
	dir, err := os.MkdirTemp("", "nix-ota-bench-dash-")
	if err != nil {
		return nil, nil, err
	}
	b := &bench{dir: dir, bin: filepath.Join(dir, "nix-ota"), keyFile: filepath.Join(dir, "sign.key")}
	stop := func() {
		if b.px != nil {
			b.px.Close()
		}
		if b.m != nil {
			b.m.Stop()
		}
		os.RemoveAll(dir)
	}
	if out, err := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", b.bin, "./cmd/nix-ota").CombinedOutput(); err != nil {
		return nil, stop, fmt.Errorf("build: %v\n%s", err, out)
	}
	if out, err := exec.Command(b.bin, "keygen", "--out", b.keyFile).CombinedOutput(); err != nil {
		return nil, stop, fmt.Errorf("keygen: %v %s", err, out)
	}
	// MinIO's background scanner crawls every object written; after the
	// 100,000-device fill it would take a core of this 2-core machine for
	// minutes, and the publish latency would measure it, not nix-ota.
	if b.m, err = benchutil.StartMinIOBucket(ctx, "fleet", "MINIO_SCANNER_SPEED=slowest"); err != nil {
		return nil, stop, err
	}
	if b.direct, err = s3store.Open(fmt.Sprintf("s3://fleet?endpoint=%s&scheme=http", b.m.Endpoint), bucket.Options{}, b.m.Creds()); err != nil {
		return nil, stop, err
	}
	if b.px, err = benchutil.StartProxy(b.m.Endpoint); err != nil {
		return nil, stop, err
	}
	b.s3URL = fmt.Sprintf("s3://fleet?endpoint=%s&scheme=http", b.px.Addr())
	b.setupKey, b.signer, err = setup(ctx, b.direct)
	return b, stop, err
}

// publishes measures `nix-ota publish --json` at each fleet size: the
// latency until the channel moved (what the command reports as publishMs,
// from its start), and apart from it the dashboard refresh that follows
// and the whole command's wall time.
//
// Each fleet size publishes to a channel of its own, after one unmeasured
// publish: a publish verifies the channel's whole history, so sizes
// measured on one channel would measure its growing history instead.
func (b *bench) publishes(n, runs int, out map[string]any) error {
	cache := filepath.Join(b.dir, "cache-publish")
	if err := b.seed(cache); err != nil {
		return err
	}
	ch := fmt.Sprintf("bench-%d", n)
	if _, _, err := b.publishOnce(cache, ch); err != nil {
		return err
	}
	var moved, dash, whole []int64
	for range runs + 2 { // a latency of ~50 ms: more runs for a steady median
		t, wall, err := b.publishOnce(cache, ch)
		if err != nil {
			return err
		}
		moved, dash, whole = append(moved, t.PublishMs), append(dash, t.DashboardMs), append(whole, wall)
	}
	m1, m2, m3 := benchutil.MinMedMax(moved)
	d1, d2, d3 := benchutil.MinMedMax(dash)
	w1, w2, w3 := benchutil.MinMedMax(whole)
	fmt.Printf("\nnix-ota publish at %d devices against MinIO (min/median/max of %d runs): channel moved %d/%d/%d ms; dashboard refresh after it %d/%d/%d ms; whole command %d/%d/%d ms\n",
		n, runs+2, m1, m2, m3, d1, d2, d3, w1, w2, w3)
	out[strconv.Itoa(n)] = []int64{m1, m2, m3}
	out["dashboard_after_publish_"+strconv.Itoa(n)] = []int64{d1, d2, d3}
	out["command_"+strconv.Itoa(n)] = []int64{w1, w2, w3}
	return nil
}

type timings struct {
	PublishMs   int64 `json:"publishMs"`
	DashboardMs int64 `json:"dashboardMs"`
}

func (b *bench) publishOnce(cache, ch string) (timings, int64, error) {
	cmd := exec.Command(b.bin, "publish", "--json", "--skip-closure-check", "--bucket", b.s3URL, "--key", b.keyFile, "--public-key", b.setupKey, "--channel", ch, "--store-path", sp)
	cmd.Env = append(os.Environ(), b.env(cache)...)
	start := time.Now()
	out, err := cmd.Output()
	wall := time.Since(start).Milliseconds()
	if err != nil {
		return timings{}, 0, fmt.Errorf("publish: %v\n%s", err, out)
	}
	var r struct {
		Timings timings `json:"timings"`
	}
	if err := json.Unmarshal(out, &r); err != nil || r.Timings.PublishMs <= 0 {
		return timings{}, 0, fmt.Errorf("publish --json: %v: %s", err, out)
	}
	return r.Timings, wall, nil
}

// dashboards measures `nix-ota dashboard` at n devices: cold (no
// snapshot: every window listed, every blob read) and warm (1% of the
// devices wrote a changed status since the previous run).
func (b *bench) dashboards(ctx context.Context, n, runs int, scale map[string]any) error {
	fmt.Printf("\nnix-ota dashboard at %d devices against MinIO, min/median/max of %d runs\n", n, runs)
	var cold, warm []sample
	for i := range runs {
		s, err := b.dashboardOnce(filepath.Join(b.dir, fmt.Sprintf("cache-%d-%d", n, i))) // empty: a cold read
		if err != nil {
			return err
		}
		cold = append(cold, s)
	}
	report("  cold", cold)
	warmCache := filepath.Join(b.dir, fmt.Sprintf("cache-%d-%d", n, runs-1)) // the last cold run's snapshot
	for i := range runs {
		if err := change(ctx, b.direct, n, n/100, i); err != nil {
			return err
		}
		s, err := b.dashboardOnce(warmCache)
		if err != nil {
			return err
		}
		warm = append(warm, s)
	}
	report("  warm (1% changed)", warm)
	key := fmt.Sprintf("dashboard_%d_", n)
	col := func(ss []sample, f func(sample) int64) []int64 {
		a, m, c := benchutil.Column(ss, f)
		return []int64{a, m, c}
	}
	scale[key+"cold_ms"] = col(cold, func(s sample) int64 { return s.wall })
	scale[key+"cold_requests"] = col(cold, func(s sample) int64 { return s.reqs })
	scale[key+"cold_peak_rss_kib"] = col(cold, func(s sample) int64 { return s.rssKiB })
	scale[key+"warm_ms"] = col(warm, func(s sample) int64 { return s.wall })
	scale[key+"warm_requests"] = col(warm, func(s sample) int64 { return s.reqs })
	scale[key+"warm_peak_rss_kib"] = col(warm, func(s sample) int64 { return s.rssKiB })
	scale[key+"warm_cpu_ms"] = col(warm, func(s sample) int64 { return s.cpu })
	return nil
}

// dashboardOnce measures one `nix-ota dashboard --public-key` with the
// fleet snapshot in cache, and the requests it made.
func (b *bench) dashboardOnce(cache string) (sample, error) {
	b.px.Reset()
	s, err := measure(b.bin, b.env(cache), "dashboard", "--bucket", b.s3URL, "--public-key", b.setupKey, "--out", filepath.Join(b.dir, "out"))
	s.reqs = b.px.Requests.Load()
	return s, err
}

// change makes k of n devices write a changed status now (round r picks
// other devices and another state than the fill's).
func change(ctx context.Context, s bucket.Store, n, k, r int) error {
	now := time.Now().UTC()
	for j := range k {
		i := (j*97 + r*31) % n
		st := status.Status{DeviceID: deviceID(i), Channel: "prod", State: status.States[(i+r+1)%len(status.States)], Revision: 1,
			StorePath: sp, ChangedAt: now, AgentVersion: "bench", HeartbeatSeconds: heartbeat}
		key, b, err := signedCheckin(i, st, now)
		if err != nil {
			return err
		}
		if _, err := bucket.PutBytes(ctx, s, key, b, bucket.JSONPut()); err != nil {
			return err
		}
	}
	return nil
}
