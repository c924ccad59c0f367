package main

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"

	"github.com/nix-ota/nix-ota/internal/benchutil"
)

// Toolchain versions of the go-toolchain case: two consecutive patch
// releases, fetched through the Go module proxy as GOTOOLCHAIN does.
const (
	toolchainBase   = "v0.0.1-go1.26.6.linux-amd64"
	toolchainTarget = "v0.0.1-go1.26.7.linux-amd64"
)

// toolchainTrees returns the extracted module trees of both toolchains.
func toolchainTrees() (string, string, string, error) {
	a, err := benchutil.ModDir(context.Background(), "golang.org/toolchain@"+toolchainBase)
	if err != nil {
		return "", "", "", err
	}
	b, err := benchutil.ModDir(context.Background(), "golang.org/toolchain@"+toolchainTarget)
	if err != nil {
		return "", "", "", err
	}
	desc := "Go toolchain " + toolchainBase + " -> " + toolchainTarget + " (module zip trees: no exec bits)"
	return a, b, desc, nil
}

// cascadeTrees builds a synthetic closure in which one dependency changes
// its store hash: the dependency itself changes a little, and the 32-char
// nixbase32 hash it is known by is embedded in every dependent's files, as
// RPATHs and script interpreters embed store paths.
func cascadeTrees(dir string) (string, string, string, error) {
	oldHash, newHash := nixHash(1), nixHash(2)
	base, target := filepath.Join(dir, "base-tree"), filepath.Join(dir, "target-tree")
	for i, tree := range []string{base, target} {
		h := []string{oldHash, newHash}[i]
		if err := writeClosure(tree, h, i); err != nil {
			return "", "", "", err
		}
	}
	desc := "synthetic closure: 1 dependency (256 KiB) changes, its hash embedded 64 times in each of 6 dependents' files (4-14 MiB)"
	return base, target, desc, nil
}

// writeClosure writes one closure tree; version changes the dependency.
func writeClosure(tree, hash string, version int) error {
	dep := filepath.Join(tree, hash+"-libdep-1.0", "lib")
	if err := os.MkdirAll(dep, 0o755); err != nil {
		return err
	}
	lib := binaryish(1, 256<<10)
	lib[1000] = byte(version) // the dependency's own small change
	if err := os.WriteFile(filepath.Join(dep, "libdep.so"), lib, 0o755); err != nil {
		return err
	}
	for i := range 6 {
		d := filepath.Join(tree, fmt.Sprintf("app%d", i), "bin")
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
		b := binaryish(uint64(10+i), (4+2*i)<<20)
		embed(b, "/nix/store/"+hash+"-libdep-1.0/lib", 64)
		if err := os.WriteFile(filepath.Join(d, fmt.Sprintf("app%d", i)), b, 0o755); err != nil {
			return err
		}
	}
	return nil
}

// binaryish returns n bytes that compress about as well as machine code:
// runs of random bytes mixed with repeated short sequences.
func binaryish(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed))
	words := make([][]byte, 256)
	for i := range words {
		words[i] = make([]byte, 4+r.IntN(12))
		for j := range words[i] {
			words[i][j] = byte(r.UintN(256))
		}
	}
	var b bytes.Buffer
	for b.Len() < n {
		if r.IntN(3) == 0 {
			b.WriteByte(byte(r.UintN(256)))
			continue
		}
		b.Write(words[r.IntN(len(words))])
	}
	return b.Bytes()[:n]
}

// embed writes s at count evenly spread offsets of b.
func embed(b []byte, s string, count int) {
	step := len(b) / (count + 1)
	for i := 1; i <= count; i++ {
		copy(b[i*step:], s)
	}
}

// nixHash returns a 32-char string over the nixbase32 alphabet.
func nixHash(seed uint64) string {
	const alphabet = "0123456789abcdfghijklmnpqrsvwxyz"
	r := rand.New(rand.NewPCG(seed, 99))
	b := make([]byte, 32)
	for i := range b {
		b[i] = alphabet[r.IntN(len(alphabet))]
	}
	return string(b)
}
