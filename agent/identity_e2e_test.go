package agent_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nix-ota/nix-ota/agent"
	"github.com/nix-ota/nix-ota/bucket"
	"github.com/nix-ota/nix-ota/internal/testenv"
	"github.com/nix-ota/nix-ota/status"
)

// latestBlob is device id's newest check-in, opened (signature checked).
func latestBlob(t *testing.T, s bucket.Store, id string) ([]byte, *status.Signed) {
	t.Helper()
	latest, err := bucket.LatestCheckin(context.Background(), s, id)
	if err != nil {
		t.Fatalf("check-in of %s: %v", id, err)
	}
	b := getObj(t, s, latest.Key)
	signed, err := status.Open(id, b)
	if err != nil {
		t.Fatalf("check-in %s: %v", latest.Key, err)
	}
	if signed.Key == nil || latest.Key != bucket.CheckinKey(id, signed.SignedAt) {
		t.Fatalf("check-in %s: unsigned, or signed at %s, outside its window", latest.Key, signed.SignedAt)
	}
	return b, signed
}

// TestIdentityFirstStart (real Nix and MinIO): the first start makes the
// device key, 0600, says so in one line, and signs the check-in with it;
// the next start uses the same key, and a heartbeat is a new signature.
func TestIdentityFirstStart(t *testing.T) {
	f := newFleet(t, "minio")
	d := f.device(t, "kiosk-1", "--interval", "1s", "--heartbeat", "1s")
	f.publish(t, f.a)
	r := d.mustOnce(t, 0)
	keyFile := filepath.Join(d.stateDir, "identity.key")
	fi, err := os.Stat(keyFile)
	if err != nil || fi.Mode() != 0o600 {
		t.Fatalf("key file: %v, mode %v; want 0600", err, fi.Mode())
	}
	pemBytes, _ := os.ReadFile(keyFile)
	pub := pemPublic(t, pemBytes)
	want := "identity: generated the device key " + status.Fingerprint(pub) + " in " + keyFile + "; publishers see this device as pending until they approve it: nix-ota device approve kiosk-1\n"
	if strings.Count(r.stderr, "identity:") != 1 || !strings.Contains(r.stderr, want) {
		t.Fatalf("first start's log, want the line %q:\n%s", want, r.stderr)
	}
	first, signed := latestBlob(t, f.store, "kiosk-1")
	if !status.SameKey(signed.Key, pub) || signed.Status.State != status.UpToDate || signed.Status.StorePath != f.a {
		t.Fatalf("first check-in: signed by %s (the key file holds %s), %+v", status.Fingerprint(signed.Key), status.Fingerprint(pub), signed.Status)
	}
	if signed.Status.DeviceKey != status.EncodeKey(pub) {
		t.Fatalf("check-in names key %s", signed.Status.DeviceKey)
	}
	// The local status stays plain.
	if local, _ := os.ReadFile(filepath.Join(d.stateDir, "status.json")); !json.Valid(local) || bytes.Contains(local, []byte("payload")) || bytes.Contains(local, []byte("deviceKey")) {
		t.Fatalf("local status.json:\n%s", local)
	}

	time.Sleep(1100 * time.Millisecond) // a heartbeat falls due
	r = d.mustOnce(t, 0)
	if strings.Contains(r.stderr, "identity:") {
		t.Fatalf("restart made a key again:\n%s", r.stderr)
	}
	if after, _ := os.ReadFile(keyFile); !bytes.Equal(after, pemBytes) {
		t.Fatal("restart rewrote the key file")
	}
	second, again := latestBlob(t, f.store, "kiosk-1")
	if bytes.Equal(second, first) || !status.SameKey(again.Key, pub) || !again.SignedAt.After(signed.SignedAt) || again.Digest == signed.Digest {
		t.Fatalf("heartbeat check-in: same bytes %v, key %s, signed at %s after %s", bytes.Equal(second, first), status.Fingerprint(again.Key), again.SignedAt, signed.SignedAt)
	}
}

// lightDevice is a device configuration on a file:// bucket without a
// channel manifest: a start gets as far as writing a check-in (state
// failed), and Nix is not needed.
type lightDevice struct {
	dir, cfg, stateDir string
	store              bucket.Store
}

func newLightDevice(t *testing.T, extra map[string]any) *lightDevice {
	dir := t.TempDir()
	url := "file://" + filepath.Join(dir, "bucket")
	st, err := bucket.Open(url, bucket.Options{Create: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bucket.Init(context.Background(), st, "test", time.Now()); err != nil {
		t.Fatal(err)
	}
	_, pub := testenv.NewSigner(t, "k")
	d := &lightDevice{dir: dir, cfg: filepath.Join(dir, "agent.json"), stateDir: filepath.Join(dir, "state"), store: st}
	c := map[string]any{"bucket": url, "channel": "prod", "publicKeys": []string{pub.String()}, "deviceId": "kiosk-1",
		"stateDir": d.stateDir, "profile": filepath.Join(dir, "profile"), "switchVia": "direct"}
	for k, v := range extra {
		c[k] = v
	}
	writeJSON(t, d.cfg, c)
	return d
}

// checkins lists the objects under devices/.
func (d *lightDevice) checkins(t *testing.T) []string {
	var keys []string
	if err := d.store.List(context.Background(), bucket.DevicesPrefix, func(i bucket.Info) error {
		keys = append(keys, i.Key)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return keys
}

func pkcs8PEM(t *testing.T, key any) []byte {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

// TestIdentityKeyRefused: a key file that is there but unusable stops the
// start with one line naming the file, the reason and what to do, before
// anything is written: no state, no local status, no check-in. The key
// file is left alone. The same file made usable starts and checks in.
func TestIdentityKeyRefused(t *testing.T) {
	_, good, _ := ed25519.GenerateKey(rand.Reader)
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	for _, c := range []struct {
		name    string
		content []byte
		mode    os.FileMode
		dir     bool
		want    string
	}{
		{name: "corrupt", content: []byte("-----BEGIN PRIVATE KEY-----\nMC4CAQAw\n"), mode: 0o600, want: "broken PEM"},
		{name: "readable by others", content: pkcs8PEM(t, good), mode: 0o644, want: "mode 0644 gives group or others access, so it may have leaked"},
		{name: "readable by the group", content: pkcs8PEM(t, good), mode: 0o640, want: "mode 0640 gives group or others access"},
		{name: "an ECDSA key", content: pkcs8PEM(t, ec), mode: 0o600, want: "want an ed25519 key"},
		{name: "a directory", dir: true, want: "not a regular file"},
		{name: "usable", content: pkcs8PEM(t, good), mode: 0o600},
	} {
		t.Run(c.name, func(t *testing.T) {
			d := newLightDevice(t, nil)
			keyFile := filepath.Join(d.stateDir, "identity.key")
			os.MkdirAll(d.stateDir, 0o700)
			if c.dir {
				os.Mkdir(keyFile, 0o700)
			} else if err := os.WriteFile(keyFile, c.content, c.mode); err != nil {
				t.Fatal(err)
			} else {
				os.Chmod(keyFile, c.mode)
			}
			r := runAgent(t, agentBin, 0, "once", "--config", d.cfg)
			if c.want == "" {
				if _, signed := latestBlob(t, d.store, "kiosk-1"); !status.SameKey(signed.Key, good.Public().(ed25519.PublicKey)) {
					t.Fatalf("usable key: check-in signed by another key\n%s", r.stderr)
				}
				return
			}
			line := "nix-ota-agent once: identity key " + keyFile + ": "
			if r.code != agent.ExitFailed || strings.Count(r.stderr, "\n") != 1 || !strings.HasPrefix(r.stderr, line) || !strings.Contains(r.stderr, c.want) ||
				!strings.HasSuffix(r.stderr, "; delete it to generate a new one; the device must then be approved again: nix-ota device approve kiosk-1"+map[bool]string{true: " (or chmod 600 it if nobody else can have read it)"}[c.mode&0o077 != 0]+"\n") {
				t.Fatalf("exit %d, want %d and one line %q...%q:\n%s", r.code, agent.ExitFailed, line, c.want, r.stderr)
			}
			for _, name := range []string{"state.json", "status.json"} {
				if _, err := os.Stat(filepath.Join(d.stateDir, name)); !os.IsNotExist(err) {
					t.Errorf("%s written: %v", name, err)
				}
			}
			if keys := d.checkins(t); len(keys) > 0 {
				t.Errorf("check-ins written: %v", keys)
			}
			if after, _ := os.ReadFile(keyFile); !c.dir && !bytes.Equal(after, c.content) {
				t.Error("the key file was changed")
			}
		})
	}
}

// TestIdentityFromImage: a key the image provides (PKCS#8 PEM, at a path
// of its own) is the one that signs, and the one identity prints; no key
// is made.
func TestIdentityFromImage(t *testing.T) {
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	pub := key.Public().(ed25519.PublicKey)
	keyFile := filepath.Join(t.TempDir(), "secrets", "device.key")
	os.MkdirAll(filepath.Dir(keyFile), 0o700)
	if err := os.WriteFile(keyFile, pkcs8PEM(t, key), 0o400); err != nil {
		t.Fatal(err)
	}
	d := newLightDevice(t, map[string]any{"identityKey": keyFile})
	r := runAgent(t, agentBin, 0, "once", "--config", d.cfg)
	if strings.Contains(r.stderr, "identity:") {
		t.Fatalf("a key was made though the image provides one:\n%s", r.stderr)
	}
	if _, signed := latestBlob(t, d.store, "kiosk-1"); !status.SameKey(signed.Key, pub) {
		t.Fatalf("check-in signed by %s, the image's key is %s", status.Fingerprint(signed.Key), status.Fingerprint(pub))
	}
	if _, err := os.Stat(filepath.Join(d.stateDir, "identity.key")); !os.IsNotExist(err) {
		t.Fatalf("a key was made in the state directory: %v", err)
	}
	r = runAgent(t, agentBin, 0, "identity", "--config", d.cfg, "--json")
	var got map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &got); r.code != 0 || err != nil || r.stderr != "" {
		t.Fatalf("identity --json: exit %d, %v\n%s%s", r.code, err, r.stdout, r.stderr)
	}
	want := map[string]any{"deviceId": "kiosk-1", "key": status.EncodeKey(pub), "fingerprint": status.Fingerprint(pub), "keyFile": keyFile, "generated": false}
	if !jsonEqual(got, want) {
		t.Fatalf("identity --json: %v, want %v", got, want)
	}
}

func jsonEqual(a, b map[string]any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return bytes.Equal(x, y)
}

// TestIdentityCommand: identity makes the key when there is none (as a
// start would), prints the same key on every call and in both forms, and
// that key signs the check-ins; a broken key file is the start's one-line
// error.
func TestIdentityCommand(t *testing.T) {
	d := newLightDevice(t, nil)
	keyFile := filepath.Join(d.stateDir, "identity.key")
	r := runAgent(t, agentBin, 0, "identity", "--config", d.cfg, "--json")
	var first map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &first); r.code != 0 || err != nil || first["generated"] != true || first["keyFile"] != keyFile {
		t.Fatalf("first identity --json: exit %d, %v\n%s%s", r.code, err, r.stdout, r.stderr)
	}
	if strings.Count(r.stderr, "\n") != 1 || !strings.HasPrefix(r.stderr, "nix-ota-agent identity: generated the device key "+first["fingerprint"].(string)+" in "+keyFile) {
		t.Fatalf("first identity's log:\n%s", r.stderr)
	}
	if fi, err := os.Stat(keyFile); err != nil || fi.Mode() != 0o600 {
		t.Fatalf("key file made by identity: %v, mode %v", err, fi.Mode())
	}
	pemBytes, _ := os.ReadFile(keyFile)
	pub := pemPublic(t, pemBytes)
	if first["key"] != status.EncodeKey(pub) || first["fingerprint"] != status.Fingerprint(pub) || first["deviceId"] != "kiosk-1" {
		t.Fatalf("identity --json %v does not describe the key file's key %s", first, status.EncodeKey(pub))
	}
	r = runAgent(t, agentBin, 0, "identity", "--config", d.cfg)
	wantText := "device:      kiosk-1\nkey:         " + status.EncodeKey(pub) + "\nfingerprint: " + status.Fingerprint(pub) + "\nkey file:    " + keyFile +
		"\nregister it: nix-ota device add kiosk-1 --key " + status.EncodeKey(pub) + "\n"
	if r.code != 0 || r.stdout != wantText || r.stderr != "" {
		t.Fatalf("identity: exit %d\n%s%s\nwant\n%s", r.code, r.stdout, r.stderr, wantText)
	}
	r = runAgent(t, agentBin, 0, "once", "--config", d.cfg)
	if strings.Contains(r.stderr, "identity:") {
		t.Fatalf("start made another key:\n%s", r.stderr)
	}
	if _, signed := latestBlob(t, d.store, "kiosk-1"); !status.SameKey(signed.Key, pub) {
		t.Fatal("the check-in is not signed by the key identity printed")
	}
	os.WriteFile(keyFile, []byte("garbage\n"), 0o600)
	r = runAgent(t, agentBin, 0, "identity", "--config", d.cfg, "--json")
	if r.code != agent.ExitFailed || r.stdout != "" || strings.Count(r.stderr, "\n") != 1 ||
		!strings.HasPrefix(r.stderr, "nix-ota-agent identity: identity key "+keyFile+": not a PEM file") || !strings.Contains(r.stderr, "nix-ota device approve kiosk-1") {
		t.Fatalf("identity with a broken key: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if help := runAgent(t, agentBin, 0, "--help"); !strings.Contains(help.stdout, "nix-ota-agent identity [--config FILE] [--json]") ||
		!strings.Contains(help.stdout, "nix-ota device add kiosk-1 --key ed25519:BASE64") {
		t.Fatalf("--help lacks identity:\n%s", help.stdout)
	}
}
