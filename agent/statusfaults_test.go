package agent_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/nix-ota/nix-ota/agent"
	"github.com/nix-ota/nix-ota/bucket"
	"github.com/nix-ota/nix-ota/status"
)

// deviceCredentials assumes a role on MinIO with the documented device
// policy for deviceID and writes the temporary credentials to a file.
func deviceCredentials(t *testing.T, f *fleet, deviceID string) string {
	t.Helper()
	policy, err := os.ReadFile("../examples/policies/device-policy.json")
	if err != nil {
		t.Fatal(err)
	}
	doc := strings.NewReplacer("BUCKET", f.bucketName, "DEVICE_ID", deviceID).Replace(string(policy))
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
	return writeCreds(t, v.AccessKeyID, v.SecretAccessKey, v.SessionToken)
}

// TestStatusNotWritten: a device whose credentials may not write its
// status (here, another device's credentials) still updates, but every
// poll exits ExitStatusNotWritten, naming the refused write, until the
// status gets through; then 0.
func TestStatusNotWritten(t *testing.T) {
	f := newFleet(t, "minio")
	f.credsFile = deviceCredentials(t, f, "kiosk-2")
	d := f.device(t, "kiosk-1")
	f.publish(t, f.a)
	r := d.mustOnce(t, agent.ExitStatusNotWritten)
	if !strings.Contains(r.stderr, "status: write devices/") || !strings.Contains(r.stderr, "/kiosk-1.json to ") || !strings.Contains(r.stderr, "access denied") {
		t.Fatalf("the refused status write is not named:\n%s", r.stderr)
	}
	consistent(t, d, f.a) // the update itself went through
	if st := d.localStatus(t); st.State != status.UpToDate || st.StorePath != f.a {
		t.Fatalf("local status: %+v", st)
	}
	if _, err := bucket.LatestCheckin(context.Background(), f.store, "kiosk-1"); !errors.Is(err, bucket.ErrNotFound) {
		t.Fatalf("a status blob with refused credentials? %v", err)
	}
	// An idle poll retries the write, and fails the same way.
	r = d.mustOnce(t, agent.ExitStatusNotWritten)
	if !strings.Contains(r.stderr, "access denied") {
		t.Fatalf("idle poll did not retry the status:\n%s", r.stderr)
	}
	// The device's own credentials: the status goes out, exit 0.
	f.credsFile = deviceCredentials(t, f, "kiosk-1")
	d.mustOnce(t, 0)
	if st := d.remoteStatus(t); st.State != status.UpToDate || st.StorePath != f.a {
		t.Fatalf("remote status: %+v", st)
	}
}

// TestNoStatusBucketWarning: following an http(s) bucket with no status
// bucket, nothing is ever reported to publishers; the agent says so once
// when it starts, and carries on (exit 0: the local status is written).
func TestNoStatusBucketWarning(t *testing.T) {
	f := newFleet(t, "file")
	srv := httptest.NewServer(http.FileServer(http.Dir(strings.TrimPrefix(f.url, "file://"))))
	defer srv.Close()
	d := f.device(t, "kiosk-1", "--bucket", srv.URL)
	f.publish(t, f.a)
	const warning = "warning: no statusBucket: " + "http://"
	r := d.mustOnce(t, 0)
	if strings.Count(r.stderr, warning) != 1 || !strings.Contains(r.stderr, "set statusBucket") {
		t.Fatalf("want one warning about the missing status bucket:\n%s", r.stderr)
	}
	consistent(t, d, f.a)
	if st := d.localStatus(t); st.State != status.UpToDate {
		t.Fatalf("local status: %+v", st)
	}
	// The daemon warns once, not at every poll.
	args := append(d.args(), "--interval", "1s", "--jitter", "1ms")
	args[0] = "daemon"
	cmd := exec.Command(agentBin, args...)
	cmd.Env = append(os.Environ(), "NIX_OTA_TEST_LOG="+d.sw)
	var se strings.Builder
	cmd.Stderr = &se
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3500 * time.Millisecond)
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("daemon: %v\n%s", err, se.String())
	}
	if n := strings.Count(se.String(), warning); n != 1 {
		t.Fatalf("daemon warned %d times:\n%s", n, se.String())
	}
	// A file:// bucket is its own status bucket: no warning.
	d2 := f.device(t, "kiosk-2")
	if r := d2.mustOnce(t, 0); strings.Contains(r.stderr, "warning: no statusBucket") {
		t.Fatalf("warned with a writable bucket:\n%s", r.stderr)
	}
}
