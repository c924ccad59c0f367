package main

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/nix-ota/nix-ota/internal/benchutil"
)

// caseResult is one case's figures: the "delta" section holds one each.
type caseResult struct {
	Name         string  `json:"name"`
	Description  string  `json:"description"`
	ChangedPaths int     `json:"changed_paths"`
	DeltaPaths   int     `json:"delta_paths"` // changed paths sent as a delta
	TargetNAR    int64   `json:"target_nar_bytes"`
	FullBytes    int64   `json:"full_bytes"`
	DeltaBytes   int64   `json:"delta_bytes"`
	Ratio        float64 `json:"ratio"`
	MeetsTarget  bool    `json:"meets_target_ratio"`

	EncodeMs         [3]float64 `json:"encode_ms"`
	RebuildWallMs    [3]float64 `json:"rebuild_wall_ms"`
	RebuildCPUMs     [3]float64 `json:"rebuild_cpu_ms"`
	RebuildApplyMs   [3]float64 `json:"rebuild_apply_cpu_ms"`
	RebuildDumpMs    [3]float64 `json:"rebuild_dump_cpu_ms"`
	RebuildPeakRSS   [3]int64   `json:"rebuild_peak_rss_kib"`
	RebuildApplyRSS  [3]int64   `json:"rebuild_apply_peak_rss_kib"`
	RebuildDumpRSS   [3]int64   `json:"rebuild_dump_peak_rss_kib"`
	RebuiltIdentical bool       `json:"rebuilt_identical"`

	Copied  int64        `json:"copied_bytes"`
	Added   int64        `json:"added_bytes"`
	Literal int64        `json:"literal_bytes"`
	Ops     int          `json:"ops"`
	Paths   []pathResult `json:"paths"`
}

// measureCase does the publisher's work for every changed path, then
// rebuilds the deltas runs times in a child process.
func measureCase(ctx context.Context, cs caseSpec, self, dir string, runs int) (caseResult, error) {
	changed, cands, err := changedPaths(ctx, cs)
	if err != nil {
		return caseResult{}, err
	}
	cr := caseResult{Name: cs.name, Description: cs.description, ChangedPaths: len(changed)}
	enc := make([]float64, runs)
	for _, t := range changed {
		pr, err := publish(ctx, t, cands, dir, runs, enc)
		if err != nil {
			return cr, err
		}
		cr.add(pr)
	}
	cr.Ratio = float64(cr.FullBytes) / float64(cr.DeltaBytes)
	cr.MeetsTarget = cr.Ratio >= targetRatio
	cr.EncodeMs = mmm(enc)
	logf("%s: %d changed paths published", cs.name, len(changed))
	if cr.DeltaPaths == 0 {
		return cr, nil
	}
	return cr, cr.rebuild(ctx, self, dir, runs)
}

func (cr *caseResult) add(pr pathResult) {
	cr.Paths = append(cr.Paths, pr)
	cr.TargetNAR += pr.NarBytes
	cr.FullBytes += pr.FullBytes
	if pr.Sent != "delta" {
		cr.DeltaBytes += pr.FullBytes
		return
	}
	cr.DeltaPaths++
	cr.DeltaBytes += pr.DeltaBytes
	cr.Copied += pr.Copied
	cr.Added += pr.Added
	cr.Literal += pr.Literal
	cr.Ops += pr.Ops
}

// rebuild runs the device side runs times and checks every rebuilt NAR's
// sha256 and size against nix-store --dump of the target.
func (cr *caseResult) rebuild(ctx context.Context, self, dir string, runs int) error {
	jobs, idx, err := writeJobs(dir, cr.Paths)
	if err != nil {
		return err
	}
	var wall, cpu, apply, dumpCPU []float64
	var rss, applyRSS, dumpRSS []int64
	cr.RebuiltIdentical = true
	for range runs {
		r, err := runRebuild(ctx, self, jobs)
		if err != nil {
			return err
		}
		if len(r.report.SHA256) != len(idx) {
			return fmt.Errorf("rebuild child reported %d paths of %d", len(r.report.SHA256), len(idx))
		}
		for k, i := range idx {
			p := cr.Paths[i]
			same := r.report.SHA256[k] == p.narHash && r.report.Bytes[k] == p.NarBytes
			cr.RebuiltIdentical = cr.RebuiltIdentical && same
			os.Remove(fmt.Sprintf("%s/rebuilt-%d.nar", dir, i))
		}
		wall, cpu = append(wall, r.wallMs), append(cpu, r.cpuMs)
		apply, dumpCPU = append(apply, r.report.SelfCPUMs), append(dumpCPU, r.report.DumpCPUMs)
		rss, applyRSS = append(rss, r.peakRSSKB), append(applyRSS, r.report.SelfRSSKiB)
		dumpRSS = append(dumpRSS, r.report.DumpRSSKiB)
	}
	cr.RebuildWallMs, cr.RebuildCPUMs = mmm(wall), mmm(cpu)
	cr.RebuildApplyMs, cr.RebuildDumpMs = mmm(apply), mmm(dumpCPU)
	cr.RebuildPeakRSS, cr.RebuildApplyRSS, cr.RebuildDumpRSS = mmmInt(rss), mmmInt(applyRSS), mmmInt(dumpRSS)
	return nil
}

func mmm(xs []float64) [3]float64 {
	a, b, c := benchutil.MinMedMax(xs)
	return [3]float64{a, b, c}
}

func mmmInt(xs []int64) [3]int64 {
	a, b, c := benchutil.MinMedMax(xs)
	return [3]int64{a, b, c}
}

// save writes the "delta" section of bench/results.json.
func save(ctx context.Context, runs int, results []caseResult) error {
	nixVersion, _ := nix(ctx, time.Minute, "nix-store", "--version")
	return benchutil.SaveResult("delta", map[string]any{
		"runs":         runs,
		"target_ratio": targetRatio,
		"machine": map[string]any{"cpus": runtime.NumCPU(), "goos": runtime.GOOS, "goarch": runtime.GOARCH,
			"go_version": runtime.Version(), "nix_version": nixVersion, "cpu_model": cpuModel()},
		"notes": "full_bytes: the changed paths' NARs compressed as nix-ota push does (klauspost zstd SpeedDefault, 1 MiB window). " +
			"delta_bytes: delta.Encode's output for each path sent as a delta (at most half its NAR.zst), full_bytes for the others. " +
			"encode_ms: every delta.Encode of the case, in process. " +
			"rebuild_*: one child process per run rebuilding every delta of the case as a device does (nix-store --dump of the base to a temporary file, delta.Apply into a file and sha256); " +
			"rebuild_cpu_ms is user+system of the child and the nix-store --dump processes it ran (wait4 of GNU time around it), split into rebuild_apply_cpu_ms (the child) and rebuild_dump_cpu_ms (nix-store); " +
			"rebuild_peak_rss_kib is GNU time's %M (the larger of the child's and nix-store's peaks), rebuild_apply_peak_rss_kib the child's own and rebuild_dump_peak_rss_kib nix-store's (its RUSAGE_CHILDREN). [min, median, max] over runs.",
		"cases": results,
	})
}

func cpuModel() string {
	b, _ := os.ReadFile("/proc/cpuinfo")
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

func printTable(results []caseResult) {
	fmt.Printf("\n| case | changed paths | as delta | NAR MiB | full bytes | delta bytes | ratio | encode ms min/med/max | rebuild CPU ms min/med/max | rebuild peak RSS MiB min/med/max | identical |\n|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range results {
		fmt.Printf("| %s | %d | %d | %.1f | %d | %d | %.1f%s | %.0f / %.0f / %.0f | %.0f / %.0f / %.0f | %.1f / %.1f / %.1f | %v |\n",
			r.Name, r.ChangedPaths, r.DeltaPaths, float64(r.TargetNAR)/(1<<20), r.FullBytes, r.DeltaBytes, r.Ratio, map[bool]string{true: "", false: " (< 5)"}[r.MeetsTarget],
			r.EncodeMs[0], r.EncodeMs[1], r.EncodeMs[2], r.RebuildCPUMs[0], r.RebuildCPUMs[1], r.RebuildCPUMs[2],
			kib2mib(r.RebuildPeakRSS[0]), kib2mib(r.RebuildPeakRSS[1]), kib2mib(r.RebuildPeakRSS[2]), r.RebuiltIdentical)
	}
	for _, r := range results {
		fmt.Printf("\n%s: %s\n  delta ops %d: copied %d, added %d, literal %d bytes\n", r.Name, r.Description, r.Ops, r.Copied, r.Added, r.Literal)
		for _, p := range r.Paths {
			fmt.Printf("  %s: NAR %d, NAR.zst %d, delta %d (%s%s; copied %d, added %d, literal %d, %d ops)\n",
				storeBase(p.Target), p.NarBytes, p.FullBytes, p.DeltaBytes, p.Sent, why(p.Why), p.Copied, p.Added, p.Literal, p.Ops)
		}
	}
}

func why(s string) string {
	if s == "" {
		return ""
	}
	return ": " + s
}

func storeBase(p string) string { return strings.TrimPrefix(p, "/nix/store/") }

func kib2mib(k int64) float64 { return float64(k) / 1024 }

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// nlink is a file's hard link count.
func nlink(fi os.FileInfo) uint64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return uint64(st.Nlink)
	}
	return 1
}
