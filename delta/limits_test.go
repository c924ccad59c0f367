package delta

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"runtime"
	"testing"
)

// fcsBomb is a delta whose zstd frame has a 1 MiB window but declares
// size bytes of content, and holds one byte (an end op).
func fcsBomb(size uint64) []byte {
	return rawFrame(0xc0, binary.LittleEndian.AppendUint64([]byte{0x50}, size), opEnd)
}

// rleBomb is a delta of a few KiB whose zstd frame (1 MiB window)
// decodes to an end op followed by blocks×128 KiB more bytes.
func rleBomb(blocks int) []byte {
	d := append(append([]byte(Magic), zstdMagic...), 0x00, 0x50)
	d = append(d, 1<<3, 0, 0, opEnd) // raw block of 1 byte, not last
	for i := range blocks {
		bh := uint32(128<<10)<<3 | 1<<1 // RLE
		if i == blocks-1 {
			bh |= 1
		}
		d = append(d, byte(bh), byte(bh>>8), byte(bh>>16), opEnd)
	}
	return d
}

// allocated is how many bytes f allocates on the heap.
func allocated(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// TestApplyMemoryBounded holds Apply to its promise of one zstd window
// (at most MaxWindow) and small buffers, whatever the frame declares or
// decodes to, and whichever reader the delta comes in.
func TestApplyMemoryBounded(t *testing.T) {
	readers := []struct {
		name string
		wrap func([]byte) io.Reader
		bug  string
	}{
		{"bytes.Reader", func(b []byte) io.Reader { return bytes.NewReader(b) }, ""},
		{"bufio.Reader", func(b []byte) io.Reader { return bufio.NewReader(bytes.NewReader(b)) }, ""},
		// zstd decodes a small reader with Bytes and Len whole, trusting
		// the declared content size, unless Apply hides those methods.
		{"bytes.Buffer", func(b []byte) io.Reader { return bytes.NewBuffer(b) }, ""},
	}
	deltas := []struct {
		name string
		d    []byte
	}{
		{"declared content size 1 GiB", fcsBomb(1 << 30)},
		{"64 MiB of RLE blocks", rleBomb(512)},
		{"window over MaxWindow", bigWindowDelta()},
	}
	for _, r := range readers {
		for _, c := range deltas {
			t.Run(r.name+"/"+c.name, func(t *testing.T) {
				if r.bug != "" {
					t.Skip(r.bug)
				}
				var err error
				got := allocated(func() {
					_, err = Apply(io.Discard, &baseAt{tb: t, b: tableBase}, int64(len(tableBase)), r.wrap(c.d), 1<<20)
				})
				if !errors.Is(err, ErrCorrupt) {
					t.Errorf("Apply of a %d-byte delta = %v, want ErrCorrupt", len(c.d), err)
				}
				if got > 2*MaxWindow {
					t.Errorf("Apply of a %d-byte delta allocated %d MiB, want at most %d", len(c.d), got>>20, 2*MaxWindow>>20)
				}
			})
		}
	}
}

// TestApplyLiteralStreamError: a zstd stream that breaks inside a
// literal is as corrupt as one that breaks anywhere else.
func TestApplyLiteralStreamError(t *testing.T) {
	good := packOps(opLit(string(randBytes(10, 200<<10))), opEndByte)
	for name, d := range map[string][]byte{
		"frame cut in the literal's last block":  good[:len(good)-1000],
		"checksum wrong after a long literal":    flipLast(good),
		"raw block shorter than its header says": []byte(Magic + "(\xb5/\xfd\x0400\x00\x00L0000000"),
	} {
		t.Run(name, func(t *testing.T) {
			_, err := applyBytes(t, tableBase, d, 1<<20)
			if !errors.Is(err, ErrCorrupt) {
				t.Errorf("Apply = %v, want an error wrapping ErrCorrupt", err)
			}
		})
	}
}

// eofAtEnd is a base that, as io.ReaderAt allows, returns io.EOF with a
// read that fills p and reaches its end.
type eofAtEnd struct{ b []byte }

func (r eofAtEnd) ReadAt(p []byte, off int64) (int, error) {
	n := copy(p, r.b[off:])
	if n < len(p) || off+int64(n) == int64(len(r.b)) {
		return n, io.EOF
	}
	return n, nil
}

func TestApplyBaseEOFAtEnd(t *testing.T) {
	base := randBytes(11, 1000)
	d, _ := encodeBytes(t, base, base)
	var out bytes.Buffer
	if _, err := Apply(&out, eofAtEnd{base}, int64(len(base)), bytes.NewReader(d), int64(len(base))); err != nil {
		t.Fatalf("Apply of a copy of the whole base: %v", err)
	}
	if !bytes.Equal(out.Bytes(), base) {
		t.Fatal("Apply wrote another target")
	}
}

func TestApplyNegativeMaxOut(t *testing.T) {
	var out bytes.Buffer
	n, err := Apply(&out, &baseAt{tb: t, b: tableBase}, int64(len(tableBase)), bytes.NewReader(packOps(opLit("abc"), opEndByte)), -1)
	if err == nil || n != 0 || out.Len() != 0 {
		t.Fatalf("Apply with maxOut -1 wrote %d bytes (returned %d), error %v; want nothing and an error", out.Len(), n, err)
	}
}

func TestApplyWriterError(t *testing.T) {
	errWrite := errors.New("disk full")
	for _, c := range []struct {
		name  string
		delta []byte
	}{
		{"literal", packOps(opLit("abcdefgh"), opEndByte)},
		{"copy", packOps(opCopyAt(8, 0), opEndByte)},
		{"add", packOps(opAddAt(8, 0, 1, 1, 1, 1, 1, 1, 1, 1), opEndByte)},
	} {
		t.Run(c.name, func(t *testing.T) {
			w := &failingWriter{ok: 3, err: errWrite}
			n, err := Apply(w, &baseAt{tb: t, b: tableBase}, int64(len(tableBase)), bytes.NewReader(c.delta), 1<<20)
			if !errors.Is(err, errWrite) {
				t.Errorf("Apply = %v, want the writer's error", err)
			}
			if n != 3 || w.got != 3 {
				t.Errorf("Apply returned %d bytes written, the writer took %d, want 3", n, w.got)
			}
		})
	}
}

// TestApplyMaxOutExact: a target of exactly maxOut bytes is fine, one
// byte less is refused before the op that would pass it writes anything.
func TestApplyMaxOutExact(t *testing.T) {
	base := randBytes(12, 100<<10)
	target := splice(base, 30<<10, 100, []byte("inserted"))
	d, _ := encodeBytes(t, base, target)
	if got, err := applyBytes(t, base, d, int64(len(target))); err != nil || !bytes.Equal(got, target) {
		t.Fatalf("Apply with maxOut the target's size: %v", err)
	}
	got, err := applyBytes(t, base, d, int64(len(target))-1)
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Apply with maxOut one byte short = %v, want ErrCorrupt", err)
	}
	if !bytes.HasPrefix(target, got) || len(got) != 30<<10+len("inserted") {
		t.Fatalf("Apply wrote %d bytes before refusing, want the %d before the last op", len(got), 30<<10+len("inserted"))
	}
}
