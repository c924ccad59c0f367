package cli_test

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/nix-ota/nix-ota/agent"
	"github.com/nix-ota/nix-ota/bucket"
	"github.com/nix-ota/nix-ota/bucket/s3store"
	dashboard "github.com/nix-ota/nix-ota/dashboard-static"
	"github.com/nix-ota/nix-ota/internal/testenv"
	"github.com/nix-ota/nix-ota/manifest"
	"github.com/nix-ota/nix-ota/status"
)

// checkinCredential is a temporary MinIO credential that carries
// examples/policies/checkin-policy.json for bucketName: the one
// credential a whole fleet may share.
func checkinCredential(t *testing.T, m *testenv.MinIO, bucketName string) credentials.Value {
	t.Helper()
	policy, err := os.ReadFile("../examples/policies/checkin-policy.json")
	if err != nil {
		t.Fatal(err)
	}
	sts, err := credentials.NewSTSAssumeRole("http://"+m.Endpoint, credentials.STSAssumeRoleOptions{
		AccessKey: m.AccessKey, SecretKey: m.SecretKey, Policy: strings.ReplaceAll(string(policy), "BUCKET", bucketName), DurationSeconds: 3600,
	})
	if err != nil {
		t.Fatal(err)
	}
	v, err := sts.GetWithContext(&credentials.CredContext{})
	if err != nil {
		t.Fatalf("assume role with the check-in policy: %v", err)
	}
	return v
}

// checkinStore opens the bucket with the check-in credential.
func checkinStore(t *testing.T, m *testenv.MinIO, bucketName, url string) bucket.Store {
	t.Helper()
	v := checkinCredential(t, m, bucketName)
	s, err := bucket.Open(url, bucket.Options{Credentials: bucket.StaticCredentials(v.AccessKeyID, v.SecretAccessKey, v.SessionToken)})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestCheckinCredentialLimits: the shared check-in credential may write a
// check-in under devices/ and nothing else: no read, list or delete
// anywhere, no write outside devices/.
func TestCheckinCredentialLimits(t *testing.T) {
	m := testenv.SharedMinIO(t)
	name, url := m.NewBucket(t)
	mustRun(t, m.Env(), "init", "--bucket", url)
	shared := checkinStore(t, m, name, url)
	ctx := context.Background()
	k := bucket.CheckinKey("kiosk-1", time.Now())
	if _, err := bucket.PutBytes(ctx, shared, k, []byte("{}"), bucket.JSONPut()); err != nil {
		t.Fatalf("the check-in credential cannot write a check-in: %v", err)
	}
	if _, err := bucket.PutBytes(ctx, shared, bucket.CheckinKey("kiosk-2", time.Now()), []byte("{}"), bucket.JSONPut()); err != nil {
		t.Fatalf("the check-in credential cannot write another id's check-in (it is shared): %v", err)
	}
	for _, key := range []string{bucket.RegistryVersionKey(1), "channels/prod.json", "cache/nix-cache-info", "index.html", "dashboard.json", "forgotten-devices.json", "nix-ota.json", "devices/kiosk-1.json", "devices/zz/kiosk-1.json"} {
		if _, err := bucket.PutBytes(ctx, shared, key, []byte("{}"), bucket.JSONPut()); err == nil || !strings.Contains(err.Error(), "access denied") {
			t.Errorf("wrote %s: %v", key, err)
		}
	}
	for _, key := range []string{k, "nix-ota.json"} {
		if _, err := shared.Get(ctx, key, bucket.GetOptions{}); err == nil || !strings.Contains(err.Error(), "access denied") {
			t.Errorf("read %s: %v", key, err)
		}
	}
	if err := shared.List(ctx, bucket.DevicesPrefix, func(bucket.Info) error { return nil }); err == nil {
		t.Error("listed devices/")
	}
	if err := shared.Delete(ctx, k); err == nil {
		t.Error("deleted a check-in")
	}
	if _, err := shared.Stat(ctx, k); err == nil {
		t.Error("stat of a check-in")
	}
}

// TestSharedCredentialImpersonation: with one check-in credential for the
// whole fleet, a device writing another device's status, or replaying
// that device's older signed status, is shown unverified and moves no
// rollout; the device's own failure still halts it.
func TestSharedCredentialImpersonation(t *testing.T) {
	m := testenv.SharedMinIO(t)
	name, url := m.NewBucket(t)
	mustRun(t, m.Env(), "init", "--bucket", url)
	env := m.Env()
	shared := checkinStore(t, m, name, url)
	key, pub := keygen(t, "fleet-1")
	k1, k2 := testenv.DeviceKey(11), testenv.DeviceKey(12)
	a, s := storePath("system-a"), storePath("system-s")
	checkin := func(signer ed25519.PrivateKey, st status.Status, at time.Time) {
		t.Helper()
		st.CheckedAt, st.Channel, st.AgentVersion = at, "prod", "test"
		blob, err := status.Sign(st, signer)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bucket.PutBytes(context.Background(), shared, bucket.CheckinKey(st.DeviceID, at), blob, bucket.JSONPut()); err != nil {
			t.Fatal(err)
		}
	}
	publish := func(sp string, extra ...string) {
		mustRun(t, env, append([]string{"publish", "--skip-closure-check", "--no-dashboard", "--bucket", url, "--key", key, "--channel", "prod", "--store-path", sp}, extra...)...)
	}
	publish(a)
	now := time.Now()
	checkin(k1, status.Status{DeviceID: "kiosk-1", State: status.UpToDate, Revision: 1, StorePath: a}, now)
	checkin(k2, status.Status{DeviceID: "kiosk-2", State: status.UpToDate, Revision: 1, StorePath: a}, now)

	// Enrollment: both appear pending, one command approves them.
	var list struct {
		Devices []struct{ ID, Trust, Fingerprint string }
	}
	mustJSON(t, mustRun(t, env, "device", "list", "--bucket", url, "--public-key", pub, "--json"), &list)
	if len(list.Devices) != 2 || list.Devices[0].Trust != dashboard.TrustPending || list.Devices[1].Trust != dashboard.TrustPending {
		t.Fatalf("device list before approval: %+v", list)
	}
	var approved struct {
		RegistryVersion uint64
		Changes         []struct{ ID, Action, Fingerprint string }
	}
	mustJSON(t, mustRun(t, env, "device", "approve", "--all-pending", "--bucket", url, "--key", key, "--json"), &approved)
	if approved.RegistryVersion != 1 || len(approved.Changes) != 2 || approved.Changes[0].Action != "approved" || approved.Changes[0].Fingerprint != status.Fingerprint(k1.Public().(ed25519.PublicKey)) {
		t.Fatalf("approve --all-pending: %+v", approved)
	}

	// S rolls out to a cohort holding kiosk-1 only.
	publish(s, "--rollout", "50", "--rollout-salt", cohortSalt([]string{"kiosk-1"}, []string{"kiosk-2"}, 50))
	oldFail := status.Status{DeviceID: "kiosk-1", State: status.RolledBack, Revision: 1, StorePath: a, Attempted: 2, LastError: "health check failed"}
	oldDone := status.Status{DeviceID: "kiosk-1", State: status.UpToDate, Revision: 2, StorePath: s}
	signedAt := time.Now()
	replays := map[string][]byte{}
	for what, st := range map[string]status.Status{"fail": oldFail, "done": oldDone} {
		st.CheckedAt, st.Channel, st.AgentVersion = signedAt, "prod", "test"
		replays[what], _ = status.Sign(st, k1) // signed by kiosk-1, never written by it
	}
	time.Sleep(1100 * time.Millisecond)
	checkin(k1, status.Status{DeviceID: "kiosk-1", State: status.Downloading, Revision: 1, StorePath: a, Attempted: 2}, time.Now())
	statusOf(t, env, url, pub) // a reader accepts kiosk-1's newest status

	rollout := func() (int, string, map[string]any) {
		r := run(t, env, "rollout", "--bucket", url, "--key", key, "--channel", "prod", "--steps", "50,100", "--wait", "3s", "--interval", "300ms", "--max-failed", "0%", "--json")
		var out map[string]any
		_ = json.Unmarshal([]byte(r.stdout), &out)
		return r.code, r.stderr, out
	}
	attacks := []struct {
		name  string
		write func()
		trust string
	}{
		{"kiosk-2 writes kiosk-1's failure", func() {
			checkin(k2, status.Status{DeviceID: "kiosk-1", State: status.RolledBack, Revision: 1, StorePath: a, Attempted: 2, LastError: "forged"}, time.Now())
		}, dashboard.TrustRefused},
		{"kiosk-2 writes kiosk-1's success", func() {
			checkin(k2, status.Status{DeviceID: "kiosk-1", State: status.UpToDate, Revision: 2, StorePath: s}, time.Now())
		}, dashboard.TrustRefused},
		{"a stranger's key writes kiosk-1's success", func() {
			checkin(testenv.DeviceKey(99), status.Status{DeviceID: "kiosk-1", State: status.UpToDate, Revision: 2, StorePath: s}, time.Now())
		}, dashboard.TrustKeyChanged},
		{"replay of kiosk-1's older failure", func() { replay(t, shared, signedAt, replays["fail"]) }, dashboard.TrustRefused},
		{"replay of kiosk-1's older success", func() { replay(t, shared, signedAt, replays["done"]) }, dashboard.TrustRefused},
	}
	for _, at := range attacks {
		time.Sleep(1100 * time.Millisecond) // a newer LastModified than the last write
		at.write()
		f := statusOf(t, env, url, pub)
		if u := unverifiedRow(f, "kiosk-1"); u == nil || u.Trust != at.trust || u.Verified {
			t.Errorf("%s: want kiosk-1's newest check-in unverified (%s), got %+v", at.name, at.trust, u)
		} else {
			t.Logf("%s: %s: %s", at.name, u.Trust, u.Verification)
		}
		code, stderr, out := rollout()
		if out["outcome"] != "unproven" || out["rollout"] != float64(50) {
			t.Errorf("%s: rollout must neither halt nor advance: exit %d, %v\n%s", at.name, code, out, stderr)
		}
	}
	// kiosk-1's own failure halts it: the rule above is not blind.
	time.Sleep(1100 * time.Millisecond)
	checkin(k1, oldFail, time.Now())
	if code, stderr, out := rollout(); out["outcome"] != "halted" || code != 1 {
		t.Errorf("kiosk-1's own rolled-back status: want halted, got exit %d %v\n%s", code, out, stderr)
	}
}

// replay writes a blob signed at signedAt under its own window's key, as
// a holder of the shared credential can.
func replay(t *testing.T, s bucket.Store, signedAt time.Time, blob []byte) {
	t.Helper()
	if _, err := bucket.PutBytes(context.Background(), s, bucket.CheckinKey("kiosk-1", signedAt), blob, bucket.JSONPut()); err != nil {
		t.Fatal(err)
	}
}

func statusOf(t *testing.T, env []string, url, pub string) *dashboard.Fleet {
	t.Helper()
	var f dashboard.Fleet
	mustJSON(t, mustRun(t, env, "status", "--bucket", url, "--public-key", pub, "--json"), &f)
	return &f
}

func unverifiedRow(f *dashboard.Fleet, id string) *dashboard.Device {
	for i := range f.Unverified {
		if f.Unverified[i].ID == id {
			return &f.Unverified[i]
		}
	}
	return nil
}

// cohortSalt finds a salt whose pct% cohort holds every id of in and none
// of out.
func cohortSalt(in, out []string, pct int) string {
	for i := 0; ; i++ {
		salt := "salt-" + string(rune('a'+i%26)) + strings.Repeat("x", i/26)
		r := manifest.Rollout{Percent: pct, Salt: salt}
		ok := true
		for _, id := range in {
			ok = ok && r.Includes(id)
		}
		for _, id := range out {
			ok = ok && !r.Includes(id)
		}
		if ok {
			return salt
		}
	}
}

func mustJSON(t *testing.T, s string, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(s), v); err != nil {
		t.Fatalf("%v in %s", err, s)
	}
}

// TestEnrollment: real agents sharing one check-in credential appear as
// pending, one command approves them, and the dashboard the approval
// writes shows them verified.
func TestEnrollment(t *testing.T) {
	testenv.RequireNix(t)
	m := testenv.SharedMinIO(t)
	name, url := m.NewBucket(t)
	env := m.Env()
	mustRun(t, env, "init", "--bucket", url)
	public := fmt.Sprintf(`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":["*"]},"Action":["s3:GetObject"],"Resource":["arn:aws:s3:::%s/channels/*"]}]}`, name)
	if err := m.Admin().SetBucketPolicy(context.Background(), name, public); err != nil {
		t.Fatal(err)
	}
	admin, err := s3store.Open(url, bucket.Options{}, m.Creds())
	if err != nil {
		t.Fatal(err)
	}
	key, pub := keygen(t, "fleet-1")
	s0 := testenv.BuildSystem(t, "enrolled", testenv.SystemOptions{})
	mustRun(t, env, "publish", "--skip-closure-check", "--no-dashboard", "--bucket", url, "--key", key, "--channel", "prod", "--store-path", s0)

	creds := checkinCredentialsFile(t, m, name)
	ids := []string{"kiosk-a", "kiosk-b", "kiosk-c"}
	for _, id := range ids {
		startAgent(t, agent.Config{Bucket: "http://" + m.Endpoint + "/" + name, StatusBucket: url, StatusCredentials: creds, DeviceID: id}, pub, s0)
	}
	waitFor(t, "three check-ins", func() bool {
		n := 0
		admin.List(context.Background(), bucket.DevicesPrefix, func(bucket.Info) error { n++; return nil })
		return n >= len(ids)
	})

	var list struct {
		Registry dashboard.RegistryInfo
		Devices  []struct{ ID, Trust, Fingerprint, State string }
	}
	mustJSON(t, mustRun(t, env, "device", "list", "--bucket", url, "--public-key", pub, "--json"), &list)
	if list.Registry.Present || len(list.Devices) != 3 {
		t.Fatalf("device list before approval: %+v", list)
	}
	for _, d := range list.Devices {
		if d.Trust != dashboard.TrustPending || d.State != status.UpToDate || !strings.HasPrefix(d.Fingerprint, "SHA256:") {
			t.Fatalf("before approval: %+v", d)
		}
	}
	out := mustRun(t, env, "device", "approve", "--all-pending", "--bucket", url, "--key", key)
	if strings.Count(out, "approved ") != 3 || !strings.Contains(out, "version 1") {
		t.Fatalf("approve --all-pending:\n%s", out)
	}
	page, err := admin.Get(context.Background(), bucket.DashboardKey, bucket.GetOptions{})
	if err != nil || !strings.Contains(string(page.Data), "Device registry version 1: 3 registered devices") || strings.Count(string(page.Data), ">signed<") != 3 {
		t.Fatalf("dashboard after approval: %v\n%s", err, page.Data)
	}
	var f dashboard.Fleet
	js, _ := admin.Get(context.Background(), bucket.DashboardJSON, bucket.GetOptions{})
	mustJSON(t, string(js.Data), &f)
	if len(f.Devices) != 3 || len(f.Unverified) != 0 {
		t.Fatalf("dashboard.json: %d devices, %d unverified", len(f.Devices), len(f.Unverified))
	}
	for _, d := range f.Devices {
		if !d.Verified || d.Trust != dashboard.TrustVerified || d.State != status.UpToDate {
			t.Errorf("%s on the dashboard: %+v", d.ID, d)
		}
	}
}

// checkinCredentialsFile writes an AWS credentials file holding the
// fleet's check-in credential, as a device's statusCredentials.
func checkinCredentialsFile(t *testing.T, m *testenv.MinIO, bucketName string) string {
	t.Helper()
	v := checkinCredential(t, m, bucketName)
	p := filepath.Join(t.TempDir(), "checkin-creds")
	body := fmt.Sprintf("[default]\naws_access_key_id=%s\naws_secret_access_key=%s\naws_session_token=%s\n", v.AccessKeyID, v.SecretAccessKey, v.SessionToken)
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// startAgent runs one real agent polling until the test ends, on a
// profile already at initial.
func startAgent(t *testing.T, cfg agent.Config, pub, initial string) {
	t.Helper()
	dir := t.TempDir()
	cfg.Profile = filepath.Join(dir, "profiles", "system")
	os.MkdirAll(filepath.Dir(cfg.Profile), 0o755)
	testenv.Cmd(t, "nix-env", "--profile", cfg.Profile, "--set", initial)
	cfg.Channel, cfg.PublicKeys, cfg.StateDir, cfg.SwitchVia = "prod", []string{pub}, filepath.Join(dir, "state"), "direct"
	trust, err := cfg.Prepare()
	if err != nil {
		t.Fatal(err)
	}
	a, unlock, err := agent.New(cfg, trust, func(string, ...any) {})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer unlock()
		for ctx.Err() == nil {
			a.Poll(ctx)
			select {
			case <-ctx.Done():
			case <-time.After(200 * time.Millisecond):
			}
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("%s never happened", what)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
