package cli

import (
	"bytes"
	"context"
	"crypto/rand"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nix-ota/nix-ota/bucket"
	"github.com/nix-ota/nix-ota/cache"
	"github.com/nix-ota/nix-ota/internal/testenv"
)

// TestPushByteProgress pushes a real 4 MiB store path into a directory
// bucket with the pacing interval at zero: in a pipe the path's bytes are
// reported in plain lines, about every 5%, while it compresses and while
// it uploads, not just once when it is done.
func TestPushByteProgress(t *testing.T) {
	testenv.RequireNix(t)
	defer func(d time.Duration) { progressEvery = d }(progressEvery)
	progressEvery = 0
	file := filepath.Join(t.TempDir(), "firmware.bin")
	b := make([]byte, 4<<20)
	rand.Read(b) // incompressible: the upload is as large as the NAR
	if err := os.WriteFile(file, b, 0o644); err != nil {
		t.Fatal(err)
	}
	sp := strings.TrimSpace(testenv.Cmd(t, "nix-store", "--add", file))
	c := testenv.NewCache(t)
	dir := t.TempDir()
	s, err := bucket.Open("file://"+dir, bucket.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var stderr, stdout bytes.Buffer
	env := &Env{Stdout: &stdout, Stderr: &stderr, Getenv: func(string) string { return "" }}
	if _, _, err := push(context.Background(), env, &stdout, s, c.SecretKey, []string{sp}, deltaAll); err != nil {
		t.Fatal(err)
	}
	for _, phase := range []string{cache.PhaseCompress, cache.PhaseUpload} {
		re := regexp.MustCompile(`(?m)^push: ` + phase + ` [^:]+-firmware\.bin: ([0-9.]+) of 4\.0 MiB \((\d+)%\), [0-9.]+ MiB/s$`)
		lines := re.FindAllStringSubmatch(stderr.String(), -1)
		if len(lines) < 10 || len(lines) > 21 {
			t.Fatalf("%d %s lines, want one about every 5%% of the path:\n%s", len(lines), phase, stderr.String())
		}
		last := -1
		for _, l := range lines {
			pct, _ := strconv.Atoi(l[2])
			if pct < last+4 {
				t.Fatalf("%s: %d%% after %d%%: lines closer than 5%%:\n%s", phase, pct, last, stderr.String())
			}
			last = pct
		}
	}
	if strings.Contains(stderr.String(), "\r") || strings.Contains(stderr.String(), "\x1b") {
		t.Fatalf("terminal control in a pipe:\n%q", stderr.String())
	}
	if !strings.Contains(stderr.String(), "push: 1/1 paths, 1 uploaded") || !strings.Contains(stdout.String(), "pushed 1 paths") {
		t.Fatalf("per-path line or summary missing:\n%s\n%s", stderr.String(), stdout.String())
	}
}

// TestByteMeterTerminal: on a terminal the line is redrawn in place, only
// once the path has taken a second, at most every progressRedraw, and
// cleared before the per-path line.
func TestByteMeterTerminal(t *testing.T) {
	var out bytes.Buffer
	now := time.Unix(0, 0)
	m := &byteMeter{w: &out, tty: true, now: func() time.Time { return now }}
	at := func(d time.Duration, done int64) {
		now = time.Unix(0, 0).Add(d)
		m.update(cache.ByteProgress{Path: "/nix/store/x-big", Phase: cache.PhaseUpload, Done: done, Total: 100 << 20})
	}
	at(0, 0)
	at(500*time.Millisecond, 10<<20) // under a second: a small path draws nothing
	at(time.Second, 20<<20)
	at(1100*time.Millisecond, 21<<20) // too soon after the last redraw
	at(2*time.Second, 40<<20)
	m.clear()
	want := "\r\x1b[Kpush: upload x-big: 20.0 of 100.0 MiB (20%), 20.0 MiB/s" +
		"\r\x1b[Kpush: upload x-big: 40.0 of 100.0 MiB (40%), 20.0 MiB/s" +
		"\r\x1b[K"
	if out.String() != want {
		t.Fatalf("terminal output:\n%q\nwant\n%q", out.String(), want)
	}
}
