package main

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/nix-community/go-nix/pkg/nixbase32"

	"github.com/nix-ota/nix-ota/delta"
)

// caseSpec is one update: the old closure's roots a device has, and the
// new closure's roots it updates to.
type caseSpec struct {
	name, description string
	old, new          []string
}

// pathResult is one changed store path and what the publisher sends for it.
type pathResult struct {
	Target     string `json:"target"`
	Base       string `json:"base,omitempty"`
	NarBytes   int64  `json:"nar_bytes"`
	FullBytes  int64  `json:"full_bytes"`
	DeltaBytes int64  `json:"delta_bytes,omitempty"` // what delta.Encode wrote, sent or not
	Sent       string `json:"sent"`                  // "delta" or "full"
	Why        string `json:"why,omitempty"`         // why full
	Copied     int64  `json:"copied_bytes"`
	Added      int64  `json:"added_bytes"`
	Literal    int64  `json:"literal_bytes"`
	Ops        int    `json:"ops"`
	deltaFile  string
	narHash    string // hex sha256 of the NAR
}

// encoderOptions are cache/nar.go's: what `nix-ota push` compresses NARs
// with (klauspost zstd SpeedDefault, 1 MiB window).
var encoderOptions = []zstd.EOption{zstd.WithEncoderLevel(zstd.SpeedDefault), zstd.WithEncoderConcurrency(2), zstd.WithWindowSize(1 << 20)}

// compressedSize is the size of nar as the publisher uploads it (NAR.zst).
func compressedSize(nar []byte) (int64, error) {
	var n countWriter
	enc, err := zstd.NewWriter(&n, encoderOptions...)
	if err != nil {
		return 0, err
	}
	if _, err := enc.Write(nar); err != nil {
		enc.Close()
		return 0, err
	}
	return int64(n), enc.Close()
}

type countWriter int64

func (c *countWriter) Write(b []byte) (int, error) { *c += countWriter(len(b)); return len(b), nil }

// changedPaths pairs every path of the new closure that the old one lacks
// with its base, as the publisher does.
func changedPaths(ctx context.Context, cs caseSpec) ([]info, []delta.Candidate, error) {
	olds, err := query(ctx, cs.old)
	if err != nil {
		return nil, nil, err
	}
	news, err := query(ctx, cs.new)
	if err != nil {
		return nil, nil, err
	}
	had := map[string]bool{}
	var cands []delta.Candidate
	for _, o := range olds {
		had[o.Path] = true
		cands = append(cands, delta.Candidate{Path: o.Path, NarSize: uint64(o.NarSize)})
	}
	var changed []info
	for _, n := range news {
		if !had[n.Path] {
			changed = append(changed, n)
		}
	}
	if len(changed) == 0 {
		return nil, nil, fmt.Errorf("the new closure has no path the old one lacks: nothing to update")
	}
	return changed, cands, nil
}

// publish does the publisher's work for one changed path: the full NAR.zst
// and, when there is a base, the delta (encoded runs times, each timed);
// the delta is kept in dir when it is at most half the NAR.zst.
func publish(ctx context.Context, t info, cands []delta.Candidate, dir string, runs int, enc []float64) (pathResult, error) {
	nar, err := dump(ctx, t.Path)
	if err != nil {
		return pathResult{}, err
	}
	sum := sha256.Sum256(nar)
	if got := "sha256:" + nixbase32.EncodeToString(sum[:]); got != t.NarHash || int64(len(nar)) != t.NarSize {
		return pathResult{}, fmt.Errorf("nix-store --dump %s: %s of %d bytes, the store records %s of %d: the store is inconsistent (nix-store --verify --check-contents)", t.Path, got, len(nar), t.NarHash, t.NarSize)
	}
	pr := pathResult{Target: t.Path, NarBytes: t.NarSize, Sent: "full", narHash: fmt.Sprintf("%x", sum)}
	if pr.FullBytes, err = compressedSize(nar); err != nil {
		return pr, err
	}
	base, ok := delta.PickBase(t.Path, cands)
	if !ok {
		pr.Why = "no path of the old closure has its name"
		return pr, nil
	}
	pr.Base = base.Path
	baseNAR, err := dump(ctx, base.Path)
	if err != nil {
		return pr, err
	}
	f, err := os.CreateTemp(dir, "*.delta")
	if err != nil {
		return pr, err
	}
	defer f.Close()
	for r := range runs {
		if err := ctx.Err(); err != nil {
			return pr, err
		}
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return pr, err
		}
		if err := f.Truncate(0); err != nil {
			return pr, err
		}
		t0 := time.Now()
		st, err := delta.Encode(f, baseNAR, nar)
		if err != nil {
			return pr, fmt.Errorf("delta.Encode %s against %s: %w", t.Path, base.Path, err)
		}
		enc[r] += ms(time.Since(t0))
		pr.Copied, pr.Added, pr.Literal, pr.Ops = st.Copied, st.Added, st.Literal, st.Ops
	}
	if pr.DeltaBytes, err = f.Seek(0, io.SeekCurrent); err != nil {
		return pr, err
	}
	if 2*pr.DeltaBytes > pr.FullBytes {
		pr.Why = "delta is more than half the NAR.zst"
		os.Remove(f.Name())
		return pr, nil
	}
	pr.Sent, pr.deltaFile = "delta", f.Name()
	return pr, nil
}

// job is one path the rebuild child makes from its base and delta.
type job struct {
	Base    string `json:"base"`
	Delta   string `json:"delta"`
	Out     string `json:"out"`
	NarSize int64  `json:"nar_size"`
}

// childReport is what the rebuild child prints: each path's rebuilt NAR
// hash and size, and its own resource use split from nix-store's.
type childReport struct {
	SHA256      []string `json:"sha256"`
	Bytes       []int64  `json:"bytes"`
	SelfCPUMs   float64  `json:"self_cpu_ms"`
	DumpCPUMs   float64  `json:"dump_cpu_ms"`
	SelfRSSKiB  int64    `json:"self_peak_rss_kib"`
	DumpRSSKiB  int64    `json:"dump_peak_rss_kib"`
	DumpedBytes int64    `json:"dumped_base_bytes"`
}

func writeJobs(dir string, paths []pathResult) (string, []int, error) {
	var jobs []job
	var idx []int
	for i, p := range paths {
		if p.Sent == "delta" {
			jobs = append(jobs, job{Base: p.Base, Delta: p.deltaFile, Out: filepath.Join(dir, fmt.Sprintf("rebuilt-%d.nar", i)), NarSize: p.NarBytes})
			idx = append(idx, i)
		}
	}
	b, err := json.Marshal(jobs)
	if err != nil {
		return "", nil, err
	}
	f := filepath.Join(dir, "jobs.json")
	return f, idx, os.WriteFile(f, b, 0o644)
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
