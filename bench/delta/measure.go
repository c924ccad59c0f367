package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nix-ota/nix-ota/internal/benchutil"
)

// onlyFormats is the -formats flag.
var onlyFormats string

// formatResult holds one format's figures on one case.
type formatResult struct {
	Name           string     `json:"name"`
	Notes          string     `json:"notes"`
	DeltaBytes     int64      `json:"delta_bytes"`
	PctOfFull      float64    `json:"pct_of_full"`
	EncodeMs       [3]float64 `json:"encode_ms_min_med_max"`
	DecodeMs       [3]float64 `json:"decode_ms_min_med_max"`
	DecodeMaxRSSKB [3]int64   `json:"decode_max_rss_kib_min_med_max"`
	Identical      bool       `json:"rebuilt_sha256_matches"`
}

func measureCase(name, desc, dir, base, target string, runs int) (caseResult, error) {
	want, err := fileSHA256(target)
	if err != nil {
		return caseResult{}, err
	}
	self, err := os.Executable()
	if err != nil {
		return caseResult{}, err
	}
	cr := caseResult{Name: name, Description: desc, BaseNAR: fileSize(base), TargetNAR: fileSize(target)}
	cr.Skipped = []string{"bsdiff: no bsdiff Go module among the packages available to this project, and a new dependency is out of scope for this measurement"}
	for _, f := range formats() {
		if onlyFormats != "" && f.Name != "full-zstd3" && !slices.Contains(strings.Split(onlyFormats, ","), f.Name) {
			continue
		}
		fr, err := measureFormat(f, self, dir, base, target, want, runs)
		if err != nil {
			return cr, fmt.Errorf("%s: %w", f.Name, err)
		}
		if f.Name == "full-zstd3" {
			cr.FullBytes = fr.DeltaBytes
		}
		cr.Formats = append(cr.Formats, fr)
	}
	for i := range cr.Formats {
		cr.Formats[i].PctOfFull = 100 * float64(cr.Formats[i].DeltaBytes) / float64(cr.FullBytes)
	}
	return cr, nil
}

func measureFormat(f format, self, dir, base, target, want string, runs int) (formatResult, error) {
	delta := filepath.Join(dir, f.Name+".delta")
	out := filepath.Join(dir, f.Name+".rebuilt")
	var enc, dec, rss []float64
	fr := formatResult{Name: f.Name, Notes: f.Notes, Identical: true}
	for range runs {
		t0 := time.Now()
		if err := f.encode(base, target, delta); err != nil {
			return fr, fmt.Errorf("encode: %w", err)
		}
		enc = append(enc, ms(time.Since(t0)))
	}
	fr.DeltaBytes = fileSize(delta)
	for range runs {
		d, kb, err := runChild(f.cmd(self, base, delta, out))
		if err != nil {
			return fr, fmt.Errorf("rebuild: %w", err)
		}
		dec, rss = append(dec, d), append(rss, float64(kb))
		got, err := fileSHA256(out)
		if err != nil {
			return fr, err
		}
		fr.Identical = fr.Identical && got == want
		os.Remove(out)
	}
	fr.EncodeMs = mmm(enc)
	fr.DecodeMs = mmm(dec)
	r := mmm(rss)
	fr.DecodeMaxRSSKB = [3]int64{int64(r[0]), int64(r[1]), int64(r[2])}
	return fr, nil
}

// runChild runs argv under /usr/bin/time and returns its wall time in ms
// and max RSS in KiB. Go starts children with vfork, so a child's own
// rusage counts this process's RSS at exec; time(1) forks afresh.
func runChild(argv []string) (float64, int64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	rssFile := filepath.Join(filepath.Dir(argv[len(argv)-1]), "maxrss")
	args := append([]string{"-f", "%M", "-o", rssFile}, argv...)
	cmd := exec.CommandContext(ctx, "/usr/bin/time", args...)
	cmd.Stderr = os.Stderr
	t0 := time.Now()
	if err := cmd.Run(); err != nil {
		return 0, 0, fmt.Errorf("%s: %w (needs /usr/bin/time: apt-get install time)", argv[0], err)
	}
	d := ms(time.Since(t0))
	b, err := os.ReadFile(rssFile)
	if err != nil {
		return d, 0, err
	}
	kb, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return d, 0, fmt.Errorf("max RSS of %s: %q is no number", argv[0], b)
	}
	return d, kb, nil
}

func mmm(xs []float64) [3]float64 {
	a, b, c := benchutil.MinMedMax(xs)
	return [3]float64{a, b, c}
}

func printCase(cr caseResult) {
	fmt.Printf("\n%s: %s\nbase NAR %d B, target NAR %d B\n", cr.Name, cr.Description, cr.BaseNAR, cr.TargetNAR)
	fmt.Printf("| format | delta bytes | %% of full | encode ms min/med/max | rebuild ms min/med/max | rebuild max RSS MiB min/med/max | identical |\n|---|---|---|---|---|---|---|\n")
	for _, f := range cr.Formats {
		fmt.Printf("| %s | %d | %.2f | %.0f / %.0f / %.0f | %.0f / %.0f / %.0f | %.1f / %.1f / %.1f | %v |\n",
			f.Name, f.DeltaBytes, f.PctOfFull, f.EncodeMs[0], f.EncodeMs[1], f.EncodeMs[2],
			f.DecodeMs[0], f.DecodeMs[1], f.DecodeMs[2],
			float64(f.DecodeMaxRSSKB[0])/1024, float64(f.DecodeMaxRSSKB[1])/1024, float64(f.DecodeMaxRSSKB[2])/1024, f.Identical)
	}
}
