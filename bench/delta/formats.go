package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/nix-ota/nix-ota/delta"
)

// format is one delta candidate: encode writes the delta of target against
// base; a rebuild runs in a child (cmd returns its command line).
type format struct {
	Name, Notes string
	encode      func(base, target, delta string) error
	cmd         func(self, base, delta, out string) []string
}

// childCmd is the command line of this binary in rebuild mode.
func childCmd(name string) func(self, base, delta, out string) []string {
	return func(self, base, delta, out string) []string {
		return []string{self, "-decode", name, "-base", base, "-delta", delta, "-out", out}
	}
}

func formats() []format {
	fs := []format{
		{Name: "full-zstd3", Notes: "whole target NAR, klauspost zstd SpeedDefault (level 3); no base needed",
			encode: encodeFull, cmd: childCmd("full-zstd3")},
		{Name: "zstd3-dict-go", Notes: "klauspost zstd SpeedDefault, base NAR as raw dictionary, window 512 MiB (its maximum); rebuild holds the base in memory",
			encode: encodeDictGo(zstd.SpeedDefault), cmd: childCmd("zstd3-dict-go")},
		{Name: "zstd-better-dict-go", Notes: "as zstd3-dict-go at klauspost SpeedBetterCompression (about level 7)",
			encode: encodeDictGo(zstd.SpeedBetterCompression), cmd: childCmd("zstd3-dict-go")},
		{Name: "cdc-64k-zstd3", Notes: "gear-hash content-defined chunks (16/64/256 KiB min/avg/max), chunks found in base sent as copy ops, the rest literal; op stream zstd level 3; rebuild reads the base with ReadAt",
			encode: encodeCDC(cdc64k), cmd: childCmd("cdc")},
		{Name: "cdc-16k-zstd3", Notes: "as cdc-64k-zstd3 with 4/16/64 KiB chunks",
			encode: encodeCDC(cdc16k), cmd: childCmd("cdc")},
	}
	fs = append(fs, format{Name: "nix-ota-delta", Notes: "package delta: copy/add/literal ops against the base NAR, 32-byte seeds extended both ways; op stream zstd level 3, window 8 MiB; rebuild streams and reads the base with ReadAt",
		encode: encodeOps, cmd: childCmd("ops")})
	if _, err := exec.LookPath("zstd"); err == nil {
		fs = append(fs, format{Name: "zstd-cli-patch-from-3", Notes: "zstd CLI -3 --patch-from=base (long mode, window sized to the base by zstd); rebuild zstd -d --patch-from --memory=2048MB",
			encode: encodeCLI, cmd: cliRebuild})
	}
	return fs
}

// rebuild is the child side: it writes the rebuilt target NAR to out.
func rebuild(name, base, delta, out string) error {
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	switch name {
	case "full-zstd3":
		err = decodeZstd(w, delta, nil)
	case "zstd3-dict-go":
		err = decodeDictGo(w, base, delta)
	case "cdc":
		err = decodeCDC(w, base, delta)
	case "ops":
		err = decodeOps(w, base, delta)
	default:
		err = fmt.Errorf("unknown format")
	}
	if err == nil {
		err = w.Flush()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// compressFile writes in compressed with opts to out.
func compressFile(in, out string, opts ...zstd.EOption) error {
	src, err := os.Open(in)
	if err != nil {
		return err
	}
	defer src.Close()
	dst, err := os.Create(out)
	if err != nil {
		return err
	}
	defer dst.Close()
	enc, err := zstd.NewWriter(dst, append([]zstd.EOption{zstd.WithEncoderLevel(zstd.SpeedDefault)}, opts...)...)
	if err != nil {
		return err
	}
	if _, err := io.Copy(enc, src); err != nil {
		enc.Close()
		return err
	}
	if err := enc.Close(); err != nil {
		return err
	}
	return dst.Close()
}

func encodeFull(_, target, delta string) error { return compressFile(target, delta) }

func encodeDictGo(level zstd.EncoderLevel) func(base, target, delta string) error {
	return func(base, target, delta string) error {
		b, err := os.ReadFile(base)
		if err != nil {
			return err
		}
		return compressFile(target, delta, zstd.WithEncoderDictRaw(1, b), zstd.WithWindowSize(zstd.MaxWindowSize), zstd.WithEncoderLevel(level))
	}
}

// decodeZstd decompresses delta to w; opts add a dictionary.
func decodeZstd(w io.Writer, delta string, opts []zstd.DOption) error {
	f, err := os.Open(delta)
	if err != nil {
		return err
	}
	defer f.Close()
	opts = append(opts, zstd.WithDecoderMaxWindow(zstd.MaxWindowSize), zstd.WithDecoderConcurrency(1))
	dec, err := zstd.NewReader(bufio.NewReaderSize(f, 1<<20), opts...)
	if err != nil {
		return err
	}
	defer dec.Close()
	_, err = io.Copy(w, dec)
	return err
}

func decodeDictGo(w io.Writer, base, delta string) error {
	b, err := os.ReadFile(base)
	if err != nil {
		return err
	}
	return decodeZstd(w, delta, []zstd.DOption{zstd.WithDecoderDictRaw(1, b)})
}

func encodeCLI(base, target, delta string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "zstd", "-q", "-f", "-3", "--patch-from="+base, target, "-o", delta).CombinedOutput()
	if err != nil {
		return fmt.Errorf("zstd --patch-from: %w: %s", err, out)
	}
	return nil
}

func cliRebuild(_, base, delta, out string) []string {
	return []string{"zstd", "-q", "-f", "-d", "--memory=2048MB", "--patch-from=" + base, delta, "-o", out}
}

// encodeOps is nix-ota's own format (package delta): copy, add and
// literal ops against the base, found by seeds extended both ways.
func encodeOps(base, target, out string) error {
	b, err := os.ReadFile(base)
	if err != nil {
		return err
	}
	t, err := os.ReadFile(target)
	if err != nil {
		return err
	}
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	st, err := delta.Encode(w, b, t)
	if err == nil {
		err = w.Flush()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	fmt.Fprintf(os.Stderr, "  nix-ota-delta: copied %d, added %d, literal %d bytes in %d ops\n", st.Copied, st.Added, st.Literal, st.Ops)
	return err
}

func decodeOps(w io.Writer, base, d string) error {
	b, err := os.Open(base)
	if err != nil {
		return err
	}
	defer b.Close()
	fi, err := b.Stat()
	if err != nil {
		return err
	}
	f, err := os.Open(d)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = delta.Apply(w, b, fi.Size(), bufio.NewReaderSize(f, 1<<20), 1<<40)
	return err
}
