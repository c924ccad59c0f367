package delta

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"math"
	"sync"
	"testing"

	"github.com/klauspost/compress/zstd"
)

// tableBase is the base of every bad-input case: 64 bytes 0, 1, … 63.
var tableBase = func() []byte {
	b := make([]byte, 64)
	for i := range b {
		b[i] = byte(i)
	}
	return b
}()

var errBaseRead = errors.New("base read failed")

// badCase is a delta Apply must refuse, and how many bytes it may have
// written by then.
type badCase struct {
	name   string
	delta  []byte
	maxOut int64       // 0: 1 MiB
	base   io.ReaderAt // nil: tableBase, bounds checked
	want   error       // nil: ErrCorrupt
	n      int64       // bytes written before the failure
}

// badCases is every malformed delta of the table, for TestApplyBadInput
// and as seeds of FuzzApply.
func badCases() []badCase {
	return append(append(append(headerCases(), opCases()...), boundsCases()...), frameCases()...)
}

func headerCases() []badCase {
	good := packOps(opLit("abc"), opEndByte)
	return []badCase{
		{name: "empty"},
		{name: "magic cut short", delta: []byte(Magic[:7])},
		{name: "wrong magic", delta: append([]byte("nix-ota-delta-2\n"), good[len(Magic):]...)},
		{name: "magic in capitals", delta: append([]byte("NIX-OTA-DELTA-1\n"), good[len(Magic):]...)},
		{name: "magic only", delta: []byte(Magic)},
		{name: "not zstd after the magic", delta: []byte(Magic + "hello, this is no zstd frame")},
		{name: "zstd frame cut in its header", delta: good[:len(Magic)+3]},
		{name: "zstd frame cut in its block", delta: good[:len(good)-6]},
		{name: "zstd frame cut before its checksum", delta: good[:len(good)-2]},
		{name: "zstd checksum wrong", delta: flipLast(good)},
		{name: "garbage after the zstd frame", delta: append(bytes.Clone(good), "junk"...), n: 3},
		{name: "second frame after the end op", delta: append(bytes.Clone(good), packOps(opLit("x"))[len(Magic):]...), n: 3},
	}
}

func flipLast(b []byte) []byte {
	c := bytes.Clone(b)
	c[len(c)-1] ^= 0x55
	return c
}

func opCases() []badCase {
	overflow := bytes.Repeat([]byte{0xff}, 11)
	return []badCase{
		{name: "unknown op", delta: packOps(opLit("ab"), []byte("X")), n: 2},
		{name: "op code zero", delta: packOps([]byte{0})},
		{name: "op code in lower case", delta: packOps([]byte("c\x01\x00"), opEndByte)},
		{name: "zero-length copy", delta: packOps(opCopyAt(0, 0), opEndByte)},
		{name: "zero-length add", delta: packOps(opAddAt(0, 0), opEndByte)},
		{name: "zero-length literal", delta: packOps(opLit(""), opEndByte)},
		{name: "length varint overflows", delta: packOps([]byte{opLiteral}, overflow, []byte("abc"))},
		{name: "length cut short", delta: packOps([]byte{opLiteral, 0x80})},
		{name: "length max uint64", delta: packOps(opCopyAt(math.MaxUint64, 0), opEndByte)},
		{name: "literal over maxOut", delta: packOps(opLit("abcde"), opEndByte), maxOut: 4},
		{name: "second literal over maxOut", delta: packOps(opLit("ab"), opLit("abc"), opEndByte), maxOut: 4, n: 2},
		{name: "copy over maxOut", delta: packOps(opCopyAt(9, 0), opEndByte), maxOut: 8},
		{name: "add over maxOut", delta: packOps(opAddAt(9, 0, make([]byte, 9)...), opEndByte), maxOut: 8},
		{name: "copy after literal over maxOut", delta: packOps(opLit("abcd"), opCopyAt(5, 0), opEndByte), maxOut: 8, n: 4},
		{name: "literal cut short", delta: packOps(opLit("abcdefghij")[:5]), n: 0}, // a cut literal writes nothing of itself
		{name: "add cut short", delta: packOps(opAddAt(4, 0, 1, 2))},
		{name: "add without its bytes", delta: packOps(opAddAt(4, 0))},
		{name: "offset missing", delta: packOps([]byte{opCopy, 4})},
		{name: "offset varint overflows", delta: packOps([]byte{opCopy, 4}, overflow, opEndByte)},
		{name: "missing end op", delta: packOps(opLit("abc")), n: 3},
		{name: "end op cut off after a copy", delta: packOps(opCopyAt(8, 0)), n: 8},
		{name: "data after the end op", delta: packOps(opLit("abc"), opEndByte, opLit("x")), n: 3},
		{name: "two end ops", delta: packOps(opEndByte, opEndByte)},
	}
}

func boundsCases() []badCase {
	return []badCase{
		{name: "copy past the base end", delta: packOps(opCopyAt(10, 60), opEndByte)},
		{name: "add past the base end", delta: packOps(opAddAt(5, 60, 0, 0, 0, 0, 0), opEndByte)},
		{name: "copy longer than the base", delta: packOps(opCopyAt(65, 0), opEndByte)},
		{name: "copy one past the end after the whole base", delta: packOps(opCopyAt(64, 0), opCopyAt(1, 0), opEndByte), n: 64},
		{name: "negative offset", delta: packOps(opCopyAt(4, -1), opEndByte)},
		{name: "negative offset after the cursor", delta: packOps(opCopyAt(8, 0), opCopyAt(4, -9), opEndByte), n: 8},
		{name: "add at a negative offset", delta: packOps(opAddAt(2, -1, 0, 0), opEndByte)},
		{name: "offset delta max int64", delta: packOps(opCopyAt(1, math.MaxInt64), opEndByte)},
		{name: "offset delta min int64", delta: packOps(opCopyAt(1, math.MinInt64), opEndByte)},
		{name: "cursor plus delta overflows", delta: packOps(opCopyAt(64, 0), opCopyAt(1, math.MaxInt64-10), opEndByte), n: 64},
		{name: "length past int64 with no limit", delta: packOps(opCopyAt(1<<63, 0), opEndByte), maxOut: math.MaxInt64},
		{name: "length max int64 with no limit", delta: packOps(opCopyAt(math.MaxInt64, 0), opEndByte), maxOut: math.MaxInt64},
		{name: "copy from an empty base", delta: packOps(opCopyAt(1, 0), opEndByte), base: &baseAt{b: []byte{}}},
		{name: "base read fails", delta: packOps(opLit("ab"), opCopyAt(4, 0), opEndByte), base: failingAt{errBaseRead}, want: errBaseRead, n: 2},
	}
}

// frameCases are zstd frames that would make Apply hold more than
// MaxWindow.
func frameCases() []badCase {
	return []badCase{
		{name: "window over MaxWindow", delta: bigWindowDelta()},
		{name: "single-segment frame over MaxWindow", delta: rawFrame(0xa0, binary.LittleEndian.AppendUint32(nil, 64<<20), 'E')},
	}
}

func TestApplyBadInput(t *testing.T) {
	for _, c := range badCases() {
		t.Run(c.name, func(t *testing.T) {
			base, size := c.base, int64(len(tableBase))
			switch b := base.(type) {
			case nil:
				base = &baseAt{tb: t, b: tableBase}
			case *baseAt:
				b.tb, size = t, int64(len(b.b))
			}
			maxOut, want := c.maxOut, c.want
			if maxOut == 0 {
				maxOut = 1 << 20
			}
			if want == nil {
				want = ErrCorrupt
			}
			var out bytes.Buffer
			n, err := Apply(&out, base, size, bytes.NewReader(c.delta), maxOut)
			if !errors.Is(err, want) {
				t.Errorf("Apply = %v, want an error wrapping %q", err, want)
			}
			if n != c.n || int64(out.Len()) != c.n {
				t.Errorf("Apply returned %d bytes written and wrote %d, want %d", n, out.Len(), c.n)
			}
			t.Logf("%v", err)
		})
	}
}

// zstdMagic starts every zstd frame.
var zstdMagic = []byte{0x28, 0xb5, 0x2f, 0xfd}

// rawFrame is a delta whose zstd frame is written by hand: header byte
// fhd, then header (window descriptor and content size as fhd says),
// then content as one raw last block.
func rawFrame(fhd byte, header []byte, content ...byte) []byte {
	d := append([]byte(Magic), zstdMagic...)
	d = append(append(d, fhd), header...)
	bh := uint32(len(content))<<3 | 1 // raw, last
	return append(append(d, byte(bh), byte(bh>>8), byte(bh>>16)), content...)
}

// bigWindowDelta is a valid op stream in a frame that declares a 64 MiB
// window, as an encoder without Encode's limit writes it.
var bigWindowDelta = sync.OnceValue(func() []byte {
	var b bytes.Buffer
	b.WriteString(Magic)
	zw, err := zstd.NewWriter(&b, zstd.WithWindowSize(64<<20), zstd.WithEncoderConcurrency(1), zstd.WithLowerEncoderMem(true))
	if err != nil {
		panic(err)
	}
	zw.Write(opLit(string(randBytes(9, 256<<10))))
	zw.Write(opEndByte)
	if err := zw.Close(); err != nil {
		panic(err)
	}
	return b.Bytes()
})

// declaredWindow is the window size the frame header of delta d declares
// (0 for a single-segment frame, whose window is its content size).
func declaredWindow(d []byte) uint64 {
	f := d[len(Magic):]
	if !bytes.HasPrefix(f, zstdMagic) || f[4]&0x20 != 0 {
		return 0
	}
	wd := f[5]
	base := uint64(1) << (10 + wd>>3)
	return base + base/8*uint64(wd&7)
}

// TestBigWindowDeltaDeclaresIt checks the premise of the "window over
// MaxWindow" case: its frame header asks for more than MaxWindow, and
// only that makes Apply refuse it.
func TestBigWindowDeltaDeclaresIt(t *testing.T) {
	d := bigWindowDelta()
	if w := declaredWindow(d); w <= MaxWindow {
		t.Fatalf("frame declares a window of %d bytes, want over MaxWindow (%d)", w, MaxWindow)
	}
	zr, err := zstd.NewReader(bytes.NewReader(d[len(Magic):]), zstd.WithDecoderConcurrency(1))
	if err != nil {
		t.Fatal(err)
	}
	defer zr.Close()
	ops, err := io.ReadAll(zr)
	if err != nil || !bytes.Equal(ops[len(ops)-1:], opEndByte) {
		t.Fatalf("without the window limit the frame decodes to %d bytes of ops (%v), want a valid op stream", len(ops), err)
	}
	if w := declaredWindow(packOps(opEndByte)); w > MaxWindow {
		t.Fatalf("a small frame declares %d bytes", w)
	}
}
