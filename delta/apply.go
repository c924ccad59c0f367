package delta

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/klauspost/compress/zstd"
)

// Apply writes the target that delta d rebuilds from base (baseSize bytes)
// to w, and returns how many bytes it wrote. It fails with ErrCorrupt as
// soon as an op reads outside the base or the output would pass maxOut
// bytes; the caller still checks the output's size and hash.
func Apply(w io.Writer, base io.ReaderAt, baseSize int64, d io.Reader, maxOut int64) (int64, error) {
	if maxOut < 0 || baseSize < 0 {
		return 0, fmt.Errorf("delta: negative sizes (output %d, base %d)", maxOut, baseSize)
	}
	var magic [len(Magic)]byte
	if _, err := io.ReadFull(d, magic[:]); err != nil || string(magic[:]) != Magic {
		return 0, fmt.Errorf("%w: not a nix-ota delta (no %q header)", ErrCorrupt, Magic[:len(Magic)-1])
	}
	// Only the io.Reader: given a reader with Bytes and Len, zstd decodes
	// a small input whole, trusting the content size its frame declares.
	zr, err := zstd.NewReader(struct{ io.Reader }{d}, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true), zstd.WithDecoderMaxWindow(MaxWindow))
	if err != nil {
		return 0, corrupt("%v", err)
	}
	defer zr.Close()
	a := applier{r: bufio.NewReaderSize(zr, 64<<10), w: w, base: base, baseSize: baseSize, max: maxOut,
		buf: make([]byte, 64<<10), window: make([]byte, 0, 64<<10)}
	for {
		done, err := a.op()
		if err != nil {
			return a.out, err
		}
		if done {
			break
		}
	}
	if _, err := a.r.ReadByte(); err != io.EOF {
		if err == nil {
			err = errors.New("data after the end op")
		}
		return a.out, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	return a.out, nil
}

type applier struct {
	r        *bufio.Reader
	w        io.Writer
	base     io.ReaderAt
	baseSize int64
	cursor   int64
	out, max int64
	buf      []byte
	// window is the base from windowAt on, kept so that many short ops
	// (a hostile delta's one-byte copies) are not one read each.
	window   []byte
	windowAt int64
}

func corrupt(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrCorrupt, fmt.Sprintf(format, args...))
}

// op applies one op; done is true after the end op.
func (a *applier) op() (done bool, err error) {
	code, err := a.r.ReadByte()
	if err == io.EOF {
		return false, corrupt("ends without an end op")
	}
	if err != nil {
		return false, corrupt("%v", err)
	}
	if code == opEnd {
		return true, nil
	}
	if code != opCopy && code != opAdd && code != opLiteral {
		return false, corrupt("unknown op 0x%02x", code)
	}
	n, err := binary.ReadUvarint(a.r)
	if err != nil {
		return false, corrupt("op %q: unreadable length: %v", code, err)
	}
	if n == 0 || n > uint64(a.max-a.out) {
		return false, corrupt("op %q of bad length (%d bytes, %d left of %d)", code, n, a.max-a.out, a.max)
	}
	if code == opLiteral {
		return false, a.literal(int64(n))
	}
	d, err := binary.ReadVarint(a.r)
	if err != nil {
		return false, corrupt("bad offset: %v", err)
	}
	off := a.cursor + d
	if d < -a.baseSize || d > a.baseSize || off < 0 || off > a.baseSize-int64(n) {
		return false, corrupt("op %q reads %d bytes at %d, outside the %d-byte base", code, n, off, a.baseSize)
	}
	a.cursor = off + int64(n)
	return false, a.fromBase(code == opAdd, off, int64(n))
}

// literal copies the next n delta bytes to the output.
func (a *applier) literal(n int64) error {
	for n > 0 {
		b := a.buf[:min(n, int64(len(a.buf)))]
		if _, err := io.ReadFull(a.r, b); err != nil {
			return corrupt("literal cut short: %v", err)
		}
		k, err := a.w.Write(b)
		a.out += int64(k)
		if err != nil {
			return err
		}
		n -= int64(len(b))
	}
	return nil
}

// fromBase writes n base bytes at off, plus the next n delta bytes if add.
func (a *applier) fromBase(add bool, off, n int64) error {
	for n > 0 {
		b := a.buf[:min(n, int64(len(a.buf)))]
		if err := a.readBase(b, off); err != nil {
			return err
		}
		if add {
			if err := a.addFrom(b); err != nil {
				return err
			}
		}
		k, err := a.w.Write(b)
		a.out += int64(k)
		if err != nil {
			return err
		}
		off += int64(len(b))
		n -= int64(len(b))
	}
	return nil
}

// readBase fills b from the base at off: short reads through the window.
func (a *applier) readBase(b []byte, off int64) error {
	if len(b) >= 4<<10 {
		return a.readAt(b, off)
	}
	if off < a.windowAt || off+int64(len(b)) > a.windowAt+int64(len(a.window)) {
		a.window = a.window[:min(int64(cap(a.window)), a.baseSize-off)]
		if err := a.readAt(a.window, off); err != nil {
			a.window = a.window[:0]
			return err
		}
		a.windowAt = off
	}
	copy(b, a.window[off-a.windowAt:])
	return nil
}

// readAt is ReadAt that accepts io.EOF with a full read at the end, as
// io.ReaderAt allows.
func (a *applier) readAt(b []byte, off int64) error {
	if k, err := a.base.ReadAt(b, off); k < len(b) {
		return fmt.Errorf("read base at %d: %w", off, err)
	}
	return nil
}

// addFrom adds the next len(b) delta bytes to b, byte by byte mod 256.
func (a *applier) addFrom(b []byte) error {
	for i := 0; i < len(b); {
		p, err := a.r.Peek(min(len(b)-i, a.r.Size()))
		if len(p) == 0 {
			return corrupt("add cut short: %v", err)
		}
		for j, x := range p {
			b[i+j] += x
		}
		i += len(p)
		a.r.Discard(len(p))
	}
	return nil
}
