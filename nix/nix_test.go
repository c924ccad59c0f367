package nix_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nix-ota/nix-ota/internal/testenv"
	"github.com/nix-ota/nix-ota/nix"
)

// TestLocalRealNix drives the real implementation with real Nix: fetch a
// closure from a signed file:// cache, refuse it without the cache's key,
// set a profile, run the system's switch-to-configuration.
func TestLocalRealNix(t *testing.T) {
	ctx := context.Background()
	a := testenv.BuildSystem(t, "a", testenv.SystemOptions{})
	b := testenv.BuildSystem(t, "b", testenv.SystemOptions{FailSwitch: true})
	cache := testenv.NewCache(t)
	cache.Add(t, a, b)
	testenv.Forget(t, a, b)

	log := filepath.Join(t.TempDir(), "switch.log")
	l := &nix.Local{SwitchVia: nix.SwitchViaDirect, Env: []string{"NIX_OTA_TEST_LOG=" + log}, BootedLink: filepath.Join(t.TempDir(), "booted")}

	// Without the cache's public key Nix refuses the unsigned-for-us paths.
	other := testenv.NewCache(t)
	err := l.Realise(ctx, a, []string{cache.URL}, []string{other.PublicKey})
	if !errors.Is(err, nix.ErrCommand) {
		t.Fatalf("realise with the wrong key: %v", err)
	}
	if _, err := os.Stat(a); err == nil {
		t.Fatal("path became valid without a trusted signature")
	}
	if strings.Contains(err.Error(), "\n") {
		t.Fatalf("multi-line error: %q", err)
	}
	if err := l.Realise(ctx, a, []string{cache.URL}, []string{cache.PublicKey}); err != nil {
		t.Fatalf("realise: %v", err)
	}
	if _, err := os.Stat(filepath.Join(a, "bin", "switch-to-configuration")); err != nil {
		t.Fatalf("closure not fetched: %v", err)
	}

	profile := filepath.Join(t.TempDir(), "profiles", "system")
	if got, err := l.ProfileTarget(profile); err != nil || got != "" {
		t.Fatalf("missing profile: %q %v", got, err)
	}
	if err := l.SetProfile(ctx, profile, a); err != nil {
		t.Fatal(err)
	}
	if got, _ := l.ProfileTarget(profile); got != a {
		t.Fatalf("profile -> %q, want %q", got, a)
	}
	if err := l.Switch(ctx, a, "switch"); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(log)
	if want := "switch " + a + "/bin/switch-to-configuration\n"; string(data) != want {
		t.Fatalf("switch log %q, want %q", data, want)
	}
	if err := l.Realise(ctx, b, []string{cache.URL}, []string{cache.PublicKey}); err != nil {
		t.Fatal(err)
	}
	if err := l.Switch(ctx, b, "switch"); !errors.Is(err, nix.ErrCommand) {
		t.Fatalf("failing switch: %v", err)
	}
	if err := l.Switch(ctx, b, "test"); err == nil {
		t.Fatal("unknown action accepted")
	}
	if err := l.Switch(ctx, "/nix/store/00000000000000000000000000000000-none", "switch"); err == nil {
		t.Fatal("switch to a missing system accepted")
	}
	if booted, err := l.Booted(); booted != "" || err != nil {
		t.Fatalf("booted: %q %v", booted, err)
	}
}

func TestBootFilesDiffer(t *testing.T) {
	a := testenv.BuildSystem(t, "ka", testenv.SystemOptions{Kernel: "k1"})
	b := testenv.BuildSystem(t, "kb", testenv.SystemOptions{Kernel: "k2"})
	c := testenv.BuildSystem(t, "kc", testenv.SystemOptions{})
	d := testenv.BuildSystem(t, "kd", testenv.SystemOptions{})
	if !nix.BootFilesDiffer(a, b) || !nix.BootFilesDiffer(a, c) {
		t.Fatal("different kernels not detected")
	}
	if nix.BootFilesDiffer(c, d) {
		t.Fatal("systems without boot files differ")
	}
}

// TestSwitchViaSystemdRun checks the systemd-run command line with a
// stand-in systemd-run that records its arguments and runs the command
// after "--". Real systemd cannot run on this machine; the NixOS VM test
// covers the real thing.
func TestSwitchViaSystemdRun(t *testing.T) {
	a := testenv.BuildSystem(t, "sr", testenv.SystemOptions{})
	bin := t.TempDir()
	rec := filepath.Join(bin, "args")
	script := "#!/bin/sh\necho \"$@\" > " + rec + "\nwhile [ \"$1\" != \"--\" ]; do shift; done\nshift\nexec \"$@\"\n"
	os.WriteFile(filepath.Join(bin, "systemd-run"), []byte(script), 0o755)
	os.WriteFile(filepath.Join(bin, "systemctl"), []byte("#!/bin/sh\necho inactive\n"), 0o755)
	t.Setenv("PATH", bin+":"+os.Getenv("PATH"))
	log := filepath.Join(t.TempDir(), "switch.log")
	l := &nix.Local{SwitchVia: nix.SwitchViaSystemdRun, Env: []string{"NIX_OTA_TEST_LOG=" + log}}
	if err := l.Switch(context.Background(), a, "boot"); err != nil {
		t.Fatal(err)
	}
	args, _ := os.ReadFile(rec)
	for _, want := range []string{"--unit " + nix.SwitchUnit, "--wait", "--collect", "--service-type=exec", "-- " + a + "/bin/switch-to-configuration boot"} {
		if !strings.Contains(string(args), want) {
			t.Errorf("systemd-run arguments %q lack %q", args, want)
		}
	}
	if got, _ := os.ReadFile(log); !strings.HasPrefix(string(got), "boot ") {
		t.Fatalf("switch did not run: %q", got)
	}
}

// TestCleanupGenerations: real nix-env keeps the newest generations and
// never the current one goes.
func TestCleanupGenerations(t *testing.T) {
	ctx := context.Background()
	l := &nix.Local{SwitchVia: nix.SwitchViaDirect}
	profile := filepath.Join(t.TempDir(), "profiles", "system")
	var systems []string
	for i := range 5 {
		sp := testenv.BuildSystem(t, fmt.Sprintf("gen%d", i), testenv.SystemOptions{})
		systems = append(systems, sp)
		if err := l.SetProfile(ctx, profile, sp); err != nil {
			t.Fatal(err)
		}
	}
	done, err := l.Cleanup(ctx, profile, 2, 0)
	if err != nil || done != "removed 3 old generations" {
		t.Fatalf("cleanup: %q %v", done, err)
	}
	gens := strings.Split(strings.TrimSpace(testenv.Cmd(t, "nix-env", "--profile", profile, "--list-generations")), "\n")
	if len(gens) != 2 || !strings.Contains(gens[1], "(current)") {
		t.Fatalf("generations after cleanup: %q", gens)
	}
	if got, _ := l.ProfileTarget(profile); got != systems[4] {
		t.Fatalf("profile moved: %s", got)
	}
}

// TestCleanupGC runs the real garbage collector, on a store of its own so
// no other test's paths are touched.
func TestCleanupGC(t *testing.T) {
	ctx := context.Background()
	sp := testenv.BuildSystem(t, "garbage", testenv.SystemOptions{})
	root := t.TempDir()
	store := "local?root=" + root
	testenv.Cmd(t, "nix", "--extra-experimental-features", "nix-command", "copy", "--no-check-sigs", "--to", store, sp)
	if _, err := os.Stat(filepath.Join(root, sp)); err != nil {
		t.Fatalf("setup: %v", err)
	}
	l := &nix.Local{SwitchVia: nix.SwitchViaDirect, GCStore: store}
	free, err := nix.FreeSpace("/nix/store")
	if err != nil {
		t.Fatal(err)
	}
	// Below the threshold (more than is free): collect.
	done, err := l.Cleanup(ctx, filepath.Join(t.TempDir(), "none"), 0, free+1<<40)
	if err != nil || !strings.Contains(done, "store GC") || !strings.Contains(done, "freed") {
		t.Fatalf("cleanup: %q %v", done, err)
	}
	if _, err := os.Stat(filepath.Join(root, sp)); err == nil {
		t.Fatal("garbage survived the collection")
	}
	// Enough space: nothing happens.
	if done, err := l.Cleanup(ctx, "", 0, 1); err != nil || done != "" {
		t.Fatalf("cleanup with space to spare: %q %v", done, err)
	}
}

// TestSwitchViaVocabulary: the configuration's words parse, anything else
// (the old always/never among them) is an error, and a Local holding an
// unknown value refuses to switch instead of guessing: nothing runs.
func TestSwitchViaVocabulary(t *testing.T) {
	for _, s := range []string{"auto", "systemd-run", "direct"} {
		if v, err := nix.ParseSwitchVia(s); err != nil || string(v) != s {
			t.Errorf("ParseSwitchVia(%q) = %q, %v", s, v, err)
		}
	}
	for _, s := range []string{"", "always", "never", "Auto", "systemd"} {
		if _, err := nix.ParseSwitchVia(s); !errors.Is(err, nix.ErrSwitchVia) {
			t.Errorf("ParseSwitchVia(%q) = %v, want ErrSwitchVia", s, err)
		}
	}
	a := testenv.BuildSystem(t, "via", testenv.SystemOptions{})
	log := filepath.Join(t.TempDir(), "switch.log")
	l := &nix.Local{SwitchVia: "always", Env: []string{"NIX_OTA_TEST_LOG=" + log}}
	if err := l.Switch(context.Background(), a, "switch"); !errors.Is(err, nix.ErrSwitchVia) {
		t.Fatalf("switch with an unknown SwitchVia: %v, want ErrSwitchVia", err)
	}
	if _, err := os.Stat(log); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("switch-to-configuration ran with an unknown SwitchVia: %v", err)
	}
	l.SwitchVia = nix.SwitchViaDirect
	if err := l.Switch(context.Background(), a, "switch"); err != nil {
		t.Fatalf("switch direct: %v", err)
	}
}
