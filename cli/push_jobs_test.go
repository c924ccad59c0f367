package cli_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nix-ota/nix-ota/cache"
	"github.com/nix-ota/nix-ota/internal/testenv"
)

// TestPushJobs: --jobs below 1 is a usage error that touches nothing;
// --jobs 1 pushes, and --json's narBytes is the NAR size Nix reports.
func TestPushJobs(t *testing.T) {
	testenv.RequireNix(t)
	f := fixtures(t)["file"](t)
	c := testenv.NewCache(t)
	file := filepath.Join(t.TempDir(), "payload")
	writeRandom(t, file, 100<<10)
	sp := strings.TrimSpace(testenv.Cmd(t, "nix-store", "--add", file))
	r := run(t, nil, "push", "--bucket", f.url, "--store-path", sp, "--cache-key", c.SecretKey, "--jobs", "0")
	if r.code != 2 || !strings.Contains(r.stderr, "--jobs") {
		t.Fatalf("--jobs 0: exit %d\n%s", r.code, r.stderr)
	}
	if keys := cacheKeys(t, f); len(keys) != 0 {
		t.Fatalf("a refused push wrote %v", keys)
	}
	infos, err := cache.LocalNix{}.Closure(context.Background(), []string{sp})
	if err != nil {
		t.Fatal(err)
	}
	v := runJSON(t, nil, 0, "push", "--bucket", f.url, "--store-path", sp, "--cache-key", c.SecretKey, "--jobs", "1")
	wantField(t, v, "uploaded", 1.0)
	wantField(t, v, "narBytes", float64(infos[0].NarSize))
}
