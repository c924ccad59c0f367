// Package benchutil holds what the measurement programs in bench/ share.
package benchutil

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/nix-ota/nix-ota/bucket"
	"github.com/nix-ota/nix-ota/bucket/s3store"
	"github.com/nix-ota/nix-ota/channel"
	"github.com/nix-ota/nix-ota/internal/atomicfile"
	"github.com/nix-ota/nix-ota/internal/testenv"
	"github.com/nix-ota/nix-ota/manifest"
	"github.com/nix-ota/nix-ota/manifest/signing"
)

// Proxy is a loopback TCP proxy that counts bytes and HTTP requests, so a
// benchmark measures what really crosses the wire.
type Proxy struct {
	l        net.Listener
	Up, Down atomic.Int64
	Requests atomic.Int64
	Conns    atomic.Int64
}

// StartProxy listens on a loopback port and forwards to target.
func StartProxy(target string) (*Proxy, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{l: l}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go p.serve(c, target)
		}
	}()
	return p, nil
}

// countingWriter counts bytes and the request lines among them.
type countingWriter struct {
	w       io.Writer
	n       *atomic.Int64
	reqs    *atomic.Int64
	scanReq bool
}

func (cw countingWriter) Write(b []byte) (int, error) {
	cw.n.Add(int64(len(b)))
	if cw.scanReq {
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			line := sc.Text()
			for _, m := range []string{"GET ", "PUT ", "HEAD ", "POST ", "DELETE "} {
				if strings.HasPrefix(line, m) && strings.HasSuffix(line, "HTTP/1.1") {
					cw.reqs.Add(1)
				}
			}
		}
	}
	return cw.w.Write(b)
}

func (p *Proxy) serve(c net.Conn, target string) {
	defer c.Close()
	p.Conns.Add(1)
	u, err := net.Dial("tcp", target)
	if err != nil {
		return
	}
	defer u.Close()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		io.Copy(countingWriter{u, &p.Up, &p.Requests, true}, c)
		u.(*net.TCPConn).CloseWrite()
		wg.Done()
	}()
	go func() {
		io.Copy(countingWriter{c, &p.Down, nil, false}, u)
		c.(*net.TCPConn).CloseWrite()
		wg.Done()
	}()
	wg.Wait()
}

// Reset zeroes the counters.
func (p *Proxy) Reset() { p.Up.Store(0); p.Down.Store(0); p.Requests.Store(0); p.Conns.Store(0) }

// Addr is the proxy's host:port.
func (p *Proxy) Addr() string { return p.l.Addr().String() }

// Close stops accepting connections.
func (p *Proxy) Close() error { return p.l.Close() }

// MinMedMax returns the minimum, median and maximum of xs.
func MinMedMax[T int64 | float64](xs []T) (T, T, T) {
	s := append([]T(nil), xs...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[0], s[len(s)/2], s[len(s)-1]
}

// BuildSystem builds nix/tests/test-system.nix with real Nix, off the
// network (run from the repository root).
func BuildSystem(name string) (string, error) {
	cmd := exec.Command("nix-build", "--no-out-link", "nix/tests/test-system.nix", "--argstr", "name", name, "--argstr", "nonce", name)
	cmd.Env = append(os.Environ(), "NIX_CONFIG=substituters =")
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("nix-build test system: %w", err)
	}
	return strings.TrimSpace(string(out)), nil
}

// ResultsFile collects every bench program's figures.
const ResultsFile = "bench/results.json"

// SaveResult merges one section into bench/results.json.
func SaveResult(section string, v any) error {
	all := map[string]any{}
	if b, err := os.ReadFile(ResultsFile); err == nil {
		json.Unmarshal(b, &all)
	}
	all[section] = v
	all["machine"] = map[string]any{"cpus": runtime.NumCPU(), "goos": runtime.GOOS, "goarch": runtime.GOARCH, "updated": time.Now().UTC().Format(time.RFC3339)}
	b, err := json.MarshalIndent(all, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(ResultsFile, append(b, '\n'), 0o644)
}

// MergeResult sets keys in one section of bench/results.json and keeps
// the section's other keys, which other bench programs write: a
// read-modify-write under a lock shared by every MergeResult on this
// machine, replaced atomically.
func MergeResult(section string, keys map[string]any) error {
	lock, err := os.OpenFile(filepath.Join(os.TempDir(), "nix-ota-bench-results.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return fmt.Errorf("lock bench results: %w", err)
	}
	all := map[string]any{}
	if b, err := os.ReadFile(ResultsFile); err == nil {
		if err := json.Unmarshal(b, &all); err != nil {
			return fmt.Errorf("%s: %w (fix or remove it)", ResultsFile, err)
		}
	}
	sec, _ := all[section].(map[string]any)
	if sec == nil {
		sec = map[string]any{}
	}
	for k, v := range keys {
		sec[k] = v
	}
	all[section] = sec
	all["machine"] = map[string]any{"cpus": runtime.NumCPU(), "goos": runtime.GOOS, "goarch": runtime.GOARCH, "updated": time.Now().UTC().Format(time.RFC3339)}
	b, err := json.MarshalIndent(all, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(ResultsFile, append(b, '\n'), 0o644)
}

// PublishChannel signs a fresh key's manifest for channel "prod" pointing
// at storePath and publishes it; it returns the key devices must trust.
func PublishChannel(ctx context.Context, s bucket.Store, storePath string) (manifest.PublicKey, signing.Key, error) {
	pemBytes, pub, err := signing.Generate("bench", nil)
	if err != nil {
		return manifest.PublicKey{}, signing.Key{}, err
	}
	signer, err := signing.Load(pemBytes, "", nil)
	if err != nil {
		return manifest.PublicKey{}, signing.Key{}, err
	}
	_, err = PublishChannelAs(ctx, s, storePath, pub, signer)
	return pub, signer, err
}

// PublishChannelAs publishes the next revision of "prod" with signer.
func PublishChannelAs(ctx context.Context, s bucket.Store, storePath string, pub manifest.PublicKey, signer signing.Key) (uint64, error) {
	now := time.Now().UTC().Truncate(time.Second)
	p := &manifest.Payload{Schema: 1, Channel: "prod", StorePath: storePath, Substituters: []string{}, PublishedAt: now,
		ExpiresAt: now.Add(24 * time.Hour), Rollout: manifest.Rollout{Percent: 100, Salt: "s"}, Switch: "switch"}
	h, err := channel.Load(ctx, s, "prod", manifest.Trust{Keys: []manifest.PublicKey{pub}})
	if err != nil {
		return 0, err
	}
	res, err := channel.Publish(ctx, s, h, channel.NewDraft(*p, 0), func(q *manifest.Payload) ([]byte, error) {
		return signing.Sign(ctx, q, signer)
	})
	return res.Revision, err
}

// StartMinIOBucket starts a MinIO server on loopback with one empty bucket.
func StartMinIOBucket(ctx context.Context, name string, env ...string) (*testenv.MinIO, error) {
	m, err := testenv.StartMinIO(env...)
	if err != nil {
		return nil, err
	}
	if err := m.Admin().MakeBucket(ctx, name, minio.MakeBucketOptions{}); err != nil {
		m.Stop()
		return nil, err
	}
	return m, nil
}

// Column returns the minimum, median and maximum of one field of samples.
func Column[S any](samples []S, field func(S) int64) (int64, int64, int64) {
	xs := make([]int64, 0, len(samples))
	for _, s := range samples {
		xs = append(xs, field(s))
	}
	return MinMedMax(xs)
}

// ProxiedBucket puts a counting proxy in front of a MinIO server and
// returns an initialised nix-ota bucket, "fleet", reached through it.
func ProxiedBucket(ctx context.Context, m *testenv.MinIO) (*Proxy, string, bucket.Store, error) {
	px, err := StartProxy(m.Endpoint)
	if err != nil {
		return nil, "", nil, err
	}
	url := fmt.Sprintf("s3://fleet?endpoint=%s&scheme=http&region=us-east-1", px.Addr())
	store, err := s3store.Open(url, bucket.Options{}, m.Creds())
	if err != nil {
		return nil, "", nil, err
	}
	if _, err := bucket.Init(ctx, store, "bench", time.Now()); err != nil {
		return nil, "", nil, err
	}
	return px, url, store, nil
}

// ModDir downloads one module version through the module proxy, as
// GOTOOLCHAIN does (a no-op when the module cache has it), and returns
// its extracted tree.
func ModDir(ctx context.Context, mod string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "go", "mod", "download", "-json", mod).Output()
	if err != nil {
		return "", fmt.Errorf("go mod download %s: %w (check GOPROXY and the network)", mod, err)
	}
	var m struct{ Dir, Error string }
	if err := json.Unmarshal(out, &m); err != nil || m.Dir == "" {
		return "", fmt.Errorf("go mod download %s: no Dir in its output (%s)", mod, m.Error)
	}
	return m.Dir, nil
}
