package testenv

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// RequireNix fails the test when real Nix is missing.
func RequireNix(t testing.TB) {
	t.Helper()
	for _, b := range []string{"nix-store", "nix-env", "nix-build", "nix"} {
		if _, err := exec.LookPath(b); err != nil {
			t.Fatalf("real Nix is required for this test (%s not found): run `make test-deps` (installs Debian's nix-bin)", b)
		}
	}
}

// SystemOptions shape a test system (nix/tests/test-system.nix).
type SystemOptions struct {
	FailSwitch bool     // switch-to-configuration exits 1
	Kernel     string   // content of a kernel file (changes NeedsReboot)
	Deps       []string // store paths the system references (shared closure)
}

// RepoRoot is the repository's top directory.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// BuildSystem builds a real store path that looks like a NixOS system to
// the agent (docs/testing.md), from nix/tests/test-system.nix: no nixpkgs,
// just /bin/sh. A fresh nonce per call keeps tests from sharing paths.
func BuildSystem(t testing.TB, name string, o SystemOptions) string {
	t.Helper()
	RequireNix(t)
	exit := "0"
	if o.FailSwitch {
		exit = "1"
	}
	deps := "[ "
	for _, d := range o.Deps {
		deps += fmt.Sprintf("%q ", d)
	}
	deps += "]"
	out := Cmd(t, "nix-build", "--no-out-link", filepath.Join(RepoRoot(), "nix", "tests", "test-system.nix"),
		"--argstr", "name", name, "--argstr", "nonce", fmt.Sprintf("%d-%s", time.Now().UnixNano(), randHex(4)),
		"--arg", "exitCode", exit, "--argstr", "kernel", o.Kernel, "--arg", "deps", deps)
	return strings.TrimSpace(out)
}

// Cmd runs a command (2 minute limit) and fails the test on error.
func Cmd(t testing.TB, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, stderr.String())
	}
	return string(out)
}

// Cache is a real signed Nix binary cache in a directory.
type Cache struct {
	Dir       string
	URL       string // file:///…
	PublicKey string // NAME:BASE64, for trusted-public-keys
	SecretKey string // path of the signing key file
}

// NewCache makes an empty binary cache with a fresh signing key.
func NewCache(t testing.TB) *Cache {
	t.Helper()
	RequireNix(t)
	dir := t.TempDir()
	sk, pk := filepath.Join(dir, "cache.sk"), filepath.Join(dir, "cache.pk")
	name := "test-cache-" + randHex(3)
	Cmd(t, "nix-store", "--generate-binary-cache-key", name, sk, pk)
	pub, err := os.ReadFile(pk)
	if err != nil {
		t.Fatal(err)
	}
	c := &Cache{Dir: filepath.Join(dir, "cache"), PublicKey: strings.TrimSpace(string(pub)), SecretKey: sk}
	c.URL = "file://" + c.Dir
	return c
}

// Add copies paths and their closures into the cache, signed.
func (c *Cache) Add(t testing.TB, paths ...string) {
	t.Helper()
	args := append([]string{"--extra-experimental-features", "nix-command", "copy", "--to", c.URL + "?secret-key=" + c.SecretKey}, paths...)
	Cmd(t, "nix", args...)
}

// Forget deletes store paths from the local store, so that the next
// realise has to fetch them from a cache.
func Forget(t testing.TB, paths ...string) {
	t.Helper()
	// Derivations that took a path as an input source refer to it; they go
	// too, or Nix would keep the path alive.
	refs := strings.Fields(Cmd(t, "nix-store", append([]string{"--query", "--referrers-closure"}, paths...)...))
	args := append([]string{"--delete"}, refs...)
	Cmd(t, "nix-store", args...)
	for _, p := range paths {
		if _, err := os.Stat(p); err == nil {
			t.Fatalf("%s still exists after nix-store --delete", p)
		}
	}
}

// NixConfig keeps every Nix the tests start off the network: no default
// substituter (cache.nixos.org is not loopback), so a test only ever
// substitutes from the caches it made itself.
const NixConfig = "substituters =\nconnect-timeout = 5\n"

func init() {
	if os.Getenv("NIX_OTA_TEST_KEEP_NIX_CONFIG") == "" {
		os.Setenv("NIX_CONFIG", NixConfig)
	}
}
