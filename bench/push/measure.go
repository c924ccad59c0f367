package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/nix-ota/nix-ota/bucket"
	"github.com/nix-ota/nix-ota/bucket/s3store"
	"github.com/nix-ota/nix-ota/internal/benchutil"
)

// method is one way to upload a closure: it returns the wall time of the
// upload alone (setting up a fresh bucket or directory is not timed) and
// the objects it wrote.
type method struct {
	name string
	run  func(c closure) (time.Duration, int, error)
}

func (b *bench) methods() []method {
	var last string   // the bucket the last MinIO push filled
	var copied string // the directory the last nix copy filled
	return []method{
		{"nix-ota push -> MinIO (zstd)", func(c closure) (time.Duration, int, error) {
			url, err := b.newBucket()
			last = url
			return b.push(c, url, err)
		}},
		{"nix copy --to file:// (zstd)", func(c closure) (time.Duration, int, error) {
			d, n, dir, err := b.nixCopy(c, "&compression=zstd")
			copied = dir
			return d, n, err
		}},
		{"floor: PUT nix copy's files to MinIO", func(c closure) (time.Duration, int, error) {
			return b.putFiles(copied)
		}},
		{"nix-ota push -> file:// (zstd)", func(c closure) (time.Duration, int, error) {
			url, err := b.newDir()
			return b.push(c, url, err)
		}},
		{"nix-ota push --jobs 1 -> MinIO (zstd)", func(c closure) (time.Duration, int, error) {
			url, err := b.newBucket()
			return b.push(c, url, err, "--jobs", "1")
		}},
		{"nix-ota push again (nothing new)", func(c closure) (time.Duration, int, error) {
			d, _, err := b.push(c, last, nil)
			return d, 0, err
		}},
	}
}

// measure runs every method once unrecorded, then runs times, in turn.
func (b *bench) measure(c closure, runs int) (map[string]any, error) {
	ms := b.methods()
	walls := make([][]float64, len(ms))
	objects := make([]int, len(ms))
	for round := 0; round <= runs; round++ {
		for i, m := range ms {
			d, n, err := m.run(c)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", m.name, err)
			}
			if round > 0 {
				walls[i] = append(walls[i], d.Seconds())
				objects[i] = n
			}
		}
	}
	fmt.Printf("%-40s %8s %26s %8s\n", "method", "wall s", "MiB/s of NAR min/med/max", "objects")
	rows := map[string]any{"paths": c.paths, "nar_bytes": c.narBytes}
	var medians []float64
	for i, m := range ms {
		rates := make([]float64, len(walls[i]))
		for j, w := range walls[i] {
			rates[j] = c.mib() / w
		}
		w0, w1, w2 := benchutil.MinMedMax(walls[i])
		r0, r1, r2 := benchutil.MinMedMax(rates)
		medians = append(medians, r1)
		fmt.Printf("%-40s %8.3f %8.1f %8.1f %8.1f %8d\n", m.name, w1, r0, r1, r2, objects[i])
		rows[m.name] = map[string]any{"wall_s": []float64{w0, w1, w2}, "mib_per_s": []float64{r0, r1, r2}, "objects": objects[i]}
	}
	ratio, floor := medians[1]/medians[0], medians[2]/medians[0]
	fmt.Printf("medians: nix copy file:// zstd is %.2fx nix-ota push to MinIO; PUTs of nix copy's files alone are %.2fx\n", ratio, floor)
	rows["ratio_nix_copy_over_push"], rows["ratio_floor_over_push"] = ratio, floor
	return rows, nil
}

// push times nix-ota push of c into url and counts the cache's objects.
func (b *bench) push(c closure, url string, err error, flags ...string) (time.Duration, int, error) {
	if err != nil {
		return 0, 0, err
	}
	args := append([]string{"push", "--bucket", url, "--store-path", c.top, "--cache-key", b.key}, flags...)
	d, _, err := sh(b.m.Env(), b.bin, args...)
	if err != nil {
		return 0, 0, err
	}
	var store bucket.Store
	if strings.HasPrefix(url, "file://") {
		store, err = bucket.Open(url, bucket.Options{})
	} else {
		store, err = s3store.Open(url, bucket.Options{}, b.m.Creds())
	}
	if err != nil {
		return 0, 0, err
	}
	n := 0
	err = store.List(b.ctx, "cache/", func(bucket.Info) error { n++; return nil })
	return d, n, err
}

// newBucket makes an empty MinIO bucket and runs nix-ota init on it.
func (b *bench) newBucket() (string, error) {
	b.n++
	name := fmt.Sprintf("push%d", b.n)
	if err := b.m.Admin().MakeBucket(b.ctx, name, minio.MakeBucketOptions{}); err != nil {
		return "", err
	}
	url := fmt.Sprintf("s3://%s?endpoint=%s&scheme=http", name, b.m.Endpoint)
	_, _, err := sh(b.m.Env(), b.bin, "init", "--bucket", url)
	return url, err
}

// newDir makes an empty file:// bucket.
func (b *bench) newDir() (string, error) {
	b.n++
	url := "file://" + filepath.Join(b.dir, fmt.Sprintf("push%d", b.n))
	_, _, err := sh(nil, b.bin, "init", "--bucket", url)
	return url, err
}

// nixCopy times nix copy of c into a fresh directory.
func (b *bench) nixCopy(c closure, query string) (time.Duration, int, string, error) {
	b.n++
	target := filepath.Join(b.dir, fmt.Sprintf("nixcopy%d", b.n))
	d, _, err := sh(nil, "nix", "--extra-experimental-features", "nix-command", "copy", "--to", "file://"+target+"?secret-key="+b.key+query, c.top)
	if err != nil {
		return 0, 0, "", err
	}
	files := 0
	err = filepath.Walk(target, func(_ string, fi os.FileInfo, err error) error {
		if fi != nil && !fi.IsDir() {
			files++
		}
		return err
	})
	return d, files, target, err
}

// putFiles times PUTs of every file nix copy wrote (compressed NARs,
// narinfos, nix-cache-info) into a fresh MinIO bucket, 4 at once, from
// this process: no compression, hashing or process start, so what MinIO
// itself takes to store the same bytes on these cores, the floor under
// any push to it.
func (b *bench) putFiles(dir string) (time.Duration, int, error) {
	var files []string
	err := filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if fi != nil && !fi.IsDir() {
			files = append(files, p)
		}
		return err
	})
	if err != nil {
		return 0, 0, err
	}
	url, err := b.newBucket()
	if err != nil {
		return 0, 0, err
	}
	store, err := s3store.Open(url, bucket.Options{}, b.m.Creds())
	if err != nil {
		return 0, 0, err
	}
	start := time.Now()
	work := make(chan string)
	errs := make(chan error, len(files))
	for range 4 {
		go func() {
			for p := range work {
				errs <- putFile(b.ctx, store, dir, p)
			}
		}()
	}
	for _, p := range files {
		work <- p
	}
	close(work)
	for range files {
		if err := <-errs; err != nil {
			return 0, 0, err
		}
	}
	return time.Since(start), len(files), nil
}

func putFile(ctx context.Context, s bucket.Store, dir, p string) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	rel, _ := filepath.Rel(dir, p)
	_, err = s.Put(ctx, "cache/"+rel, f, fi.Size(), bucket.PutOptions{UnsignedPayload: strings.HasSuffix(p, ".nar.zst")})
	return err
}

// xz times one nix copy with Nix's default compression.
func (b *bench) xz(c closure, results map[string]any) error {
	d, n, _, err := b.nixCopy(c, "")
	if err != nil {
		return err
	}
	fmt.Printf("\n%s, once: nix copy --to file:// (xz, Nix's default): %.2f s, %.1f MiB/s, %d objects\n", c.name, d.Seconds(), c.mib()/d.Seconds(), n)
	results["nix copy --to file:// (xz, Nix's default), "+c.name] = map[string]any{"wall_s": d.Seconds(), "mib_per_s": c.mib() / d.Seconds(), "objects": n}
	return nil
}
