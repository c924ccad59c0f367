package main

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/nix-ota/nix-ota/internal/benchutil"
)

// Toolchain versions of the go-toolchain case: two consecutive patch
// releases, fetched through the Go module proxy as GOTOOLCHAIN does.
const (
	toolchainBase   = "v0.0.1-go1.26.6.linux-amd64"
	toolchainTarget = "v0.0.1-go1.26.7.linux-amd64"
)

// toolchainCase adds both toolchains to the store as go-<version> with
// the exec bits the real toolchain has.
func toolchainCase(ctx context.Context, s *store, work string) (caseSpec, error) {
	var paths [2]string
	for i, v := range []string{toolchainBase, toolchainTarget} {
		src, err := benchutil.ModDir(ctx, "golang.org/toolchain@"+v)
		if err != nil {
			return caseSpec{}, err
		}
		goVersion := strings.TrimSuffix(strings.TrimPrefix(v, "v0.0.1-go"), ".linux-amd64")
		tree := filepath.Join(work, fmt.Sprint(i), "go-"+goVersion)
		if err := copyToolchain(src, tree); err != nil {
			return caseSpec{}, err
		}
		if paths[i], err = s.addTree(ctx, tree); err != nil {
			return caseSpec{}, err
		}
		os.RemoveAll(filepath.Dir(tree))
	}
	return caseSpec{
		name:        "go-toolchain",
		description: "Go toolchain " + toolchainBase + " -> " + toolchainTarget + " (module proxy zips as GOTOOLCHAIN fetches them), each added to the store as go-<version> with exec bits on bin/* and pkg/tool/*/*",
		old:         []string{paths[0]},
		new:         []string{paths[1]},
	}, nil
}

// copyToolchain copies a module-cache toolchain (read-only files, no exec
// bits) to dst, making bin/* and pkg/tool/*/* executable as the Go
// command does after it downloads a toolchain.
func copyToolchain(src, dst string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		out := filepath.Join(dst, rel)
		switch {
		case d.IsDir():
			return os.MkdirAll(out, 0o755)
		case !d.Type().IsRegular():
			return fmt.Errorf("%s: not a regular file; module zips hold only files", p)
		}
		mode := os.FileMode(0o644)
		if m, _ := filepath.Match("bin/*", rel); m {
			mode = 0o755
		} else if m, _ := filepath.Match("pkg/tool/*/*", rel); m {
			mode = 0o755
		}
		return copyFile(p, out, mode)
	})
}

func copyFile(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
