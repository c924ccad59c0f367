package delta

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"strings"
	"testing"
)

// splice is b with b[at:at+del] replaced by ins.
func splice(b []byte, at, del int, ins []byte) []byte {
	return bytes.Join([][]byte{b[:at], ins, b[at+del:]}, nil)
}

// moveBlock is b with b[from:to] moved to the end.
func moveBlock(b []byte, from, to int) []byte {
	return bytes.Join([][]byte{b[:from], b[to:], b[from:to]}, nil)
}

func TestRoundTrip(t *testing.T) {
	rnd := randBytes(1, 256<<10)
	zeros := make([]byte, 64<<10)
	text := []byte(strings.Repeat("export PATH=/nix/store/abc-coreutils/bin:$PATH\n", 2000))
	for _, c := range []struct {
		name         string
		base, target []byte
		maxLiteral   int64 // -1: any
	}{
		{"identical", rnd, rnd, 0},
		{"empty base", nil, rnd[:5000], -1},
		{"empty target", rnd, nil, 0},
		{"both empty", nil, nil, 0},
		{"base shorter than a seed", rnd[:seedLen-1], rnd[:seedLen+40], -1},
		{"base and target shorter than a seed", rnd[:seedLen-1], rnd[3 : seedLen-2], -1},
		{"target shorter than a seed", rnd, rnd[1000 : 1000+seedLen-1], -1},
		{"target one seed long", rnd, rnd[5000 : 5000+seedLen], -1},
		{"insertion", rnd, splice(rnd, 100<<10, 0, randBytes(2, 1000)), 1000 + 2*seedLen},
		{"deletion", rnd, splice(rnd, 50<<10, 5000, nil), 2 * seedLen},
		{"moved block", rnd, moveBlock(rnd, 40<<10, 60<<10), 2 * seedLen},
		{"two blocks swapped", rnd, bytes.Join([][]byte{rnd[128<<10:], rnd[:128<<10]}, nil), 2 * seedLen},
		{"block repeated", rnd[:64<<10], bytes.Repeat(rnd[:64<<10], 3), 2 * seedLen},
		{"scattered byte changes", rnd, changeEvery(rnd, 997), 0},
		{"zeros grown", zeros, splice(changeEvery(zeros, 4096), 100, 0, make([]byte, 6000)), seedLen},
		{"repeated text edited", text, bytes.ReplaceAll(text, []byte("abc-"), []byte("xyzw-")), -1},
		{"unrelated", rnd[:64<<10], randBytes(3, 64<<10), -1},
	} {
		t.Run(c.name, func(t *testing.T) {
			d, st := roundTrip(t, c.base, c.target)
			if c.maxLiteral >= 0 && st.Literal > c.maxLiteral {
				t.Errorf("%d literal bytes (stats %+v), want at most %d", st.Literal, st, c.maxLiteral)
			}
			if len(c.target) == 0 && st.Ops != 0 {
				t.Errorf("empty target encoded with %d ops", st.Ops)
			}
			t.Logf("target %d bytes, delta %d bytes, %+v", len(c.target), len(d), st)
		})
	}
}

// changeEvery is b with one byte in every n incremented.
func changeEvery(b []byte, n int) []byte {
	c := bytes.Clone(b)
	for i := n / 2; i < len(c); i += n {
		c[i]++
	}
	return c
}

// shiftedBinary is a base of pseudo-random machine code, in which about
// one instruction in three carries a 4-byte little-endian offset, and the
// target a linker would make after inserting ins at an instruction
// boundary an eighth of the way in: every offset after it grows by
// len(ins).
func shiftedBinary(seed uint64, n int, ins []byte) (base, target []byte) {
	r := rand.New(rand.NewPCG(seed, 1))
	var offsets []int
	for len(base) < n {
		if r.IntN(3) == 0 {
			base = append(base, 0xe8)
			offsets = append(offsets, len(base))
			base = binary.LittleEndian.AppendUint32(base, r.Uint32()>>8)
			continue
		}
		for range 1 + r.IntN(6) {
			base = append(base, byte(r.Uint32()))
		}
	}
	at := len(base) / 8
	for offsets[0] < at {
		offsets = offsets[1:]
	}
	at = offsets[0] - 1 // the call instruction's first byte
	shifted := bytes.Clone(base[at:])
	for _, o := range offsets {
		v := binary.LittleEndian.Uint32(shifted[o-at:])
		binary.LittleEndian.PutUint32(shifted[o-at:], v+uint32(len(ins)))
	}
	return base, bytes.Join([][]byte{base[:at], ins, shifted}, nil)
}

func TestShiftedBinary(t *testing.T) {
	ins := randBytes(4, 96)
	base, target := shiftedBinary(5, 1<<20, ins)
	d, st := roundTrip(t, base, target)
	z := zstdSize(t, target)
	t.Logf("target %d bytes, zstd %d, delta %d, %+v", len(target), z, len(d), st)
	if st.Added < int64(len(target))/2 {
		t.Errorf("only %d of %d bytes encoded as adds (%+v), want most", st.Added, len(target), st)
	}
	if st.Literal > int64(len(ins))+2*seedLen {
		t.Errorf("%d literal bytes (%+v), want about the %d inserted", st.Literal, st, len(ins))
	}
	if len(d)*5 > z {
		t.Errorf("delta is %d bytes, zstd of the target %d: want under a fifth", len(d), z)
	}
}

// nixText is text like a NAR's scripts and configuration, in which one
// line in ten names a store path of one of refs (one every 4 KiB or so),
// and the same text with every ref's hash replaced by its new one.
func nixText(seed uint64, n int, refs int) (base, target []byte) {
	r := rand.New(rand.NewPCG(seed, 2))
	words := strings.Fields("the of and export PATH LD_LIBRARY_PATH exec bin lib share if then fi echo set -e for in do done local return")
	var b, t strings.Builder
	for b.Len() < n {
		var line strings.Builder
		for range 40 + r.IntN(80) {
			line.WriteString(words[r.IntN(len(words))])
			line.WriteByte(' ')
		}
		k := uint64(r.IntN(refs))
		if r.IntN(10) == 0 {
			line.WriteString("/nix/store/%s-dep-" + string(rune('a'+k)) + "/bin")
		}
		line.WriteByte('\n')
		b.WriteString(strings.Replace(line.String(), "%s", storeHash(100+k), 1))
		t.WriteString(strings.Replace(line.String(), "%s", storeHash(200+k), 1))
	}
	return []byte(b.String()), []byte(t.String())
}

func TestStoreHashReplacement(t *testing.T) {
	base, target := nixText(6, 1<<20, 5)
	if len(base) != len(target) || bytes.Equal(base, target) {
		t.Fatal("test data: the target must differ from the base in its hashes only")
	}
	d, st := roundTrip(t, base, target)
	z := zstdSize(t, target)
	t.Logf("target %d bytes, zstd %d, delta %d, %+v", len(target), z, len(d), st)
	if st.Literal > 2*seedLen {
		t.Errorf("%d literal bytes (%+v), want none but perhaps a changed tail", st.Literal, st)
	}
	if len(d) > len(target)/500 {
		t.Errorf("delta is %d bytes for %d bytes with replaced hashes, want under 0.2%%", len(d), len(target))
	}
}
