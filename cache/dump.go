package cache

import (
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"sync"
)

// dumpBuffers are the read buffers of dumpNAR, reused: fresh memory costs
// page faults, and a store path can hold thousands of files.
var dumpBuffers = sync.Pool{New: func() any { b := make([]byte, 128<<10); return &b }}

// narWriter writes the NAR serialisation of a file tree, as `nix-store
// --dump` does: tokens are length-prefixed strings padded to 8 bytes,
// directory entries sorted by name (byte order), executability from the
// owner's x bit, symlinks not followed.
type narWriter struct {
	w   io.Writer
	buf []byte
}

// dumpNAR writes the NAR of the store path p to w.
func dumpNAR(w io.Writer, p string) error {
	b := dumpBuffers.Get().(*[]byte)
	defer dumpBuffers.Put(b)
	n := &narWriter{w: w, buf: *b}
	if err := n.str("nix-archive-1"); err != nil {
		return err
	}
	return n.node(p)
}

// str writes one token.
func (n *narWriter) str(s string) error {
	var pad [8]byte
	binary.LittleEndian.PutUint64(n.buf[:8], uint64(len(s)))
	k := copy(n.buf[8:], s)
	if k < len(s) {
		return fmt.Errorf("NAR token of %d bytes", len(s)) // names and link targets are far shorter
	}
	k += copy(n.buf[8+k:], pad[:(8-len(s)%8)%8])
	_, err := n.w.Write(n.buf[:8+k])
	return err
}

func (n *narWriter) strs(ss ...string) error {
	for _, s := range ss {
		if err := n.str(s); err != nil {
			return err
		}
	}
	return nil
}

func (n *narWriter) node(p string) error {
	fi, err := os.Lstat(p)
	if err != nil {
		return err
	}
	if err := n.strs("(", "type"); err != nil {
		return err
	}
	switch {
	case fi.Mode()&os.ModeSymlink != 0:
		target, err := os.Readlink(p)
		if err == nil {
			err = n.strs("symlink", "target", target)
		}
		if err != nil {
			return err
		}
	case fi.IsDir():
		if err := n.dir(p); err != nil {
			return err
		}
	case fi.Mode().IsRegular():
		if err := n.regular(p, fi); err != nil {
			return err
		}
	default:
		return fmt.Errorf("%s: %s files have no NAR form", p, fi.Mode().Type())
	}
	return n.str(")")
}

func (n *narWriter) dir(p string) error {
	entries, err := os.ReadDir(p)
	if err != nil {
		return err
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].Name() < entries[j].Name() })
	if err := n.str("directory"); err != nil {
		return err
	}
	for _, e := range entries {
		if err := n.strs("entry", "(", "name", e.Name(), "node"); err != nil {
			return err
		}
		if err := n.node(filepath.Join(p, e.Name())); err != nil {
			return err
		}
		if err := n.str(")"); err != nil {
			return err
		}
	}
	return nil
}

// regular writes a file's contents, read into the reused buffer, and
// fails if the file changed size while it was read.
func (n *narWriter) regular(p string, fi os.FileInfo) error {
	if err := n.str("regular"); err != nil {
		return err
	}
	if fi.Mode()&0o100 != 0 {
		if err := n.strs("executable", ""); err != nil {
			return err
		}
	}
	if err := n.str("contents"); err != nil {
		return err
	}
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	size := fi.Size()
	binary.LittleEndian.PutUint64(n.buf[:8], uint64(size))
	if _, err := n.w.Write(n.buf[:8]); err != nil {
		return err
	}
	got, err := io.CopyBuffer(struct{ io.Writer }{n.w}, io.LimitReader(f, size+1), n.buf)
	if err != nil {
		return err
	}
	if got != size {
		return fmt.Errorf("%s: read %d bytes, its size is %d", p, got, size)
	}
	var pad [8]byte
	_, err = n.w.Write(pad[:(8-size%8)%8])
	return err
}
