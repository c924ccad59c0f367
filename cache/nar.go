package cache

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"

	"github.com/klauspost/compress/zstd"
	"github.com/nix-community/go-nix/pkg/nixbase32"

	"github.com/nix-ota/nix-ota/bucket"
)

// encoderOptions are the zstd settings of pushed NARs: the default level
// (zstd 3, what Nix's own zstd compression uses); concurrency 2, so an
// encoder compresses one block while the next is read and hashed (one
// large path uses two cores: 14% faster for a 64 MiB path, the same for
// a closure of many); and a 1 MiB window: an encoder's history is twice
// its window, every page of it a page fault in a fresh process, and on a
// 300 MiB sample of binaries and locales 1 MiB compressed to 34.8%, 2 MiB
// to 34.7% and the default 8 MiB to 34.4% (zstd -3: 34.0%).
var encoderOptions = []zstd.EOption{zstd.WithEncoderLevel(zstd.SpeedDefault), zstd.WithEncoderConcurrency(2), zstd.WithWindowSize(1 << 20)}

// encoders are kept for reuse: a zstd encoder allocates its window and
// tables, and fresh memory costs page faults. A sync.Pool would drop them
// at every garbage collection; narGroup.compress bounds how many exist.
var encoders = make(chan *zstd.Encoder, 64)

func getEncoder(w io.Writer) *zstd.Encoder {
	select {
	case e := <-encoders:
		e.Reset(w)
		return e
	default:
	}
	e, err := zstd.NewWriter(w, encoderOptions...)
	if err != nil {
		panic(err) // only bad options fail, and the options are constant
	}
	return e
}

func putEncoder(e *zstd.Encoder) {
	e.Reset(io.Discard)
	select {
	case encoders <- e:
	default:
	}
}

// pushedNAR is a NAR in the cache: where its narinfo points and what it
// records of it.
type pushedNAR struct {
	url        string // relative to the cache: nar/<NAR hash>.nar.zst
	digest     []byte // sha256 of the NAR, as checked while it streamed
	narSize    int64
	compressed int64 // bytes uploaded
	shared     bool  // uploaded for another path of this push: counted there
}

// narURL names a NAR by its own hash, which Nix reports before the dump:
// the upload can stream, and the same NAR always gets the same key, so a
// re-push overwrites it with the same content and gc finds it through
// the narinfos that name it.
func narURL(digest []byte) string {
	return "nar/" + nixbase32.EncodeToString(digest) + ".nar.zst"
}

// narGroup uploads each NAR once per push: two paths with the same
// contents share one object. It also bounds how many NARs are compressed
// at once (compress holds a token per compression, one per core): more
// gain nothing, and each holds a zstd encoder.
type narGroup struct {
	mu       sync.Mutex
	pending  map[string]*narCall
	compress chan struct{}
}

type narCall struct {
	done chan struct{}
	nar  *pushedNAR
	err  error
}

func (g *narGroup) upload(ctx context.Context, p *Pusher, info PathInfo) (*pushedNAR, error) {
	want, err := parseNarHash(info.NarHash)
	if err != nil || len(want) != sha256.Size {
		return nil, fmt.Errorf("nix path-info gives the NAR hash %q, not a sha256 hash nix-ota can check (%v)", info.NarHash, err)
	}
	url := narURL(want)
	g.mu.Lock()
	if g.pending == nil {
		g.pending = map[string]*narCall{}
	}
	if c, ok := g.pending[url]; ok {
		g.mu.Unlock()
		select {
		case <-c.done:
		case <-ctx.Done():
			return nil, context.Cause(ctx)
		}
		if c.err != nil {
			return nil, c.err
		}
		return &pushedNAR{url: c.nar.url, digest: c.nar.digest, narSize: c.nar.narSize, compressed: c.nar.compressed, shared: true}, nil
	}
	c := &narCall{done: make(chan struct{})}
	g.pending[url] = c
	g.mu.Unlock()
	c.nar = &pushedNAR{url: url, digest: want}
	c.err = p.uploadNAR(ctx, info, c.nar, g.compress)
	close(c.done)
	return c.nar, c.err
}

// dumpFunc writes a store path's NAR.
type dumpFunc func(ctx context.Context, storePath string, w io.Writer) error

// nixStoreDumper is a Nix that can also have nix-store itself dump a
// path, as LocalNix can.
type nixStoreDumper interface {
	DumpNixStore(ctx context.Context, storePath string, w io.Writer) error
}

// mismatchError: a dump is not the NAR Nix described.
type mismatchError struct{ what, nix, dump string }

func (e *mismatchError) Error() string {
	return fmt.Sprintf("NAR %s mismatch: nix says %s, the dump has %s (store corrupt? run nix-store --verify --check-contents)", e.what, e.nix, e.dump)
}

// uploadNAR dumps, compresses and uploads info's NAR to its key, checking
// it against the hash and size Nix reported. A NAR that Nix's Dump got
// wrong is dumped again by nix-store before the push gives up on it.
func (p *Pusher) uploadNAR(ctx context.Context, info PathInfo, nar *pushedNAR, compress chan struct{}) error {
	err := p.putStreamed(ctx, info, nar, p.Nix.Dump, compress)
	var mm *mismatchError
	if ns, ok := p.Nix.(nixStoreDumper); ok && errors.As(err, &mm) {
		err = p.putStreamed(ctx, info, nar, ns.DumpNixStore, compress)
	}
	return err
}

// compressTo writes the zstd-compressed NAR of info to w, hashing it on
// the way; it fails if the NAR is not the one Nix described, after the
// last byte went to w (so the upload must fail on it: see putStreamed).
func (p *Pusher) compressTo(ctx context.Context, info PathInfo, nar *pushedNAR, dump dumpFunc, w io.Writer) error {
	zc := &countingWriter{w: w}
	enc := getEncoder(zc)
	defer putEncoder(enc)
	h := sha256.New()
	nc := &countingWriter{w: io.MultiWriter(h, enc)}
	if p.Bytes != nil {
		total := int64(info.NarSize)
		var read atomic.Int64 // NAR bytes read; the encoder writes w from its own goroutine
		nc.report = func(n int64) {
			read.Store(n)
			p.Bytes(ByteProgress{Path: info.Path, Phase: PhaseCompress, Done: n, Total: total})
		}
		zc.report = func(int64) {
			p.Bytes(ByteProgress{Path: info.Path, Phase: PhaseUpload, Done: read.Load(), Total: total})
		}
	}
	if err := dump(ctx, info.Path, nc); err != nil {
		return err
	}
	if err := enc.Close(); err != nil {
		return err
	}
	nar.narSize, nar.compressed = nc.n, zc.n
	if got := h.Sum(nil); !bytes.Equal(got, nar.digest) {
		return &mismatchError{"hash", info.NarHash, "sha256:" + nixbase32.EncodeToString(got)}
	}
	if uint64(nc.n) != info.NarSize && info.NarSize != 0 {
		return &mismatchError{"size", fmt.Sprint(info.NarSize), fmt.Sprint(nc.n)}
	}
	return nil
}

// narPut: a NAR is immutable under its key, and devices check it against
// the NAR hash in its signed narinfo, so its body needs no S3 signature.
var narPut = bucket.PutOptions{ContentType: "application/x-nix-nar", CacheControl: bucket.Immutable, UnsignedPayload: true}

// errUploadStopped reaches the compressor when the upload stopped reading.
var errUploadStopped = errors.New("the upload stopped")

// putStreamed pipes dump → zstd → bucket with the size unknown. The
// compressor closes the pipe with its error, so a dump that fails or does
// not hash to what Nix said is a read error to the store's Put, which then
// keeps no object (an S3 multipart upload is aborted), and no narinfo is
// written for it.
func (p *Pusher) putStreamed(ctx context.Context, info PathInfo, nar *pushedNAR, dump dumpFunc, compress chan struct{}) error {
	pr, pw := io.Pipe()
	compressed := make(chan error, 1)
	go func() {
		var err error
		select {
		case compress <- struct{}{}:
			err = p.compressTo(ctx, info, nar, dump, pw)
			<-compress
		case <-ctx.Done():
			err = context.Cause(ctx)
		}
		pw.CloseWithError(err) // nil: a clean EOF
		compressed <- err
	}()
	_, err := p.Store.Put(ctx, Prefix+nar.url, pr, -1, narPut)
	pr.CloseWithError(errUploadStopped) // the compressor must not block on a Put that gave up
	cerr := <-compressed
	switch {
	case cerr != nil && !errors.Is(cerr, errUploadStopped):
		return cerr
	case err != nil:
		return err
	}
	return cerr
}
