package nfsroot

import (
	"encoding/binary"
	"fmt"
)

// handleFormat is the first byte of every handle this server issues; a later layout gets a
// new number so old handles can still be read.
const handleFormat = 1

// handleLen is the size of a format-1 handle (NFSv3 allows up to 64 bytes).
const handleLen = 32

// fileHandle is what an NFS file handle carries. It names a file by the export, the
// image version and the inode, so it survives a server restart and needs no cache: the
// version's inode index turns it back into a path. Gen changes when a rootfs directory is
// re-created, so a handle into a deleted version goes stale instead of naming a stranger.
//
// Layout: format(1) reserved(3) exportID(8) version(8) gen(4) inode(8), big endian.
type fileHandle struct {
	ExportID uint64
	Version  uint64
	Gen      uint32
	Ino      uint64
}

// MarshalBinary encodes the handle.
func (h fileHandle) MarshalBinary() ([]byte, error) {
	return h.appendTo(make([]byte, 0, handleLen)), nil
}

func (h fileHandle) appendTo(b []byte) []byte {
	b = append(b, handleFormat, 0, 0, 0)
	b = binary.BigEndian.AppendUint64(b, h.ExportID)
	b = binary.BigEndian.AppendUint64(b, h.Version)
	b = binary.BigEndian.AppendUint32(b, h.Gen)
	return binary.BigEndian.AppendUint64(b, h.Ino)
}

// UnmarshalBinary decodes a handle, rejecting any other length or format.
func (h *fileHandle) UnmarshalBinary(b []byte) error {
	if len(b) != handleLen {
		return fmt.Errorf("file handle: length %d, want %d", len(b), handleLen)
	}
	if b[0] != handleFormat {
		return fmt.Errorf("file handle: format %d, want %d", b[0], handleFormat)
	}
	if b[1] != 0 || b[2] != 0 || b[3] != 0 {
		return fmt.Errorf("file handle: reserved bytes %x not zero", b[1:4])
	}
	h.ExportID = binary.BigEndian.Uint64(b[4:12])
	h.Version = binary.BigEndian.Uint64(b[12:20])
	h.Gen = binary.BigEndian.Uint32(b[20:24])
	h.Ino = binary.BigEndian.Uint64(b[24:32])
	return nil
}
