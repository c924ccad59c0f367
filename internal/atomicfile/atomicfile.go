// Package atomicfile writes files so that a reader, or the next boot after a
// power cut, sees either the old content or the new, never a mix: write to a
// temporary name in the same directory, fsync, rename (or link), fsync the
// directory.
package atomicfile

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// TempPrefix starts the name of every temporary file this package makes, so
// that directory walkers can skip them.
const TempPrefix = ".nix-ota-tmp-"

// WriteTemp copies r into a new temporary file in dir, fsyncs and closes
// it, and returns its path. The caller renames or links it into place, or
// removes it.
func WriteTemp(dir string, r io.Reader, perm os.FileMode) (string, error) {
	f, err := os.CreateTemp(dir, TempPrefix+"*")
	if err != nil {
		return "", err
	}
	name := f.Name()
	fail := func(err error) (string, error) {
		f.Close()
		os.Remove(name)
		return "", err
	}
	if _, err := io.Copy(f, r); err != nil {
		return fail(err)
	}
	if err := f.Chmod(perm); err != nil {
		return fail(err)
	}
	if err := f.Sync(); err != nil {
		return fail(err)
	}
	if err := f.Close(); err != nil {
		os.Remove(name)
		return "", err
	}
	return name, nil
}

// SyncDir fsyncs a directory so that a rename or link inside it is durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// WriteFile atomically replaces path with data.
func WriteFile(path string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	tmp, err := WriteTemp(dir, bytes.NewReader(data), perm)
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := SyncDir(dir); err != nil {
		return fmt.Errorf("write %s: sync directory: %w", path, err)
	}
	return nil
}

// CreateFile writes data to path only if path does not exist yet; the file
// appears complete or not at all (a hard link of a finished temporary file,
// which the kernel refuses with EEXIST, unlike O_EXCL it never exposes a
// half-written file).
func CreateFile(path string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	tmp, err := WriteTemp(dir, bytes.NewReader(data), perm)
	if err != nil {
		return err
	}
	defer os.Remove(tmp)
	if err := os.Link(tmp, path); err != nil {
		return err
	}
	return SyncDir(dir)
}
