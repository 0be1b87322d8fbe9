package nfsroot

import (
	"errors"

	nfs "github.com/willscott/go-nfs"
	"golang.org/x/sys/unix"

	"github.com/distonet/distonet/nfsroot/oncrpc"
)

// fattrSize is the XDR size of a fattr3.
const fattrSize = 84

// appendFattr encodes a fattr3 (RFC 1813 §2.6) from go-nfs's FileAttribute, field for
// field in the order xdr.Write(nfs.FileAttribute) uses, without reflection.
func appendFattr(b []byte, a *nfs.FileAttribute) []byte {
	b = oncrpc.AppendUint32(b, uint32(a.Type))
	b = oncrpc.AppendUint32(b, a.FileMode)
	b = oncrpc.AppendUint32(b, a.Nlink)
	b = oncrpc.AppendUint32(b, a.UID)
	b = oncrpc.AppendUint32(b, a.GID)
	b = oncrpc.AppendUint64(b, a.Filesize)
	b = oncrpc.AppendUint64(b, a.Used)
	b = oncrpc.AppendUint32(b, a.SpecData[0])
	b = oncrpc.AppendUint32(b, a.SpecData[1])
	b = oncrpc.AppendUint64(b, a.FSID)
	b = oncrpc.AppendUint64(b, a.Fileid)
	for _, t := range [3]nfs.FileTime{a.Atime, a.Mtime, a.Ctime} {
		b = oncrpc.AppendUint32(b, t.Seconds)
		b = oncrpc.AppendUint32(b, t.Nseconds)
	}
	return b
}

// appendPostOpAttr encodes a post_op_attr; nil means no attributes.
func appendPostOpAttr(b []byte, a *nfs.FileAttribute) []byte {
	if a == nil {
		return oncrpc.AppendBool(b, false)
	}
	return appendFattr(oncrpc.AppendBool(b, true), a)
}

// statusOf maps a filesystem error to an NFSv3 status.
func statusOf(err error) nfs.NFSStatus {
	switch {
	case err == nil:
		return nfs.NFSStatusOk
	case errors.Is(err, errStale):
		return nfs.NFSStatusStale
	case errors.Is(err, unix.ENOENT):
		return nfs.NFSStatusNoEnt
	case errors.Is(err, unix.ENOTDIR):
		return nfs.NFSStatusNotDir
	case errors.Is(err, unix.EISDIR):
		return nfs.NFSStatusIsDir
	case errors.Is(err, unix.EACCES), errors.Is(err, unix.EPERM), errors.Is(err, unix.EXDEV):
		return nfs.NFSStatusAccess
	case errors.Is(err, unix.ENAMETOOLONG):
		return nfs.NFSStatusNameTooLong
	case errors.Is(err, unix.ELOOP), errors.Is(err, unix.EINVAL):
		return nfs.NFSStatusInval
	case errors.Is(err, unix.EROFS):
		return nfs.NFSStatusROFS
	}
	return nfs.NFSStatusIO
}

// cred is the caller's identity from AUTH_SYS (nobody for AUTH_NONE).
type cred struct {
	uid, gid uint32
	gids     []uint32
}

var nobody = cred{uid: 65534, gid: 65534}

// perm returns the rwx bits (0..7) that apply to the caller for a file.
func (c *cred) perm(st *unix.Stat_t) uint32 {
	if c.uid == 0 {
		x := uint32(0)
		if st.Mode&0o111 != 0 || st.Mode&unix.S_IFMT == unix.S_IFDIR {
			x = 1
		}
		return 6 | x
	}
	if c.uid == st.Uid {
		return (st.Mode >> 6) & 7
	}
	if c.gid == st.Gid {
		return (st.Mode >> 3) & 7
	}
	for _, g := range c.gids {
		if g == st.Gid {
			return (st.Mode >> 3) & 7
		}
	}
	return st.Mode & 7
}

// ACCESS3 bits.
const (
	access3Read    = 0x01
	access3Lookup  = 0x02
	access3Modify  = 0x04
	access3Extend  = 0x08
	access3Delete  = 0x10
	access3Execute = 0x20
)

// access answers ACCESS from the mode bits and the caller's uid and groups. Nothing is
// ever modifiable: the export is read-only.
func (c *cred) access(st *unix.Stat_t, want uint32) uint32 {
	p := c.perm(st)
	var got uint32
	if p&4 != 0 {
		got |= access3Read
	}
	if p&1 != 0 {
		if st.Mode&unix.S_IFMT == unix.S_IFDIR {
			got |= access3Lookup
		} else {
			got |= access3Execute
		}
	}
	return got & want
}
