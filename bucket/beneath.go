package bucket

import (
	"fmt"
	"path"
	"strings"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// Opening paths inside a file:// bucket.
//
// A file:// bucket may be a USB stick or a directory other users can write,
// and the agent runs as root. So no path below the root follows a symbolic
// link: the kernel resolves keys with openat2(RESOLVE_BENEATH |
// RESOLVE_NO_SYMLINKS), or, on kernels without openat2 (before 5.6), this
// file walks them one component at a time with O_NOFOLLOW. Every open is
// O_NONBLOCK and O_NOCTTY, so a FIFO or a terminal planted at a key can
// neither stall a poll nor become the agent's terminal, and callers read only
// what fstat says is a regular file.

const (
	// safeFlags go with every open below the root.
	safeFlags = unix.O_CLOEXEC | unix.O_NOFOLLOW | unix.O_NONBLOCK | unix.O_NOCTTY
	// walkFlags open a directory to resolve names in, not to read it
	// (O_PATH takes no other flags).
	walkFlags = unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC | unix.O_NOFOLLOW
	// readFlags open a file or directory for reading.
	readFlags = unix.O_RDONLY | safeFlags
)

// useOpenat2 is cleared the first time the kernel refuses openat2; tests
// clear it to run the component-by-component walk.
var useOpenat2 atomic.Bool

func init() { useOpenat2.Store(true) }

// openBeneath opens rel ('/'-separated, already a valid key) below the
// directory root with flags, following no symlink.
func openBeneath(root int, rel string, flags int) (int, error) {
	if useOpenat2.Load() {
		how := unix.OpenHow{Flags: uint64(flags), Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS}
		fd, err := retry(func() (int, error) { return unix.Openat2(root, rel, &how) })
		// ENOSYS: a kernel before 5.6; EPERM: a seccomp filter older than
		// openat2. Either way the walk below does the same job.
		if err != unix.ENOSYS && err != unix.EPERM {
			return fd, err
		}
		useOpenat2.Store(false)
	}
	dir, name := path.Split(rel)
	dfd, err := walkDir(root, strings.TrimSuffix(dir, "/"), false)
	if err != nil {
		return -1, err
	}
	defer unix.Close(dfd)
	return retry(func() (int, error) { return unix.Openat(dfd, name, flags, 0) })
}

// walkDir opens the directory rel below root one component at a time,
// refusing symlinks (O_NOFOLLOW) and, with create, making missing
// directories with mkdirat. The result is an O_PATH descriptor: usable as
// the directory of *at calls, not for reading.
func walkDir(root int, rel string, create bool) (int, error) {
	fd, err := retry(func() (int, error) { return unix.Openat(root, ".", walkFlags, 0) })
	if err != nil || rel == "" {
		return fd, err
	}
	for _, name := range strings.Split(rel, "/") {
		next, err := retry(func() (int, error) { return unix.Openat(fd, name, walkFlags, 0) })
		if err == unix.ENOENT && create {
			if err = unix.Mkdirat(fd, name, 0o755); err == nil || err == unix.EEXIST {
				next, err = retry(func() (int, error) { return unix.Openat(fd, name, walkFlags, 0) })
			}
		}
		unix.Close(fd)
		if err != nil {
			return -1, err
		}
		fd = next
	}
	return fd, nil
}

// retry repeats a call the kernel interrupted or asked to retry (openat2
// answers EAGAIN when a rename raced its RESOLVE_BENEATH check).
func retry(open func() (int, error)) (int, error) {
	for i := 0; ; i++ {
		fd, err := open()
		if (err != unix.EINTR && err != unix.EAGAIN) || i == 100 {
			return fd, err
		}
	}
}

// openRegular opens rel below the directory dir (whose key is in, "" for
// the root) for reading and checks that it is a regular file: a FIFO,
// device, socket or directory is refused before any read.
func openRegular(dir int, in, rel string) (int, *unix.Stat_t, error) {
	var st unix.Stat_t
	fd, err := openBeneath(dir, rel, readFlags)
	if err == unix.ENXIO || err == unix.ENODEV {
		// What open answers for a socket, or a device with no driver.
		if unix.Fstatat(dir, rel, &st, unix.AT_SYMLINK_NOFOLLOW) == nil && st.Mode&unix.S_IFMT != unix.S_IFLNK {
			return -1, nil, notRegular(joinKey(in, rel), st.Mode)
		}
	}
	if err != nil {
		return -1, nil, explain(dir, in, rel, false, err)
	}
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return -1, nil, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		unix.Close(fd)
		return -1, nil, notRegular(joinKey(in, rel), st.Mode)
	}
	return fd, &st, nil
}

func notRegular(key string, mode uint32) error {
	return fmt.Errorf("%w: %s is %s; remove it (a file:// bucket holds only regular files and directories)", ErrNotRegular, key, fileType(mode))
}

// fileType names a file mode's type for messages.
func fileType(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFREG:
		return "a regular file"
	case unix.S_IFDIR:
		return "a directory"
	case unix.S_IFLNK:
		return "a symlink"
	case unix.S_IFIFO:
		return "a FIFO"
	case unix.S_IFSOCK:
		return "a socket"
	case unix.S_IFCHR:
		return "a character device"
	case unix.S_IFBLK:
		return "a block device"
	}
	return fmt.Sprintf("of unknown type %#o", mode&unix.S_IFMT)
}

// explain turns a failed resolution of rel below the directory fd (whose
// key is in) into an error naming what is in the way. ELOOP and ENOTDIR are
// what the kernel answers for a symlink it was told not to follow, so the
// path is looked up again one component at a time, never through a
// symlink, to name the first one. With dir, rel names a directory, so its
// last component must be one too.
func explain(fd int, in, rel string, dir bool, err error) error {
	if err != unix.ELOOP && err != unix.ENOTDIR && err != unix.EXDEV {
		return err
	}
	parts := strings.Split(rel, "/")
	for i := range parts {
		p := strings.Join(parts[:i+1], "/")
		var st unix.Stat_t
		if unix.Fstatat(fd, p, &st, unix.AT_SYMLINK_NOFOLLOW) != nil {
			break
		}
		p = joinKey(in, p)
		typ := st.Mode & unix.S_IFMT
		switch {
		case typ == unix.S_IFLNK:
			return fmt.Errorf("%w: %s is a symlink; remove it (a file:// bucket holds only regular files and directories)", ErrSymlink, p)
		case typ != unix.S_IFDIR && (dir || i < len(parts)-1):
			return fmt.Errorf("%s is %s: %w", p, fileType(st.Mode), unix.ENOTDIR)
		}
	}
	if err == unix.ENOTDIR {
		return err
	}
	return fmt.Errorf("%w: %s: %v (a symlink or a concurrent rename on the path)", ErrSymlink, joinKey(in, rel), err)
}

// joinKey is the key of rel below the directory whose key is dir.
func joinKey(dir, rel string) string {
	if dir == "" {
		return rel
	}
	return dir + "/" + rel
}
