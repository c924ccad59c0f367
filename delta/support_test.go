package delta

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"testing"

	"github.com/klauspost/compress/zstd"
)

// opsEncoder packs hand-written op bytes into the zstd frame of a delta.
var opsEncoder, _ = zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1))

// packOps is a delta made by hand: Magic, then one zstd frame of ops.
func packOps(ops ...[]byte) []byte {
	return append([]byte(Magic), opsEncoder.EncodeAll(bytes.Join(ops, nil), nil)...)
}

// opCopyAt is a Copy op of n bytes at cursor+d.
func opCopyAt(n uint64, d int64) []byte {
	return binary.AppendVarint(binary.AppendUvarint([]byte{opCopy}, n), d)
}

// opAddAt is an Add op of n bytes at cursor+d with the given x bytes
// (which may be fewer than n, for a cut-short add).
func opAddAt(n uint64, d int64, x ...byte) []byte {
	return append(binary.AppendVarint(binary.AppendUvarint([]byte{opAdd}, n), d), x...)
}

// opLit is a Literal op carrying s.
func opLit(s string) []byte {
	return append(binary.AppendUvarint([]byte{opLiteral}, uint64(len(s))), s...)
}

var opEndByte = []byte{opEnd}

// baseAt is a base that fails the test when Apply reads outside it, and
// counts what it reads.
type baseAt struct {
	tb    testing.TB
	b     []byte
	reads int
}

func (r *baseAt) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 || off > int64(len(r.b)) || int64(len(p)) > int64(len(r.b))-off {
		r.tb.Errorf("Apply read %d bytes at %d, outside the %d-byte base", len(p), off, len(r.b))
		return 0, io.EOF
	}
	r.reads++
	return copy(p, r.b[off:]), nil
}

// failingAt is a base whose every read fails.
type failingAt struct{ err error }

func (f failingAt) ReadAt([]byte, int64) (int, error) { return 0, f.err }

// failingWriter takes ok bytes, then fails.
type failingWriter struct {
	ok  int
	got int
	err error
}

func (w *failingWriter) Write(p []byte) (int, error) {
	if w.got+len(p) <= w.ok {
		w.got += len(p)
		return len(p), nil
	}
	k := w.ok - w.got
	w.got = w.ok
	return k, w.err
}

// applyBytes applies d to base with a bounds-checking base and a buffer,
// and checks that the count Apply returns is what the writer got.
func applyBytes(tb testing.TB, base, d []byte, maxOut int64) ([]byte, error) {
	tb.Helper()
	var out bytes.Buffer
	n, err := Apply(&out, &baseAt{tb: tb, b: base}, int64(len(base)), bytes.NewReader(d), maxOut)
	if n != int64(out.Len()) {
		tb.Errorf("Apply returned %d bytes written, the writer got %d (err %v)", n, out.Len(), err)
	}
	if maxOut >= 0 && int64(out.Len()) > maxOut {
		tb.Errorf("Apply wrote %d bytes, over maxOut %d", out.Len(), maxOut)
	}
	return out.Bytes(), err
}

// encodeBytes runs Encode and checks that the stats account for every
// target byte.
func encodeBytes(tb testing.TB, base, target []byte) ([]byte, Stats) {
	tb.Helper()
	var d bytes.Buffer
	st, err := Encode(&d, base, target)
	if err != nil {
		tb.Fatalf("Encode: %v", err)
	}
	if sum := st.Copied + st.Added + st.Literal; sum != int64(len(target)) {
		tb.Fatalf("stats %+v account for %d bytes of a %d-byte target", st, sum, len(target))
	}
	return d.Bytes(), st
}

// roundTrip encodes, applies with maxOut the target's size, and fails the
// test unless the target comes back byte for byte.
func roundTrip(tb testing.TB, base, target []byte) ([]byte, Stats) {
	tb.Helper()
	d, st := encodeBytes(tb, base, target)
	got, err := applyBytes(tb, base, d, int64(len(target)))
	if err != nil {
		tb.Fatalf("Apply of a %d-byte delta (%+v): %v", len(d), st, err)
	}
	if !bytes.Equal(got, target) {
		tb.Fatalf("round trip differs: %s", firstDiff(got, target))
	}
	return d, st
}

func firstDiff(got, want []byte) string {
	for i := range min(len(got), len(want)) {
		if got[i] != want[i] {
			return fmt.Sprintf("byte %d is %#02x, want %#02x", i, got[i], want[i])
		}
	}
	return fmt.Sprintf("%d bytes, want %d", len(got), len(want))
}

// randBytes is n deterministic pseudo-random bytes.
func randBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

const nixbase32Chars = "0123456789abcdfghijklmnpqrsvwxyz"

// storeHash is a deterministic 32-character nixbase32 string.
func storeHash(seed uint64) string {
	r := rand.New(rand.NewPCG(seed, 7))
	b := make([]byte, 32)
	for i := range b {
		b[i] = nixbase32Chars[r.IntN(len(nixbase32Chars))]
	}
	return string(b)
}

// zstdSize is the size of b compressed the way a NAR is published.
func zstdSize(tb testing.TB, b []byte) int {
	tb.Helper()
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedDefault), zstd.WithEncoderConcurrency(1))
	if err != nil {
		tb.Fatal(err)
	}
	defer enc.Close()
	return len(enc.EncodeAll(b, nil))
}
