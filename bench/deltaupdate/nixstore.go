package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// store is the real Nix store as this program uses it: every path it adds
// or builds is kept alive by an indirect GC root under roots, and deleted
// again by cleanup.
type store struct {
	roots string   // directory of this run's GC root links
	added []string // paths this run made valid, in the order they appeared
	nroot int
}

// nixEnv keeps Nix off the network: every input of this program is local.
func nixEnv() []string { return append(os.Environ(), "NIX_CONFIG=substituters =") }

// nix runs one Nix command with a timeout and returns its trimmed stdout.
func nix(ctx context.Context, timeout time.Duration, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = nixEnv()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		msg := strings.TrimSpace(stderr.String())
		if i := strings.LastIndexByte(msg, '\n'); i >= 0 {
			msg = msg[i+1:]
		}
		return "", fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, msg)
	}
	return strings.TrimSpace(string(out)), nil
}

// valid reports whether p is a valid store path now.
func valid(ctx context.Context, p string) bool {
	_, err := nix(ctx, time.Minute, "nix-store", "--check-validity", p)
	return err == nil
}

// root adds an indirect GC root for p, so a garbage collection by anyone
// else during the run leaves it alone.
func (s *store) root(ctx context.Context, p string) error {
	s.nroot++
	link := filepath.Join(s.roots, strconv.Itoa(s.nroot))
	_, err := nix(ctx, time.Minute, "nix-store", "--add-root", link, "--indirect", "--realise", p)
	return err
}

// track records p as this run's to delete unless it was valid before.
func (s *store) track(p string, before bool) {
	if !before {
		s.added = append(s.added, p)
	}
}

// addTree adds a directory to the store as nix-store --add does (its base
// name becomes the store name) and returns the store path. A path that was
// already valid (the same tree added before this run) is not deleted.
func (s *store) addTree(ctx context.Context, dir string) (string, error) {
	hash, err := nix(ctx, 5*time.Minute, "nix-hash", "--type", "sha256", "--base32", dir)
	if err != nil {
		return "", err
	}
	want, err := nix(ctx, time.Minute, "nix-store", "--print-fixed-path", "--recursive", "sha256", hash, filepath.Base(dir))
	if err != nil {
		return "", err
	}
	before := valid(ctx, want)
	p, err := nix(ctx, 10*time.Minute, "nix-store", "--add", dir)
	if err != nil {
		return "", err
	}
	if p != want {
		return "", fmt.Errorf("nix-store --add %s gave %s, expected %s: Nix computes store paths differently than this program assumes", dir, p, want)
	}
	s.track(p, before)
	return p, s.root(ctx, p)
}

// build builds every derivation of a Nix expression file with nix-build
// and returns their output paths in attribute order; its out links are GC
// roots. It instantiates first to learn the derivations, their sources and
// outputs: all are this run's to delete, but outputs valid before.
func (s *store) build(ctx context.Context, file string, args ...string) ([]string, error) {
	drvs, err := nix(ctx, 5*time.Minute, "nix-instantiate", append([]string{file}, args...)...)
	if err != nil {
		return nil, err
	}
	closure, err := nix(ctx, time.Minute, "nix-store", append([]string{"--query", "--requisites"}, strings.Fields(drvs)...)...)
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	for _, p := range s.added {
		seen[p] = true
	}
	var outputs []string
	for _, d := range strings.Fields(closure) { // dependencies first
		if !seen[d] {
			s.track(d, false)
			seen[d] = true
		}
		if !strings.HasSuffix(d, ".drv") {
			continue
		}
		o, err := nix(ctx, time.Minute, "nix-store", "--query", "--outputs", d)
		if err != nil {
			return nil, err
		}
		outputs = append(outputs, strings.Fields(o)...)
	}
	for _, p := range outputs {
		if !seen[p] {
			s.track(p, valid(ctx, p))
			seen[p] = true
		}
	}
	s.nroot++
	link := filepath.Join(s.roots, fmt.Sprintf("build-%d", s.nroot))
	outs, err := nix(ctx, 10*time.Minute, "nix-build", append([]string{file, "--option", "sandbox", "false", "--out-link", link}, args...)...)
	if err != nil {
		return nil, err
	}
	return strings.Fields(outs), nil
}

// info is what the store records of a path.
type info struct {
	Path    string
	NarSize int64
	NarHash string // sha256:<nixbase32>
}

// query returns the closure of paths with their NAR sizes and hashes.
func query(ctx context.Context, paths []string) ([]info, error) {
	closure, err := nix(ctx, time.Minute, "nix-store", append([]string{"--query", "--requisites"}, paths...)...)
	if err != nil {
		return nil, err
	}
	ps := strings.Fields(closure)
	sizes, err := nix(ctx, time.Minute, "nix-store", append([]string{"--query", "--size"}, ps...)...)
	if err != nil {
		return nil, err
	}
	hashes, err := nix(ctx, time.Minute, "nix-store", append([]string{"--query", "--hash"}, ps...)...)
	if err != nil {
		return nil, err
	}
	ss, hs := strings.Fields(sizes), strings.Fields(hashes)
	if len(ss) != len(ps) || len(hs) != len(ps) {
		return nil, fmt.Errorf("nix-store --query: %d paths but %d sizes and %d hashes", len(ps), len(ss), len(hs))
	}
	out := make([]info, len(ps))
	for i, p := range ps {
		n, err := strconv.ParseInt(ss[i], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("nix-store --query --size %s: %q is no size", p, ss[i])
		}
		out[i] = info{Path: p, NarSize: n, NarHash: hs[i]}
	}
	return out, nil
}

// dump returns the NAR of a store path as nix-store --dump writes it.
func dump(ctx context.Context, p string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "nix-store", "--dump", p).Output()
	if err != nil {
		return nil, fmt.Errorf("nix-store --dump %s: %w", p, err)
	}
	return out, nil
}

// cleanup removes this run's GC roots and deletes the paths it added,
// newest first (dependents before what they depend on). A path something
// else keeps alive stays; that is reported, not an error.
func (s *store) cleanup() {
	os.RemoveAll(s.roots)
	if len(s.added) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	paths := make([]string, 0, len(s.added))
	for i := len(s.added) - 1; i >= 0; i-- {
		paths = append(paths, s.added[i])
	}
	if _, err := nix(ctx, time.Minute, "nix-store", append([]string{"--delete"}, paths...)...); err == nil {
		fmt.Printf("deleted the %d store paths this run added\n", len(paths))
		return
	}
	kept := 0
	for _, p := range paths {
		if _, err := nix(ctx, time.Minute, "nix-store", "--delete", p); err != nil && valid(ctx, p) {
			kept++
		}
	}
	fmt.Printf("deleted the store paths this run added; %d of %d are still alive and stay\n", kept, len(paths))
}
