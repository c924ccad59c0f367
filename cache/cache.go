// Package cache is the Nix binary cache under cache/ in a bucket: pushing
// closures into it (narinfo + NAR, signed with the cache key) and finding
// what is reachable from the published systems, for garbage collection.
//
// Debian's Nix, and many CI runners' Nix, cannot write to S3, so nix-ota
// writes the cache files itself: NARs come from `nix-store --dump`, path
// metadata from `nix path-info`, narinfo text and signatures from go-nix.
//
// Threat model: devices verify every narinfo signature against their
// trusted cache keys, so the bucket cannot substitute content. A push
// uploads several paths at once, but writes a path's NAR before its
// narinfo, and its narinfo only once the narinfos of all its references
// are there, so an interrupted push never leaves a narinfo pointing at
// nothing or at a path the cache lacks; the next push skips what is
// complete and redoes the rest. A NAR is streamed under a key named by the
// NAR hash Nix reports, and a dump that does not hash to it fails its
// upload, so no narinfo ever names it.
package cache

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sort"
	"strings"
	"time"

	"github.com/nix-community/go-nix/pkg/narinfo/signature"
	"github.com/nix-community/go-nix/pkg/nixbase32"
	"github.com/nix-community/go-nix/pkg/storepath"

	"github.com/nix-ota/nix-ota/bucket"
)

// Prefix is where the cache lives in a bucket.
const Prefix = bucket.CachePrefix

// InfoKey is the cache's nix-cache-info object.
const InfoKey = Prefix + "nix-cache-info"

// MaxNarinfo bounds a narinfo read from the bucket.
const MaxNarinfo = 256 << 10

// PathInfo is what Nix knows of a valid store path.
type PathInfo struct {
	Path       string   `json:"path"`
	NarHash    string   `json:"narHash"` // SRI or sha256:base32
	NarSize    uint64   `json:"narSize"`
	References []string `json:"references"`
	Deriver    string   `json:"deriver"`
}

// Nix is the publisher-side Nix the push needs.
type Nix interface {
	// Closure returns every path in the closures of paths, dependencies
	// before dependents.
	Closure(ctx context.Context, paths []string) ([]PathInfo, error)
	// Dump writes the NAR serialisation of a store path.
	Dump(ctx context.Context, storePath string, w io.Writer) error
}

// LocalNix runs the nix commands of this machine.
type LocalNix struct{ Timeout time.Duration }

func (n LocalNix) timeout() time.Duration {
	if n.Timeout <= 0 {
		return time.Hour
	}
	return n.Timeout
}

func (n LocalNix) Closure(ctx context.Context, paths []string) ([]PathInfo, error) {
	ctx, cancel := context.WithTimeout(ctx, n.timeout())
	defer cancel()
	args := append([]string{"--extra-experimental-features", "nix-command", "path-info", "--json", "--recursive"}, paths...)
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "nix", args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("nix path-info: %v: %s", err, strings.TrimSpace(stderr.String()))
	}
	var infos []PathInfo
	if err := json.Unmarshal(out, &infos); err != nil {
		return nil, fmt.Errorf("nix path-info: %w", err)
	}
	return topoSort(infos)
}

// Dump writes the NAR of a store path. Where the store is this machine's
// file system it serialises the path itself (dumpNAR), which spares a
// nix-store process per path; Pusher checks the NAR against the hash Nix
// reported either way, and on a mismatch asks nix-store (DumpNixStore).
func (n LocalNix) Dump(ctx context.Context, storePath string, w io.Writer) error {
	if _, err := os.Lstat(storePath); err != nil {
		return n.DumpNixStore(ctx, storePath, w)
	}
	if err := dumpNAR(ctxWriter{ctx: ctx, w: w}, storePath); err != nil {
		return fmt.Errorf("dump %s: %w", storePath, err)
	}
	return nil
}

// DumpNixStore writes the NAR of a store path as `nix-store --dump` makes it.
func (n LocalNix) DumpNixStore(ctx context.Context, storePath string, w io.Writer) error {
	ctx, cancel := context.WithTimeout(ctx, n.timeout())
	defer cancel()
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "nix-store", "--dump", storePath)
	cmd.Stdout, cmd.Stderr = w, &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("nix-store --dump %s: %v: %s", storePath, err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

// ctxWriter stops a dump once ctx is done.
type ctxWriter struct {
	ctx context.Context
	w   io.Writer
}

func (c ctxWriter) Write(b []byte) (int, error) {
	if err := context.Cause(c.ctx); err != nil {
		return 0, err
	}
	return c.w.Write(b)
}

// topoSort orders paths so every path comes after its references.
func topoSort(infos []PathInfo) ([]PathInfo, error) {
	byPath := map[string]PathInfo{}
	for _, i := range infos {
		byPath[i.Path] = i
	}
	sort.Slice(infos, func(a, b int) bool { return infos[a].Path < infos[b].Path })
	var out []PathInfo
	state := map[string]int{} // 1 visiting, 2 done
	var visit func(p string) error
	visit = func(p string) error {
		switch state[p] {
		case 1:
			return fmt.Errorf("reference cycle at %s", p)
		case 2:
			return nil
		}
		state[p] = 1
		info, ok := byPath[p]
		if !ok {
			return fmt.Errorf("closure is missing %s", p)
		}
		refs := append([]string(nil), info.References...)
		sort.Strings(refs)
		for _, r := range refs {
			if r != p {
				if err := visit(r); err != nil {
					return err
				}
			}
		}
		state[p] = 2
		out = append(out, info)
		return nil
	}
	for _, i := range infos {
		if err := visit(i.Path); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// LoadKey reads a Nix binary cache secret key file (name:base64), as made
// by `nix-store --generate-binary-cache-key`.
func LoadKey(file string) (signature.SecretKey, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return signature.SecretKey{}, fmt.Errorf("cache key: %w", err)
	}
	k, err := signature.LoadSecretKey(strings.TrimSpace(string(b)))
	if err != nil {
		return signature.SecretKey{}, fmt.Errorf("cache key %s: %w", file, err)
	}
	return k, nil
}

// NarinfoKey is the object key of a store path's narinfo.
func NarinfoKey(storePath string) (string, error) {
	sp, err := storepath.FromAbsolutePath(storePath)
	if err != nil {
		return "", err
	}
	return Prefix + nixbase32.EncodeToString(sp.Digest) + ".narinfo", nil
}

// parseNarHash reads "sha256-BASE64" (SRI) or "sha256:BASE32".
func parseNarHash(s string) ([]byte, error) {
	if b64, ok := strings.CutPrefix(s, "sha256-"); ok {
		return base64.StdEncoding.DecodeString(b64)
	}
	if b32, ok := strings.CutPrefix(s, "sha256:"); ok {
		return nixbase32.DecodeString(b32)
	}
	return nil, fmt.Errorf("unknown hash format %q", s)
}
