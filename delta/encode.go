package delta

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"math/bits"
	"sync"

	"github.com/klauspost/compress/zstd"
)

// Tuning of the matcher. Every one was measured with bench/delta (see
// docs/delta-formats.md); Apply does not depend on any of them.
const (
	seedLen  = 16 // bytes a match must share exactly before it is extended
	baseStep = 8  // one base position in baseStep is indexed
	slack    = 64 // mismatches beyond the best point before an extension stops
	minCopy  = 24 // exact runs shorter than this stay inside an add
	hashMul  = 0x100000001b3
)

// Stats counts the target bytes each kind of op carries.
type Stats struct {
	Copied, Added, Literal int64
	Ops                    int
}

// Encode writes the delta that rebuilds target from base to w. It holds
// both in memory (callers pass mapped files) plus an index of 4 bytes per
// baseStep bytes of base, and never writes a zstd window over MaxWindow.
func Encode(w io.Writer, base, target []byte) (Stats, error) {
	if int64(len(base)) >= 1<<32-1 {
		return Stats{}, fmt.Errorf("delta: base of %d bytes is over the 4 GiB this format indexes", len(base))
	}
	if _, err := io.WriteString(w, Magic); err != nil {
		return Stats{}, err
	}
	zw, err := getEncoder(w)
	if err != nil {
		return Stats{}, err
	}
	defer encoders.Put(zw)
	e := &encoder{b: base, t: target, out: bufio.NewWriterSize(zw, 64<<10)}
	e.index()
	e.scan()
	e.out.WriteByte(opEnd)
	if err := e.out.Flush(); err != nil {
		zw.Close()
		return e.st, err
	}
	return e.st, zw.Close()
}

// encoders are reused: a zstd encoder at this level costs megabytes and
// milliseconds to make, more than encoding a small delta.
var encoders sync.Pool

func getEncoder(w io.Writer) (*zstd.Encoder, error) {
	if zw, ok := encoders.Get().(*zstd.Encoder); ok {
		zw.Reset(w)
		return zw, nil
	}
	return zstd.NewWriter(w, zstd.WithEncoderLevel(zstd.SpeedBestCompression), zstd.WithWindowSize(MaxWindow), zstd.WithEncoderConcurrency(1))
}

type encoder struct {
	b, t   []byte
	table  []uint32 // hash of a seed → base offset + 1
	shift  uint
	out    *bufio.Writer
	cursor int // where the last copy or add ended in the base
	st     Stats
	vbuf   [binary.MaxVarintLen64]byte
}

// powSeed is hashMul^seedLen, to drop the byte that leaves a rolling hash.
var powSeed = func() uint64 {
	p := uint64(1)
	for range seedLen {
		p *= hashMul
	}
	return p
}()

func hashOf(b []byte) uint64 {
	var h uint64
	for _, c := range b[:seedLen] {
		h = h*hashMul + uint64(c)
	}
	return h
}

func (e *encoder) slot(h uint64) uint64 { return (h * 0x9E3779B97F4A7C15) >> e.shift }

// index records one seed hash every baseStep bytes of the base.
func (e *encoder) index() {
	n := max(len(e.b)/baseStep, 1024)
	bitsN := bits.Len(uint(n - 1))
	e.table = make([]uint32, 1<<bitsN)
	e.shift = uint(64 - bitsN)
	if len(e.b) < seedLen {
		return
	}
	h := hashOf(e.b)
	for i := 0; ; i++ {
		if i%baseStep == 0 {
			e.table[e.slot(h)] = uint32(i + 1)
		}
		if i+seedLen >= len(e.b) {
			return
		}
		h = h*hashMul + uint64(e.b[i+seedLen]) - uint64(e.b[i])*powSeed
	}
}

// scan walks the target: where a seed matches the base (on the last
// match's diagonal first, then through the index), the match is extended
// both ways and emitted; everything between matches is literal.
func (e *encoder) scan() {
	t := e.t
	lit, diag := 0, 0
	var h uint64
	hashAt := -2
	for i := 0; i+seedLen <= len(t); {
		switch hashAt {
		case i - 1:
			h = h*hashMul + uint64(t[i+seedLen-1]) - uint64(t[i-1])*powSeed
		default:
			h = hashOf(t[i:])
		}
		hashAt = i
		p, ok := e.candidate(i, h, diag)
		if !ok {
			i++
			continue
		}
		s, ps := e.back(lit, i, p)
		end := e.forward(i, p)
		e.literal(lit, s)
		e.region(s, end, ps)
		lit, i, diag = end, end, ps-s
	}
	e.literal(lit, len(t))
}

func (e *encoder) seedAt(i, p int) bool {
	return p >= 0 && p+seedLen <= len(e.b) && string(e.b[p:p+seedLen]) == string(e.t[i:i+seedLen])
}

func (e *encoder) candidate(i int, h uint64, diag int) (int, bool) {
	if e.seedAt(i, i+diag) {
		return i + diag, true
	}
	if q := e.table[e.slot(h)]; q != 0 && e.seedAt(i, int(q-1)) {
		return int(q - 1), true
	}
	return 0, false
}

// forward extends a match at target i, base p: it keeps going while
// matching bytes outnumber the others, and ends where that lead was
// largest.
func (e *encoder) forward(i, p int) int {
	t, b := e.t, e.b
	best, score, bestScore := i, 0, 0
	for j, k := i, p; j < len(t) && k < len(b); j, k = j+1, k+1 {
		if r := equalRun(t[j:], b[k:]); r > 0 {
			j, k, score = j+r, k+r, score+r
			if score > bestScore {
				best, bestScore = j, score
			}
			if j >= len(t) || k >= len(b) {
				break
			}
		}
		score-- // t[j] != b[k]
		if score < bestScore-slack {
			break
		}
	}
	return best
}

// back extends a match at target i, base p backwards, down to lit.
func (e *encoder) back(lit, i, p int) (int, int) {
	best, score, bestScore := 0, 0, 0
	for k := 1; i-k >= lit && p-k >= 0; k++ {
		if e.t[i-k] == e.b[p-k] {
			if score++; score > bestScore {
				best, bestScore = k, score
			}
		} else if score--; score < bestScore-slack {
			break
		}
	}
	return i - best, p - best
}

// equalRun is the length of the common prefix of a and b.
func equalRun(a, b []byte) int {
	n := min(len(a), len(b))
	i := 0
	for i+8 <= n && binary.LittleEndian.Uint64(a[i:]) == binary.LittleEndian.Uint64(b[i:]) {
		i += 8
	}
	for i < n && a[i] == b[i] {
		i++
	}
	return i
}

// region emits target [s, end), aligned with the base at ps, as copies of
// its long exact runs and adds of the rest.
func (e *encoder) region(s, end, ps int) {
	add := s
	for j := s; j < end; {
		r := equalRun(e.t[j:end], e.b[ps+j-s:])
		if r >= minCopy {
			e.fromBase(opAdd, add, j, ps+add-s)
			e.fromBase(opCopy, j, j+r, ps+j-s)
			add = j + r
		}
		j += r + 1
	}
	e.fromBase(opAdd, add, end, ps+add-s)
}

func (e *encoder) header(code byte, n, off int) {
	e.st.Ops++
	e.out.WriteByte(code)
	e.out.Write(e.vbuf[:binary.PutUvarint(e.vbuf[:], uint64(n))])
	if code != opLiteral {
		e.out.Write(e.vbuf[:binary.PutVarint(e.vbuf[:], int64(off-e.cursor))])
		e.cursor = off + n
	}
}

// fromBase emits target [s, end) as a copy or add of the base at off.
func (e *encoder) fromBase(code byte, s, end, off int) {
	n := end - s
	if n <= 0 {
		return
	}
	e.header(code, n, off)
	if code == opCopy {
		e.st.Copied += int64(n)
		return
	}
	e.st.Added += int64(n)
	for j := range n {
		e.out.WriteByte(e.t[s+j] - e.b[off+j])
	}
}

func (e *encoder) literal(s, end int) {
	if end <= s {
		return
	}
	e.header(opLiteral, end-s, 0)
	e.st.Literal += int64(end - s)
	e.out.Write(e.t[s:end])
}
