package cli_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nix-ota/nix-ota/internal/testenv"
)

func TestDoctor(t *testing.T) {
	f, _ := minioCache(t) // anonymous read on cache/ only, so far
	key, pub := keygen(t, "fleet-1")
	_, otherPub := keygen(t, "other")
	mustRun(t, f.env, "publish", "--skip-closure-check", "--bucket", f.url, "--key", key, "--channel", "prod", "--store-path", storePath("a"), "--expires", "48h")

	r := run(t, f.env, "doctor", "--bucket", f.url, "--public-key", pub)
	for _, want := range []string{"ok    reach", "ok    layout marker", "ok    credentials can write and delete", "WARN  binary cache", "WARN  channel prod revision 1 expires in 1d 23h", "WARN  anonymous read"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("doctor output lacks %q", want)
		}
	}
	if r.code != 0 {
		t.Fatalf("warnings alone failed the doctor: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	// Channels readable anonymously: the check passes.
	m := testenv.SharedMinIO(t)
	name := strings.TrimPrefix(strings.SplitN(f.url, "?", 2)[0], "s3://")
	policy := fmt.Sprintf(`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":["*"]},"Action":["s3:GetObject"],"Resource":["arn:aws:s3:::%s/channels/*"]}]}`, name)
	if err := m.Admin().SetBucketPolicy(context.Background(), name, policy); err != nil {
		t.Fatal(err)
	}
	if r := run(t, f.env, "doctor", "--bucket", f.url); !strings.Contains(r.stdout, "ok    anonymous read") {
		t.Fatalf("anonymous read check:\n%s", r.stdout)
	}
	// A key the channel is not signed with: FAIL.
	if r := run(t, f.env, "doctor", "--bucket", f.url, "--public-key", otherPub); r.code != 1 || !strings.Contains(r.stdout, "FAIL  channel prod: devices would reject it") {
		t.Fatalf("wrong key: %d\n%s", r.code, r.stdout)
	}
	// Expired: FAIL.
	mustRun(t, f.env, "publish", "--skip-closure-check", "--bucket", f.url, "--key", key, "--channel", "prod", "--store-path", storePath("b"), "--expires", "1s")
	time.Sleep(1100 * time.Millisecond)
	if r := run(t, f.env, "doctor", "--bucket", f.url); r.code != 1 || !strings.Contains(r.stdout, "expired") || !strings.Contains(r.stdout, "nix-ota resign") {
		t.Fatalf("expired: %d\n%s", r.code, r.stdout)
	}
	// Not initialised, unreachable: FAIL.
	_, bare := m.NewBucket(t)
	if r := run(t, f.env, "doctor", "--bucket", bare); r.code != 1 || !strings.Contains(r.stdout, "FAIL  layout marker") {
		t.Fatalf("uninitialised: %d\n%s", r.code, r.stdout)
	}
	port, _ := testenv.FreePort()
	if r := run(t, f.env, "doctor", "--bucket", fmt.Sprintf("s3://fleet?endpoint=127.0.0.1:%d&scheme=http", port)); r.code != 1 || !strings.Contains(r.stdout, "FAIL  reach") {
		t.Fatalf("unreachable: %d\n%s", r.code, r.stdout)
	}
}
