package cli_test

import (
	"strings"
	"testing"

	"github.com/nix-ota/nix-ota/cache"
	"github.com/nix-ota/nix-ota/internal/testenv"
)

// TestClosureCheck: publish refuses what no cache the devices are told
// about can serve, and a manifest with no substituter, before signing.
func TestClosureCheck(t *testing.T) {
	testenv.RequireNix(t)
	f, subst := minioCache(t)
	key, _ := keygen(t, "fleet-1")
	c := testenv.NewCache(t)
	pushed := testenv.BuildSystem(t, "pushed", testenv.SystemOptions{})
	inFileCache := testenv.BuildSystem(t, "in-file-cache", testenv.SystemOptions{})
	mustRun(t, f.env, "push", "--bucket", f.url, "--store-path", pushed, "--cache-key", c.SecretKey)
	c.Add(t, inFileCache)
	ghost := storePath("ghost")
	publish := func(extra ...string) result {
		return run(t, f.env, append([]string{"publish", "--bucket", f.url, "--key", key, "--channel", "prod", "--no-dashboard"}, extra...)...)
	}
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"pushed into the bucket's cache", []string{"--store-path", pushed, "--substituter", subst}, 0, "revision 1"},
		{"in a file:// substituter", []string{"--store-path", inFileCache, "--substituter", c.URL}, 0, "revision 2"},
		{"nowhere", []string{"--store-path", ghost, "--substituter", subst, "--substituter", c.URL}, 1, "push it first"},
		{"one class missing", []string{"--store-path", "a=" + pushed, "--store-path", "b=" + ghost, "--substituter", subst}, 1, ghost},
		{"no substituter", []string{"--store-path", pushed}, 2, "--skip-closure-check"},
		{"told to skip", []string{"--store-path", ghost, "--skip-closure-check"}, 0, "revision 3"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := snapshot(t, f.store)
			r := publish(tc.args...)
			if r.code != tc.code || !strings.Contains(r.stdout+r.stderr, tc.want) {
				t.Fatalf("exit %d, want %d with %q\n%s%s", r.code, tc.code, tc.want, r.stdout, r.stderr)
			}
			if tc.code != 0 && snapshot(t, f.store) != before {
				t.Fatal("a refused publish changed the bucket")
			}
			t.Logf("%s: exit %d: %s", tc.name, r.code, strings.TrimSpace(r.stderr+r.stdout))
		})
	}
}

// TestPushReplacesPlantedNarinfo: a narinfo this cache key did not sign is
// not "already in the cache"; push uploads the path over it.
func TestPushReplacesPlantedNarinfo(t *testing.T) {
	testenv.RequireNix(t)
	f, _ := minioCache(t)
	c := testenv.NewCache(t)
	sp := testenv.BuildSystem(t, "planted", testenv.SystemOptions{})
	key, err := cache.NarinfoKey(sp)
	if err != nil {
		t.Fatal(err)
	}
	putObj(t, f.store, key, []byte("junk"))
	out := mustRun(t, f.env, "push", "--bucket", f.url, "--store-path", sp, "--cache-key", c.SecretKey)
	if !strings.Contains(out, "pushed 1 paths") {
		t.Fatalf("push over a planted narinfo: %s", out)
	}
	if _, err := cache.ReadNarinfo(ctx, f.store, sp); err != nil {
		t.Fatalf("narinfo after push: %v", err)
	}
}
