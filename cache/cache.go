// Package cache is the Nix binary cache under cache/ in a bucket: pushing
// closures into it (narinfo + NAR, signed with the cache key) and finding
// what is reachable from the published systems, for garbage collection.
//
// Debian's Nix, and many CI runners' Nix, cannot write to S3, so nix-ota
// writes the cache files itself: NARs come from `nix-store --dump`, path
// metadata from `nix path-info`, narinfo text and signatures from go-nix.
//
// Threat model: devices verify every narinfo signature against their
// trusted cache keys, so the bucket cannot substitute content. A push writes
// the NAR before its narinfo, and dependencies before dependents, so an
// interrupted push never leaves a narinfo pointing at nothing; the next
// push skips what is complete and redoes the rest.
package cache

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"os/exec"
	"path"
	"sort"
	"strings"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/nix-community/go-nix/pkg/narinfo"
	"github.com/nix-community/go-nix/pkg/narinfo/signature"
	"github.com/nix-community/go-nix/pkg/nixbase32"
	"github.com/nix-community/go-nix/pkg/nixhash"
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

func (n LocalNix) Dump(ctx context.Context, storePath string, w io.Writer) error {
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

// Progress is reported after each path.
type Progress struct {
	Done, Total       int   // paths looked at
	Uploaded, Skipped int   // paths written / already complete in the cache
	Bytes             int64 // compressed bytes uploaded so far
	Path              string
}

// Result sums up a push.
type Result = Progress

// Phases of ByteProgress.
const (
	PhaseCompress = "compress" // the NAR is dumped and compressed: Done of NarSize bytes
	PhaseUpload   = "upload"   // the compressed NAR is sent: Done of its size
)

// ByteProgress is reported while one path's NAR is compressed and
// uploaded, after every chunk: a large path shows it is moving long
// before Progress reports it done.
type ByteProgress struct {
	Path        string
	Phase       string // PhaseCompress or PhaseUpload
	Done, Total int64  // bytes; Total is 0 when unknown
}

// Pusher uploads closures into a bucket's cache.
type Pusher struct {
	Store    bucket.Store
	Key      signature.SecretKey
	Nix      Nix
	TempDir  string         // for compressed NARs before upload; "" = os.TempDir()
	Progress func(Progress) // optional
	// Bytes is called with byte counts within each path (optional). It is
	// called often, from the goroutines that read and write the NAR; the
	// receiver throttles what it prints.
	Bytes func(ByteProgress)
}

// EnsureInfo writes cache/nix-cache-info if it is missing.
func EnsureInfo(ctx context.Context, s bucket.Store) error {
	info := "StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 40\n"
	_, err := bucket.PutBytes(ctx, s, InfoKey, []byte(info), bucket.PutOptions{ContentType: "text/x-nix-cache-info", CreateOnly: true})
	if errors.Is(err, bucket.ErrExists) {
		return nil
	}
	return err
}

// signedHere reports whether the cache already has a narinfo for path that
// this pusher's key signed. Anything else at that key (junk, another key's
// narinfo) is pushed over: skipping it would leave devices a path they
// cannot fetch, and publish's closure check would count it present.
func (p *Pusher) signedHere(ctx context.Context, path string) (bool, error) {
	ni, err := ReadNarinfo(ctx, p.Store, path)
	switch {
	case errors.Is(err, bucket.ErrNotFound):
		return false, nil
	case err != nil && (errors.Is(err, bucket.ErrUnreachable) || errors.Is(err, bucket.ErrAccessDenied)):
		return false, err
	case err != nil:
		return false, nil // unreadable or malformed: replace it
	}
	return signature.VerifyFirst(ni.Fingerprint(), ni.Signatures, []signature.PublicKey{p.Key.ToPublicKey()}), nil
}

// Push uploads the closures of paths: for each path whose narinfo is not
// in the cache yet, the zstd-compressed NAR, then the signed narinfo.
func (p *Pusher) Push(ctx context.Context, paths []string) (Result, error) {
	if err := EnsureInfo(ctx, p.Store); err != nil {
		return Result{}, err
	}
	closure, err := p.Nix.Closure(ctx, paths)
	if err != nil {
		return Result{}, err
	}
	res := Result{Total: len(closure)}
	for _, info := range closure {
		key, err := NarinfoKey(info.Path)
		if err != nil {
			return res, err
		}
		res.Path = info.Path
		if present, err := p.signedHere(ctx, info.Path); err != nil {
			return res, err
		} else if present {
			res.Skipped++
		} else {
			n, err := p.pushOne(ctx, info, key)
			if err != nil {
				return res, fmt.Errorf("push %s: %w", info.Path, err)
			}
			res.Uploaded++
			res.Bytes += n
		}
		res.Done++
		if p.Progress != nil {
			p.Progress(res)
		}
	}
	return res, nil
}

// hashingWriter hashes and counts what passes through.
type hashingWriter struct {
	h hash.Hash
	n int64
}

func (w *hashingWriter) Write(b []byte) (int, error) {
	w.h.Write(b)
	w.n += int64(len(b))
	return len(b), nil
}

// compressedNAR is a path's NAR, zstd-compressed into a temp file, with
// the hashes and sizes its narinfo records.
type compressedNAR struct {
	file                 *os.File
	narDigest, fileHash  []byte
	narSize, compressedN int64
}

func (p *Pusher) pushOne(ctx context.Context, info PathInfo, narinfoKey string) (int64, error) {
	f, err := os.CreateTemp(p.TempDir, "nix-ota-nar-*")
	if err != nil {
		return 0, err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	nar, err := p.compress(ctx, info, f)
	if err != nil {
		return 0, err
	}
	narURL := "nar/" + nixbase32.EncodeToString(nar.fileHash) + ".nar.zst"
	// The NAR first: a narinfo must never point at nothing.
	if err := p.upload(ctx, info.Path, Prefix+narURL, nar); err != nil {
		return 0, err
	}
	ni, err := p.narinfo(info, narURL, nar)
	if err != nil {
		return 0, err
	}
	if _, err := bucket.PutBytes(ctx, p.Store, narinfoKey, []byte(ni.String()), bucket.PutOptions{ContentType: "text/x-nix-narinfo"}); err != nil {
		return 0, err
	}
	return nar.compressedN, nil
}

// compress dumps the path's NAR through zstd into f in one pass, hashing
// the NAR and the compressed file on the way, and checks the NAR against
// what Nix says of the path.
func (p *Pusher) compress(ctx context.Context, info PathInfo, f *os.File) (*compressedNAR, error) {
	narHash := &hashingWriter{h: sha256.New()}
	fileHash := &hashingWriter{h: sha256.New()}
	zw, err := zstd.NewWriter(io.MultiWriter(f, fileHash))
	if err != nil {
		return nil, err
	}
	var w io.Writer = io.MultiWriter(zw, narHash)
	if p.Bytes != nil {
		w = &countingWriter{w: w, report: func(n int64) {
			p.Bytes(ByteProgress{Path: info.Path, Phase: PhaseCompress, Done: n, Total: int64(info.NarSize)})
		}}
	}
	if err := p.Nix.Dump(ctx, info.Path, w); err != nil {
		zw.Close()
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	narDigest := narHash.h.Sum(nil)
	if want, err := parseNarHash(info.NarHash); err == nil && !bytes.Equal(want, narDigest) {
		return nil, fmt.Errorf("NAR hash mismatch: nix says %s, the dump hashes to sha256:%s (store corrupt?)", info.NarHash, nixbase32.EncodeToString(narDigest))
	}
	if uint64(narHash.n) != info.NarSize && info.NarSize != 0 {
		return nil, fmt.Errorf("NAR size mismatch: nix says %d, the dump has %d bytes", info.NarSize, narHash.n)
	}
	return &compressedNAR{file: f, narDigest: narDigest, fileHash: fileHash.h.Sum(nil), narSize: narHash.n, compressedN: fileHash.n}, nil
}

// upload puts the compressed NAR at key, reporting bytes as they go.
func (p *Pusher) upload(ctx context.Context, storePath, key string, nar *compressedNAR) error {
	if _, err := nar.file.Seek(0, io.SeekStart); err != nil {
		return err
	}
	var r io.Reader = nar.file
	if p.Bytes != nil {
		r = &countingFile{f: nar.file, size: nar.compressedN, report: func(n int64) {
			p.Bytes(ByteProgress{Path: storePath, Phase: PhaseUpload, Done: n, Total: nar.compressedN})
		}}
	}
	_, err := p.Store.Put(ctx, key, r, nar.compressedN, bucket.PutOptions{ContentType: "application/x-nix-nar", CacheControl: bucket.Immutable})
	return err
}

// narinfo is the signed narinfo of a pushed path.
func (p *Pusher) narinfo(info PathInfo, narURL string, nar *compressedNAR) (*narinfo.NarInfo, error) {
	ni := &narinfo.NarInfo{
		StorePath:   info.Path,
		URL:         narURL,
		Compression: "zstd",
		FileHash:    nixhash.MustNewHashWithEncoding(nixhash.SHA256, nar.fileHash, nixhash.NixBase32, true),
		FileSize:    uint64(nar.compressedN),
		NarHash:     nixhash.MustNewHashWithEncoding(nixhash.SHA256, nar.narDigest, nixhash.NixBase32, true),
		NarSize:     uint64(nar.narSize),
	}
	for _, r := range info.References {
		ni.References = append(ni.References, path.Base(r))
	}
	sort.Strings(ni.References)
	if info.Deriver != "" {
		ni.Deriver = path.Base(info.Deriver)
	}
	sig, err := p.Key.Sign(nil, ni.Fingerprint())
	if err != nil {
		return nil, err
	}
	ni.Signatures = append(ni.Signatures, sig)
	return ni, nil
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
