package agent_test

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nix-ota/nix-ota/internal/testenv"
)

// syncBuffer is a bytes.Buffer a child process writes while the test reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// deviceConfig is the device's JSON configuration trusting keys.
func (d *device) config(keys ...string) map[string]any {
	return map[string]any{
		"bucket": d.f.url, "channel": "prod", "publicKeys": keys, "deviceId": d.id,
		"stateDir": d.stateDir, "profile": d.profile, "substituters": []string{d.f.substitute},
		"trustedCacheKeys": []string{d.f.cache.PublicKey}, "switchVia": "direct",
		"healthTimeout": "2s", "interval": "1s", "jitter": "100ms",
	}
}

// installConfig points the symlink link at a new file holding cfg, the way
// a NixOS switch replaces /etc/nix-ota/agent.json (a symlink into the store).
func installConfig(t *testing.T, link string, cfg any) {
	t.Helper()
	b, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.CreateTemp(filepath.Dir(link), "store-*.json")
	if err != nil {
		t.Fatal(err)
	}
	f.Write(b)
	f.Close()
	tmp := link + ".new"
	if err := os.Symlink(f.Name(), tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, link); err != nil {
		t.Fatal(err)
	}
}

// TestDaemonReloadsConfig: a running daemon takes a changed configuration
// file without a restart. It refuses a manifest signed by a key it does not
// trust; once the file trusts that key too, it verifies the same manifest
// again and applies it. A broken or missing file is logged once with its
// reason and the running configuration kept: the next update still applies.
// So is a file naming another identity key.
func TestDaemonReloadsConfig(t *testing.T) {
	f := newFleet(t, "file")
	d := f.device(t, "kiosk-1")
	keyB, pubB := testenv.NewSigner(t, "fleet-2")
	link := filepath.Join(t.TempDir(), "agent.json")
	installConfig(t, link, d.config(f.pub.String()))

	cmd := exec.Command(agentBin, "daemon", "--config", link)
	cmd.Env = append(os.Environ(), "NIX_OTA_TEST_LOG="+d.sw)
	var log syncBuffer
	cmd.Stderr = &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for !ok() {
			if time.Now().After(deadline) {
				t.Fatalf("daemon: %s never happened\n%s", what, log.String())
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	logged := func(s string) func() bool { return func() bool { return strings.Contains(log.String(), s) } }

	// 1. Signed by fleet-2 only, which the running configuration does not trust.
	testenv.Publish(t, f.store, keyB, testenv.Payload("prod", 0, f.a, f.substitute))
	waitFor("the rejection of fleet-2's manifest", logged("none of which is trusted"))

	// 2. The configuration now trusts fleet-2 as well: the same manifest applies.
	installConfig(t, link, d.config(f.pub.String(), pubB.String()))
	waitFor("the reload", logged("daemon: reloaded "+link))
	waitFor("the switch to A", func() bool { return len(d.switches(t)) == 1 })
	if got := d.current(t); got != f.a {
		t.Fatalf("profile %s, want A %s", got, f.a)
	}

	// 3. A broken file: logged with the reason, the running configuration kept.
	installConfig(t, link, d.config("not-a-key"))
	waitFor("the refusal of the broken file", logged("changed but is not used, keeping the running configuration"))
	testenv.Publish(t, f.store, keyB, testenv.Payload("prod", 0, f.b, f.substitute))
	waitFor("the switch to B under the kept configuration", func() bool { return len(d.switches(t)) == 2 })
	time.Sleep(1500 * time.Millisecond) // more polls with the same broken file
	out := log.String()
	if n := strings.Count(out, "changed but is not used"); n != 1 || !strings.Contains(out, `public key "not-a-key"`) {
		t.Fatalf("the broken file was reported %d times (want once, with the reason):\n%s", n, out)
	}

	// 4. The file gone (the module removed): reported once, still running.
	os.Remove(link)
	waitFor("the report of the missing file", logged("no such file or directory"))
	time.Sleep(1500 * time.Millisecond)
	if n := strings.Count(log.String(), "no such file or directory"); n != 1 {
		t.Fatalf("the missing file was reported %d times, want once:\n%s", n, log.String())
	}

	// 5. Another identity key: kept out, the daemon signs with the key
	// it loaded at start, and makes none at the new path.
	other := filepath.Join(t.TempDir(), "other.key")
	cfg := d.config(f.pub.String(), pubB.String())
	cfg["identityKey"] = other
	installConfig(t, link, cfg)
	waitFor("the refusal of another identity key", logged("identityKey "+other+" differs from the running "+filepath.Join(d.stateDir, "identity.key")+"; restart nix-ota-agent to sign with it"))
	if _, err := os.Stat(other); !os.IsNotExist(err) {
		t.Fatalf("a key was made at %s: %v", other, err)
	}
	d.remoteStatus(t) // signed by the state directory's key

	cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("daemon exit: %v\n%s", err, log.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("daemon did not stop on SIGTERM")
	}
	for _, line := range strings.Split(strings.TrimSpace(log.String()), "\n") {
		if strings.Contains(line, "daemon: reloaded") || strings.Contains(line, "keeping the running configuration") {
			t.Log(line)
		}
	}
}

// TestConfigChangeReverifies: the timer's runs read the file afresh, and a
// manifest refused under the previous configuration (its ETag remembered,
// so an unchanged bucket costs one conditional GET) is verified again
// under a new one instead of being answered "not modified".
func TestConfigChangeReverifies(t *testing.T) {
	f := newFleet(t, "file")
	d := f.device(t, "kiosk-1")
	keyB, pubB := testenv.NewSigner(t, "fleet-2")
	testenv.Publish(t, f.store, keyB, testenv.Payload("prod", 0, f.a, f.substitute))
	d.mustOnce(t, 3)
	d.mustOnce(t, 0) // not modified: the refused bytes are not verified again
	expectSwitches(t, d)
	d.mustOnce(t, 0, "--public-key", pubB.String()) // trusting fleet-1 and fleet-2
	expectSwitches(t, d, "switch "+f.a)
}
