package cache

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/klauspost/compress/zstd"
	"github.com/nix-community/go-nix/pkg/nixbase32"

	"github.com/nix-ota/nix-ota/bucket"
)

// BufferedNAR is the largest NAR compressed into memory and uploaded with
// a known size in one request; larger NARs stream to the bucket as they
// are compressed (a multipart upload on S3). Most store paths are far
// smaller, and a streamed upload costs S3 three requests at least.
const BufferedNAR = 16 << 20

// encoderOptions are the zstd settings of pushed NARs: the default level
// (zstd 3, what Nix's own zstd compression uses) and one goroutine per
// encoder, since a push compresses several paths at once.
var encoderOptions = []zstd.EOption{zstd.WithEncoderLevel(zstd.SpeedDefault), zstd.WithEncoderConcurrency(1)}

// encoders are reused: a zstd encoder allocates its window and tables.
var encoders = sync.Pool{New: func() any {
	e, err := zstd.NewWriter(nil, encoderOptions...)
	if err != nil {
		panic(err) // only bad options fail, and the options are constant
	}
	return e
}}

// buffers hold buffered NARs between compression and upload.
var buffers = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// pushedNAR is a NAR in the cache: where its narinfo points and what it
// records of it.
type pushedNAR struct {
	url        string // relative to the cache: nar/<NAR hash>.nar.zst
	digest     []byte // sha256 of the NAR, as checked while it streamed
	narSize    int64
	compressed int64 // bytes uploaded
}

// narURL names a NAR by its own hash, which Nix reports before the dump:
// the upload can stream, and the same NAR always gets the same key, so a
// re-push overwrites it with the same content and gc finds it through
// the narinfos that name it.
func narURL(digest []byte) string {
	return "nar/" + nixbase32.EncodeToString(digest) + ".nar.zst"
}

// narGroup uploads each NAR once per push: two paths with the same
// contents share one object.
type narGroup struct {
	mu      sync.Mutex
	pending map[string]*narCall
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
		return &pushedNAR{url: c.nar.url, digest: c.nar.digest, narSize: c.nar.narSize}, nil // uploaded once, counted once
	}
	c := &narCall{done: make(chan struct{})}
	g.pending[url] = c
	g.mu.Unlock()
	c.nar = &pushedNAR{url: url, digest: want}
	c.err = p.uploadNAR(ctx, info, c.nar)
	close(c.done)
	return c.nar, c.err
}

// uploadNAR dumps, compresses and uploads info's NAR to its key, checking
// it against the hash and size Nix reported. A small NAR is compressed
// into memory first; a large one streams.
func (p *Pusher) uploadNAR(ctx context.Context, info PathInfo, nar *pushedNAR) error {
	if info.NarSize <= BufferedNAR {
		return p.putBuffered(ctx, info, nar)
	}
	return p.putStreamed(ctx, info, nar)
}

// compressTo writes the zstd-compressed NAR of info to w, hashing it on
// the way; it fails if the NAR is not the one Nix described, after the
// last byte went to w (a streamed upload must fail on it: see
// putStreamed).
func (p *Pusher) compressTo(ctx context.Context, info PathInfo, nar *pushedNAR, w io.Writer) error {
	zc := &countingWriter{w: w}
	enc := encoders.Get().(*zstd.Encoder)
	enc.Reset(zc)
	defer func() { enc.Reset(io.Discard); encoders.Put(enc) }()
	h := sha256.New()
	nc := &countingWriter{w: io.MultiWriter(h, enc)}
	if p.Bytes != nil {
		nc.report = func(n int64) {
			p.Bytes(ByteProgress{Path: info.Path, Phase: PhaseCompress, Done: n, Total: int64(info.NarSize)})
		}
	}
	if err := p.Nix.Dump(ctx, info.Path, nc); err != nil {
		return err
	}
	if err := enc.Close(); err != nil {
		return err
	}
	nar.narSize, nar.compressed = nc.n, zc.n
	if got := h.Sum(nil); !bytes.Equal(got, nar.digest) {
		return fmt.Errorf("NAR hash mismatch: nix says %s, the dump hashes to sha256:%s (store corrupt? run nix-store --verify --check-contents)", info.NarHash, nixbase32.EncodeToString(got))
	}
	if uint64(nc.n) != info.NarSize && info.NarSize != 0 {
		return fmt.Errorf("NAR size mismatch: nix says %d, the dump has %d bytes (store corrupt? run nix-store --verify --check-contents)", info.NarSize, nc.n)
	}
	return nil
}

var narPut = bucket.PutOptions{ContentType: "application/x-nix-nar", CacheControl: bucket.Immutable}

// putBuffered compresses the NAR into memory, checks it, and uploads it
// with its size known.
func (p *Pusher) putBuffered(ctx context.Context, info PathInfo, nar *pushedNAR) error {
	buf := buffers.Get().(*bytes.Buffer)
	buf.Reset()
	defer buffers.Put(buf)
	if err := p.compressTo(ctx, info, nar, buf); err != nil {
		return err
	}
	br := bytes.NewReader(buf.Bytes())
	var r io.Reader = br
	if p.Bytes != nil {
		r = newCountingReaderAt(br, func(n int64) {
			p.Bytes(ByteProgress{Path: info.Path, Phase: PhaseUpload, Done: n, Total: nar.compressed})
		})
	}
	_, err := p.Store.Put(ctx, Prefix+nar.url, r, nar.compressed, narPut)
	return err
}

// errUploadStopped reaches the compressor when the upload stopped reading.
var errUploadStopped = errors.New("the upload stopped")

// putStreamed pipes dump → zstd → bucket with the size unknown. The
// compressor closes the pipe with its error, so a dump that fails or does
// not hash to what Nix said is a read error to the store's Put, which then
// keeps no object (an S3 multipart upload is aborted), and no narinfo is
// written for it.
func (p *Pusher) putStreamed(ctx context.Context, info PathInfo, nar *pushedNAR) error {
	pr, pw := io.Pipe()
	compressed := make(chan error, 1)
	go func() {
		err := p.compressTo(ctx, info, nar, pw)
		pw.CloseWithError(err) // nil: a clean EOF
		compressed <- err
	}()
	var r io.Reader = pr
	if p.Bytes != nil {
		r = &countingReader{r: pr, report: func(n int64) {
			p.Bytes(ByteProgress{Path: info.Path, Phase: PhaseUpload, Done: n})
		}}
	}
	_, err := p.Store.Put(ctx, Prefix+nar.url, r, -1, narPut)
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
