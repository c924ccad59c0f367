package bucket

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"

	"github.com/nix-ota/nix-ota/internal/atomicfile"
)

// tempPrefix starts the names of temp files (atomicfile.TempPrefix) and the
// lock file; no key segment may start with it, and List skips them.
const (
	tempPrefix = ".nix-ota-"
	lockName   = tempPrefix + "lock" // serialises put-if-match
)

// fileStore is a directory used as a bucket: the embedded default, and the
// way to run an air-gapped fleet from a USB stick. Writes are atomic (temp
// file, fsync, rename); create-only puts hard-link a finished temp file so
// the kernel refuses a second writer; put-if-match holds an flock on a lock
// file in the root while it compares and renames.
type fileStore struct {
	root string
}

var _ Store = (*fileStore)(nil)

func openFile(root string, create bool) (*fileStore, error) {
	if !filepath.IsAbs(root) {
		return nil, fmt.Errorf("%w: file://%s: the path must be absolute (file:///abs/path)", ErrInvalidURL, root)
	}
	root = filepath.Clean(root)
	if create {
		if err := os.MkdirAll(root, 0o755); err != nil {
			return nil, fmt.Errorf("bucket file://%s: %w", root, err)
		}
	}
	st, err := os.Stat(root)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%w: file://%s: directory does not exist (run nix-ota init)", ErrUnreachable, root)
		}
		return nil, fmt.Errorf("%w: file://%s: %v", ErrUnreachable, root, err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("%w: file://%s: not a directory", ErrInvalidURL, root)
	}
	return &fileStore{root: root}, nil
}

func (s *fileStore) String() string { return "file://" + s.root }

func (s *fileStore) path(key string) string {
	return filepath.Join(s.root, filepath.FromSlash(key))
}

func fileETag(r io.Reader) (string, error) {
	h := sha256.New()
	if _, err := io.Copy(h, r); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)[:16]), nil
}

func (s *fileStore) mapErr(op, key string, err error) error {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("%s %s: %w", op, key, ErrNotFound)
	case errors.Is(err, fs.ErrPermission):
		return fmt.Errorf("%s %s: %w: %v", op, key, ErrAccessDenied, err)
	}
	return fmt.Errorf("%s %s: %w", op, key, err)
}

func (s *fileStore) Get(ctx context.Context, key string, opts GetOptions) (*Object, error) {
	if err := ValidateKey(key); err != nil {
		return nil, err
	}
	f, err := os.Open(s.path(key))
	if err != nil {
		return nil, s.mapErr("get", key, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, s.mapErr("get", key, err)
	}
	if st.IsDir() {
		return nil, fmt.Errorf("get %s: %w", key, ErrNotFound)
	}
	if max := opts.Limit(); st.Size() > max {
		return nil, fmt.Errorf("get %s: %w: %d bytes, limit %d", key, ErrTooLarge, st.Size(), max)
	}
	data, err := ReadLimited(f, opts.Limit())
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", key, err)
	}
	etag, _ := fileETag(bytes.NewReader(data))
	if opts.IfNoneMatch != "" && TrimETag(opts.IfNoneMatch) == etag {
		return nil, fmt.Errorf("get %s: %w", key, ErrNotModified)
	}
	return &Object{Data: data, ETag: etag, ModTime: st.ModTime()}, nil
}

func (s *fileStore) Put(ctx context.Context, key string, r io.Reader, size int64, opts PutOptions) (string, error) {
	if err := ValidateKey(key); err != nil {
		return "", err
	}
	dst := s.path(key)
	dir := filepath.Dir(dst)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", s.mapErr("put", key, err)
	}
	h := sha256.New()
	tmp, err := atomicfile.WriteTemp(dir, io.TeeReader(r, h), 0o644)
	if err != nil {
		return "", s.mapErr("put", key, err)
	}
	defer os.Remove(tmp) // a no-op after a successful rename
	etag := hex.EncodeToString(h.Sum(nil)[:16])

	switch {
	case opts.CreateOnly:
		if err := os.Link(tmp, dst); err != nil {
			if errors.Is(err, fs.ErrExist) {
				return "", fmt.Errorf("put %s: %w", key, ErrExists)
			}
			return "", s.mapErr("put", key, err)
		}
	case opts.IfMatch != "":
		unlock, err := s.lock()
		if err != nil {
			return "", s.mapErr("put", key, err)
		}
		defer unlock()
		cur, err := os.Open(dst)
		if err != nil {
			return "", s.mapErr("put", key, err)
		}
		curTag, err := fileETag(cur)
		cur.Close()
		if err != nil {
			return "", s.mapErr("put", key, err)
		}
		if curTag != TrimETag(opts.IfMatch) {
			return "", fmt.Errorf("put %s: %w", key, ErrChanged)
		}
		if err := os.Rename(tmp, dst); err != nil {
			return "", s.mapErr("put", key, err)
		}
	default:
		if err := os.Rename(tmp, dst); err != nil {
			return "", s.mapErr("put", key, err)
		}
	}
	if err := atomicfile.SyncDir(dir); err != nil {
		return "", s.mapErr("put", key, err)
	}
	return etag, nil
}

// lock takes an exclusive flock on the bucket's lock file. It serialises
// compare-and-swap puts between processes on one machine (and on NFS with
// lock support); the lock is released by unlock or when the process dies.
func (s *fileStore) lock() (func(), error) {
	f, err := os.OpenFile(filepath.Join(s.root, lockName), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, err
	}
	return func() {
		syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}

func (s *fileStore) Stat(ctx context.Context, key string) (Info, error) {
	if err := ValidateKey(key); err != nil {
		return Info{}, err
	}
	f, err := os.Open(s.path(key))
	if err != nil {
		return Info{}, s.mapErr("stat", key, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil || st.IsDir() {
		return Info{}, fmt.Errorf("stat %s: %w", key, ErrNotFound)
	}
	etag, err := fileETag(f)
	if err != nil {
		return Info{}, s.mapErr("stat", key, err)
	}
	return Info{Key: key, Size: st.Size(), ETag: etag, ModTime: st.ModTime()}, nil
}

func (s *fileStore) List(ctx context.Context, prefix string, fn func(Info) error) error {
	// Walk from the deepest directory the prefix names.
	start := s.root
	if i := strings.LastIndex(prefix, "/"); i >= 0 {
		start = s.path(prefix[:i])
	}
	var infos []Info
	err := filepath.WalkDir(start, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) && p == start {
				return filepath.SkipAll
			}
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if strings.HasPrefix(d.Name(), tempPrefix) {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if d.IsDir() {
			return nil
		}
		rel, err := filepath.Rel(s.root, p)
		if err != nil {
			return err
		}
		key := filepath.ToSlash(rel)
		if !strings.HasPrefix(key, prefix) {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return nil // removed while walking
		}
		infos = append(infos, Info{Key: key, Size: fi.Size(), ModTime: fi.ModTime()})
		return nil
	})
	if err != nil {
		return fmt.Errorf("list %s: %w", prefix, err)
	}
	sort.Slice(infos, func(i, j int) bool { return infos[i].Key < infos[j].Key })
	for _, in := range infos {
		if err := fn(in); err != nil {
			return err
		}
	}
	return nil
}

func (s *fileStore) Delete(ctx context.Context, key string) error {
	if err := ValidateKey(key); err != nil {
		return err
	}
	if err := os.Remove(s.path(key)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return s.mapErr("delete", key, err)
	}
	return nil
}
