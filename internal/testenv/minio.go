// Package testenv starts the real parts tests run against: a MinIO server
// on a loopback port, and (in nix.go) real Nix. A missing part fails the
// test with an install hint; it is never a silent skip, because `make test`
// installs every part first.
package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// MinIO is a running MinIO server owned by the test binary.
type MinIO struct {
	Endpoint  string // 127.0.0.1:PORT
	AccessKey string
	SecretKey string
	Dir       string
	cmd       *exec.Cmd
	client    *minio.Client
}

var (
	minioOnce sync.Once
	minioSrv  *MinIO
	minioErr  error
)

// MinIOBinary finds the server binary: $NIX_OTA_MINIO, `minio` on PATH, or
// the cache that `make test` builds into.
func MinIOBinary() (string, error) {
	if p := os.Getenv("NIX_OTA_MINIO"); p != "" {
		return p, nil
	}
	if p, err := exec.LookPath("minio"); err == nil {
		return p, nil
	}
	home, _ := os.UserHomeDir()
	p := filepath.Join(home, ".cache", "nix-ota", "bin", "minio")
	if _, err := os.Stat(p); err == nil {
		return p, nil
	}
	return "", fmt.Errorf("minio server binary not found: run `make test-deps` (it builds MinIO into ~/.cache/nix-ota/bin) or set NIX_OTA_MINIO")
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// FreePort returns a loopback TCP port that was free a moment ago.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// StartMinIO starts a MinIO server on loopback with a temporary data
// directory and random credentials; env adds settings (e.g.
// MINIO_SITE_REGION=…). The caller stops it.
func StartMinIO(env ...string) (*MinIO, error) {
	bin, err := MinIOBinary()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "nix-ota-minio-")
	if err != nil {
		return nil, err
	}
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	cport, err := FreePort()
	if err != nil {
		return nil, err
	}
	m := &MinIO{Endpoint: fmt.Sprintf("127.0.0.1:%d", port), AccessKey: "ak" + randHex(8), SecretKey: "sk" + randHex(16), Dir: dir}
	cmd := exec.Command(bin, "server", "--quiet", "--address", m.Endpoint, "--console-address", fmt.Sprintf("127.0.0.1:%d", cport), filepath.Join(dir, "data"))
	cmd.Env = append(os.Environ(),
		"MINIO_ROOT_USER="+m.AccessKey, "MINIO_ROOT_PASSWORD="+m.SecretKey,
		"MINIO_BROWSER=off", "MINIO_UPDATE=off", "MINIO_CALLHOME_ENABLE=off")
	cmd.Env = append(cmd.Env, env...)
	logf, err := os.Create(filepath.Join(dir, "minio.log"))
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	// The server dies with the test binary, whatever way it ends.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start minio: %w", err)
	}
	m.cmd = cmd
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get("http://" + m.Endpoint + "/minio/health/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			m.Stop()
			log, _ := os.ReadFile(filepath.Join(dir, "minio.log"))
			return nil, fmt.Errorf("minio did not become ready in 60s: %s", strings.TrimSpace(string(log)))
		}
		time.Sleep(100 * time.Millisecond)
	}
	m.client, err = minio.New(m.Endpoint, &minio.Options{Creds: credentials.NewStaticV4(m.AccessKey, m.SecretKey, ""), Region: "us-east-1"})
	if err != nil {
		m.Stop()
		return nil, err
	}
	return m, nil
}

// Stop kills the server and removes its data.
func (m *MinIO) Stop() {
	if m.cmd != nil && m.cmd.Process != nil {
		syscall.Kill(-m.cmd.Process.Pid, syscall.SIGKILL)
		m.cmd.Wait()
	}
	os.RemoveAll(m.Dir)
}

// SharedMinIO returns one server per test binary, started on first use.
// Call StopShared from TestMain after m.Run.
func SharedMinIO(t testing.TB) *MinIO {
	t.Helper()
	minioOnce.Do(func() { minioSrv, minioErr = StartMinIO() })
	if minioErr != nil {
		t.Fatalf("MinIO is required for this test: %v", minioErr)
	}
	return minioSrv
}

// StopShared stops the shared server if one was started.
func StopShared() {
	if minioSrv != nil {
		minioSrv.Stop()
	}
}

// PID is the server's process id (benchmarks read its CPU time).
func (m *MinIO) PID() int { return m.cmd.Process.Pid }

// Admin returns a client with the root credentials.
func (m *MinIO) Admin() *minio.Client { return m.client }

// NewBucket makes a fresh bucket and returns its s3:// URL.
func (m *MinIO) NewBucket(t testing.TB) (name, url string) {
	t.Helper()
	name = "t" + strings.ToLower(randHex(6))
	if err := m.client.MakeBucket(context.Background(), name, minio.MakeBucketOptions{}); err != nil {
		t.Fatalf("make bucket: %v", err)
	}
	return name, m.URL(name)
}

// URL is the s3:// URL of a bucket on this server.
func (m *MinIO) URL(bucket string) string {
	return fmt.Sprintf("s3://%s?endpoint=%s&scheme=http&region=us-east-1", bucket, m.Endpoint)
}

// Creds returns the root credentials.
func (m *MinIO) Creds() *credentials.Credentials {
	return credentials.NewStaticV4(m.AccessKey, m.SecretKey, "")
}

// Env is the environment a CLI subprocess needs to reach this server as root.
func (m *MinIO) Env() []string {
	return []string{"AWS_ACCESS_KEY_ID=" + m.AccessKey, "AWS_SECRET_ACCESS_KEY=" + m.SecretKey, "AWS_EC2_METADATA_DISABLED=true", "AWS_REGION=us-east-1"}
}

// Main runs a package's tests and stops the shared server afterwards.
func Main(m interface{ Run() int }) {
	code := m.Run()
	StopShared()
	os.Exit(code)
}
