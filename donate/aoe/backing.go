package aoe

import (
	"fmt"
	"os"

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
	return &fileBacking{f: f, fd: int(f.Fd())}, size, nil
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

func (b *fileBacking) ReadAt(p []byte, off int64) (int, error) { return unix.Pread(b.fd, p, off) }
func (b *fileBacking) ReadvAt(iovs [][]byte, off int64) (int, error) {
	return unix.Preadv(b.fd, iovs, off)
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
func (b *fileBacking) Close() error                             { return b.f.Close() }
