package nfsroot

import (
	"errors"
	"io/fs"
	"os"
	"path"
	"slices"
	"strings"
	"time"

	billy "github.com/go-git/go-billy/v5"
	nfsfile "github.com/willscott/go-nfs/file"
	"golang.org/x/sys/unix"
)

// rofs is a read-only billy filesystem over one version's rootfs, rooted at base (a
// directory below the root, "." for the root). Every path is resolved under the version's
// root with openat2: symlinks are never followed by Lstat, Readlink or ReadDir, and Stat
// and Open resolve them as if the root were "/", so nothing outside the image is reached.
type rofs struct {
	t    *tree
	base string
}

var _ billy.Filesystem = (*rofs)(nil)

// join makes a path relative to the version's root; ".." cannot climb above base.
func (r *rofs) join(elem ...string) string {
	p := path.Clean("/" + strings.Join(elem, "/"))
	if p == "/" {
		return r.base
	}
	if r.base == "." {
		return p[1:]
	}
	return r.base + p
}

func roErr(op, name string) error { return &fs.PathError{Op: op, Path: name, Err: unix.EROFS} }

// Create implements billy.Basic: refused.
func (r *rofs) Create(name string) (billy.File, error) { return nil, roErr("create", name) }

// Open implements billy.Basic.
func (r *rofs) Open(name string) (billy.File, error) { return r.OpenFile(name, os.O_RDONLY, 0) }

// OpenFile implements billy.Basic; only read-only opens succeed.
func (r *rofs) OpenFile(name string, flag int, _ os.FileMode) (billy.File, error) {
	if flag&(os.O_WRONLY|os.O_RDWR|os.O_CREATE|os.O_TRUNC|os.O_APPEND) != 0 {
		return nil, roErr("open", name)
	}
	fd, err := unix.Openat2(r.t.rootFD, r.join(name), &unix.OpenHow{
		Flags:   unix.O_RDONLY | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV,
	})
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: name, Err: err}
	}
	return &roFile{File: os.NewFile(uintptr(fd), name), name: name}, nil
}

// Stat implements billy.Basic, following symlinks inside the image only.
func (r *rofs) Stat(name string) (os.FileInfo, error) {
	f, err := r.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.(*roFile).Fd()), &st); err != nil {
		return nil, &fs.PathError{Op: "stat", Path: name, Err: err}
	}
	return &fileInfo{name: path.Base(name), st: st}, nil
}

// Lstat implements billy.Symlink.
func (r *rofs) Lstat(name string) (os.FileInfo, error) {
	st, err := r.t.lstat(r.join(name))
	if err != nil {
		return nil, &fs.PathError{Op: "lstat", Path: name, Err: err}
	}
	return &fileInfo{name: path.Base(name), st: st}, nil
}

// Readlink implements billy.Symlink.
func (r *rofs) Readlink(name string) (string, error) {
	target, err := r.t.readlink(r.join(name))
	if err != nil {
		return "", &fs.PathError{Op: "readlink", Path: name, Err: err}
	}
	return target, nil
}

// ReadDir implements billy.Dir, sorted by name.
func (r *rofs) ReadDir(name string) ([]os.FileInfo, error) {
	ents, err := r.t.readDir(r.join(name))
	if err != nil {
		return nil, &fs.PathError{Op: "readdir", Path: name, Err: err}
	}
	out := make([]os.FileInfo, 0, len(ents))
	for _, e := range ents {
		out = append(out, &fileInfo{name: e.name, st: e.st})
	}
	return out, nil
}

// Rename implements billy.Basic: refused.
func (r *rofs) Rename(from, _ string) error { return roErr("rename", from) }

// Remove implements billy.Basic: refused.
func (r *rofs) Remove(name string) error { return roErr("remove", name) }

// Join implements billy.Basic.
func (r *rofs) Join(elem ...string) string { return path.Join(elem...) }

// TempFile implements billy.TempFile: refused.
func (r *rofs) TempFile(dir, _ string) (billy.File, error) { return nil, roErr("tempfile", dir) }

// MkdirAll implements billy.Dir: refused.
func (r *rofs) MkdirAll(name string, _ os.FileMode) error { return roErr("mkdir", name) }

// Symlink implements billy.Symlink: refused.
func (r *rofs) Symlink(_, link string) error { return roErr("symlink", link) }

// Chroot implements billy.Chroot.
func (r *rofs) Chroot(p string) (billy.Filesystem, error) {
	st, err := r.t.lstat(r.join(p))
	if err != nil {
		return nil, &fs.PathError{Op: "chroot", Path: p, Err: err}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return nil, &fs.PathError{Op: "chroot", Path: p, Err: unix.ENOTDIR}
	}
	return &rofs{t: r.t, base: r.join(p)}, nil
}

// Root implements billy.Chroot.
func (r *rofs) Root() string { return path.Join(r.t.exp.Root, r.base) }

// Capabilities implements billy.Capable: read and seek only.
func (r *rofs) Capabilities() billy.Capability {
	return billy.ReadCapability | billy.SeekCapability
}

// roFile is an open file of a rofs.
type roFile struct {
	*os.File
	name string
}

func (f *roFile) Name() string                       { return f.name }
func (f *roFile) Write([]byte) (int, error)          { return 0, roErr("write", f.name) }
func (f *roFile) Truncate(int64) error               { return roErr("truncate", f.name) }
func (f *roFile) Lock() error                        { return nil }
func (f *roFile) Unlock() error                      { return nil }
func (f *roFile) WriteAt([]byte, int64) (int, error) { return 0, roErr("write", f.name) }

// fileInfo is an os.FileInfo that keeps everything a stat says: the setuid, setgid and
// sticky bits in Mode, and link count, owner, device and inode in Sys for go-nfs.
type fileInfo struct {
	name string
	st   unix.Stat_t
}

func (fi *fileInfo) Name() string       { return fi.name }
func (fi *fileInfo) Size() int64        { return fi.st.Size }
func (fi *fileInfo) Mode() os.FileMode  { return goMode(fi.st.Mode) }
func (fi *fileInfo) ModTime() time.Time { return time.Unix(fi.st.Mtim.Sec, fi.st.Mtim.Nsec) }
func (fi *fileInfo) IsDir() bool        { return fi.st.Mode&unix.S_IFMT == unix.S_IFDIR }
func (fi *fileInfo) Sys() any {
	return &nfsfile.FileInfo{
		Nlink: uint32(fi.st.Nlink), UID: fi.st.Uid, GID: fi.st.Gid,
		Major: unix.Major(fi.st.Rdev), Minor: unix.Minor(fi.st.Rdev), Fileid: fi.st.Ino,
	}
}

// goMode maps a Unix st_mode to an os.FileMode, special bits included.
func goMode(m uint32) os.FileMode {
	mode := os.FileMode(m & 0o777)
	switch m & unix.S_IFMT {
	case unix.S_IFDIR:
		mode |= os.ModeDir
	case unix.S_IFLNK:
		mode |= os.ModeSymlink
	case unix.S_IFCHR:
		mode |= os.ModeDevice | os.ModeCharDevice
	case unix.S_IFBLK:
		mode |= os.ModeDevice
	case unix.S_IFSOCK:
		mode |= os.ModeSocket
	case unix.S_IFIFO:
		mode |= os.ModeNamedPipe
	}
	if m&unix.S_ISUID != 0 {
		mode |= os.ModeSetuid
	}
	if m&unix.S_ISGID != 0 {
		mode |= os.ModeSetgid
	}
	if m&unix.S_ISVTX != 0 {
		mode |= os.ModeSticky
	}
	return mode
}

// dirEntry is one directory entry with its attributes.
type dirEntry struct {
	name string
	st   unix.Stat_t
}

// readDir lists a directory under the root, sorted by name, without "." and "..".
func (t *tree) readDir(rel string) ([]dirEntry, error) {
	fd, err := t.open(rel, unix.O_RDONLY|unix.O_DIRECTORY)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	var names []string
	buf := make([]byte, 32<<10)
	for {
		n, err := unix.Getdents(fd, buf)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if n == 0 {
			break
		}
		if err := parseDirents(buf[:n], func(_ uint64, _ uint8, name []byte) {
			if !isDot(name) {
				names = append(names, string(name))
			}
		}); err != nil {
			return nil, err
		}
	}
	slices.Sort(names)
	out := make([]dirEntry, 0, len(names))
	for _, name := range names {
		var st unix.Stat_t
		if err := unix.Fstatat(fd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			continue // vanished: the image is not supposed to change, skip rather than fail
		}
		out = append(out, dirEntry{name: name, st: st})
	}
	return out, nil
}

// readlink reads a symlink's target under the root without following it.
func (t *tree) readlink(rel string) (string, error) {
	fd, err := t.open(rel, unix.O_PATH)
	if err != nil {
		return "", err
	}
	defer unix.Close(fd)
	buf := make([]byte, 4096)
	n, err := unix.Readlinkat(fd, "", buf)
	if err != nil {
		return "", err
	}
	return string(buf[:n]), nil
}
