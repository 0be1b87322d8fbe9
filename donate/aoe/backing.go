package aoe

import (
	"fmt"
	"os"
	"runtime/debug"

	"golang.org/x/sys/unix"
)

// backing is the exported file or block device. It is an interface so a test can watch the
// order of writes and syncs.
type backing interface {
	ReadAt(p []byte, off int64) (int, error)
	WriteAt(p []byte, off int64) (int, error)
	Sync() error // data durable: fdatasync
	Close() error
}

type fileBacking struct {
	f  *os.File
	fd int
	// m maps the device read-only: a read is then a copy from the page cache instead of a
	// pread system call per frame (writes still go through pwrite and fdatasync). nil when
	// mmap is not possible; reads fall back to pread.
	m []byte
}

// openBacking opens a file or block device read-write and returns its size in bytes. A
// block device is opened O_EXCL, so nothing can mount it or assemble it locally while it is
// exported (and the open fails if something already holds it).
func openBacking(path string) (*fileBacking, int64, error) {
	flags := os.O_RDWR
	if fi, err := os.Stat(path); err == nil && fi.Mode()&os.ModeDevice != 0 && fi.Mode()&os.ModeCharDevice == 0 {
		flags |= unix.O_EXCL
	}
	f, err := os.OpenFile(path, flags, 0)
	if err != nil {
		return nil, 0, fmt.Errorf("open device %s: %w", path, err)
	}
	size, err := deviceSize(f)
	if err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("size of device %s: %w", path, err)
	}
	b := &fileBacking{f: f, fd: int(f.Fd())}
	if size > 0 && size == int64(int(size)) {
		if m, err := unix.Mmap(b.fd, 0, int(size), unix.PROT_READ, unix.MAP_SHARED); err == nil {
			b.m = m
		}
	}
	return b, size, nil
}

// deviceSize is the size of a regular file, or of a block device through BLKGETSIZE64.
func deviceSize(f *os.File) (int64, error) {
	fi, err := f.Stat()
	if err != nil {
		return 0, err
	}
	if fi.Mode()&os.ModeDevice == 0 {
		return fi.Size(), nil
	}
	var size uint64
	rc, err := f.SyscallConn()
	if err != nil {
		return 0, err
	}
	var ierr error
	if err := rc.Control(func(fd uintptr) {
		size, ierr = unix.IoctlGetUint64(int(fd), unix.BLKGETSIZE64)
	}); err != nil {
		return 0, err
	}
	if ierr != nil {
		return 0, fmt.Errorf("BLKGETSIZE64: %w", ierr)
	}
	return int64(size), nil
}

// mapping is the read-only mapping of the whole device, or nil.
func (b *fileBacking) mapping() []byte { return b.m }

// remap replaces the mapping with a fresh one and returns it; nothing may use the old one
// any more. The kernel frees the page tables of a mapping only at munmap, so a mapping kept
// for the life of the target would pin about 2 MB of them per GB of the disk ever read (2 GB
// for a 1 TB disk read end to end), even once the pages themselves left the cache.
func (b *fileBacking) remap() ([]byte, error) {
	if b.m == nil {
		return nil, nil
	}
	m, err := unix.Mmap(b.fd, 0, len(b.m), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return b.m, fmt.Errorf("remap device: %w", err)
	}
	old := b.m
	b.m = m
	if err := unix.Munmap(old); err != nil {
		return m, fmt.Errorf("unmap device: %w", err)
	}
	return m, nil
}

func (b *fileBacking) ReadAt(p []byte, off int64) (int, error) {
	if b.m != nil {
		return b.copyOut([][]byte{p}, off)
	}
	return unix.Pread(b.fd, p, off)
}

func (b *fileBacking) ReadvAt(iovs [][]byte, off int64) (int, error) {
	if b.m != nil {
		return b.copyOut(iovs, off)
	}
	return unix.Preadv(b.fd, iovs, off)
}

// copyOut copies from the mapping. A page that cannot be read (I/O error, file truncated
// under us) raises SIGBUS; SetPanicOnFault turns that into a panic we recover as an error,
// which the target reports as an ATA read error instead of crashing.
func (b *fileBacking) copyOut(iovs [][]byte, off int64) (n int, err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("read at %d: %v", off+int64(n), r)
		}
	}()
	for _, p := range iovs {
		if off+int64(n) >= int64(len(b.m)) {
			break
		}
		n += copy(p, b.m[off+int64(n):])
	}
	return n, nil
}

// readv reads consecutive bytes at off into the buffers, in one preadv when the backing can.
func readv(dev backing, iovs [][]byte, off int64) (int, error) {
	if v, ok := dev.(interface {
		ReadvAt([][]byte, int64) (int, error)
	}); ok && len(iovs) > 1 {
		return v.ReadvAt(iovs, off)
	}
	total := 0
	for _, b := range iovs {
		n, err := dev.ReadAt(b, off+int64(total))
		total += n
		if err != nil || n != len(b) {
			return total, err
		}
	}
	return total, nil
}
func (b *fileBacking) WriteAt(p []byte, off int64) (int, error) { return unix.Pwrite(b.fd, p, off) }
func (b *fileBacking) Sync() error                              { return unix.Fdatasync(b.fd) }
func (b *fileBacking) Close() error {
	if b.m != nil {
		_ = unix.Munmap(b.m)
		b.m = nil
	}
	return b.f.Close()
}
