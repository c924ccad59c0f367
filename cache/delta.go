package cache

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/klauspost/compress/zstd"
	"github.com/nix-community/go-nix/pkg/narinfo/signature"
	"github.com/nix-community/go-nix/pkg/nixbase32"

	"github.com/nix-ota/nix-ota/bucket"
	"github.com/nix-ota/nix-ota/delta"
)

// deltaResult is what writeDelta wrote for one path.
type deltaResult struct {
	size, full int64 // bytes of the delta and of the compressed NAR it stands for
	base       string
}

// errNoGain: the delta would not be at most half the compressed NAR.
var errNoGain = errors.New("delta not at most half the compressed NAR")

// writeDelta makes and uploads a delta for info (whose NAR is uploaded as
// nar) against the most similar of p.Bases, then its index, both before
// the narinfo: a device that sees the narinfo finds the delta complete,
// and an interrupted push leaves at most an unused object that the next
// push writes again under the same name. It returns nil, nil when the path
// gets no delta by rule (too small, no base of its name).
func (p *Pusher) writeDelta(ctx context.Context, info PathInfo, nar *pushedNAR) (*deltaResult, error) {
	if nar.narSize < delta.MinNarSize || len(p.Bases) == 0 {
		return nil, nil
	}
	base, ok := delta.PickBase(info.Path, p.Bases)
	if !ok || base.NarSize > delta.MaxBaseSize(uint64(nar.narSize)) {
		return nil, nil
	}
	select {
	case p.deltaSlot() <- struct{}{}:
		defer func() { <-p.deltaSlot() }()
	case <-ctx.Done():
		return nil, context.Cause(ctx)
	}
	dir, err := os.MkdirTemp("", "nix-ota-delta-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	bni, err := p.baseNAR(ctx, base.Path, filepath.Join(dir, "base.nar"))
	if err != nil {
		return nil, fmt.Errorf("base %s: %w", base.Path, err)
	}
	targetFile := filepath.Join(dir, "target.nar")
	if err := dumpTo(ctx, p.Nix.Dump, info.Path, targetFile); err != nil {
		return nil, err
	}
	d, err := encodeFiles(filepath.Join(dir, "base.nar"), targetFile)
	if err != nil {
		return nil, err
	}
	if int64(len(d))*2 > nar.compressed {
		return nil, fmt.Errorf("%w (%d against %d bytes)", errNoGain, len(d), nar.compressed)
	}
	sum := sha256.Sum256(d)
	ix := delta.Index{StorePath: info.Path, NarHash: "sha256:" + nixbase32.EncodeToString(nar.digest), NarSize: uint64(nar.narSize),
		Base: base.Path, BaseNarHash: bni.hash, BaseNarSize: bni.size,
		Delta: delta.ObjectKey(nixbase32.EncodeToString(sum[:])), DeltaSize: int64(len(d)), FullSize: nar.compressed}
	return &deltaResult{size: ix.DeltaSize, full: ix.FullSize, base: base.Path}, p.putDelta(ctx, ix, d)
}

// deltaSlot is a semaphore of one: a delta holds both NARs mapped and an
// index of half the base's size.
func (p *Pusher) deltaSlot() chan struct{} {
	p.deltaOnce.Do(func() { p.deltas = make(chan struct{}, 1) })
	return p.deltas
}

func (p *Pusher) putDelta(ctx context.Context, ix delta.Index, d []byte) error {
	if _, err := bucket.PutBytes(ctx, p.Store, Prefix+ix.Delta, d, bucket.PutOptions{ContentType: "application/vnd.nix-ota.delta", CacheControl: bucket.Immutable, UnsignedPayload: true}); err != nil {
		return err
	}
	b, err := json.Marshal(ix)
	if err != nil {
		return err
	}
	key, err := delta.IndexKey(ix.StorePath)
	if err != nil {
		return err
	}
	_, err = bucket.PutBytes(ctx, p.Store, Prefix+key, b, bucket.PutOptions{ContentType: "application/json"})
	return err
}

type baseInfo struct {
	hash string
	size uint64
}

// baseNAR writes the NAR of base, as the cache holds it, to file: the
// narinfo must be signed by this pusher's key, and the NAR must hash to
// it. Devices rebuild from their own copy of base and check the result, so
// this only keeps a push from making deltas nobody can use.
func (p *Pusher) baseNAR(ctx context.Context, base, file string) (baseInfo, error) {
	ni, err := ReadNarinfo(ctx, p.Store, base)
	if err != nil {
		return baseInfo{}, err
	}
	if !signature.VerifyFirst(ni.Fingerprint(), ni.Signatures, []signature.PublicKey{p.Key.ToPublicKey()}) {
		return baseInfo{}, errors.New("its narinfo is not signed by this cache key")
	}
	if ni.Compression != "zstd" {
		return baseInfo{}, fmt.Errorf("its NAR is compressed with %q, not zstd", ni.Compression)
	}
	want, err := parseNarHash(ni.NarHash.String())
	if err != nil {
		return baseInfo{}, err
	}
	// The narinfo's URL is not signed: whatever it names is read only up
	// to what a NAR of the signed size can take compressed, and
	// decompressed only up to that size.
	o, err := p.Store.Get(ctx, Prefix+ni.URL, bucket.GetOptions{MaxSize: delta.MaxCompressed(ni.NarSize)})
	if err != nil {
		return baseInfo{}, err
	}
	zr, err := zstd.NewReader(bytes.NewReader(o.Data), zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(64<<20))
	if err != nil {
		return baseInfo{}, err
	}
	defer zr.Close()
	h := sha256.New()
	n, err := writeFile(file, io.TeeReader(io.LimitReader(zr, int64(ni.NarSize)+1), h))
	if err != nil {
		return baseInfo{}, err
	}
	if !bytes.Equal(h.Sum(nil), want) || uint64(n) != ni.NarSize {
		return baseInfo{}, errors.New("its NAR in the cache does not match its narinfo")
	}
	return baseInfo{hash: "sha256:" + nixbase32.EncodeToString(want), size: ni.NarSize}, nil
}

func dumpTo(ctx context.Context, dump dumpFunc, storePath, file string) error {
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	err = dump(ctx, storePath, w)
	if err == nil {
		err = w.Flush()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

func writeFile(file string, r io.Reader) (int64, error) {
	f, err := os.Create(file)
	if err != nil {
		return 0, err
	}
	n, err := io.Copy(f, r)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return n, err
}

// encodeFiles returns the delta from the NAR in baseFile to the one in
// targetFile, both mapped into memory rather than read into the heap.
func encodeFiles(baseFile, targetFile string) ([]byte, error) {
	base, unmapBase, err := mapFile(baseFile)
	if err != nil {
		return nil, err
	}
	defer unmapBase()
	target, unmapTarget, err := mapFile(targetFile)
	if err != nil {
		return nil, err
	}
	defer unmapTarget()
	var out bytes.Buffer
	if _, err := delta.Encode(&out, base, target); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}
