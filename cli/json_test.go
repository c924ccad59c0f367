package cli_test

// --json: one JSON document on stdout with the key fields, human messages
// on stderr, for every command that reads or reports a result.

import (
	"crypto/rand"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/nix-ota/nix-ota/internal/testenv"
)

// runJSON runs a command with --json and decodes its stdout: it must be
// exactly one JSON document.
func runJSON(t *testing.T, env []string, code int, args ...string) map[string]any {
	t.Helper()
	r := run(t, env, append(args, "--json")...)
	if r.code != code {
		t.Fatalf("%s --json: exit %d, want %d\n%s%s", args[0], r.code, code, r.stdout, r.stderr)
	}
	dec := json.NewDecoder(strings.NewReader(r.stdout))
	var v map[string]any
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("%s --json: stdout is not JSON: %v\n%s", args[0], err, r.stdout)
	}
	if dec.More() {
		t.Fatalf("%s --json: more than one document on stdout:\n%s", args[0], r.stdout)
	}
	return v
}

// field walks v along a path of keys and indexes ("revisions.0.signature").
func field(t *testing.T, v any, path string) any {
	t.Helper()
	for _, k := range strings.Split(path, ".") {
		switch x := v.(type) {
		case map[string]any:
			v = x[k]
		case []any:
			i, err := strconv.Atoi(k)
			if err != nil || i >= len(x) {
				t.Fatalf("%s: no index %s in %v", path, k, x)
			}
			v = x[i]
		default:
			t.Fatalf("%s: %q is not inside %v", path, k, v)
		}
	}
	return v
}

func wantField(t *testing.T, v any, path string, want any) {
	t.Helper()
	if got := field(t, v, path); got != want {
		t.Errorf("%s = %#v, want %#v", path, got, want)
	}
}

func TestJSONOutputs(t *testing.T) {
	f := fixtures(t)["file"](t)
	key, pub := keygen(t, "fleet-1")
	a, b := storePath("system-a"), storePath("system-b")
	publish := func(sp string, extra ...string) {
		mustRun(t, nil, append([]string{"publish", "--skip-closure-check", "--bucket", f.url, "--key", key, "--channel", "prod", "--store-path", sp}, extra...)...)
	}
	publish(a)
	publish(b, "--rollout", "5")
	bkt := []string{"--bucket", f.url, "--channel", "prod"}

	v := runJSON(t, nil, 0, append([]string{"verify", "--public-key", pub}, bkt...)...)
	wantField(t, v, "accepted", true)
	wantField(t, v, "revision", 2.0)
	wantField(t, v, "storePaths.0", b)
	wantField(t, v, "signedBy.0", "fleet-1")

	v = runJSON(t, nil, 0, append([]string{"history", "--public-key", pub}, bkt...)...)
	wantField(t, v, "current", 2.0)
	wantField(t, v, "revisions.0.revision", 2.0)
	wantField(t, v, "revisions.0.current", true)
	wantField(t, v, "revisions.0.signature", "ok")
	wantField(t, v, "revisions.1.storePaths.0", a)

	v = runJSON(t, nil, 0, "rollout", "--bucket", f.url, "--channel", "prod", "--key", key, "--steps", "5,100", "--wait", "1s", "--interval", "100ms", "--allow-empty")
	wantField(t, v, "outcome", "complete")
	wantField(t, v, "rollout", 100.0)
	wantField(t, v, "revision", 3.0)
	wantField(t, v, "steps.1.rollout", 100.0)
	wantField(t, v, "steps.1.outcome", "passed")

	v = runJSON(t, nil, 0, append([]string{"rollback", "--key", key, "--to", "1"}, bkt...)...)
	wantField(t, v, "revision", 4.0)
	wantField(t, v, "from", 3.0)
	wantField(t, v, "to", 1.0)
	wantField(t, v, "storePaths.0", a)

	v = runJSON(t, nil, 0, append([]string{"resign", "--key", key, "--if-expires-within", "1h"}, bkt...)...)
	wantField(t, v, "resigned", false)
	wantField(t, v, "revision", 4.0)
	v = runJSON(t, nil, 0, append([]string{"resign", "--key", key}, bkt...)...)
	wantField(t, v, "resigned", true)
	wantField(t, v, "revision", 5.0)
	wantField(t, v, "from", 4.0)

	v = runJSON(t, nil, 0, "doctor", "--bucket", f.url, "--public-key", pub)
	wantField(t, v, "passed", true)
	wantField(t, v, "failed", 0.0)
	if checks := field(t, v, "checks").([]any); len(checks) < 4 || field(t, checks[0], "status") != "ok" {
		t.Errorf("doctor checks: %v", checks)
	}

	v = runJSON(t, nil, 0, "gc", "--bucket", f.url, "--dry-run")
	wantField(t, v, "dryRun", true)
	wantField(t, v, "systemsKept", 2.0)
	v = runJSON(t, nil, 0, "init", "--bucket", f.url)
	wantField(t, v, "created", false)
	wantField(t, v, "bucket", f.url)
	v = runJSON(t, nil, 0, "dashboard", "--bucket", f.url, "--public-key", pub)
	wantField(t, v, "channels", 1.0)
	wantField(t, v, "wrote", f.url+"/index.html")

	// A rejection still prints its verdict: a key the channel is not signed with.
	_, other := keygen(t, "other")
	v = runJSON(t, nil, 3, append([]string{"verify", "--public-key", other}, bkt...)...)
	wantField(t, v, "accepted", false)
	wantField(t, v, "reason", "signature not trusted")
}

// TestPushJSON: push --json on a real store path; the per-path progress
// stays on stderr.
func TestPushJSON(t *testing.T) {
	testenv.RequireNix(t)
	f := fixtures(t)["file"](t)
	c := testenv.NewCache(t)
	file := filepath.Join(t.TempDir(), "payload")
	writeRandom(t, file, 64<<10)
	sp := strings.TrimSpace(testenv.Cmd(t, "nix-store", "--add", file))
	v := runJSON(t, nil, 0, "push", "--bucket", f.url, "--store-path", sp, "--cache-key", c.SecretKey)
	wantField(t, v, "uploaded", 1.0)
	wantField(t, v, "paths", 1.0)
	wantField(t, v, "publicKey", c.PublicKey)
}

// writeRandom writes n random (incompressible) bytes to file.
func writeRandom(t *testing.T, file string, n int) {
	t.Helper()
	b := make([]byte, n)
	rand.Read(b)
	if err := os.WriteFile(file, b, 0o644); err != nil {
		t.Fatal(err)
	}
}
