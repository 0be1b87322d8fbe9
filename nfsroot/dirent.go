package nfsroot

import (
	"encoding/binary"
	"fmt"
)

// direntHeader is the fixed part of struct linux_dirent64: d_ino, d_off, d_reclen, d_type.
const direntHeader = 8 + 8 + 2 + 1

// parseDirents walks the linux_dirent64 records getdents64(2) filled buf with, calling fn
// with each entry's inode, d_type and name (the name aliases buf). "." and ".." are passed
// on like any other entry.
func parseDirents(buf []byte, fn func(ino uint64, typ uint8, name []byte)) error {
	for off := 0; off < len(buf); {
		rec := buf[off:]
		if len(rec) < direntHeader {
			return fmt.Errorf("dirent at %d: %d bytes left, header needs %d", off, len(rec), direntHeader)
		}
		reclen := int(binary.NativeEndian.Uint16(rec[16:18]))
		if reclen < direntHeader || reclen > len(rec) {
			return fmt.Errorf("dirent at %d: d_reclen %d out of range", off, reclen)
		}
		name := rec[direntHeader:reclen]
		end := 0
		for end < len(name) && name[end] != 0 {
			end++
		}
		if end == len(name) {
			return fmt.Errorf("dirent at %d: name not NUL-terminated", off)
		}
		fn(binary.NativeEndian.Uint64(rec[0:8]), rec[18], name[:end])
		off += reclen
	}
	return nil
}

// appendDirent encodes one linux_dirent64 record; tests and the fuzz corpus use it.
func appendDirent(b []byte, ino uint64, typ uint8, name string) []byte {
	reclen := (direntHeader + len(name) + 1 + 7) &^ 7
	start := len(b)
	b = append(b, make([]byte, reclen)...)
	rec := b[start:]
	binary.NativeEndian.PutUint64(rec[0:8], ino)
	binary.NativeEndian.PutUint64(rec[8:16], uint64(start+reclen))
	binary.NativeEndian.PutUint16(rec[16:18], uint16(reclen))
	rec[18] = typ
	copy(rec[direntHeader:], name)
	return b
}
