package cli_test

// Errors an operator meets first (no credentials, a wrong scheme or region,
// a typo in a channel or a path, an expired channel, a key given for the
// wrong flag) are one line that says what to do.

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nix-ota/nix-ota/internal/testenv"
)

// oneLineWith fails unless r exited with code and printed exactly one
// stderr line containing every want.
func oneLineWith(t *testing.T, what string, r result, code int, want ...string) {
	t.Helper()
	line := strings.TrimSpace(r.stderr)
	ok := r.code == code && line != "" && !strings.Contains(line, "\n")
	for _, w := range want {
		ok = ok && strings.Contains(line, w)
	}
	if !ok {
		t.Errorf("%s: exit %d (want %d), stderr:\n%s\nwant one line with %q", what, r.code, code, r.stderr, want)
	}
	t.Logf("%s: %s", what, line)
}

// TestNoCredentials: with no AWS credentials anywhere, the chain ends at
// the instance metadata service (here a loopback stand-in that refuses
// tokens and has no role, as a non-EC2 network does); the SDK's
// "falling back to IMDSv1" log line must not appear, only one line saying
// where credentials come from.
func TestNoCredentials(t *testing.T) {
	var hits atomic.Int32
	imds := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		if r.Method == http.MethodPut {
			http.Error(w, "forbidden", http.StatusForbidden)
			return
		}
		http.NotFound(w, r)
	}))
	defer imds.Close()
	port, _ := testenv.FreePort()
	home := t.TempDir()
	env := []string{"AWS_ACCESS_KEY_ID=", "AWS_SECRET_ACCESS_KEY=", "AWS_SESSION_TOKEN=", "AWS_PROFILE=", "AWS_DEFAULT_PROFILE=",
		"HOME=" + home, "AWS_CONFIG_FILE=" + filepath.Join(home, "config"), "AWS_SHARED_CREDENTIALS_FILE=" + filepath.Join(home, "credentials"),
		"AWS_WEB_IDENTITY_TOKEN_FILE=", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI=", "AWS_CONTAINER_CREDENTIALS_FULL_URI=",
		"AWS_EC2_METADATA_DISABLED=false", "AWS_EC2_METADATA_SERVICE_ENDPOINT=" + imds.URL}
	r := run(t, env, "init", "--bucket", fmt.Sprintf("s3://fleet?endpoint=127.0.0.1:%d&scheme=http", port))
	oneLineWith(t, "no credentials", r, 1, "no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or profile= in the bucket URL")
	if strings.Contains(r.stderr, "IMDSv1") || strings.Contains(r.stderr, "SDK ") {
		t.Errorf("the SDK's logger still prints:\n%s", r.stderr)
	}
	if hits.Load() == 0 {
		t.Fatal("the credential chain never asked the metadata service: the test did not reach the end of the chain")
	}
}

// TestS3URLHints: a plain-HTTP MinIO reached without scheme=http, and a
// MinIO in another region, each say which URL parameter to set; the URLs
// the CLI prints keep region=.
func TestS3URLHints(t *testing.T) {
	m := testenv.SharedMinIO(t)
	_, url := m.NewBucket(t)
	noScheme := strings.Replace(url, "&scheme=http", "", 1)
	oneLineWith(t, "https to http", run(t, m.Env(), "init", "--bucket", noScheme), 1, "server gave HTTP response to HTTPS client", "add &scheme=http to the bucket URL")

	eu, err := testenv.StartMinIO("MINIO_SITE_REGION=eu-central-1")
	if err != nil {
		t.Fatal(err)
	}
	defer eu.Stop()
	_, euURL := eu.NewBucket(t) // region=us-east-1, as testenv writes every URL
	oneLineWith(t, "wrong region", run(t, eu.Env(), "init", "--bucket", euURL), 1, "set &region=eu-central-1 in the bucket URL")
	right := strings.Replace(euURL, "region=us-east-1", "region=eu-central-1", 1)
	out := mustRun(t, eu.Env(), "init", "--bucket", right)
	if !strings.Contains(out, "&region=eu-central-1") {
		t.Errorf("init printed the bucket without its region: %s", out)
	}
}

// TestChannelTypo: every command given a channel the bucket lacks says so,
// lists the channels it has with the nearest one, and exits 2.
func TestChannelTypo(t *testing.T) {
	f := fixtures(t)["file"](t)
	key, pub := keygen(t, "fleet-1")
	for _, ch := range []string{"prod", "staging"} {
		mustRun(t, nil, "publish", "--skip-closure-check", "--bucket", f.url, "--key", key, "--channel", ch, "--store-path", storePath("a"))
	}
	want := `channel "prood" not found; channels in this bucket: prod, staging (did you mean prod?)`
	for _, args := range [][]string{
		{"verify", "--public-key", pub},
		{"history"},
		{"status"},
		{"rollback", "--key", key},
		{"resign", "--key", key},
		{"rollout", "--key", key, "--allow-empty"},
	} {
		args = append(args, "--bucket", f.url, "--channel", "prood")
		oneLineWith(t, args[0], run(t, nil, args...), 2, want)
	}
	// A new channel close to an existing one is published, with a note.
	r := run(t, nil, "publish", "--skip-closure-check", "--bucket", f.url, "--key", key, "--channel", "stagin", "--store-path", storePath("a"))
	if r.code != 0 || !strings.Contains(r.stderr, `note: channel "stagin" is new; channels in this bucket: prod, staging (did you mean staging?)`) {
		t.Errorf("publish to a near-miss channel: exit %d\n%s", r.code, r.stderr)
	}
}

// TestExpiredSaysResign: verify and doctor name the command that fixes an
// expired channel.
func TestExpiredSaysResign(t *testing.T) {
	f := fixtures(t)["file"](t)
	key, pub := keygen(t, "fleet-1")
	mustRun(t, nil, "publish", "--skip-closure-check", "--bucket", f.url, "--key", key, "--channel", "kiosk", "--store-path", storePath("a"), "--expires", "1s")
	time.Sleep(1100 * time.Millisecond)
	oneLineWith(t, "verify", run(t, nil, "verify", "--bucket", f.url, "--channel", "kiosk", "--public-key", pub), 3, "manifest expired", "nix-ota resign --channel kiosk")
	for _, keys := range [][]string{nil, {"--public-key", pub}} {
		r := run(t, nil, append([]string{"doctor", "--bucket", f.url}, keys...)...)
		if r.code != 1 || !strings.Contains(r.stdout, "FAIL") || !strings.Contains(r.stdout, "nix-ota resign --channel kiosk") {
			t.Errorf("doctor %v on an expired channel: exit %d\n%s", keys, r.code, r.stdout)
		}
	}
	mustRun(t, nil, "resign", "--bucket", f.url, "--key", key, "--channel", "kiosk")
	mustRun(t, nil, "verify", "--bucket", f.url, "--channel", "kiosk", "--public-key", pub)
}

// TestPathTypo: a missing file:// directory is a typo for the commands
// that read (they must not suggest init, which would make a new, empty
// fleet there) and a bucket to create for those that write.
func TestPathTypo(t *testing.T) {
	key, pub := keygen(t, "fleet-1")
	typo := "file://" + filepath.Join(t.TempDir(), "nix-ota-typo")
	want := "no nix-ota bucket at " + typo + " (no such directory); check the path"
	for _, args := range [][]string{{"status"}, {"verify", "--channel", "prod", "--public-key", pub}, {"history", "--channel", "prod"}, {"dashboard"}, {"doctor"}} {
		r := run(t, nil, append(args, "--bucket", typo)...)
		oneLineWith(t, args[0], r, 1, want)
		if strings.Contains(r.stderr, "init") {
			t.Errorf("%s suggests init on a typo: %s", args[0], r.stderr)
		}
	}
	r := run(t, nil, "publish", "--skip-closure-check", "--bucket", typo, "--key", key, "--channel", "prod", "--store-path", storePath("a"))
	oneLineWith(t, "publish", r, 1, "run nix-ota init")
	if _, err := os.Stat(strings.TrimPrefix(typo, "file://")); err == nil {
		t.Fatal("a command made the mistyped directory")
	}
}

// TestDoctorUsesBucketEnv: with the bucket in $NIX_OTA_BUCKET, doctor's
// anonymous-read check still runs against it (and warns: this bucket
// allows no anonymous read).
func TestDoctorUsesBucketEnv(t *testing.T) {
	f := fixtures(t)["minio"](t)
	key, _ := keygen(t, "fleet-1")
	mustRun(t, f.env, "publish", "--skip-closure-check", "--bucket", f.url, "--key", key, "--channel", "prod", "--store-path", storePath("a"))
	r := run(t, append(f.env, "NIX_OTA_BUCKET="+f.url), "doctor")
	if !strings.Contains(r.stdout, "WARN  anonymous read of http://") {
		t.Fatalf("doctor with $NIX_OTA_BUCKET skipped the anonymous read check:\n%s%s", r.stdout, r.stderr)
	}
}

// TestCacheKeyAsSigningKey: each key given to the other's flag names the
// right flag.
func TestCacheKeyAsSigningKey(t *testing.T) {
	f := fixtures(t)["file"](t)
	c := testenv.NewCache(t)
	sign, _ := keygen(t, "fleet-1")
	r := run(t, nil, "publish", "--skip-closure-check", "--bucket", f.url, "--key", c.SecretKey, "--channel", "prod", "--store-path", storePath("a"))
	oneLineWith(t, "cache key as --key", r, 2, "that is a Nix binary cache key; give it as --cache-key (the manifest signing key comes from nix-ota keygen)")
	r = run(t, nil, "push", "--bucket", f.url, "--cache-key", sign, "--store-path", storePath("a"))
	oneLineWith(t, "signing key as --cache-key", r, 2, "that is a nix-ota manifest signing key; give it as --key")
}
