package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// projectCase builds nix-ota and nix-ota-agent at the two newest commits
// that change the binaries' Go code, as `make build` builds them, and
// adds each pair to the store as nix-ota-<version>.
func projectCase(ctx context.Context, s *store, work string) (caseSpec, error) {
	commits, err := binaryCommits(ctx, work)
	if err != nil {
		return caseSpec{}, err
	}
	var paths, versions [2]string
	for i, c := range []string{commits[1], commits[0]} { // older first
		tree, version, err := buildAt(ctx, work, c)
		if err != nil {
			return caseSpec{}, err
		}
		if paths[i], err = s.addTree(ctx, tree); err != nil {
			return caseSpec{}, err
		}
		versions[i] = version
	}
	return caseSpec{
		name: "project-binaries",
		description: fmt.Sprintf("bin/nix-ota and bin/nix-ota-agent built by `make build` (CGO_ENABLED=0, -trimpath, -s -w, version %s -> %s) at the two newest commits that change their Go code (%s -> %s)",
			versions[0], versions[1], short(commits[1]), short(commits[0])),
		old: []string{paths[0]},
		new: []string{paths[1]},
	}, nil
}

func short(c string) string { return c[:min(len(c), 12)] }

// git runs git in dir with a timeout and returns its trimmed stdout.
func git(ctx context.Context, dir string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "git", append([]string{"-C", dir}, args...)...)
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("git %s: %w", strings.Join(args, " "), err)
	}
	return strings.TrimSpace(string(out)), nil
}

// binaryCommits returns the two newest commits of HEAD's history that
// change a non-test Go file of a package the binaries are built from
// (the packages `go list -deps` names at HEAD), newest first.
func binaryCommits(ctx context.Context, work string) ([2]string, error) {
	head := filepath.Join(work, "head")
	if err := checkout(ctx, work, "HEAD", head); err != nil {
		return [2]string{}, err
	}
	dirs, err := packageDirs(ctx, head)
	if err != nil {
		return [2]string{}, err
	}
	args := []string{"rev-list", "--max-count=2", "HEAD", "--"}
	for _, d := range dirs {
		args = append(args, ":(glob)"+filepath.ToSlash(filepath.Join(d, "*.go")))
	}
	args = append(args, ":(exclude,glob)**/*_test.go")
	out, err := git(ctx, ".", args...)
	if err != nil {
		return [2]string{}, err
	}
	c := strings.Fields(out)
	if len(c) < 2 {
		return [2]string{}, fmt.Errorf("project-binaries needs two commits that change the binaries' Go code, the history has %d (a shallow clone? fetch the full history: git fetch --unshallow)", len(c))
	}
	return [2]string{c[0], c[1]}, nil
}

// packageDirs lists the repository directories of the packages
// cmd/nix-ota and cmd/nix-ota-agent are built from.
func packageDirs(ctx context.Context, root string) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "list", "-deps", "-tags", "nethttpomithttp2", "-f", "{{if not .Standard}}{{.ImportPath}} {{.Dir}}{{end}}", "./cmd/nix-ota", "./cmd/nix-ota-agent")
	cmd.Dir = root
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("go list the binaries' packages: %w", err)
	}
	var dirs []string
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		path, dir, _ := strings.Cut(line, " ")
		if !strings.HasPrefix(path, "github.com/nix-ota/nix-ota") {
			continue
		}
		rel, err := filepath.Rel(root, dir)
		if err != nil || strings.HasPrefix(rel, "..") {
			continue
		}
		dirs = append(dirs, rel)
	}
	if len(dirs) == 0 {
		return nil, fmt.Errorf("go list names no package of this module in the binaries")
	}
	return dirs, nil
}

// checkout makes a clone of this repository at commit in dir; it shares
// the objects and leaves the repository itself untouched.
func checkout(ctx context.Context, work, commit, dir string) error {
	top, err := git(ctx, ".", "rev-parse", "--show-toplevel")
	if err != nil {
		return fmt.Errorf("project-binaries runs in a git clone of the repository: %w", err)
	}
	id, err := git(ctx, ".", "rev-parse", "--verify", commit+"^{commit}")
	if err != nil {
		return err
	}
	if _, err := git(ctx, work, "clone", "--quiet", "--shared", "--no-checkout", top, dir); err != nil {
		return err
	}
	_, err = git(ctx, dir, "checkout", "--quiet", "--detach", id)
	return err
}

// buildAt runs `make build` at commit and lays the binaries out as the
// store path nix-ota-<version>/bin; it returns that tree and the version.
func buildAt(ctx context.Context, work, commit string) (string, string, error) {
	dir := filepath.Join(work, "src-"+short(commit))
	if err := checkout(ctx, work, commit, dir); err != nil {
		return "", "", err
	}
	version, err := git(ctx, dir, "describe", "--tags", "--always", "--dirty")
	if err != nil {
		return "", "", err
	}
	bctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	t0 := time.Now()
	cmd := exec.CommandContext(bctx, "make", "-C", dir, "build")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", "", fmt.Errorf("make build at %s: %w: %s (build that commit by hand to see why)", short(commit), err, lastLine(out))
	}
	logf("project-binaries: make build at %s in %.1f s", short(commit), time.Since(t0).Seconds())
	tree := filepath.Join(work, "out-"+short(commit), storeNameFor(version))
	if err := os.MkdirAll(tree, 0o755); err != nil {
		return "", "", err
	}
	return tree, version, os.Rename(filepath.Join(dir, "bin"), filepath.Join(tree, "bin"))
}

func lastLine(b []byte) string {
	s := strings.TrimSpace(string(b))
	return s[strings.LastIndexByte(s, '\n')+1:]
}

// storeNameFor is the store name of the binaries at version. A Nix name's
// version starts with a digit (that is how PickBase, like Nix, finds it);
// `git describe` without a tag gives a bare commit hash, which may not.
func storeNameFor(version string) string {
	if version != "" && version[0] >= '0' && version[0] <= '9' {
		return "nix-ota-" + version
	}
	return "nix-ota-0-unstable-" + version
}
