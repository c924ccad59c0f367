package delta

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
)

// fuzzBase is the base FuzzApply applies against.
var fuzzBase = randBytes(20, 256)

// FuzzApply feeds Apply arbitrary deltas, either as given or (packed) as
// op bytes put in a valid frame after Magic, so that the fuzzer reaches
// the op parser. Apply must not panic, read outside the base, write more
// than maxOut, miscount what it wrote, fail other than with ErrCorrupt,
// or disagree with refApply, a plain reading of the format.
func FuzzApply(f *testing.F) {
	for _, target := range [][]byte{nil, fuzzBase, fuzzBase[100:], splice(fuzzBase, 40, 10, []byte("new bytes")), changeEvery(fuzzBase, 7)} {
		var d bytes.Buffer
		if _, err := Encode(&d, fuzzBase, target); err != nil {
			f.Fatal(err)
		}
		f.Add(d.Bytes(), false, uint16(len(target)))
		f.Add(opsOf(f, d.Bytes()), true, uint16(len(target)))
	}
	for _, c := range badCases() {
		if _, failing := c.base.(failingAt); !failing {
			f.Add(c.delta, false, uint16(min(c.maxOut, 1<<16-1)))
		}
	}
	f.Add(bytes.Join([][]byte{opCopyAt(8, 4), opAddAt(3, -2, 1, 2, 3), opLit("x"), opEndByte}, nil), true, uint16(100))
	f.Fuzz(func(t *testing.T, data []byte, packed bool, maxOut uint16) {
		d := data
		if packed {
			d = packOps(data)
		}
		got, err := applyBytes(t, fuzzBase, d, int64(maxOut))
		want, refErr := refApply(d, int64(maxOut))
		if err != nil && !errors.Is(err, ErrCorrupt) {
			t.Fatalf("Apply = %v, want an error wrapping ErrCorrupt", err)
		}
		switch {
		case (err == nil) != (refErr == nil):
			t.Fatalf("Apply = %v, reference reading = %v", err, refErr)
		case err == nil && !bytes.Equal(got, want):
			t.Fatalf("Apply wrote another target than the reference reading: %s", firstDiff(got, want))
		}
	})
}

// opsOf is the op bytes inside a delta.
func opsOf(tb testing.TB, d []byte) []byte {
	zr, err := zstd.NewReader(bytes.NewReader(d[len(Magic):]), zstd.WithDecoderConcurrency(1))
	if err != nil {
		tb.Fatal(err)
	}
	defer zr.Close()
	ops, err := io.ReadAll(zr)
	if err != nil {
		tb.Fatal(err)
	}
	return ops
}

var errStream = errors.New("bad magic or zstd stream")

// maxOps bounds the op bytes refApply decodes: more than any valid delta
// of at most 64 KiB of output needs (an op writes at least one byte).
const maxOps = 2 << 20

// refApply is the target delta d rebuilds from fuzzBase, read as
// format.go describes it with everything in memory, or why it is not one.
func refApply(d []byte, maxOut int64) ([]byte, error) {
	if !bytes.HasPrefix(d, []byte(Magic)) {
		return nil, errStream
	}
	zr, err := zstd.NewReader(bytes.NewReader(d[len(Magic):]), zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(MaxWindow))
	if err != nil {
		return nil, err
	}
	defer zr.Close()
	ops, err := io.ReadAll(io.LimitReader(zr, maxOps))
	if err != nil {
		return nil, errStream
	}
	return refOps(fuzzBase, ops, maxOut)
}

var errRef = errors.New("refused by the reference reading")

// refOps runs ops against base.
func refOps(base, ops []byte, maxOut int64) ([]byte, error) {
	var out []byte
	cursor, size := int64(0), int64(len(base))
	for len(ops) > 0 {
		code := ops[0]
		ops = ops[1:]
		if code == opEnd && len(ops) == 0 {
			return out, nil
		}
		n, k := binary.Uvarint(ops)
		if !strings.ContainsRune("CAL", rune(code)) || k <= 0 || n == 0 || n > uint64(maxOut-int64(len(out))) {
			return nil, errRef
		}
		ops = ops[k:]
		if code == opLiteral {
			if uint64(len(ops)) < n {
				return nil, errRef
			}
			out, ops = append(out, ops[:n]...), ops[n:]
			continue
		}
		d, k := binary.Varint(ops)
		if k <= 0 || d < -size || d > size || cursor+d < 0 || cursor+d+int64(n) > size {
			return nil, errRef
		}
		ops, cursor = ops[k:], cursor+d+int64(n)
		chunk := bytes.Clone(base[cursor-int64(n) : cursor])
		if code == opAdd {
			if uint64(len(ops)) < n {
				return nil, errRef
			}
			for i := range chunk {
				chunk[i] += ops[i]
			}
			ops = ops[n:]
		}
		out = append(out, chunk...)
	}
	return nil, errRef
}

// FuzzRoundTrip: whatever the base and whatever edits make the target,
// Apply rebuilds the target from Encode's delta, and refuses it with
// maxOut one byte short.
func FuzzRoundTrip(f *testing.F) {
	rnd := randBytes(21, 1<<10)
	text := []byte(strings.Repeat("/nix/store/"+storeHash(1)+"-glibc-2.40/lib/libc.so.6\n", 12))
	f.Add(rnd, []byte{0, 8, 0, 40, 1, 2, 0, 30, 2, 1, 0, 90})
	f.Add(rnd, []byte{3, 4, 0, 0x40, 3, 9, 64, 12})
	f.Add(text, []byte{4, 0, 30, 'x', 4, 1, 7, 'y', 0, 0, 100, 5})
	f.Add(make([]byte, 600), []byte{4, 1, 0, 1, 0, 2, 5, 60})
	f.Add([]byte{}, []byte{0, 0, 0, 20})
	f.Add(rnd[:20], []byte{})
	f.Fuzz(func(t *testing.T, base, edits []byte) {
		target := applyEdits(base, edits)
		d, _ := roundTrip(t, base, target)
		if len(target) == 0 {
			return
		}
		if _, err := applyBytes(t, base, d, int64(len(target)-1)); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("Apply with maxOut one byte short of the target = %v, want ErrCorrupt", err)
		}
	})
}

// applyEdits makes a target from base by edits of four bytes each: kind,
// two bytes of position, and an argument. The kinds insert, delete,
// move a block to the end, add a constant to every few bytes from the
// position on (as a linker moving code does), and overwrite a byte.
func applyEdits(base, edits []byte) []byte {
	t := bytes.Clone(base)
	for ; len(edits) >= 4 && len(t) < 1<<16; edits = edits[4:] {
		p := int(edits[1])<<8 | int(edits[2])
		p %= len(t) + 1
		c := int(edits[3])
		switch edits[0] % 5 {
		case 0:
			ins := make([]byte, c%64+1)
			for i := range ins {
				ins[i] = byte(p + i*c)
			}
			t = splice(t, p, 0, ins)
		case 1:
			t = splice(t, p, min(c, len(t)-p), nil)
		case 2:
			t = moveBlock(t, p, p+min(c*4, len(t)-p))
		case 3:
			for j := p; j < len(t); j += 4 + c%13 {
				t[j] += byte(c)
			}
		case 4:
			if p < len(t) {
				t[p] = byte(c)
			}
		}
	}
	return t
}
