package agent_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nix-ota/nix-ota/internal/testenv"
	"github.com/nix-ota/nix-ota/manifest"
	"github.com/nix-ota/nix-ota/status"
)

// realiseWith runs real Nix the way a device's agent would, with one extra
// substituter, and reports whether the path became valid.
func realiseWith(t *testing.T, storePath, substituter, trustedKey string) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "nix-store", "--realise", storePath,
		"--option", "extra-substituters", substituter, "--option", "trusted-public-keys", trustedKey).CombinedOutput()
	t.Logf("control: nix-store --realise with %s: %v\n%s", substituter, err, out)
	return exec.Command("nix-store", "--check-validity", storePath).Run() == nil
}

// TestDangerousSubstituters: a manifest signed by the fleet key (a publisher
// gone wrong, or a stolen key) that names a substituter Nix would obey to
// run a command or to skip signature checks is rejected before Nix sees it.
// Each case first shows, as a control, what real Nix does with that URL.
func TestDangerousSubstituters(t *testing.T) {
	f := newFleet(t, "file")
	d := f.device(t, "kiosk-1")
	f.publish(t, f.a)
	d.mustOnce(t, 0)

	dir := t.TempDir()
	marker := filepath.Join(dir, "ran-as-root")
	script := filepath.Join(dir, "evil.sh")
	if err := os.WriteFile(script, []byte("#!/bin/sh\ntouch "+marker+"\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	remoteProgram := "ssh://localhost?remote-program=" + script
	// A cache signed by a key no device trusts, holding system C.
	rogue := testenv.NewCache(t)
	c := testenv.BuildSystem(t, "rogue-c", testenv.SystemOptions{})
	rogue.Add(t, c)
	testenv.Forget(t, c)
	trusted := rogue.URL + "?trusted=1"

	// Controls: real Nix runs the program, and takes the unsigned closure.
	realiseWith(t, f.c, remoteProgram, f.cache.PublicKey)
	if !fileExists(marker) {
		t.Fatal("control: Nix did not run remote-program; the test below would prove nothing")
	}
	os.Remove(marker)
	if !realiseWith(t, c, trusted, f.cache.PublicKey) {
		t.Fatal("control: Nix refused the closure from a trusted=1 cache; the test below would prove nothing")
	}
	testenv.Forget(t, c)

	for _, tc := range []struct{ name, storePath, substituter string }{
		{"remote-program", f.d, remoteProgram},
		{"trusted=1", c, trusted},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := testenv.Payload("prod", 0, tc.storePath, tc.substituter)
			p.Revision = 2
			putObj(t, f.store, "channels/prod.json", testenv.SignRaw(t, f.signer, testenv.MustJSON(t, p)))
			r := d.mustOnce(t, 3)
			if fileExists(marker) {
				t.Fatal("remote-program ran")
			}
			if exec.Command("nix-store", "--check-validity", tc.storePath).Run() == nil {
				t.Fatalf("%s was fetched", tc.storePath)
			}
			if d.current(t) != f.a {
				t.Fatalf("profile moved to %s", d.current(t))
			}
			st := d.localStatus(t)
			if st.State != status.Rejected || !strings.Contains(st.LastError, "substituter") || !strings.Contains(r.stderr, "substituter") {
				t.Fatalf("status %+v\n%s", st, r.stderr)
			}
		})
	}
	// The publisher refuses them too, before it signs.
	for _, s := range []string{remoteProgram, trusted} {
		p := testenv.Payload("prod", 3, f.b, s)
		if err := p.Validate(); err == nil || !strings.Contains(err.Error(), manifest.ErrMalformed.Error()) {
			t.Fatalf("Validate accepted %s: %v", s, err)
		}
	}
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
