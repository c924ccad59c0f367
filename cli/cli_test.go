package cli_test

// End-to-end tests of the nix-ota binary as an operator runs it, against a
// file:// bucket and a real MinIO server.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nix-ota/nix-ota/bucket"
	"github.com/nix-ota/nix-ota/bucket/s3store"
	"github.com/nix-ota/nix-ota/internal/testenv"
	"github.com/nix-ota/nix-ota/manifest"
)

var nixOta string // path of the built binary

// cacheDir holds the fleet snapshots of the commands tests run.
var cacheDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "nix-ota-bin-")
	if err != nil {
		panic(err)
	}
	nixOta = filepath.Join(dir, "nix-ota")
	cacheDir = filepath.Join(dir, "cache")
	out, err := exec.Command("go", "build", "-o", nixOta, "../cmd/nix-ota").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build nix-ota: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	testenv.StopShared()
	os.RemoveAll(dir)
	os.Exit(code)
}

// storePath makes a syntactically valid store path; publish does not need
// the path to exist locally.
func storePath(name string) string {
	sum := sha256.Sum256([]byte(name))
	const alphabet = "0123456789abcdfghijklmnpqrsvwxyz"
	h := make([]byte, 32)
	for i := range h {
		h[i] = alphabet[int(sum[i])%32]
	}
	return "/nix/store/" + string(h) + "-" + name
}

type result struct {
	code           int
	stdout, stderr string
}

func run(t *testing.T, env []string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, nixOta, args...)
	cmd.Env = append(append(os.Environ(), "AWS_EC2_METADATA_DISABLED=true", "NIX_OTA_BUCKET=", "NIX_OTA_KEY=", "NIX_OTA_CACHE_DIR="+cacheDir), env...)
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run %v: %v", args, err)
	}
	r := result{code, so.String(), se.String()}
	if strings.Contains(r.stderr, "panic") || strings.Contains(r.stderr, "goroutine ") {
		t.Fatalf("nix-ota %v panicked:\n%s", args, r.stderr)
	}
	return r
}

func mustRun(t *testing.T, env []string, args ...string) string {
	t.Helper()
	r := run(t, env, args...)
	if r.code != 0 {
		t.Fatalf("nix-ota %s: exit %d\n%s%s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

// fixture is a bucket (file:// or MinIO) plus the environment to reach it.
type fixture struct {
	url   string
	env   []string
	store bucket.Store
}

func fixtures(t *testing.T) map[string]func(t *testing.T) fixture {
	return map[string]func(t *testing.T) fixture{
		"file": func(t *testing.T) fixture {
			url := "file://" + filepath.Join(t.TempDir(), "bucket")
			mustRun(t, nil, "init", "--bucket", url)
			s, err := bucket.Open(url, bucket.Options{})
			if err != nil {
				t.Fatal(err)
			}
			return fixture{url: url, store: s}
		},
		"minio": func(t *testing.T) fixture {
			m := testenv.SharedMinIO(t)
			_, url := m.NewBucket(t)
			mustRun(t, m.Env(), "init", "--bucket", url)
			s, err := s3store.Open(url, bucket.Options{}, m.Creds())
			if err != nil {
				t.Fatal(err)
			}
			return fixture{url: url, env: m.Env(), store: s}
		},
	}
}

func keygen(t *testing.T, name string) (keyFile, pub string) {
	t.Helper()
	keyFile = filepath.Join(t.TempDir(), name+".key")
	pub = strings.TrimSpace(mustRun(t, nil, "keygen", "--out", keyFile, "--name", name))
	if _, err := manifest.ParsePublicKey(pub); err != nil {
		t.Fatalf("keygen printed %q: %v", pub, err)
	}
	st, err := os.Stat(keyFile)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode: %v %v", st.Mode(), err)
	}
	return keyFile, pub
}

var ctx = context.Background()

func getObj(t *testing.T, s bucket.Store, key string) []byte {
	t.Helper()
	o, err := s.Get(ctx, key, bucket.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return o.Data
}

func putObj(t *testing.T, s bucket.Store, key string, data []byte) {
	t.Helper()
	if _, err := bucket.PutBytes(ctx, s, key, data, bucket.PutOptions{}); err != nil {
		t.Fatal(err)
	}
}

// TestPublishVerify is the basic walkthrough: keygen, publish twice,
// verify accepts revision 2; then each attack gets its own one-line reason
// and a non-zero exit.
func TestPublishVerify(t *testing.T) {
	for name, mk := range fixtures(t) {
		t.Run(name, func(t *testing.T) {
			f := mk(t)
			key, pub := keygen(t, "fleet-1")
			_, otherPub := keygen(t, "intruder")
			publish := func(extra ...string) string {
				args := append([]string{"publish", "--skip-closure-check", "--bucket", f.url, "--key", key, "--channel", "prod", "--substituter", "https://cache.example.org"}, extra...)
				return mustRun(t, f.env, args...)
			}
			out := publish("--store-path", storePath("system-a"))
			if !strings.Contains(out, "revision 1") {
				t.Fatalf("first publish: %s", out)
			}
			out = publish("--store-path", storePath("system-b"), "--message", "second")
			if !strings.Contains(out, "revision 2") {
				t.Fatalf("second publish: %s", out)
			}
			verify := func(keys ...string) result {
				args := []string{"verify", "--bucket", f.url, "--channel", "prod"}
				for _, k := range keys {
					args = append(args, "--public-key", k)
				}
				return run(t, f.env, args...)
			}
			r := verify(pub)
			if r.code != 0 || !strings.Contains(r.stdout, "revision 2") || !strings.Contains(r.stdout, storePath("system-b")) {
				t.Fatalf("verify revision 2: exit %d\n%s%s", r.code, r.stdout, r.stderr)
			}

			reasons := map[string]string{}
			expectReject := func(what, want string, keys ...string) {
				t.Helper()
				r := verify(keys...)
				if r.code != 3 {
					t.Fatalf("%s: exit %d, want 3\n%s%s", what, r.code, r.stdout, r.stderr)
				}
				line := strings.TrimSpace(r.stderr)
				if strings.Contains(line, "\n") || !strings.Contains(line, want) {
					t.Fatalf("%s: want one line containing %q, got:\n%s", what, want, r.stderr)
				}
				for w, l := range reasons {
					if l == line {
						t.Fatalf("%s: same message as %s: %s", what, w, line)
					}
				}
				reasons[what] = line
				t.Logf("%s: %s", what, line)
			}

			// A one-byte change to the stored payload.
			orig := getObj(t, f.store, "channels/prod.json")
			putObj(t, f.store, "channels/prod.json", flipPayloadByte(t, orig))
			expectReject("tampered payload", "does not match the payload", pub)
			putObj(t, f.store, "channels/prod.json", orig)

			// A key the manifest was not signed with.
			expectReject("different key", "none of which is trusted", otherPub)

			// The revision-1 manifest replayed over the channel file.
			putObj(t, f.store, "channels/prod.json", getObj(t, f.store, "channels/prod/1.json"))
			expectReject("replayed revision 1", "revision 1 is older than accepted revision 2", pub)
			putObj(t, f.store, "channels/prod.json", orig)

			// An expired manifest.
			publish("--store-path", storePath("system-c"), "--expires", "1s")
			time.Sleep(1100 * time.Millisecond)
			expectReject("expired", "manifest expired", pub)

			// Verify against a different channel name.
			r = run(t, f.env, "verify", "--bucket", f.url, "--channel", "staging", "--public-key", pub)
			if r.code == 0 {
				t.Fatalf("verify of an unpublished channel succeeded")
			}

			// History lists all three, newest first, current marked.
			h := mustRun(t, f.env, "history", "--bucket", f.url, "--channel", "prod", "--public-key", pub)
			lines := strings.Split(strings.TrimSpace(h), "\n")
			if len(lines) != 4 || !strings.HasPrefix(lines[1], "3*") || !strings.HasPrefix(lines[3], "1 ") || strings.Count(h, " ok ") != 3 {
				t.Fatalf("history:\n%s", h)
			}
		})
	}
}

// flipPayloadByte changes one byte of the signed payload and re-encodes
// the envelope, the smallest possible tampering.
func flipPayloadByte(t *testing.T, env []byte) []byte {
	var e map[string]any
	if err := json.Unmarshal(env, &e); err != nil {
		t.Fatal(err)
	}
	raw, err := base64.StdEncoding.DecodeString(e["payload"].(string))
	if err != nil {
		t.Fatal(err)
	}
	i := bytes.Index(raw, []byte(`"revision":`)) + len(`"revision":`)
	raw[i]++ // revision 2 -> 3
	e["payload"] = base64.StdEncoding.EncodeToString(raw)
	out, _ := json.Marshal(e)
	return out
}

// TestConcurrentPublish: 20 publish processes racing on one channel leave
// revisions 1..20, each exactly once, and the channel at 20.
func TestConcurrentPublish(t *testing.T) {
	const n = 20
	for name, mk := range fixtures(t) {
		t.Run(name, func(t *testing.T) {
			f := mk(t)
			key, pub := keygen(t, "fleet-1")
			var wg sync.WaitGroup
			results := make([]result, n)
			for i := range n {
				wg.Add(1)
				go func() {
					defer wg.Done()
					results[i] = run(t, f.env, "publish", "--skip-closure-check", "--bucket", f.url, "--key", key, "--channel", "prod",
						"--store-path", storePath(fmt.Sprintf("system-%02d", i)))
				}()
			}
			wg.Wait()
			for i, r := range results {
				if r.code != 0 {
					t.Errorf("publisher %d: exit %d: %s", i, r.code, r.stderr)
				}
			}
			var keys []string
			f.store.List(ctx, "channels/prod/", func(i bucket.Info) error { keys = append(keys, i.Key); return nil })
			if len(keys) != n {
				t.Fatalf("%d history entries, want %d: %v", len(keys), n, keys)
			}
			seenPath := map[string]int{}
			trust := mustTrust(t, pub)
			for rev := uint64(1); rev <= n; rev++ {
				body := getObj(t, f.store, bucket.RevisionKey("prod", rev))
				v, err := manifest.CheckSigned(trust, "prod", body)
				if err != nil {
					t.Fatalf("revision %d: %v", rev, err)
				}
				if v.Payload.Revision != rev {
					t.Fatalf("history %d holds revision %d", rev, v.Payload.Revision)
				}
				seenPath[v.Payload.StorePath]++
			}
			if len(seenPath) != n {
				t.Fatalf("%d distinct store paths in history, want %d (a publish was lost or duplicated)", len(seenPath), n)
			}
			v, err := manifest.CheckSigned(trust, "prod", getObj(t, f.store, "channels/prod.json"))
			if err != nil || v.Payload.Revision != n {
				t.Fatalf("channel pointer: %v, revision %d, want %d", err, v.Payload.Revision, n)
			}
			mustRun(t, f.env, "verify", "--bucket", f.url, "--channel", "prod", "--public-key", pub)
		})
	}
}

func mustTrust(t *testing.T, pub string) manifest.Trust {
	k, err := manifest.ParsePublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return manifest.Trust{Keys: []manifest.PublicKey{k}}
}

// snapshot returns every key and content hash in a bucket.
func snapshot(t *testing.T, s bucket.Store) string {
	var lines []string
	err := s.List(ctx, "", func(i bucket.Info) error {
		sum := sha256.Sum256(getObj(t, s, i.Key))
		lines = append(lines, i.Key+" "+hex.EncodeToString(sum[:8]))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// TestBadInput: every bad input is one clear line, a non-zero exit, and an
// unchanged bucket.
func TestBadInput(t *testing.T) {
	for name, mk := range fixtures(t) {
		t.Run(name, func(t *testing.T) {
			f := mk(t)
			key, _ := keygen(t, "fleet-1")
			sp := storePath("system-a")
			mustRun(t, f.env, "publish", "--skip-closure-check", "--bucket", f.url, "--key", key, "--channel", "prod", "--store-path", sp)
			before := snapshot(t, f.store)
			port, _ := testenv.FreePort()
			cases := []struct {
				name string
				code int
				want string
				args []string
			}{
				{"channel with slash", 2, `invalid name: channel "../etc"`, []string{"--channel", "../etc", "--store-path", sp}},
				{"channel with space", 2, `invalid name: channel "a b"`, []string{"--channel", "a b", "--store-path", sp}},
				{"empty channel", 2, "--channel is required", []string{"--channel", "", "--store-path", sp}},
				{"missing key file", 1, "file does not exist", []string{"--channel", "prod", "--store-path", sp, "--key", "/nonexistent/sign.key"}},
				{"store path outside /nix/store", 2, "invalid store path", []string{"--channel", "prod", "--store-path", "/tmp/evil"}},
				{"store path below a store path", 2, "invalid store path", []string{"--channel", "prod", "--store-path", sp + "/bin/sh"}},
				{"no store path", 2, "--store-path is required", []string{"--channel", "prod"}},
				{"bad substituter", 2, "substituter", []string{"--channel", "prod", "--store-path", sp, "--substituter", "--evil"}},
				{"rollout 150", 2, "--rollout 150", []string{"--channel", "prod", "--store-path", sp, "--rollout", "150"}},
				{"stray argument", 2, "unexpected argument", []string{"--channel", "prod", "--store-path", sp, "extra"}},
				{"unreachable s3", 1, "bucket unreachable", []string{"--channel", "prod", "--store-path", sp, "--bucket", fmt.Sprintf("s3://fleet?endpoint=127.0.0.1:%d&scheme=http", port)}},
				{"missing directory", 1, "directory does not exist", []string{"--channel", "prod", "--store-path", sp, "--bucket", "file:///nonexistent/nix-ota"}},
				{"uninitialised directory", 1, "run: nix-ota init", []string{"--channel", "prod", "--store-path", sp, "--bucket", "file://" + t.TempDir()}},
				{"bad URL", 2, "invalid bucket URL", []string{"--channel", "prod", "--store-path", sp, "--bucket", "ftp://x"}},
			}
			for _, c := range cases {
				args := append([]string{"publish", "--skip-closure-check"}, c.args...)
				if !contains(c.args, "--key") {
					args = append(args, "--key", key)
				}
				if !contains(c.args, "--bucket") {
					args = append(args, "--bucket", f.url)
				}
				r := run(t, append(f.env, "AWS_ACCESS_KEY_ID=x", "AWS_SECRET_ACCESS_KEY=y"), args...)
				line := strings.TrimSpace(r.stderr)
				if r.code != c.code || strings.Contains(line, "\n") || !strings.Contains(line, c.want) {
					t.Errorf("%s: exit %d (want %d), stderr %q (want one line with %q)", c.name, r.code, c.code, r.stderr, c.want)
				}
			}
			if after := snapshot(t, f.store); after != before {
				t.Fatalf("bucket changed by rejected commands:\nbefore:\n%s\nafter:\n%s", before, after)
			}
		})
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func TestKeygenAndPubkey(t *testing.T) {
	key, pub := keygen(t, "fleet-9")
	if got := strings.TrimSpace(mustRun(t, nil, "pubkey", "--key", key)); got != pub {
		t.Fatalf("pubkey %q, keygen printed %q", got, pub)
	}
	r := run(t, nil, "keygen", "--out", key)
	if r.code == 0 || !strings.Contains(r.stderr, "refusing to overwrite") {
		t.Fatalf("keygen over an existing key: %d %s", r.code, r.stderr)
	}
	enc := filepath.Join(t.TempDir(), "enc.key")
	epub := strings.TrimSpace(mustRun(t, []string{"NIX_OTA_KEY_PASSWORD=s3cret"}, "keygen", "--out", enc, "--encrypt", "--name", "enc"))
	if r := run(t, []string{"NIX_OTA_KEY_PASSWORD="}, "pubkey", "--key", enc); r.code == 0 || !strings.Contains(r.stderr, "password") {
		t.Fatalf("encrypted key without password: %d %s", r.code, r.stderr)
	}
	if got := strings.TrimSpace(mustRun(t, []string{"NIX_OTA_KEY_PASSWORD=s3cret"}, "pubkey", "--key", enc)); got != epub {
		t.Fatalf("encrypted pubkey %q != %q", got, epub)
	}
}

func TestHelp(t *testing.T) {
	for _, c := range []string{"keygen", "pubkey", "init", "push", "publish", "rollout", "rollback", "resign", "doctor", "verify", "history", "status", "dashboard", "gc", "completion"} {
		out := mustRun(t, nil, c, "--help")
		if !strings.Contains(out, "Flags:") || !strings.Contains(out, "Examples:") {
			t.Errorf("%s --help lacks flags or examples:\n%s", c, out)
		}
	}
	if r := run(t, nil, "frobnicate"); r.code != 2 {
		t.Fatalf("unknown command: exit %d", r.code)
	}
}
