package agent_test

// End-to-end tests of the nix-ota-agent binary with real Nix (real store
// paths, a real signed binary cache, nix-env profiles, switch-to-
// configuration scripts) and a real MinIO server.

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/nix-ota/nix-ota/bucket"
	"github.com/nix-ota/nix-ota/bucket/s3store"
	"github.com/nix-ota/nix-ota/internal/benchutil"
	"github.com/nix-ota/nix-ota/internal/testenv"
	"github.com/nix-ota/nix-ota/manifest"
	"github.com/nix-ota/nix-ota/manifest/signing"
	"github.com/nix-ota/nix-ota/status"
)

var agentBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "nix-ota-agent-bin-")
	if err != nil {
		panic(err)
	}
	agentBin = filepath.Join(dir, "nix-ota-agent")
	if err := testenv.BuildAgent(agentBin); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	testenv.StopShared()
	os.RemoveAll(dir)
	os.Exit(code)
}

// fleet is a bucket, a binary cache, a signing key and the systems A, B, C
// (plus S0, the device's initial system) in it.
type fleet struct {
	store      bucket.Store // full access, for publishing and inspection
	url        string       // what the agent reads
	substitute string       // the cache URL the agent substitutes from
	cache      *testenv.Cache
	signer     signing.Key
	pub        manifest.PublicKey
	s0, a, b   string
	c, d       string
	bad        string // a system whose switch-to-configuration fails
	env        []string
	credsFile  string
	minio      *testenv.MinIO
	bucketName string
	agentURL   string // what agents use, when it differs from url (a fault proxy)
	proxy      *testenv.FaultProxy
}

// viaProxy routes the agents' bucket and cache traffic through a fault
// proxy in front of MinIO.
func (f *fleet) viaProxy(t *testing.T) *testenv.FaultProxy {
	f.proxy = testenv.StartFaultProxy(t, f.minio.Endpoint)
	f.agentURL = fmt.Sprintf("s3://%s?endpoint=%s&scheme=http&region=us-east-1", f.bucketName, f.proxy.Addr)
	f.substitute = fmt.Sprintf("%s/%s/cache", f.proxy.URL, f.bucketName)
	return f.proxy
}

func newFleet(t *testing.T, backend string) *fleet {
	testenv.RequireNix(t)
	f := &fleet{}
	f.signer, f.pub = testenv.NewSigner(t, "fleet-1")
	f.s0 = testenv.BuildSystem(t, "s0", testenv.SystemOptions{})
	f.a = testenv.BuildSystem(t, "a", testenv.SystemOptions{})
	f.b = testenv.BuildSystem(t, "b", testenv.SystemOptions{})
	f.bad = testenv.BuildSystem(t, "bad", testenv.SystemOptions{FailSwitch: true})
	f.c = testenv.BuildSystem(t, "c", testenv.SystemOptions{})
	f.d = testenv.BuildSystem(t, "d", testenv.SystemOptions{})
	f.cache = testenv.NewCache(t)
	f.cache.Add(t, f.a, f.b, f.bad, f.c, f.d)
	testenv.Forget(t, f.a, f.b, f.bad, f.c, f.d) // the agent must fetch them
	switch backend {
	case "file":
		f.url = "file://" + filepath.Join(t.TempDir(), "bucket")
		s, err := bucket.Open(f.url, bucket.Options{Create: true})
		if err != nil {
			t.Fatal(err)
		}
		f.store, f.substitute = s, f.cache.URL
	case "minio":
		m := testenv.SharedMinIO(t)
		f.minio = m
		f.bucketName, f.url = m.NewBucket(t)
		s, err := s3store.Open(f.url, bucket.Options{}, m.Creds())
		if err != nil {
			t.Fatal(err)
		}
		f.store = s
		// The binary cache lives in the bucket under cache/, readable
		// anonymously over HTTP, which is how devices substitute from it.
		testenv.UploadDir(t, s, "cache/", f.cache.Dir)
		policy := fmt.Sprintf(`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":["*"]},"Action":["s3:GetObject"],"Resource":["arn:aws:s3:::%s/cache/*"]}]}`, f.bucketName)
		if err := m.Admin().SetBucketPolicy(context.Background(), f.bucketName, policy); err != nil {
			t.Fatal(err)
		}
		f.substitute = fmt.Sprintf("http://%s/%s/cache", m.Endpoint, f.bucketName)
		f.credsFile = writeCreds(t, m.AccessKey, m.SecretKey, "")
	}
	if _, err := bucket.Init(context.Background(), f.store, "test", time.Now()); err != nil {
		t.Fatal(err)
	}
	return f
}

func writeCreds(t *testing.T, ak, sk, token string) string {
	p := filepath.Join(t.TempDir(), "device-credentials")
	body := fmt.Sprintf("[default]\naws_access_key_id = %s\naws_secret_access_key = %s\n", ak, sk)
	if token != "" {
		body += "aws_session_token = " + token + "\n"
	}
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func (f *fleet) publish(t *testing.T, storePath string, mut ...func(*manifest.Payload)) uint64 {
	p := testenv.Payload("prod", 0, storePath, f.substitute)
	for _, m := range mut {
		m(p)
	}
	return testenv.Publish(t, f.store, f.signer, p)
}

// device is one simulated device: its own state dir, profile and switch log.
type device struct {
	f                     *fleet
	id                    string
	stateDir, profile, sw string
	extra                 []string
}

func (f *fleet) device(t *testing.T, id string, extra ...string) *device {
	dir := t.TempDir()
	d := &device{f: f, id: id, stateDir: filepath.Join(dir, "state"), profile: filepath.Join(dir, "profiles", "system"), sw: filepath.Join(dir, "switch.log"), extra: extra}
	os.MkdirAll(filepath.Dir(d.profile), 0o755)
	testenv.Cmd(t, "nix-env", "--profile", d.profile, "--set", f.s0)
	return d
}

func (d *device) args() []string {
	url := d.f.url
	if d.f.agentURL != "" {
		url = d.f.agentURL
	}
	args := []string{"once", "--bucket", url, "--channel", "prod", "--public-key", d.f.pub.String(), "--device-id", d.id,
		"--state-dir", d.stateDir, "--profile", d.profile, "--substituter", d.f.substitute, "--trusted-cache-key", d.f.cache.PublicKey,
		"--switch-via", "direct", "--health-timeout", "2s"}
	if d.f.credsFile != "" {
		args = append(args, "--status-credentials", d.f.credsFile)
	}
	args = append(args, "--prometheus-file", filepath.Join(d.stateDir, "metrics.prom"))
	return append(args, d.extra...)
}

type run struct {
	code           int
	stdout, stderr string
}

// runCmd runs cmd to the end and returns its output and exit code; only a
// failure to start it fails the test.
func runCmd(t *testing.T, cmd *exec.Cmd) run {
	t.Helper()
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	err := cmd.Run()
	r := run{stdout: so.String(), stderr: se.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return r
}

func (d *device) once(t *testing.T, extra ...string) run {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, agentBin, append(d.args(), extra...)...)
	cmd.Env = append(os.Environ(), "NIX_OTA_TEST_LOG="+d.sw, "AWS_EC2_METADATA_DISABLED=true")
	r := runCmd(t, cmd)
	if strings.Contains(r.stderr, "panic:") {
		t.Fatalf("agent panicked:\n%s", r.stderr)
	}
	return r
}

func (d *device) mustOnce(t *testing.T, wantCode int, extra ...string) run {
	t.Helper()
	r := d.once(t, extra...)
	if r.code != wantCode {
		t.Fatalf("agent once: exit %d, want %d\n%s", r.code, wantCode, r.stderr)
	}
	return r
}

func (d *device) current(t *testing.T) string {
	p, err := filepath.EvalSymlinks(d.profile)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func (d *device) switches(t *testing.T) []string {
	b, err := os.ReadFile(d.sw)
	if os.IsNotExist(err) {
		return nil
	}
	var out []string
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if l != "" {
			action, script, _ := strings.Cut(l, " ")
			out = append(out, action+" "+strings.TrimSuffix(script, "/bin/switch-to-configuration"))
		}
	}
	return out
}

func (d *device) localStatus(t *testing.T) status.Status {
	b, err := os.ReadFile(filepath.Join(d.stateDir, "status.json"))
	if err != nil {
		t.Fatal(err)
	}
	var s status.Status
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatal(err)
	}
	return s
}

func (d *device) remoteStatus(t *testing.T) *status.Status {
	latest, err := bucket.LatestCheckin(context.Background(), d.f.store, d.id)
	if err != nil {
		t.Fatalf("status blob: %v", err)
	}
	o, err := d.f.store.Get(context.Background(), latest.Key, bucket.GetOptions{})
	if err != nil {
		t.Fatalf("status blob: %v", err)
	}
	s, err := status.Open(d.id, o.Data)
	if err != nil {
		t.Fatal(err)
	}
	// Every check-in is signed by the device's own key, at the time that
	// picked its window.
	if s.Key == nil || latest.Key != bucket.CheckinKey(d.id, s.SignedAt) {
		t.Fatalf("check-in %s: key %v, signed at %s", latest.Key, s.Key, s.SignedAt)
	}
	if pub := d.identity(t); pub != nil && !status.SameKey(s.Key, pub) {
		t.Fatalf("check-in %s signed by %s, the device's key is %s", latest.Key, status.Fingerprint(s.Key), status.Fingerprint(pub))
	}
	return s.Status
}

// identity is the public key in the device's key file, nil when it has
// none at the default place.
func (d *device) identity(t *testing.T) ed25519.PublicKey {
	b, err := os.ReadFile(filepath.Join(d.stateDir, "identity.key"))
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return pemPublic(t, b)
}

// pemPublic is the public half of a PKCS#8 PEM ed25519 key, read with the
// standard library alone.
func pemPublic(t *testing.T, b []byte) ed25519.PublicKey {
	t.Helper()
	block, _ := pem.Decode(b)
	if block == nil {
		t.Fatalf("not PEM: %q", b)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return k.(ed25519.PrivateKey).Public().(ed25519.PublicKey)
}

func expectSwitches(t *testing.T, d *device, want ...string) {
	t.Helper()
	got := d.switches(t)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("switch-to-configuration calls:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestApply: the agent moves the profile to A, then B, running each
// system's switch-to-configuration; the status blob says so; a further
// poll with nothing new changes nothing.
func TestApply(t *testing.T) {
	for _, backend := range []string{"minio", "file"} {
		t.Run(backend, func(t *testing.T) {
			f := newFleet(t, backend)
			d := f.device(t, "kiosk-1")
			f.publish(t, f.a)
			d.mustOnce(t, 0)
			if d.current(t) != f.a {
				t.Fatalf("profile -> %s, want A %s", d.current(t), f.a)
			}
			expectSwitches(t, d, "switch "+f.a)
			st := d.remoteStatus(t)
			if st.State != status.UpToDate || st.Revision != 1 || st.StorePath != f.a || st.LastError != "" {
				t.Fatalf("status after A: %+v", st)
			}
			f.publish(t, f.b)
			d.mustOnce(t, 0)
			if d.current(t) != f.b {
				t.Fatalf("profile -> %s, want B", d.current(t))
			}
			expectSwitches(t, d, "switch "+f.a, "switch "+f.b)
			st = d.remoteStatus(t)
			if st.State != status.UpToDate || st.Revision != 2 || st.StorePath != f.b || st.DeviceID != "kiosk-1" || st.Channel != "prod" {
				t.Fatalf("status after B: %+v", st)
			}
			if l := d.localStatus(t); l.Revision != 2 || l.State != status.UpToDate {
				t.Fatalf("local status: %+v", l)
			}
			prom, err := os.ReadFile(filepath.Join(d.stateDir, "metrics.prom"))
			if err != nil || !strings.Contains(string(prom), `nix_ota_revision{channel="prod"} 2`) || !strings.Contains(string(prom), `nix_ota_state{state="up-to-date"} 1`) {
				t.Fatalf("prometheus textfile: %v\n%s", err, prom)
			}
			// Idle: nothing new, nothing done.
			r := d.mustOnce(t, 0)
			expectSwitches(t, d, "switch "+f.a, "switch "+f.b)
			if strings.Contains(r.stderr, "fetching") {
				t.Fatalf("idle poll did work:\n%s", r.stderr)
			}
		})
	}
}

// TestRejections: every attack leaves the profile untouched, and the
// status says why.
func TestRejections(t *testing.T) {
	f := newFleet(t, "file")
	d := f.device(t, "kiosk-1")
	f.publish(t, f.a)
	f.publish(t, f.b)
	d.mustOnce(t, 0)
	if d.current(t) != f.b {
		t.Fatal("setup: not on B")
	}
	genuine, _ := f.store.Get(context.Background(), "channels/prod.json", bucket.GetOptions{})
	intruder, _ := testenv.NewSigner(t, "intruder")
	sign := func(s signing.Key, mut func(*manifest.Payload)) []byte {
		p := testenv.Payload("prod", 3, f.a, f.substitute)
		mut(p)
		return testenv.SignRaw(t, s, testenv.MustJSON(t, p))
	}
	tampered := bytes.Replace(sign(f.signer, func(*manifest.Payload) {}), []byte(`"payload":"`), []byte(`"payload":"e`), 1)
	cases := []struct {
		name string
		body []byte
		want string
	}{
		{"tampered payload", tampered, "malformed"},
		{"tampered signature-checked bytes", flipPayload(t, sign(f.signer, func(*manifest.Payload) {})), "does not match the payload"},
		{"untrusted key", sign(intruder, func(*manifest.Payload) {}), "none of which is trusted"},
		{"other channel", sign(f.signer, func(p *manifest.Payload) { p.Channel = "staging" }), `signed for channel "staging"`},
		{"lower revision after a higher one", getObj(t, f.store, "channels/prod/1.json"), "revision 1 is older than accepted revision 2"},
		{"expired", sign(f.signer, func(p *manifest.Payload) {
			p.PublishedAt = p.PublishedAt.Add(-48 * time.Hour)
			p.ExpiresAt = p.PublishedAt.Add(time.Hour)
		}), "manifest expired"},
		{"invalid store path", sign(f.signer, func(p *manifest.Payload) { p.StorePath = "/tmp/evil" }), "invalid store path"},
		{"oversized body", bytes.Repeat([]byte("x"), manifest.MaxBodySize+1), "manifest too large"},
		{"equivocation", sign(f.signer, func(p *manifest.Payload) { p.Revision = 2; p.Message = "same revision, other content" }), "equivocation"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			putObj(t, f.store, "channels/prod.json", c.body)
			r := d.mustOnce(t, 3)
			if d.current(t) != f.b {
				t.Fatalf("profile moved to %s", d.current(t))
			}
			expectSwitches(t, d, "switch "+f.b)
			for _, st := range []status.Status{d.localStatus(t), *d.remoteStatus(t)} {
				if st.State != status.Rejected || !strings.Contains(st.LastError, c.want) || st.Revision != 2 || st.StorePath != f.b {
					t.Fatalf("status %+v, want rejected with %q", st, c.want)
				}
			}
			if !strings.Contains(r.stderr, c.want) {
				t.Fatalf("log lacks the reason %q:\n%s", c.want, r.stderr)
			}
		})
	}
	// The genuine manifest is still accepted: rejections did not poison state.
	putObj(t, f.store, "channels/prod.json", genuine.Data)
	d.mustOnce(t, 0)
	if st := d.localStatus(t); st.State != status.UpToDate || st.Revision != 2 {
		t.Fatalf("after restoring: %+v", st)
	}
}

func forgetETag(t *testing.T, d *device) {
	p := filepath.Join(d.stateDir, "state.json")
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	var st map[string]any
	json.Unmarshal(b, &st)
	st["channels"].(map[string]any)["prod"].(map[string]any)["etag"] = ""
	os.WriteFile(p, testenv.MustJSON(t, st), 0o600)
}

func flipPayload(t *testing.T, env []byte) []byte {
	var e map[string]any
	json.Unmarshal(env, &e)
	p := e["payload"].(string)
	// Change one base64 character in the middle: still base64, other bytes.
	i := len(p) / 2
	c := byte('A')
	if p[i] == 'A' {
		c = 'B'
	}
	e["payload"] = p[:i] + string(c) + p[i+1:]
	out, _ := json.Marshal(e)
	return out
}

func getObj(t *testing.T, s bucket.Store, key string) []byte {
	o, err := s.Get(context.Background(), key, bucket.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return o.Data
}

func putObj(t *testing.T, s bucket.Store, key string, b []byte) {
	if _, err := bucket.PutBytes(context.Background(), s, key, b, bucket.PutOptions{}); err != nil {
		t.Fatal(err)
	}
}

// TestHealthCheckRollback: a failing health check (exit 1, then a hang
// past the timeout) and a failing switch roll back to the previous system,
// and the revision is not retried.
func TestHealthCheckRollback(t *testing.T) {
	f := newFleet(t, "file")
	d := f.device(t, "kiosk-1")
	f.publish(t, f.a)
	d.mustOnce(t, 0)

	f.publish(t, f.b) // revision 2
	d.mustOnce(t, 1, "--health-check", "true", "--health-check", "echo broken >&2; exit 1")
	if d.current(t) != f.a {
		t.Fatalf("not rolled back: profile -> %s", d.current(t))
	}
	expectSwitches(t, d, "switch "+f.a, "switch "+f.b, "switch "+f.a)
	st := d.remoteStatus(t)
	if st.State != status.RolledBack || !strings.Contains(st.LastError, "health check") || !strings.Contains(st.LastError, "broken") || st.Revision != 1 {
		t.Fatalf("status: %+v", st)
	}
	// Not retried, even with a passing health check now.
	d.mustOnce(t, 0)
	d.mustOnce(t, 0)
	expectSwitches(t, d, "switch "+f.a, "switch "+f.b, "switch "+f.a)
	if st := d.localStatus(t); st.State != status.RolledBack || !strings.Contains(st.LastError, "revision 2 rolled back") {
		t.Fatalf("status no longer says why B is not running: %+v", st)
	}
	// Even when the manifest is read afresh (state's ETag forgotten), the
	// bad revision is skipped, and the status says so.
	forgetETag(t, d)
	d.mustOnce(t, 0)
	expectSwitches(t, d, "switch "+f.a, "switch "+f.b, "switch "+f.a)
	if st := d.localStatus(t); !strings.Contains(st.LastError, "marked bad") {
		t.Fatalf("status does not say why B is skipped: %+v", st)
	}

	// The same system under a new revision is not retried either.
	f.publish(t, f.b, func(p *manifest.Payload) { p.Message = "B again" }) // revision 3
	d.mustOnce(t, 0)
	expectSwitches(t, d, "switch "+f.a, "switch "+f.b, "switch "+f.a)

	// A hang past the timeout.
	f.publish(t, f.c) // revision 4
	start := time.Now()
	d.mustOnce(t, 1, "--health-check", "sleep 60", "--health-timeout", "1s")
	if time.Since(start) > 30*time.Second {
		t.Fatalf("health check timeout not enforced (%s)", time.Since(start))
	}
	if d.current(t) != f.a {
		t.Fatal("not rolled back after a hanging health check")
	}
	if st := d.localStatus(t); st.State != status.RolledBack || !strings.Contains(st.LastError, "timed out after 1s") {
		t.Fatalf("status: %+v", st)
	}

	// A switch-to-configuration that fails.
	f.publish(t, f.bad) // revision 5
	d.mustOnce(t, 1)
	if d.current(t) != f.a {
		t.Fatal("not rolled back after a failing switch")
	}
	if st := d.localStatus(t); st.State != status.RolledBack || !strings.Contains(st.LastError, "switch-to-configuration switch failed") {
		t.Fatalf("status: %+v", st)
	}
	// The next good build goes through.
	f.publish(t, f.d) // revision 6
	d.mustOnce(t, 0)
	if d.current(t) != f.d || d.localStatus(t).Revision != 6 {
		t.Fatalf("revision 6 not applied: %s %+v", d.current(t), d.localStatus(t))
	}
}

// TestCrashMidSwitch: the agent SIGKILLed in the middle of a switch
// recovers on its next start to a healthy system with consistent state.
func TestCrashMidSwitch(t *testing.T) {
	f := newFleet(t, "file")
	d := f.device(t, "kiosk-1")
	f.publish(t, f.a)
	d.mustOnce(t, 0)
	f.publish(t, f.b)

	hang := filepath.Join(t.TempDir(), "hang")
	os.WriteFile(hang, nil, 0o644)
	cmd := exec.Command(agentBin, d.args()...)
	cmd.Env = append(os.Environ(), "NIX_OTA_TEST_LOG="+d.sw, "NIX_OTA_TEST_HANG="+hang)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for len(d.switches(t)) < 2 {
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatal("agent never reached the switch")
		}
		time.Sleep(50 * time.Millisecond)
	}
	cmd.Process.Signal(syscall.SIGKILL) // the agent only; its switch script lives on
	cmd.Wait()
	var st map[string]any
	b, _ := os.ReadFile(filepath.Join(d.stateDir, "state.json"))
	json.Unmarshal(b, &st)
	if st["pending"] == nil {
		t.Fatalf("no pending transaction recorded before the switch:\n%s", b)
	}
	os.Remove(hang) // the orphaned switch finishes
	time.Sleep(300 * time.Millisecond)

	r := d.mustOnce(t, 0)
	if !strings.Contains(r.stderr, "recover:") {
		t.Fatalf("no recovery logged:\n%s", r.stderr)
	}
	if d.current(t) != f.b {
		t.Fatalf("profile -> %s, want B", d.current(t))
	}
	b, _ = os.ReadFile(filepath.Join(d.stateDir, "state.json"))
	st = nil
	json.Unmarshal(b, &st)
	applied, _ := st["applied"].(map[string]any)
	if st["pending"] != nil || applied["storePath"] != f.b || applied["revision"] != float64(2) {
		t.Fatalf("state not consistent after recovery:\n%s", b)
	}
	if s := d.localStatus(t); s.State != status.UpToDate || s.Revision != 2 || s.StorePath != f.b {
		t.Fatalf("status: %+v", s)
	}
	// The switch ran again to completion; nothing else.
	sw := d.switches(t)
	if sw[len(sw)-1] != "switch "+f.b {
		t.Fatalf("switches: %v", sw)
	}
}

// TestScopedCredentials: a device whose credentials carry the documented
// device policy can poll and check in, and MinIO refuses it everything
// else: channels, other devices' status, the cache.
func TestScopedCredentials(t *testing.T) {
	f := newFleet(t, "minio")
	policy, err := os.ReadFile("../examples/policies/device-policy.json")
	if err != nil {
		t.Fatal(err)
	}
	doc := strings.NewReplacer("BUCKET", f.bucketName, "DEVICE_ID", "kiosk-1").Replace(string(policy))
	sts, err := credentials.NewSTSAssumeRole("http://"+f.minio.Endpoint, credentials.STSAssumeRoleOptions{
		AccessKey: f.minio.AccessKey, SecretKey: f.minio.SecretKey, Policy: doc, DurationSeconds: 3600,
	})
	if err != nil {
		t.Fatal(err)
	}
	v, err := sts.GetWithContext(&credentials.CredContext{})
	if err != nil {
		t.Fatalf("assume role with the device policy: %v", err)
	}
	f.credsFile = writeCreds(t, v.AccessKeyID, v.SecretAccessKey, v.SessionToken)
	d := f.device(t, "kiosk-1")
	f.publish(t, f.a)
	d.mustOnce(t, 0)
	if d.current(t) != f.a || d.remoteStatus(t).Revision != 1 {
		t.Fatal("device with scoped credentials did not update and check in")
	}
	dev, err := bucket.Open(f.url, bucket.Options{Credentials: bucket.StaticCredentials(v.AccessKeyID, v.SecretAccessKey, v.SessionToken)})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, key := range []string{"channels/x.json", "channels/prod.json", "channels/prod/9.json", "devices/202611260900/kiosk-2.json", "devices/202611260900/x/kiosk-2.json", "devices/zz/kiosk-1.json", "devices/kiosk-1.json", "devices/kiosk-1/status.json", "cache/nix-cache-info", "index.html", "nix-ota.json"} {
		if _, err := bucket.PutBytes(ctx, dev, key, []byte("{}"), bucket.PutOptions{}); err == nil || !strings.Contains(err.Error(), "access denied") {
			t.Errorf("device wrote %s: %v", key, err)
		}
	}
	if err := dev.Delete(ctx, "channels/prod.json"); err == nil {
		t.Error("device deleted the channel manifest")
	}
	if _, err := bucket.PutBytes(ctx, dev, bucket.CheckinKey("kiosk-1", time.Now()), []byte("{}"), bucket.PutOptions{}); err != nil {
		t.Errorf("device cannot write its own status: %v", err)
	}
}

// TestDaemonAndStatus: daemon mode polls on its interval, applies what is
// published while it runs, and stops cleanly on SIGTERM; `status` prints
// what it reported.
func TestDaemonAndStatus(t *testing.T) {
	f := newFleet(t, "file")
	d := f.device(t, "kiosk-1")
	f.publish(t, f.a)
	args := d.args()
	args[0] = "daemon"
	cmd := exec.Command(agentBin, append(args, "--interval", "1s", "--jitter", "100ms")...)
	cmd.Env = append(os.Environ(), "NIX_OTA_TEST_LOG="+d.sw)
	var se bytes.Buffer
	cmd.Stderr = &se
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor := func(what string, ok func() bool) {
		deadline := time.Now().Add(30 * time.Second)
		for !ok() {
			if time.Now().After(deadline) {
				cmd.Process.Kill()
				t.Fatalf("daemon: %s never happened\n%s", what, se.String())
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	waitFor("switch to A", func() bool { return len(d.switches(t)) == 1 })
	f.publish(t, f.b)
	waitFor("switch to B", func() bool { return len(d.switches(t)) == 2 })
	// A second agent on the same state directory is refused while the daemon runs.
	if r := d.once(t); r.code != 1 || !strings.Contains(r.stderr, "another nix-ota-agent is running") {
		t.Fatalf("second agent: exit %d %s", r.code, r.stderr)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("daemon exit: %v\n%s", err, se.String())
		}
	case <-time.After(20 * time.Second):
		cmd.Process.Kill()
		t.Fatal("daemon did not stop on SIGTERM")
	}
	out, err := exec.Command(agentBin, "status", "--state-dir", d.stateDir).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "up-to-date") || !strings.Contains(string(out), f.b) {
		t.Fatalf("status: %v\n%s", err, out)
	}
}

func TestCheckConfig(t *testing.T) {
	_, pub := testenv.NewSigner(t, "k")
	dir := t.TempDir()
	good := filepath.Join(dir, "good.json")
	os.WriteFile(good, []byte(`{"bucket":"https://fleet.example.org","channel":"prod","publicKeys":["`+pub.String()+`"],"deviceId":"kiosk-1","interval":"30s"}`), 0o644)
	out, err := exec.Command(agentBin, "check-config", good).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "ok:") {
		t.Fatalf("good config: %v\n%s", err, out)
	}
	for name, body := range map[string]string{
		"typo":        `{"bucket":"https://x","chanel":"prod"}`,
		"no keys":     `{"bucket":"https://x","channel":"prod","deviceId":"a"}`,
		"bad channel": `{"bucket":"https://x","channel":"a b","publicKeys":["` + pub.String() + `"],"deviceId":"a"}`,
		"not json":    `bucket = "x"`,
	} {
		p := filepath.Join(dir, "bad.json")
		os.WriteFile(p, []byte(body), 0o644)
		cmd := exec.Command(agentBin, "check-config", p)
		var se bytes.Buffer
		cmd.Stderr = &se
		err := cmd.Run()
		ee, ok := err.(*exec.ExitError)
		if !ok || ee.ExitCode() != 2 || strings.Count(strings.TrimSpace(se.String()), "\n") != 0 || !strings.Contains(se.String(), "invalid agent configuration") {
			t.Errorf("%s: %v: %q", name, err, se.String())
		}
	}
}

// TestIdlePollOnTheWire: with nothing new, a signed s3:// poll by the real
// binary is exactly one request and less than 1 KB of HTTP, both ways; one
// that writes its signed status is one more, the PUT.
func TestIdlePollOnTheWire(t *testing.T) {
	f := newFleet(t, "minio")
	px, err := benchutil.StartProxy(f.minio.Endpoint)
	if err != nil {
		t.Fatal(err)
	}
	defer px.Close()
	f.agentURL = fmt.Sprintf("s3://%s?endpoint=%s&scheme=http&region=us-east-1", f.bucketName, px.Addr())
	d := f.device(t, "kiosk-1")
	f.publish(t, f.a)
	d.mustOnce(t, 0) // applies A and writes the status
	d.mustOnce(t, 0) // up to date
	px.Reset()
	d.mustOnce(t, 0)                  // idle
	time.Sleep(50 * time.Millisecond) // let the proxy finish counting
	if n := px.Requests.Load(); n != 1 {
		t.Fatalf("idle poll made %d requests, want 1", n)
	}
	if b := px.Up.Load() + px.Down.Load(); b >= 1024 {
		t.Fatalf("idle poll moved %d bytes of HTTP (%d up, %d down), want < 1024", b, px.Up.Load(), px.Down.Load())
	}
	// A poll that writes a (signed) status adds exactly one request: its
	// PUT. Its body is the signed check-in, under 2 KiB.
	time.Sleep(1100 * time.Millisecond)
	px.Reset()
	d.mustOnce(t, 0, "--interval", "1s", "--heartbeat", "1s")
	time.Sleep(50 * time.Millisecond)
	if n := px.Requests.Load(); n != 2 {
		t.Fatalf("a poll with a heartbeat made %d requests, want 2 (the conditional GET and one PUT)", n)
	}
	if st := d.remoteStatus(t); st.State != status.UpToDate {
		t.Fatalf("heartbeat status: %+v", st)
	}
	t.Logf("poll with a signed heartbeat: %d requests, %d bytes up, %d down", px.Requests.Load(), px.Up.Load(), px.Down.Load())
}
