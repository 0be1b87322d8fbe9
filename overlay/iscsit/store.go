package iscsit

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/gostor/gotgt/pkg/api"
	"github.com/gostor/gotgt/pkg/scsi"
	_ "github.com/gostor/gotgt/pkg/scsi/backingstore" // the "null" store gotgt's LUN0 needs
	"golang.org/x/sys/unix"
)

// storeName is the name our backing store is registered under in gotgt.
const storeName = "distonet-file"

func init() {
	scsi.RegisterBackingStore(storeName, func() (api.BackingStore, error) { return &fileStore{}, nil })
}

// fileStore is a durable gotgt backing store over a file or block device: writes go to the
// page cache like any disk with a volatile write cache (the caching mode page says WCE=1),
// and DataSync — reached through SYNCHRONIZE CACHE and FUA — is fdatasync, done before the
// command's status is sent. Unmap punches holes, so a trimmed volume gives its space back.
type fileStore struct {
	f    *os.File
	size uint64
}

var _ api.BackingStore = (*fileStore)(nil)

func (s *fileStore) Open(_ *api.SCSILu, path string) error {
	flags := os.O_RDWR
	if st, err := os.Stat(path); err == nil && st.Mode()&os.ModeDevice != 0 {
		// A donated disk: O_EXCL on a block device fails while it is mounted or held by
		// md, LVM or another exporter, and keeps them off while we serve it.
		flags |= unix.O_EXCL
	}
	f, err := os.OpenFile(path, flags, 0)
	if err != nil {
		return fmt.Errorf("open backing store: %w", err)
	}
	end, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		f.Close()
		return fmt.Errorf("size of backing store %s: %w", path, err)
	}
	s.f, s.size = f, uint64(end)
	return nil
}

func (s *fileStore) Close(*api.SCSILu) error {
	if s.f == nil {
		return nil
	}
	err := s.f.Close()
	s.f = nil
	return err
}

func (s *fileStore) Init(*api.SCSILu, string) error { return nil }
func (s *fileStore) Exit(*api.SCSILu) error         { return nil }
func (s *fileStore) Size(*api.SCSILu) uint64        { return s.size }

func (s *fileStore) Read(offset, tl int64) ([]byte, error) {
	b := make([]byte, tl)
	if err := s.readAt(b, offset); err != nil {
		return nil, err
	}
	return b, nil
}

// readAt fills b completely; past the end of a file reads as zeros.
func (s *fileStore) readAt(b []byte, off int64) error {
	n, err := s.f.ReadAt(b, off)
	if errors.Is(err, io.EOF) {
		clear(b[n:])
		return nil
	}
	return err
}

// Write never extends the file: a volume's size is fixed while it is served.
func (s *fileStore) Write(b []byte, off int64) error {
	if off < 0 || uint64(off)+uint64(len(b)) > s.size {
		return fmt.Errorf("write %d+%d beyond the end (%d)", off, len(b), s.size)
	}
	_, err := s.f.WriteAt(b, off)
	return err
}

// DataSync makes every write acknowledged so far durable. fdatasync covers the whole file:
// ranged sync (sync_file_range) does not flush the file's metadata or the disk cache.
func (s *fileStore) DataSync(int64, int64) error {
	return unix.Fdatasync(int(s.f.Fd()))
}

func (s *fileStore) DataAdvise(off, length int64, advise uint32) error {
	return unix.Fadvise(int(s.f.Fd()), off, length, int(advise))
}

func (s *fileStore) Unmap(descs []api.UnmapBlockDescriptor) error {
	for _, d := range descs {
		if err := s.punch(int64(d.Offset), int64(d.TL)); err != nil {
			return err
		}
	}
	return nil
}

// punch deallocates a byte range so it reads back as zeros. Where the file system cannot
// punch holes (or for block devices), it writes zeros instead.
func (s *fileStore) punch(off, length int64) error {
	if length <= 0 {
		return nil
	}
	err := unix.Fallocate(int(s.f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, length)
	if err == nil {
		return nil
	}
	if !errors.Is(err, unix.EOPNOTSUPP) && !errors.Is(err, unix.ENODEV) && !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("punch hole at %d+%d: %w", off, length, err)
	}
	zero := make([]byte, min(length, 1<<20))
	for length > 0 {
		n := min(length, int64(len(zero)))
		if _, err := s.f.WriteAt(zero[:n], off); err != nil {
			return fmt.Errorf("zero %d+%d: %w", off, n, err)
		}
		off += n
		length -= n
	}
	return nil
}

// extent reports whether the byte range from off is allocated and how long that state lasts,
// using SEEK_DATA/SEEK_HOLE (GET LBA STATUS).
func (s *fileStore) extent(off int64) (mapped bool, length int64, err error) {
	end := int64(s.size)
	fd := int(s.f.Fd())
	data, err := unix.Seek(fd, off, unix.SEEK_DATA)
	if errors.Is(err, unix.ENXIO) {
		return false, end - off, nil
	}
	if err != nil {
		// No SEEK_DATA (block device, old file system): everything is mapped.
		return true, end - off, nil
	}
	if data > off {
		return false, min(data, end) - off, nil
	}
	hole, err := unix.Seek(fd, off, unix.SEEK_HOLE)
	if err != nil {
		return true, end - off, nil
	}
	return true, min(hole, end) - off, nil
}
