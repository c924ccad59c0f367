package agent_test

// What the agent checks before it acts, and what `check-config` checks,
// with the real binary, real files and mounts, and real MinIO.

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/nix-ota/nix-ota/agent"
	"github.com/nix-ota/nix-ota/bucket"
	"github.com/nix-ota/nix-ota/internal/testenv"
	"github.com/nix-ota/nix-ota/status"
)

// runAgent runs the agent binary with args, as uid (0: this process's
// user), and returns what it did.
func runAgent(t *testing.T, bin string, uid uint32, args ...string) run {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "AWS_EC2_METADATA_DISABLED=true")
	if uid != 0 {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
	}
	r := runCmd(t, cmd)
	return r
}

// TestNotRoot: once and daemon refuse to start as any user but root, with
// one line saying what to do, before they touch the state directory;
// status and check-config, which install nothing, still work.
func TestNotRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("TestNotRoot runs the agent as another user, which needs root (the agent tests run as root: docs/testing.md)")
	}
	const nobody = 65534
	// Directly under the temporary directory: t.TempDir's parent is
	// closed to other users.
	dir, err := os.MkdirTemp("", "nix-ota-not-root-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "nix-ota-agent")
	copyFile(t, agentBin, bin, 0o755)
	_, pub := testenv.NewSigner(t, "k")
	stateDir := filepath.Join(dir, "state")
	cfg := filepath.Join(dir, "agent.json")
	writeJSON(t, cfg, map[string]any{"bucket": "file://" + dir, "channel": "prod", "publicKeys": []string{pub.String()},
		"deviceId": "kiosk-1", "stateDir": stateDir, "profile": filepath.Join(dir, "profile")})
	const want = "nix-ota-agent must run as root (it installs systems); run it from the NixOS module's service or with sudo\n"
	for _, cmd := range []string{"once", "daemon"} {
		r := runAgent(t, bin, nobody, cmd, "--config", cfg)
		if r.code != agent.ExitUsage || r.stderr != want {
			t.Errorf("%s as uid %d: exit %d, stderr %q; want exit %d, %q", cmd, nobody, r.code, r.stderr, agent.ExitUsage, want)
		}
	}
	if _, err := os.Stat(stateDir); !os.IsNotExist(err) {
		t.Fatalf("the state directory was touched before the refusal: %v", err)
	}
	if r := runAgent(t, bin, nobody, "check-config", cfg); r.code != 0 {
		t.Errorf("check-config as uid %d: exit %d %s", nobody, r.code, r.stderr)
	}
	if r := runAgent(t, bin, nobody, "status", "--config", cfg); strings.Contains(r.stderr, "must run as root") || !strings.Contains(r.stderr, "no status yet") {
		t.Errorf("status as uid %d: exit %d %s", nobody, r.code, r.stderr)
	}
	// Root passes the check (and then finds no channel in this bucket).
	if r := runAgent(t, bin, 0, "once", "--config", cfg); strings.Contains(r.stderr, "must run as root") {
		t.Errorf("once as root: %s", r.stderr)
	}
}

func copyFile(t *testing.T, from, to string, mode os.FileMode) {
	t.Helper()
	src, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
}

func writeJSON(t *testing.T, path string, v any) {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestStateDirUnwritableAtStart: a state directory that is read-only when
// the agent starts (a read-only bind mount), or that cannot be created
// (below a read-only mount), stops once and daemon with exit 4
// (ExitStateNotSaved) and the reason, and nothing is switched; once it is
// writable again the agent goes on.
func TestStateDirUnwritableAtStart(t *testing.T) {
	f := newFleet(t, "file")
	d := stateDevice(t, f, stateFaults[0])
	f.publish(t, f.a)
	d.mustOnce(t, 0)
	f.publish(t, f.b)
	mustRun(t, "mount", "--bind", d.stateDir, d.stateDir)
	mustRun(t, "mount", "-o", "remount,bind,ro", d.stateDir)
	for _, daemon := range []bool{false, true} {
		r := d.runMode(t, daemon)
		if r.code != agent.ExitStateNotSaved || !strings.Contains(r.stderr, "state not saved: state directory "+d.stateDir) ||
			!strings.Contains(r.stderr, "read-only file system") || !strings.Contains(r.stderr, "make it writable") {
			t.Fatalf("read-only state directory at start (daemon %v): exit %d, want %d\n%s", daemon, r.code, agent.ExitStateNotSaved, r.stderr)
		}
	}
	expectSwitches(t, d, "switch "+f.a)

	// A state directory to be created below a read-only mount.
	below := f.device(t, "kiosk-below", "--state-dir", filepath.Join(d.stateDir, "sub", "state"))
	if r := below.once(t); r.code != agent.ExitStateNotSaved || !strings.Contains(r.stderr, "read-only file system") {
		t.Fatalf("state directory that cannot be created: exit %d\n%s", r.code, r.stderr)
	}

	mustRun(t, "umount", d.stateDir)
	d.mustOnce(t, 0)
	consistent(t, d, f.b)
}

// deviceConfigFile writes the device's configuration as a JSON file (what
// check-config reads), with extra fields.
func (d *device) configFile(t *testing.T, extra map[string]any) string {
	t.Helper()
	cfg := d.config(d.f.pub.String())
	if d.f.credsFile != "" {
		cfg["statusCredentials"] = d.f.credsFile
	}
	for k, v := range extra {
		cfg[k] = v
	}
	p := filepath.Join(t.TempDir(), "agent.json")
	writeJSON(t, p, cfg)
	return p
}

// TestCheckConfigFiles: check-config --files names every file or
// directory of the configuration that is missing or unusable, one line
// each, and exits 2 (an identity key too: one that is there must be
// usable, one that is not must be creatable, and none is made); plain check-config (what the NixOS module runs at
// build time, where the device's secrets are absent) checks content only.
func TestCheckConfigFiles(t *testing.T) {
	f := newFleet(t, "file")
	d := f.device(t, "kiosk-1")
	f.credsFile = writeCreds(t, "AKIA", "secret", "")
	good := d.configFile(t, map[string]any{"prometheusFile": filepath.Join(t.TempDir(), "nix-ota.prom")})
	if r := runAgent(t, agentBin, 0, "check-config", "--files", good); r.code != 0 || !strings.HasPrefix(r.stdout, "ok: ") {
		t.Fatalf("check-config --files of a good configuration: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if _, err := os.Stat(filepath.Join(d.stateDir, "identity.key")); !os.IsNotExist(err) {
		t.Fatalf("check-config --files made an identity key: %v", err)
	}
	missing := filepath.Join(t.TempDir(), "no-such-credentials")
	garbled := filepath.Join(t.TempDir(), "garbled")
	os.WriteFile(garbled, []byte("aws_access_key_id = x\n"), 0o600)
	openKey := filepath.Join(t.TempDir(), "identity.key")
	os.WriteFile(openKey, pkcs8PEM(t, ed25519.NewKeyFromSeed(make([]byte, 32))), 0o644)
	os.Chmod(openKey, 0o644)
	cases := []struct {
		name  string
		extra map[string]any
		want  []string // one line each
	}{
		{"missing credentials", map[string]any{"statusCredentials": missing}, []string{"statusCredentials " + missing + ": credentials file: open " + missing + ": no such file or directory"}},
		{"garbled credentials", map[string]any{"statusCredentials": garbled}, []string{"statusCredentials " + garbled + ": "}},
		{"no textfile directory", map[string]any{"prometheusFile": "/nonexistent/nix-ota.prom"}, []string{"prometheusFile /nonexistent/nix-ota.prom: stat /nonexistent: no such file or directory"}},
		{"no bucket directory", map[string]any{"bucket": "file:///nonexistent/bucket"}, []string{
			"bucket file:///nonexistent/bucket: /nonexistent/bucket: no such file or directory",
			"statusBucket file:///nonexistent/bucket: stat /nonexistent/bucket: no such file or directory", // it defaults to the bucket
		}},
		{"identity key readable by others", map[string]any{"identityKey": openKey}, []string{"identity key " + openKey + ": mode 0644 gives group or others access"}},
		{"identity key under a file", map[string]any{"identityKey": garbled + "/identity.key"}, []string{"identity key " + garbled + "/identity.key: cannot open it: "}},
		{"three at once", map[string]any{"statusCredentials": missing, "prometheusFile": "/nonexistent/nix-ota.prom", "statusBucket": "file:///nonexistent/status"},
			[]string{"statusCredentials " + missing, "prometheusFile /nonexistent/", "statusBucket file:///nonexistent/status: stat /nonexistent/status: no such file or directory"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := d.configFile(t, c.extra)
			if r := runAgent(t, agentBin, 0, "check-config", p); r.code != 0 {
				t.Fatalf("plain check-config checked files: exit %d %s", r.code, r.stderr)
			}
			r := runAgent(t, agentBin, 0, "check-config", "--files", p)
			lines := strings.Split(strings.TrimSpace(r.stderr), "\n")
			if r.code != agent.ExitUsage || len(lines) != len(c.want) {
				t.Fatalf("exit %d, %d lines, want exit %d and %d lines:\n%s", r.code, len(lines), agent.ExitUsage, len(c.want), r.stderr)
			}
			for i, w := range c.want {
				if !strings.Contains(lines[i], "nix-ota-agent check-config: "+p+": "+w) {
					t.Errorf("line %d: %q, want it to contain %q", i+1, lines[i], w)
				}
			}
		})
	}
}

// TestCheckConfigOnline: check-config --online against real MinIO reads
// and verifies the channel manifest with the configured keys, says what
// the next poll would do, and writes the device's status blob, changing
// neither the state nor the system. With credentials that may not write
// this device's status it says so (exit 5); with a key that did not sign
// the manifest it reports the rejection (exit 3).
func TestCheckConfigOnline(t *testing.T) {
	f := newFleet(t, "minio")
	f.credsFile = deviceCredentials(t, f, "kiosk-1")
	d := f.device(t, "kiosk-1")
	f.publish(t, f.a)
	d.mustOnce(t, 0)
	f.publish(t, f.b)
	stateBefore, err := os.ReadFile(filepath.Join(d.stateDir, "state.json"))
	if err != nil {
		t.Fatal(err)
	}
	if latest, err := bucket.LatestCheckin(t.Context(), f.store, "kiosk-1"); err != nil {
		t.Fatal(err)
	} else if err := f.store.Delete(t.Context(), latest.Key); err != nil {
		t.Fatal(err)
	}

	cfg := d.configFile(t, nil)
	r := runAgent(t, agentBin, 0, "check-config", "--online", cfg)
	if r.code != 0 || !strings.Contains(r.stdout, "ok: manifest: channels/prod.json on ") ||
		!strings.Contains(r.stdout, "revision 2 verifies; for system "+f.b+" this device would: apply") ||
		!strings.Contains(r.stdout, "ok: status: wrote devices/") || !strings.Contains(r.stdout, "/kiosk-1.json to ") {
		t.Fatalf("check-config --online with the device's credentials: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if st := d.remoteStatus(t); st.State != status.UpToDate || st.Revision != 1 || st.StorePath != f.a {
		t.Fatalf("status blob written by check-config --online: %+v", st)
	}
	if after, _ := os.ReadFile(filepath.Join(d.stateDir, "state.json")); !bytes.Equal(after, stateBefore) {
		t.Fatalf("check-config --online changed the state:\n%s\nwas:\n%s", after, stateBefore)
	}
	expectSwitches(t, d, "switch "+f.a)

	// Another device's credentials: the manifest reads, the write is refused.
	f.credsFile = deviceCredentials(t, f, "kiosk-2")
	r = runAgent(t, agentBin, 0, "check-config", "--online", d.configFile(t, nil))
	if r.code != agent.ExitStatusNotWritten || !strings.Contains(r.stdout, "this device would: apply") ||
		!strings.Contains(r.stderr, "status: write devices/") || !strings.Contains(r.stderr, "/kiosk-1.json to ") || !strings.Contains(r.stderr, "access denied") {
		t.Fatalf("check-config --online with denied credentials: exit %d, want %d\n%s%s", r.code, agent.ExitStatusNotWritten, r.stdout, r.stderr)
	}

	// A key that did not sign the manifest.
	f.credsFile = deviceCredentials(t, f, "kiosk-1")
	_, other := testenv.NewSigner(t, "other")
	r = runAgent(t, agentBin, 0, "check-config", "--online", d.configFile(t, map[string]any{"publicKeys": []string{other.String()}}))
	if r.code != agent.ExitRejected || !strings.Contains(r.stderr, "manifest: channels/prod.json on ") || !strings.Contains(r.stderr, "is rejected: ") {
		t.Fatalf("check-config --online with an untrusted signer: exit %d, want %d\n%s%s", r.code, agent.ExitRejected, r.stdout, r.stderr)
	}
	expectSwitches(t, d, "switch "+f.a)
}
