package nfsroot

import (
	"errors"
	"fmt"
	"hash/fnv"
	"os"
	"slices"
	"strings"

	nfs "github.com/willscott/go-nfs"
	"golang.org/x/sys/unix"
)

// resolveFlags confine every path walk to the version's root: no symlink is followed, no
// "..", no mount point is crossed, whatever the image holds.
const resolveFlags = unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV

// tree is one published version of an export: its root directory, opened once, and a
// compact inode index (sorted inode numbers, parent links and names) that turns a handle's
// inode back into a path. Published versions never change, so the index is built once per
// process and stays exact; it costs about 25 bytes per file plus the names.
type tree struct {
	exp     Export
	id      uint64 // exportID(exp.Path)
	gen     uint32 // rootGen of the root directory, so a re-created rootfs makes old handles stale
	root    *os.File
	rootFD  int
	dev     uint64
	fsid    uint64
	rootIno uint64

	inos    []uint64 // sorted
	parent  []uint32 // index of the parent directory's entry
	nameOff []uint32 // into names
	nameLen []uint8
	names   []byte
	rootIdx uint32
}

// exportID names an export path inside a handle.
func exportID(path string) uint64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(path))
	return h.Sum64()
}

// rootGen ties handles to one incarnation of a rootfs directory.
func rootGen(dev, ino uint64) uint32 {
	h := fnv.New32a()
	var b [16]byte
	for i := range 8 {
		b[i] = byte(dev >> (8 * i))
		b[8+i] = byte(ino >> (8 * i))
	}
	_, _ = h.Write(b[:])
	return h.Sum32()
}

// walkEntry is an index entry in walk order, before sorting.
type walkEntry struct {
	ino    uint64
	parent uint32
	off    uint32
	len    uint8
}

// buildTree opens a version's rootfs and indexes every inode under it.
func buildTree(exp Export) (*tree, error) {
	fd, err := unix.Open(exp.Root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open rootfs %s: %w", exp.Root, err)
	}
	root := os.NewFile(uintptr(fd), exp.Root)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		root.Close()
		return nil, fmt.Errorf("stat rootfs %s: %w", exp.Root, err)
	}
	t := &tree{
		exp: exp, id: exportID(exp.Path), root: root, rootFD: fd,
		dev: st.Dev, rootIno: st.Ino, gen: rootGen(st.Dev, st.Ino),
	}
	t.fsid = t.id ^ exp.Version<<1 ^ uint64(t.gen)
	if err := t.index(); err != nil {
		root.Close()
		return nil, fmt.Errorf("index rootfs %s: %w", exp.Root, err)
	}
	return t, nil
}

func (t *tree) close() error { return t.root.Close() }

// index walks the tree depth first with getdents64, taking inode numbers from the
// directory entries so files need no stat of their own.
func (t *tree) index() error {
	entries := []walkEntry{{ino: t.rootIno}}
	var names []byte
	stack := []uint32{0}
	buf := make([]byte, 64<<10)
	var path strings.Builder
	for len(stack) > 0 {
		dir := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		path.Reset()
		appendPath(&path, dir, 0, func(i uint32) (uint32, []byte) {
			e := entries[i]
			return e.parent, names[e.off : e.off+uint32(e.len)]
		})
		dfd, err := unix.Openat2(t.rootFD, path.String(), &unix.OpenHow{
			Flags: unix.O_RDONLY | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC, Resolve: resolveFlags,
		})
		if errors.Is(err, unix.EXDEV) || errors.Is(err, unix.EACCES) {
			continue // a mount point inside the image, or unreadable: not served
		}
		if err != nil {
			return fmt.Errorf("open %s: %w", path.String(), err)
		}
		var dst unix.Stat_t
		if err := unix.Fstat(dfd, &dst); err != nil {
			unix.Close(dfd)
			return fmt.Errorf("stat %s: %w", path.String(), err)
		}
		if dst.Ino != entries[dir].ino {
			// d_ino disagrees with st_ino (some stacked filesystems): trust stat.
			entries[dir].ino = dst.Ino
		}
		for {
			n, err := unix.Getdents(dfd, buf)
			if errors.Is(err, unix.EINTR) {
				continue
			}
			if err != nil {
				unix.Close(dfd)
				return fmt.Errorf("getdents %s: %w", path.String(), err)
			}
			if n == 0 {
				break
			}
			var perr error
			err = parseDirents(buf[:n], func(ino uint64, typ uint8, name []byte) {
				if perr != nil || isDot(name) {
					return
				}
				if len(name) > 255 || len(names)+len(name) > 1<<32-1 || len(entries) >= 1<<32-1 {
					perr = fmt.Errorf("%s: index limits exceeded", path.String())
					return
				}
				if typ == unix.DT_UNKNOWN {
					var est unix.Stat_t
					if err := unix.Fstatat(dfd, string(name), &est, unix.AT_SYMLINK_NOFOLLOW); err == nil && est.Mode&unix.S_IFMT == unix.S_IFDIR {
						typ = unix.DT_DIR
					}
				}
				entries = append(entries, walkEntry{ino: ino, parent: dir, off: uint32(len(names)), len: uint8(len(name))})
				names = append(names, name...)
				if typ == unix.DT_DIR {
					stack = append(stack, uint32(len(entries)-1))
				}
			})
			if err == nil {
				err = perr
			}
			if err != nil {
				unix.Close(dfd)
				return err
			}
		}
		unix.Close(dfd)
	}

	// Sort by inode; hard links keep the first path met.
	order := make([]uint32, len(entries))
	for i := range order {
		order[i] = uint32(i)
	}
	slices.SortStableFunc(order, func(a, b uint32) int {
		switch ea, eb := entries[a].ino, entries[b].ino; {
		case ea < eb:
			return -1
		case ea > eb:
			return 1
		}
		return 0
	})
	newIdx := make([]uint32, len(entries))
	n := 0
	for i, w := range order {
		if i > 0 && entries[w].ino == entries[order[i-1]].ino {
			newIdx[w] = uint32(n - 1)
			continue
		}
		newIdx[w] = uint32(n)
		n++
	}
	t.inos = make([]uint64, n)
	t.parent = make([]uint32, n)
	t.nameOff = make([]uint32, n)
	t.nameLen = make([]uint8, n)
	for i, w := range order {
		if i > 0 && entries[w].ino == entries[order[i-1]].ino {
			continue // a second link to an inode already placed
		}
		j, e := newIdx[w], entries[w]
		t.inos[j] = e.ino
		t.parent[j] = newIdx[e.parent]
		t.nameOff[j] = e.off
		t.nameLen[j] = e.len
	}
	t.names = slices.Clip(names)
	t.rootIdx = newIdx[0]
	t.parent[t.rootIdx] = t.rootIdx
	return nil
}

func isDot(name []byte) bool {
	return (len(name) == 1 && name[0] == '.') || (len(name) == 2 && name[0] == '.' && name[1] == '.')
}

// appendPath writes the path of entry i relative to the root entry ("." for the root
// itself); at returns an entry's parent and name.
func appendPath(b *strings.Builder, i, root uint32, at func(uint32) (uint32, []byte)) {
	var chain [64][]byte
	parts := chain[:0]
	for depth := 0; i != root && depth < 4096; depth++ {
		p, name := at(i)
		parts = append(parts, name)
		i = p
	}
	if len(parts) == 0 {
		b.WriteByte('.')
		return
	}
	for k := len(parts) - 1; k >= 0; k-- {
		b.Write(parts[k])
		if k > 0 {
			b.WriteByte('/')
		}
	}
}

func (t *tree) at(i uint32) (uint32, []byte) {
	return t.parent[i], t.names[t.nameOff[i] : t.nameOff[i]+uint32(t.nameLen[i])]
}

// lookupIno returns the index entry of an inode.
func (t *tree) lookupIno(ino uint64) (uint32, bool) {
	i, ok := slices.BinarySearch(t.inos, ino)
	return uint32(i), ok
}

// pathOf returns the path of an indexed entry relative to the root.
func (t *tree) pathOf(i uint32) string {
	var b strings.Builder
	appendPath(&b, i, t.rootIdx, t.at)
	return b.String()
}

// parentOf returns the index of the directory holding entry i (the root for the root).
func (t *tree) parentOf(i uint32) uint32 { return t.parent[i] }

// memBytes is the memory the index holds.
func (t *tree) memBytes() int {
	return cap(t.inos)*8 + cap(t.parent)*4 + cap(t.nameOff)*4 + cap(t.nameLen) + cap(t.names)
}

// openHow opens a path under the root with the confinement flags.
func (t *tree) open(rel string, flags uint64) (int, error) {
	for {
		fd, err := unix.Openat2(t.rootFD, rel, &unix.OpenHow{Flags: flags | unix.O_CLOEXEC | unix.O_NOFOLLOW, Resolve: resolveFlags})
		if errors.Is(err, unix.EINTR) || errors.Is(err, unix.EAGAIN) {
			continue
		}
		return fd, err
	}
}

// lstat returns the attributes of a path under the root without following a final symlink.
func (t *tree) lstat(rel string) (unix.Stat_t, error) {
	var st unix.Stat_t
	if rel == "." {
		return st, unix.Fstat(t.rootFD, &st)
	}
	fd, err := t.open(rel, unix.O_PATH)
	if err != nil {
		return st, err
	}
	defer unix.Close(fd)
	return st, unix.Fstat(fd, &st)
}

// fattr converts a stat into NFS attributes, with every mode bit kept.
func (t *tree) fattr(st *unix.Stat_t) nfs.FileAttribute {
	return nfs.FileAttribute{
		Type:     fileType(st.Mode),
		FileMode: st.Mode & 0o7777,
		Nlink:    uint32(st.Nlink),
		UID:      st.Uid,
		GID:      st.Gid,
		Filesize: uint64(st.Size),
		Used:     uint64(st.Blocks) * 512,
		SpecData: [2]uint32{unix.Major(st.Rdev), unix.Minor(st.Rdev)},
		FSID:     t.fsid,
		Fileid:   st.Ino,
		Atime:    nfs.FileTime{Seconds: uint32(st.Atim.Sec), Nseconds: uint32(st.Atim.Nsec)},
		Mtime:    nfs.FileTime{Seconds: uint32(st.Mtim.Sec), Nseconds: uint32(st.Mtim.Nsec)},
		Ctime:    nfs.FileTime{Seconds: uint32(st.Ctim.Sec), Nseconds: uint32(st.Ctim.Nsec)},
	}
}

func fileType(mode uint32) nfs.FileType {
	switch mode & unix.S_IFMT {
	case unix.S_IFDIR:
		return nfs.FileTypeDirectory
	case unix.S_IFLNK:
		return nfs.FileTypeLink
	case unix.S_IFCHR:
		return nfs.FileTypeCharacter
	case unix.S_IFBLK:
		return nfs.FileTypeBlock
	case unix.S_IFSOCK:
		return nfs.FileTypeSocket
	case unix.S_IFIFO:
		return nfs.FileTypeFIFO
	}
	return nfs.FileTypeRegular
}
