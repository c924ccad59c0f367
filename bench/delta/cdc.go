package main

import (
	"bufio"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"os"

	"github.com/klauspost/compress/zstd"
)

// cdcParams are the chunk bounds of the content-defined chunker: the
// average chunk is about min + mask + 1 bytes.
type cdcParams struct{ min, mask, max int }

var (
	cdc64k = cdcParams{16 << 10, 1<<16 - 1, 256 << 10}
	cdc16k = cdcParams{4 << 10, 1<<14 - 1, 64 << 10}
)

var gearTable = func() (t [256]uint64) {
	r := rand.New(rand.NewPCG(0x6e69782d, 0x6f7461))
	for i := range t {
		t[i] = r.Uint64()
	}
	return t
}()

// chunks returns the end offsets of b's content-defined chunks.
func chunks(b []byte, p cdcParams) []int {
	var ends []int
	start := 0
	for start < len(b) {
		end := min(start+p.max, len(b))
		var h uint64
		for i := start + p.min; i < end; i++ {
			h = h<<1 + gearTable[b[i]]
			if h&uint64(p.mask) == 0 {
				end = i + 1
				break
			}
		}
		ends = append(ends, end)
		start = end
	}
	return ends
}

// encodeCDC writes the op stream: 'C' off len copies from the base, 'L'
// len bytes is literal; the stream is zstd level 3.
func encodeCDC(p cdcParams) func(base, target, delta string) error {
	return func(base, target, delta string) error { return encodeCDCWith(p, base, target, delta) }
}

func encodeCDCWith(p cdcParams, base, target, delta string) error {
	bb, err := os.ReadFile(base)
	if err != nil {
		return err
	}
	tb, err := os.ReadFile(target)
	if err != nil {
		return err
	}
	index := map[[32]byte]int{}
	start := 0
	for _, end := range chunks(bb, p) {
		index[sha256.Sum256(bb[start:end])] = start
		start = end
	}
	f, err := os.Create(delta)
	if err != nil {
		return err
	}
	defer f.Close()
	enc, err := zstd.NewWriter(f, zstd.WithEncoderLevel(zstd.SpeedDefault))
	if err != nil {
		return err
	}
	if err := writeOps(enc, bb, tb, index, p); err != nil {
		enc.Close()
		return err
	}
	if err := enc.Close(); err != nil {
		return err
	}
	return f.Close()
}

// writeOps emits target's chunks, merging adjacent copies.
func writeOps(w io.Writer, bb, tb []byte, index map[[32]byte]int, p cdcParams) error {
	bw := bufio.NewWriter(w)
	copyOff, copyLen := -1, 0
	flush := func() {
		if copyLen > 0 {
			op(bw, 'C', uint64(copyOff), uint64(copyLen))
		}
		copyOff, copyLen = -1, 0
	}
	start := 0
	for _, end := range chunks(tb, p) {
		c := tb[start:end]
		off, ok := index[sha256.Sum256(c)]
		switch {
		case ok && copyOff >= 0 && copyOff+copyLen == off:
			copyLen += len(c)
		case ok:
			flush()
			copyOff, copyLen = off, len(c)
		default:
			flush()
			op(bw, 'L', uint64(len(c)))
			bw.Write(c)
		}
		start = end
	}
	flush()
	return bw.Flush()
}

func op(w *bufio.Writer, tag byte, args ...uint64) {
	w.WriteByte(tag)
	for _, a := range args {
		w.Write(binary.AppendUvarint(nil, a))
	}
}

// decodeCDC replays the op stream against the base file, streaming.
func decodeCDC(w io.Writer, base, delta string) error {
	bf, err := os.Open(base)
	if err != nil {
		return err
	}
	defer bf.Close()
	df, err := os.Open(delta)
	if err != nil {
		return err
	}
	defer df.Close()
	dec, err := zstd.NewReader(df, zstd.WithDecoderConcurrency(1))
	if err != nil {
		return err
	}
	defer dec.Close()
	r := bufio.NewReader(dec)
	for {
		tag, err := r.ReadByte()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if err := applyOp(w, r, bf, tag); err != nil {
			return err
		}
	}
}

func applyOp(w io.Writer, r *bufio.Reader, base io.ReaderAt, tag byte) error {
	switch tag {
	case 'C':
		off, err := binary.ReadUvarint(r)
		if err != nil {
			return err
		}
		n, err := binary.ReadUvarint(r)
		if err != nil {
			return err
		}
		_, err = io.Copy(w, io.NewSectionReader(base, int64(off), int64(n)))
		return err
	case 'L':
		n, err := binary.ReadUvarint(r)
		if err != nil {
			return err
		}
		_, err = io.CopyN(w, r, int64(n))
		return err
	}
	return fmt.Errorf("delta op %q unknown", tag)
}
