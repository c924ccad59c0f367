package cli_test

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nix-ota/nix-ota/bucket"
	"github.com/nix-ota/nix-ota/manifest"
	"github.com/nix-ota/nix-ota/status"
)

// forge is what a bucket writer without a signing key can make: a payload of
// its choosing with a junk signature that names the fleet key.
func forge(t *testing.T, rev uint64, storePath string, percent int) []byte {
	t.Helper()
	now := time.Now().UTC().Truncate(time.Second)
	p := manifest.Payload{Schema: 1, Channel: "prod", Revision: rev, StorePath: storePath, Substituters: []string{},
		PublishedAt: now, ExpiresAt: now.Add(24 * time.Hour), Rollout: manifest.Rollout{Percent: percent, Salt: "s"}, Switch: "switch"}
	pb, _ := json.Marshal(p)
	env := map[string]any{
		"payloadType": manifest.PayloadType,
		"payload":     base64.StdEncoding.EncodeToString(pb),
		"signatures":  []map[string]string{{"keyid": "fleet-1", "sig": base64.StdEncoding.EncodeToString(make([]byte, 64))}},
	}
	b, _ := json.Marshal(env)
	return b
}

// signedSystems lists every store path that any validly signed object in
// the bucket's channels/ names.
func signedSystems(t *testing.T, f fixture, pub string) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	f.store.List(ctx, bucket.ChannelsPrefix, func(i bucket.Info) error {
		if v, err := manifest.CheckSigned(mustTrust(t, pub), "prod", getObj(t, f.store, i.Key)); err == nil {
			for _, sp := range v.Payload.StorePaths() {
				out[sp] = true
			}
		}
		return nil
	})
	return out
}

// TestSigningPathsRefuseForgeries: every command that signs something
// derived from the bucket verifies it first. A forged pointer or history
// entry gets exit 3 and one line naming the object; nothing is written and
// the forged system is never signed.
func TestSigningPathsRefuseForgeries(t *testing.T) {
	evil := storePath("evil")
	a, b := storePath("sys-a"), storePath("sys-b")
	cases := []struct {
		name   string
		forge  func(f fixture) // what the bucket writer does
		args   []string
		naming string // the object the error must name
	}{
		{"resign, forged pointer", func(f fixture) { putObj(t, f.store, "channels/prod.json", forge(t, 3, evil, 100)) },
			[]string{"resign"}, "channels/prod.json"},
		{"rollback, forged pointer", func(f fixture) { putObj(t, f.store, "channels/prod.json", forge(t, 3, evil, 100)) },
			[]string{"rollback"}, "channels/prod.json"},
		{"rollback --to, forged history entry", func(f fixture) { putObj(t, f.store, "channels/prod/1.json", forge(t, 1, evil, 100)) },
			[]string{"rollback", "--to", "1"}, "channels/prod/1.json"},
		{"rollout step, forged pointer", func(f fixture) { putObj(t, f.store, "channels/prod.json", forge(t, 3, evil, 10)) },
			[]string{"rollout", "--steps", "50,100", "--wait", "1s", "--interval", "100ms"}, "channels/prod.json"},
		{"publish, forged pointer", func(f fixture) { putObj(t, f.store, "channels/prod.json", forge(t, 3, evil, 100)) },
			[]string{"publish", "--skip-closure-check", "--store-path", storePath("new")}, "channels/prod.json"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := fixtures(t)["file"](t)
			key, pub := keygen(t, "fleet-1")
			mustRun(t, nil, "publish", "--skip-closure-check", "--bucket", f.url, "--key", key, "--channel", "prod", "--store-path", a, "--no-dashboard")
			mustRun(t, nil, "publish", "--skip-closure-check", "--bucket", f.url, "--key", key, "--channel", "prod", "--store-path", b, "--no-dashboard")
			tc.forge(f)
			before := snapshot(t, f.store)
			args := append(append([]string{}, tc.args...), "--bucket", f.url, "--key", key, "--channel", "prod")
			r := run(t, nil, args...)
			if r.code != 3 || !strings.Contains(r.stderr, tc.naming) || strings.Count(strings.TrimSpace(r.stderr), "\n") > 2 {
				t.Fatalf("exit %d, want 3 naming %s:\n%s%s", r.code, tc.naming, r.stdout, r.stderr)
			}
			if after := snapshot(t, f.store); after != before {
				t.Fatalf("the bucket changed:\nbefore\n%s\nafter\n%s", before, after)
			}
			if signedSystems(t, f, pub)[evil] {
				t.Fatal("the forged system was signed")
			}
			t.Logf("%s: exit %d: %s", tc.name, r.code, strings.TrimSpace(r.stderr))
		})
	}
}

// TestRollbackRefusesAcrossForgedHistory: a revert goes only to the system
// that ran right before the current one; when that entry was replaced by a
// forgery it refuses (and says which revision) rather than reaching further
// back, where a bucket writer would get to choose.
func TestRollbackRefusesAcrossForgedHistory(t *testing.T) {
	f := fixtures(t)["file"](t)
	key, pub := keygen(t, "fleet-1")
	evil := storePath("evil")
	publishKnownGood(t, f, key, storePath("a"), 1)
	for _, sp := range []string{storePath("b"), storePath("c")} {
		mustRun(t, nil, "publish", "--skip-closure-check", "--bucket", f.url, "--key", key, "--channel", "prod", "--store-path", sp, "--no-dashboard")
	}
	putObj(t, f.store, "channels/prod/2.json", forge(t, 2, evil, 100))
	before := snapshot(t, f.store)
	r := run(t, nil, "rollback", "--bucket", f.url, "--key", key, "--channel", "prod", "--no-dashboard")
	if r.code != 1 || !strings.Contains(r.stderr, "channels/prod/2.json skipped") || !strings.Contains(r.stderr, "revision 2, the one before revision 3's system, is missing or does not verify") {
		t.Fatalf("exit %d:\n%s%s", r.code, r.stdout, r.stderr)
	}
	if snapshot(t, f.store) != before || signedSystems(t, f, pub)[evil] {
		t.Fatal("the refused rollback changed the bucket or signed the forgery")
	}
	// Named explicitly, the verified revision 1 is still reachable.
	mustRun(t, nil, "rollback", "--bucket", f.url, "--key", key, "--channel", "prod", "--to", "1", "--no-dashboard")
	v, err := manifest.CheckSigned(mustTrust(t, pub), "prod", getObj(t, f.store, "channels/prod.json"))
	if err != nil || v.Payload.Revision != 4 || v.Payload.StorePath != storePath("a") {
		t.Fatalf("after rollback --to 1: %v %+v", err, v)
	}
}

// TestRolloutHaltSkipsForgedHistory: a rollout that halts reverts only to
// a verified earlier system. With the only earlier entry forged it pauses
// the current system at 0% instead of signing the forgery.
func TestRolloutHaltSkipsForgedHistory(t *testing.T) {
	f := fixtures(t)["file"](t)
	key, pub := keygen(t, "fleet-1")
	a, b, evil := storePath("a"), storePath("b"), storePath("evil")
	mustRun(t, nil, "publish", "--skip-closure-check", "--bucket", f.url, "--key", key, "--channel", "prod", "--store-path", a, "--no-dashboard")
	mustRun(t, nil, "publish", "--skip-closure-check", "--bucket", f.url, "--key", key, "--channel", "prod", "--store-path", b, "--rollout", "50", "--rollout-salt", "s", "--no-dashboard")
	putObj(t, f.store, "channels/prod/1.json", forge(t, 1, evil, 100))
	var id string
	for i := 0; id == ""; i++ {
		if c := fmt.Sprintf("kiosk-%d", i); (manifest.Rollout{Percent: 50, Salt: "s"}).Includes(c) {
			id = c
		}
	}
	writeStatus(t, f.store, status.Status{DeviceID: id, Channel: "prod", State: status.RolledBack, Revision: 1, Attempted: 2, StorePath: a})
	r := run(t, nil, "rollout", "--bucket", f.url, "--key", key, "--channel", "prod", "--steps", "50,100", "--wait", "1s", "--interval", "100ms", "--max-failed", "0")
	if r.code != 1 || !strings.Contains(r.stderr, "halted") || !strings.Contains(r.stderr, "channels/prod/1.json skipped") {
		t.Fatalf("exit %d:\n%s%s", r.code, r.stdout, r.stderr)
	}
	v, err := manifest.CheckSigned(mustTrust(t, pub), "prod", getObj(t, f.store, "channels/prod.json"))
	if err != nil || v.Payload.StorePath != b || v.Payload.Rollout.Percent != 0 {
		t.Fatalf("after the halt: %v %+v", err, v)
	}
	if signedSystems(t, f, pub)[evil] {
		t.Fatal("the forged system was signed")
	}
}

// TestRevisionInflation: a junk history name far above every real revision
// does not move the next revision; no revision above 2^53-1 is signed; the
// pointer never goes backwards; the channel carries on once it is gone.
func TestRevisionInflation(t *testing.T) {
	f := fixtures(t)["file"](t)
	key, pub := keygen(t, "fleet-1")
	publish := func() uint64 {
		t.Helper()
		mustRun(t, nil, "publish", "--skip-closure-check", "--bucket", f.url, "--key", key, "--channel", "prod", "--store-path", storePath("a"), "--no-dashboard")
		v, err := manifest.CheckSigned(mustTrust(t, pub), "prod", getObj(t, f.store, "channels/prod.json"))
		if err != nil {
			t.Fatal(err)
		}
		return v.Payload.Revision
	}
	if rev := publish(); rev != 1 {
		t.Fatalf("first publish: revision %d", rev)
	}
	putObj(t, f.store, "channels/prod/18446744073709551614.json", nil)
	putObj(t, f.store, "channels/prod/9007199254740990.json", nil)
	last := uint64(1)
	for range 3 {
		rev := publish()
		if rev != last+1 {
			t.Fatalf("publish after the junk signed revision %d, want %d", rev, last+1)
		}
		last = rev
	}
	r := run(t, nil, "doctor", "--bucket", f.url, "--public-key", pub, "--read-only")
	if !strings.Contains(r.stdout, "18446744073709551614.json is not a verified revision") || !strings.Contains(r.stdout, "9007199254740990.json is not a verified revision") {
		t.Fatalf("doctor does not report the junk:\n%s%s", r.stdout, r.stderr)
	}
	for _, k := range []string{"channels/prod/18446744073709551614.json", "channels/prod/9007199254740990.json"} {
		if err := f.store.Delete(ctx, k); err != nil {
			t.Fatal(err)
		}
	}
	if rev := publish(); rev != last+1 {
		t.Fatalf("after the junk is gone: revision %d, want %d", rev, last+1)
	}
	for _, k := range historyKeys(t, f) {
		if rev, ok := bucket.ParseRevisionKey("prod", k); ok && rev > manifest.MaxRevision {
			t.Fatalf("%s exists", k)
		}
	}
}

// publishKnownGood publishes sp as revision rev of prod with --wait while
// a device reports running it, so the publisher records it as known good.
func publishKnownGood(t *testing.T, f fixture, key, sp string, rev uint64) {
	t.Helper()
	writeStatus(t, f.store, status.Status{DeviceID: "kiosk-good", Channel: "prod", State: status.UpToDate, Revision: rev, StorePath: sp})
	r := run(t, f.env, "publish", "--skip-closure-check", "--bucket", f.url, "--key", key, "--channel", "prod", "--store-path", sp, "--no-dashboard", "--wait=20s", "--wait-interval", "100ms")
	if r.code != 0 || !strings.Contains(r.stdout, fmt.Sprintf("revision %d", rev)) {
		t.Fatalf("publish --wait of a known-good system: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if _, err := f.store.Stat(ctx, bucket.AttestationKey("prod", rev)); err != nil {
		t.Fatalf("no attestation for revision %d: %v", rev, err)
	}
}

// TestResignRefusesReplayedPointer: an older, genuinely signed manifest put
// back as the pointer is not re-signed as the newest revision.
func TestResignRefusesReplayedPointer(t *testing.T) {
	f := fixtures(t)["file"](t)
	key, pub := keygen(t, "fleet-1")
	old, cur := storePath("old"), storePath("current")
	for _, sp := range []string{old, cur} {
		mustRun(t, nil, "publish", "--skip-closure-check", "--bucket", f.url, "--key", key, "--channel", "prod", "--store-path", sp, "--no-dashboard")
	}
	putObj(t, f.store, "channels/prod.json", getObj(t, f.store, "channels/prod/1.json"))
	before := snapshot(t, f.store)
	for _, args := range [][]string{{"resign"}, {"rollback", "--to", "1"}, {"rollout", "--steps", "100"}} {
		r := run(t, nil, append(args, "--bucket", f.url, "--key", key, "--channel", "prod", "--no-dashboard")...)
		if r.code != 3 || !strings.Contains(r.stderr, "history has verified revision 2") {
			t.Fatalf("%v over a replayed pointer: exit %d\n%s%s", args, r.code, r.stdout, r.stderr)
		}
	}
	if snapshot(t, f.store) != before {
		t.Fatal("the bucket changed")
	}
	_ = pub
}

// TestRolloutStopsWhenChannelMoves: a rollout that follows a step does not
// overwrite a system someone published meanwhile.
func TestRolloutStopsWhenChannelMoves(t *testing.T) {
	f := fixtures(t)["file"](t)
	key, pub := keygen(t, "fleet-1")
	mustRun(t, nil, "publish", "--skip-closure-check", "--bucket", f.url, "--key", key, "--channel", "prod", "--store-path", storePath("e"), "--rollout", "10", "--rollout-salt", "s", "--no-dashboard")
	// A cohort device that never moves keeps the step waiting out --wait.
	for i := 0; ; i++ {
		if id := fmt.Sprintf("kiosk-%d", i); (manifest.Rollout{Percent: 10, Salt: "s"}).Includes(id) {
			writeStatus(t, f.store, status.Status{DeviceID: id, Channel: "prod", State: status.UpToDate, Revision: 0, StorePath: storePath("old")})
			break
		}
	}
	cmd := exec.Command(nixOta, "rollout", "--bucket", f.url, "--key", key, "--channel", "prod", "--steps", "50,100", "--wait", "3s", "--interval", "200ms", "--allow-empty", "--no-dashboard")
	var se strings.Builder
	cmd.Stderr = &se
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	mustRun(t, nil, "publish", "--skip-closure-check", "--bucket", f.url, "--key", key, "--channel", "prod", "--store-path", storePath("hotfix"), "--no-dashboard")
	err := cmd.Wait()
	if err == nil || !strings.Contains(se.String(), "moved to revision 2") {
		t.Fatalf("rollout over a newer publish: %v\n%s", err, se.String())
	}
	v, verr := manifest.CheckSigned(mustTrust(t, pub), "prod", getObj(t, f.store, "channels/prod.json"))
	if verr != nil || v.Payload.StorePath != storePath("hotfix") {
		t.Fatalf("the hotfix was overwritten: %v %+v", verr, v)
	}
}

// TestHaltWithLongMultibyteFailures: failure texts longer than a manifest
// may carry still halt, record the system bad, revert and run --on-failure.
func TestHaltWithLongMultibyteFailures(t *testing.T) {
	f := fixtures(t)["file"](t)
	key, pub := keygen(t, "fleet-1")
	a, b := storePath("a"), storePath("b")
	publishKnownGood(t, f, key, a, 1)
	mustRun(t, nil, "publish", "--skip-closure-check", "--bucket", f.url, "--key", key, "--channel", "prod", "--store-path", b, "--rollout", "50", "--rollout-salt", "s", "--no-dashboard")
	long := strings.Repeat("ヘルスチェック失敗", 30) // ~800 bytes of 3-byte runes
	for i := 0; i < 40; i++ {
		id := fmt.Sprintf("kiosk-%d", i)
		writeStatus(t, f.store, status.Status{DeviceID: id, Channel: "prod", State: status.RolledBack, Revision: 1, Attempted: 2, StorePath: a, LastError: long})
	}
	notified := filepath.Join(t.TempDir(), "notified")
	r := run(t, nil, "rollout", "--bucket", f.url, "--key", key, "--channel", "prod", "--steps", "50,100", "--wait", "2s", "--interval", "100ms", "--no-dashboard",
		"--on-failure", `printf '%s %s %s' "$NIX_OTA_EVENT" "$NIX_OTA_CHANNEL" "$NIX_OTA_REVISION" > `+notified)
	if r.code != 1 || !strings.Contains(r.stderr, "halted") || strings.Contains(r.stderr, "revert failed") || strings.Contains(r.stderr, "could not record") {
		t.Fatalf("exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if b, err := os.ReadFile(notified); err != nil || string(b) != "halted prod 2" {
		t.Fatalf("--on-failure: %q %v", b, err)
	}
	v, err := manifest.CheckSigned(mustTrust(t, pub), "prod", getObj(t, f.store, "channels/prod.json"))
	if err != nil || v.Payload.StorePath != a || len(v.Payload.Message) > 4096 {
		t.Fatalf("after the halt: %v %+v", err, v)
	}
	if _, err := f.store.Stat(ctx, bucket.AttestationKey("prod", 2)); err != nil {
		t.Fatalf("the halted revision was not recorded bad: %v", err)
	}
}

// TestPublishRetry: --retry is signed into the manifest, and only with it.
func TestPublishRetry(t *testing.T) {
	f := fixtures(t)["file"](t)
	key, pub := keygen(t, "fleet-1")
	for _, retry := range []bool{false, true} {
		args := []string{"publish", "--skip-closure-check", "--bucket", f.url, "--key", key, "--channel", "prod", "--store-path", storePath("a"), "--no-dashboard"}
		if retry {
			args = append(args, "--retry")
		}
		mustRun(t, nil, args...)
		v, err := manifest.CheckSigned(mustTrust(t, pub), "prod", getObj(t, f.store, "channels/prod.json"))
		if err != nil || v.Payload.Retry != retry {
			t.Fatalf("--retry=%v: %v %+v", retry, err, v)
		}
	}
}
