package initramfs

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
)

// The newc ("SVR4 portable, no CRC") cpio format the kernel unpacks into its rootfs: a
// 110-byte ASCII-hex header, the NUL-terminated name, padding to 4 bytes, the data,
// padding to 4 bytes. The archive ends with an entry named TRAILER!!!.
const (
	newcMagic   = "070701"
	headerLen   = 110
	trailerName = "TRAILER!!!"
)

// File type bits of Entry.Mode, as in stat(2).
const (
	TypeMask    = 0o170000
	TypeDir     = 0o040000
	TypeReg     = 0o100000
	TypeSymlink = 0o120000
	TypeChar    = 0o020000
	TypeBlock   = 0o060000
)

// Entry is one member of a newc archive. For a symlink Data holds the target.
type Entry struct {
	Name     string
	Mode     uint32 // type and permission bits
	UID, GID uint32
	Nlink    uint32
	Mtime    uint32
	Major    uint32 // device holding the file (informational)
	Minor    uint32
	RMajor   uint32 // device number of a character or block device node
	RMinor   uint32
	Data     []byte
}

// Writer writes a newc archive. Inode numbers are assigned in order so no two entries
// look like hard links of each other to the kernel's unpacker.
type Writer struct {
	w     io.Writer
	ino   uint32
	err   error
	close bool
}

// NewWriter returns a Writer that writes the archive to w.
func NewWriter(w io.Writer) *Writer { return &Writer{w: w} }

// Write appends one entry.
func (cw *Writer) Write(e Entry) error {
	if cw.err != nil {
		return cw.err
	}
	if cw.close {
		return errors.New("cpio: write after close")
	}
	if e.Name == "" || len(e.Name) > 4096 {
		return fmt.Errorf("cpio: entry name %q: bad length", e.Name)
	}
	cw.ino++
	nlink := e.Nlink
	if nlink == 0 {
		nlink = 1
		if e.Mode&TypeMask == TypeDir {
			nlink = 2
		}
	}
	cw.err = cw.write(cw.ino, e, nlink)
	return cw.err
}

func (cw *Writer) write(ino uint32, e Entry, nlink uint32) error {
	var hdr [headerLen]byte
	copy(hdr[:], newcMagic)
	fields := []uint32{ino, e.Mode, e.UID, e.GID, nlink, e.Mtime, uint32(len(e.Data)),
		e.Major, e.Minor, e.RMajor, e.RMinor, uint32(len(e.Name) + 1), 0}
	for i, f := range fields {
		copy(hdr[6+8*i:], fmt.Sprintf("%08x", f))
	}
	buf := make([]byte, 0, headerLen+len(e.Name)+8+len(e.Data))
	buf = append(buf, hdr[:]...)
	buf = append(buf, e.Name...)
	buf = append(buf, 0)
	buf = append(buf, make([]byte, pad4(len(buf)))...)
	buf = append(buf, e.Data...)
	buf = append(buf, make([]byte, pad4(len(e.Data)))...)
	if _, err := cw.w.Write(buf); err != nil {
		return fmt.Errorf("cpio: write %s: %w", e.Name, err)
	}
	return nil
}

// Close writes the trailer. It does not close the underlying writer.
func (cw *Writer) Close() error {
	if cw.err != nil || cw.close {
		return cw.err
	}
	cw.close = true
	cw.err = cw.write(0, Entry{Name: trailerName}, 1)
	return cw.err
}

func pad4(n int) int { return (4 - n%4) % 4 }

// Reader reads a newc archive; it serves tests and tools that inspect an initramfs.
type Reader struct {
	r   *bufio.Reader
	off int64
}

// NewReader returns a Reader over r.
func NewReader(r io.Reader) *Reader { return &Reader{r: bufio.NewReader(r)} }

// maxEntryData bounds one member's size so a corrupt header cannot exhaust memory.
const maxEntryData = 1 << 30

// Next returns the next entry, or io.EOF after the trailer.
func (cr *Reader) Next() (Entry, error) {
	var hdr [headerLen]byte
	if _, err := io.ReadFull(cr.r, hdr[:]); err != nil {
		return Entry{}, fmt.Errorf("cpio: header at %d: %w", cr.off, noEOF(err))
	}
	if string(hdr[:6]) != newcMagic {
		return Entry{}, fmt.Errorf("cpio: header at %d: bad magic %q", cr.off, hdr[:6])
	}
	var f [13]uint32
	names := [13]string{"ino", "mode", "uid", "gid", "nlink", "mtime", "filesize",
		"devmajor", "devminor", "rdevmajor", "rdevminor", "namesize", "check"}
	for i := range f {
		v, err := strconv.ParseUint(string(hdr[6+8*i:14+8*i]), 16, 32)
		if err != nil {
			return Entry{}, fmt.Errorf("cpio: header at %d: field %s: %w", cr.off, names[i], err)
		}
		f[i] = uint32(v)
	}
	namesize, filesize := int(f[11]), int64(f[6])
	if namesize < 1 || namesize > 4097 {
		return Entry{}, fmt.Errorf("cpio: header at %d: field namesize: %d out of range", cr.off, namesize)
	}
	if filesize > maxEntryData {
		return Entry{}, fmt.Errorf("cpio: header at %d: field filesize: %d too large", cr.off, filesize)
	}
	name := make([]byte, namesize+pad4(headerLen+namesize))
	if _, err := io.ReadFull(cr.r, name); err != nil {
		return Entry{}, fmt.Errorf("cpio: name at %d: %w", cr.off, noEOF(err))
	}
	if name[namesize-1] != 0 {
		return Entry{}, fmt.Errorf("cpio: name at %d: not NUL-terminated", cr.off)
	}
	e := Entry{Name: string(name[:namesize-1]), Mode: f[1], UID: f[2], GID: f[3], Nlink: f[4],
		Mtime: f[5], Major: f[7], Minor: f[8], RMajor: f[9], RMinor: f[10]}
	// Copy rather than allocate filesize up front: a corrupt header must not cost memory
	// the input does not back.
	want := filesize + int64(pad4(int(filesize)))
	var data bytes.Buffer
	if n, err := io.CopyN(&data, cr.r, want); err != nil {
		if err == io.EOF && n < want {
			err = io.ErrUnexpectedEOF
		}
		return Entry{}, fmt.Errorf("cpio: data of %s: %w", e.Name, err)
	}
	e.Data = data.Bytes()[:filesize]
	cr.off += int64(headerLen+len(name)) + want
	if e.Name == trailerName {
		return Entry{}, io.EOF
	}
	return e, nil
}

// noEOF turns a premature io.EOF into io.ErrUnexpectedEOF: only the trailer ends an archive.
func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}
