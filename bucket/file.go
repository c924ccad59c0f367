package bucket

import (
	"bytes"
	"context"
	"crypto/rand"
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
	"time"

	"golang.org/x/sys/unix"

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
//
// Whoever can write the directory is as untrusted as any bucket, and the
// agent reading it runs as root: no path below the root follows a symlink,
// only regular files are read, and no open blocks (beneath.go).
type fileStore struct {
	name string // the path as configured, for messages
	root string // the same path with its symlinks resolved, once, at open
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
	// The root is the operator's choice and may itself be a symlink (to a
	// mount point, say): it is resolved here, once. Below it nothing
	// follows a symlink.
	resolved, err := filepath.EvalSymlinks(root)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%w: file://%s: directory does not exist (run nix-ota init)", ErrUnreachable, root)
		}
		return nil, fmt.Errorf("%w: file://%s: %v", ErrUnreachable, root, err)
	}
	st, err := os.Stat(resolved)
	if err != nil {
		return nil, fmt.Errorf("%w: file://%s: %v", ErrUnreachable, root, err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("%w: file://%s: not a directory", ErrInvalidURL, root)
	}
	return &fileStore{name: root, root: resolved}, nil
}

func (s *fileStore) String() string { return "file://" + s.name }

// openRoot opens the root for *at calls. It is opened per operation rather
// than held: a held descriptor would keep a USB stick busy (umount fails)
// and point at the old directory after a remount.
func (s *fileStore) openRoot() (int, error) {
	fd, err := retry(func() (int, error) { return unix.Open(s.root, walkFlags, 0) })
	switch {
	case err == unix.ENOENT:
		return -1, fmt.Errorf("%w: %s: directory does not exist (run nix-ota init)", ErrUnreachable, s)
	case err != nil:
		return -1, fmt.Errorf("%w: %s: %v", ErrUnreachable, s, err)
	}
	return fd, nil
}

// splitKey splits a key into its directory ("" at the root) and name.
func splitKey(key string) (dir, name string) {
	i := strings.LastIndexByte(key, '/')
	if i < 0 {
		return "", key
	}
	return key[:i], key[i+1:]
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
	case errors.Is(err, ErrUnreachable), errors.Is(err, ErrSymlink), errors.Is(err, ErrNotRegular):
		return fmt.Errorf("%s %s: %w", op, key, err)
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("%s %s: %w", op, key, ErrNotFound)
	case errors.Is(err, unix.ENOTDIR) && (op == "get" || op == "stat"):
		// a/b where a is a file: no such object, as on S3.
		return fmt.Errorf("%s %s: %w: %v", op, key, ErrNotFound, err)
	case errors.Is(err, fs.ErrPermission):
		return fmt.Errorf("%s %s: %w: %v", op, key, ErrAccessDenied, err)
	}
	return fmt.Errorf("%s %s: %w", op, key, err)
}

// open opens key for reading: a regular file below the root, reached
// through no symlink.
func (s *fileStore) open(key string) (*os.File, *unix.Stat_t, error) {
	root, err := s.openRoot()
	if err != nil {
		return nil, nil, err
	}
	defer unix.Close(root)
	fd, st, err := openRegular(root, "", key)
	if err != nil {
		return nil, nil, err
	}
	return os.NewFile(uintptr(fd), key), st, nil
}

func modTime(st *unix.Stat_t) time.Time { return time.Unix(st.Mtim.Unix()) }

func (s *fileStore) Get(ctx context.Context, key string, opts GetOptions) (*Object, error) {
	if err := ValidateKey(key); err != nil {
		return nil, err
	}
	f, st, err := s.open(key)
	if err != nil {
		return nil, s.mapErr("get", key, err)
	}
	defer f.Close()
	if max := opts.Limit(); st.Size > max {
		return nil, fmt.Errorf("get %s: %w: %d bytes, limit %d", key, ErrTooLarge, st.Size, max)
	}
	data, err := ReadLimited(f, opts.Limit())
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", key, err)
	}
	etag, _ := fileETag(bytes.NewReader(data))
	if opts.IfNoneMatch != "" && TrimETag(opts.IfNoneMatch) == etag {
		return nil, fmt.Errorf("get %s: %w", key, ErrNotModified)
	}
	return &Object{Data: data, ETag: etag, ModTime: modTime(st)}, nil
}

func (s *fileStore) Put(ctx context.Context, key string, r io.Reader, size int64, opts PutOptions) (string, error) {
	if err := ValidateKey(key); err != nil {
		return "", err
	}
	root, err := s.openRoot()
	if err != nil {
		return "", s.mapErr("put", key, err)
	}
	defer unix.Close(root)
	dirKey, name := splitKey(key)
	dir, err := walkDir(root, dirKey, true)
	if err != nil {
		return "", s.mapErr("put", key, explain(root, "", dirKey, true, err))
	}
	defer unix.Close(dir)
	tmp, etag, err := writeTemp(dir, r)
	if err != nil {
		return "", s.mapErr("put", key, err)
	}
	defer unix.Unlinkat(dir, tmp, 0) // a no-op after a successful rename
	if err := s.place(ctx, root, dir, dirKey, tmp, name, opts); err != nil {
		return "", s.mapErr("put", key, err)
	}
	if err := syncDir(dir); err != nil {
		return "", s.mapErr("put", key, err)
	}
	return etag, nil
}

// place moves the finished temp file tmp to name in the directory dir
// (whose key is dirKey) as opts say: create-only, compare-and-swap, or
// plain replace. Links and renames inside one directory descriptor never
// follow a symlink.
func (s *fileStore) place(ctx context.Context, root, dir int, dirKey, tmp, name string, opts PutOptions) error {
	switch {
	case opts.CreateOnly:
		if err := unix.Linkat(dir, tmp, dir, name, 0); err != nil {
			if err == unix.EEXIST {
				return ErrExists
			}
			return err
		}
		return nil
	case opts.IfMatch != "":
		unlock, err := lockRoot(ctx, root)
		if err != nil {
			return err
		}
		defer unlock()
		fd, _, err := openRegular(dir, dirKey, name)
		if err != nil {
			return err
		}
		cur := os.NewFile(uintptr(fd), name)
		curTag, err := fileETag(cur)
		cur.Close()
		if err != nil {
			return err
		}
		if curTag != TrimETag(opts.IfMatch) {
			return ErrChanged
		}
	}
	return unix.Renameat(dir, tmp, dir, name)
}

// writeTemp copies r into a new temp file in dir, fsyncs and closes it, and
// returns its name and the content's ETag.
func writeTemp(dir int, r io.Reader) (name, etag string, err error) {
	name = atomicfile.TempPrefix + rand.Text()
	fd, err := retry(func() (int, error) {
		return unix.Openat(dir, name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|safeFlags, 0o600)
	})
	if err != nil {
		return "", "", err
	}
	f := os.NewFile(uintptr(fd), name)
	h := sha256.New()
	_, err = io.Copy(f, io.TeeReader(r, h))
	if err == nil {
		err = f.Chmod(0o644)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		unix.Unlinkat(dir, name, 0)
		return "", "", err
	}
	return name, hex.EncodeToString(h.Sum(nil)[:16]), nil
}

// syncDir fsyncs the directory dir (an O_PATH descriptor cannot be synced,
// so it is opened for reading first) to make a rename or link durable.
func syncDir(dir int) error {
	fd, err := retry(func() (int, error) { return unix.Openat(dir, ".", readFlags|unix.O_DIRECTORY, 0) })
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return unix.Fsync(fd)
}

// lockRoot takes an exclusive flock on the bucket's lock file, waiting at
// most until ctx ends. It serialises compare-and-swap puts between
// processes on one machine (and on NFS with lock support); the lock is
// released by the returned func or when the process dies.
func lockRoot(ctx context.Context, root int) (func(), error) {
	fd, err := retry(func() (int, error) { return unix.Openat(root, lockName, unix.O_RDWR|unix.O_CREAT|safeFlags, 0o644) })
	if err != nil {
		return nil, explain(root, "", lockName, false, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		unix.Close(fd)
		return nil, fmt.Errorf("%w: %s is %s; remove it", ErrNotRegular, lockName, fileType(st.Mode))
	}
	for wait := time.Millisecond; ; wait = min(2*wait, 50*time.Millisecond) {
		err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return func() { unix.Flock(fd, unix.LOCK_UN); unix.Close(fd) }, nil
		}
		if err != unix.EWOULDBLOCK && err != unix.EINTR {
			unix.Close(fd)
			return nil, fmt.Errorf("lock %s: %w", lockName, err)
		}
		select {
		case <-ctx.Done():
			unix.Close(fd)
			return nil, fmt.Errorf("waiting for %s: %w", lockName, ctx.Err())
		case <-time.After(wait):
		}
	}
}

func (s *fileStore) Stat(ctx context.Context, key string) (Info, error) {
	if err := ValidateKey(key); err != nil {
		return Info{}, err
	}
	f, st, err := s.open(key)
	if err != nil {
		return Info{}, s.mapErr("stat", key, err)
	}
	defer f.Close()
	etag, err := fileETag(f)
	if err != nil {
		return Info{}, s.mapErr("stat", key, err)
	}
	return Info{Key: key, Size: st.Size, ETag: etag, ModTime: modTime(st)}, nil
}

// List walks from the deepest directory the prefix names, through
// directory descriptors: it never follows a symlinked directory, and lists
// only regular files (symlinks, FIFOs, devices and sockets are no objects),
// skipping temp files and names no key may have.
func (s *fileStore) List(ctx context.Context, prefix string, fn func(Info) error) error {
	return s.ListAfter(ctx, prefix, "", fn)
}

// ListAfter skips whole directories whose keys all sort before after, so
// listing the newest check-in windows does not read the older ones.
func (s *fileStore) ListAfter(ctx context.Context, prefix, after string, fn func(Info) error) error {
	root, err := s.openRoot()
	if err != nil {
		return s.mapErr("list", prefix, err)
	}
	defer unix.Close(root)
	start, _ := splitKey(prefix)
	var infos []Info
	if start == "" || ValidateKey(start) == nil {
		fd, err := s.openListDir(root, start)
		if err != nil {
			return s.mapErr("list", prefix, err)
		}
		if fd >= 0 {
			if err := listDir(ctx, fd, start, listing{prefix: prefix, after: after}, &infos); err != nil {
				return fmt.Errorf("list %s: %w", prefix, err)
			}
		}
	}
	sort.Slice(infos, func(i, j int) bool { return infos[i].Key < infos[j].Key })
	for _, in := range infos {
		if err := fn(in); err != nil {
			return err
		}
	}
	return nil
}

// openListDir opens the directory dir for reading; -1 and no error when
// there is no such directory (nothing to list).
func (s *fileStore) openListDir(root int, dir string) (int, error) {
	if dir == "" {
		return retry(func() (int, error) { return unix.Openat(root, ".", readFlags|unix.O_DIRECTORY, 0) })
	}
	fd, err := openBeneath(root, dir, readFlags|unix.O_DIRECTORY)
	if err != nil {
		err = explain(root, "", dir, true, err)
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, unix.ENOTDIR) {
			return -1, nil
		}
		return -1, err
	}
	return fd, nil
}

// listing is what a List keeps: keys with prefix that sort after after.
type listing struct{ prefix, after string }

func (l listing) keeps(key string) bool { return strings.HasPrefix(key, l.prefix) && key > l.after }

// enters: a directory holds keys worth listing unless every key below it
// sorts before after.
func (l listing) enters(dirKey string) bool {
	d := dirKey + "/"
	return l.after == "" || d > l.after || strings.HasPrefix(l.after, d)
}

// listDir appends to out the regular files below the directory fd (whose
// key is rel) that l keeps, with their ETags, and closes fd.
func listDir(ctx context.Context, fd int, rel string, l listing, out *[]Info) error {
	d := os.NewFile(uintptr(fd), rel)
	defer d.Close()
	names, err := d.Readdirnames(-1)
	if err != nil {
		return err
	}
	for _, name := range names {
		if err := ctx.Err(); err != nil {
			return err
		}
		key := name
		if rel != "" {
			key = rel + "/" + name
		}
		var st unix.Stat_t
		if ValidateKey(key) != nil || unix.Fstatat(fd, name, &st, unix.AT_SYMLINK_NOFOLLOW) != nil {
			continue // a temp file, a name no key has, or removed while listing
		}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFREG:
			if l.keeps(key) {
				if in, ok := listedFile(fd, name, key); ok {
					*out = append(*out, in)
				}
			}
		case unix.S_IFDIR:
			if !l.enters(key) {
				continue
			}
			sub, err := retry(func() (int, error) { return unix.Openat(fd, name, readFlags|unix.O_DIRECTORY, 0) })
			if err != nil {
				continue // replaced by a symlink or removed since Fstatat
			}
			if err := listDir(ctx, sub, key, l, out); err != nil {
				return err
			}
		}
	}
	return nil
}

// listedFile opens a listed file without following a symlink put there
// since the Fstatat, for its ETag; false when it is gone or not regular.
func listedFile(dir int, name, key string) (Info, bool) {
	fd, err := retry(func() (int, error) { return unix.Openat(dir, name, readFlags, 0) })
	if err != nil {
		return Info{}, false
	}
	f := os.NewFile(uintptr(fd), key)
	defer f.Close()
	var st unix.Stat_t
	if unix.Fstat(fd, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
		return Info{}, false
	}
	etag, err := fileETag(f)
	if err != nil {
		return Info{}, false
	}
	return Info{Key: key, Size: st.Size, ETag: etag, ModTime: modTime(&st)}, true
}

func (s *fileStore) Delete(ctx context.Context, key string) error {
	if err := ValidateKey(key); err != nil {
		return err
	}
	root, err := s.openRoot()
	if err != nil {
		return s.mapErr("delete", key, err)
	}
	defer unix.Close(root)
	dirKey, name := splitKey(key)
	dir, err := walkDir(root, dirKey, false)
	if err != nil {
		err = explain(root, "", dirKey, true, err)
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, unix.ENOTDIR) {
			return nil // no such directory, so no such object
		}
		return s.mapErr("delete", key, err)
	}
	defer unix.Close(dir)
	if err := unix.Unlinkat(dir, name, 0); err != nil && err != unix.ENOENT {
		return s.mapErr("delete", key, err)
	}
	return nil
}

// Touch sets the modification time of an object in a file:// bucket, the
// time readers take as its LastModified: for tests and tools that replay
// check-ins written earlier. Other stores cannot backdate an object
// (ErrUnsupported).
func Touch(s Store, key string, t time.Time) error {
	fs, ok := s.(*fileStore)
	if !ok {
		return fmt.Errorf("touch %s: %w: only file:// objects can be backdated", key, ErrUnsupported)
	}
	f, _, err := fs.open(key)
	if err != nil {
		return fs.mapErr("touch", key, err)
	}
	defer f.Close()
	tv := unix.NsecToTimeval(t.UnixNano())
	return unix.Futimes(int(f.Fd()), []unix.Timeval{tv, tv})
}
