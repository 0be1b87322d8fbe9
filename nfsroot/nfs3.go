package nfsroot

import (
	"encoding/binary"
	"errors"
	"slices"
	"strings"

	nfs "github.com/willscott/go-nfs"
	"golang.org/x/sys/unix"

	"github.com/distonet/distonet/nfsroot/oncrpc"
)

// Program numbers and the limits this server announces.
const (
	progNFS   = 100003
	progMount = 100005

	// maxIO is rtmax/wtmax in FSINFO: 1 MiB reads, the Linux client's largest.
	maxIO = 1 << 20
	// maxName is the longest file name served.
	maxName = 255
)

// fsinfo properties: hard links, symlinks, PATHCONF the same everywhere.
const fsfPropertiesRO = nfs.FSInfoPropertyLink | nfs.FSInfoPropertySymlink | nfs.FSInfoPropertyHomogeneous

// call is one decoded request as the procedures see it.
type call struct {
	proc uint32
	args []byte
	cred cred
	// stream is set when the transport can send READ data straight from the file's
	// mapping after the reply; READ then leaves the data in tail instead of copying it.
	stream bool
	tail   *fileTail
}

// fileTail is READ data still to be sent after the reply header: a slice of f's read-only
// mapping, then pad zero bytes. It holds a reference on f (and so on the mapping) until
// released.
type fileTail struct {
	f    *openFile
	data []byte
	pad  int
}

// nfs3 runs an NFSv3 procedure, appending its results to out. A non-Success AcceptStat
// means out is to be discarded and the call answered with that status.
func (s *Server) nfs3(c *call, out []byte) ([]byte, oncrpc.AcceptStat) {
	d := oncrpc.NewDecoder(c.args)
	switch nfs.NFSProcedure(c.proc) {
	case nfs.NFSProcedureNull:
		return out, oncrpc.Success
	case nfs.NFSProcedureGetAttr:
		fh := d.Opaque("object", nfs.FHSize)
		if d.Err != nil {
			return out, oncrpc.GarbageArgs
		}
		return s.getattr(fh, out), oncrpc.Success
	case nfs.NFSProcedureLookup:
		fh := d.Opaque("dir", nfs.FHSize)
		name := d.String("name", 4096)
		if d.Err != nil {
			return out, oncrpc.GarbageArgs
		}
		return s.lookup(c, fh, name, out), oncrpc.Success
	case nfs.NFSProcedureAccess:
		fh := d.Opaque("object", nfs.FHSize)
		want := d.Uint32("access")
		if d.Err != nil {
			return out, oncrpc.GarbageArgs
		}
		return s.access(c, fh, want, out), oncrpc.Success
	case nfs.NFSProcedureReadlink:
		fh := d.Opaque("symlink", nfs.FHSize)
		if d.Err != nil {
			return out, oncrpc.GarbageArgs
		}
		return s.readlink(fh, out), oncrpc.Success
	case nfs.NFSProcedureRead:
		fh := d.Opaque("file", nfs.FHSize)
		off := d.Uint64("offset")
		count := d.Uint32("count")
		if d.Err != nil {
			return out, oncrpc.GarbageArgs
		}
		return s.read(c, fh, off, count, out), oncrpc.Success
	case nfs.NFSProcedureReadDir, nfs.NFSProcedureReadDirPlus:
		plus := nfs.NFSProcedure(c.proc) == nfs.NFSProcedureReadDirPlus
		fh := d.Opaque("dir", nfs.FHSize)
		cookie := d.Uint64("cookie")
		verf := d.Uint64("cookieverf")
		count := d.Uint32("count")
		if plus {
			// dircount is advisory; like knfsd, only maxcount bounds the reply.
			count = d.Uint32("maxcount")
		}
		if d.Err != nil {
			return out, oncrpc.GarbageArgs
		}
		return s.readdir(c, fh, cookie, verf, count, plus, out), oncrpc.Success
	case nfs.NFSProcedureFSStat:
		fh := d.Opaque("fsroot", nfs.FHSize)
		if d.Err != nil {
			return out, oncrpc.GarbageArgs
		}
		return s.fsstat(fh, out), oncrpc.Success
	case nfs.NFSProcedureFSInfo, nfs.NFSProcedurePathConf:
		fh := d.Opaque("fsroot", nfs.FHSize)
		if d.Err != nil {
			return out, oncrpc.GarbageArgs
		}
		return s.fsinfo(fh, nfs.NFSProcedure(c.proc) == nfs.NFSProcedurePathConf, out), oncrpc.Success
	case nfs.NFSProcedureSetAttr, nfs.NFSProcedureWrite, nfs.NFSProcedureCreate, nfs.NFSProcedureMkDir,
		nfs.NFSProcedureSymlink, nfs.NFSProcedureMkNod, nfs.NFSProcedureRemove, nfs.NFSProcedureRmDir,
		nfs.NFSProcedureCommit:
		// status + wcc_data with neither pre nor post attributes.
		out = oncrpc.AppendUint32(out, uint32(nfs.NFSStatusROFS))
		return oncrpc.AppendUint32(oncrpc.AppendUint32(out, 0), 0), oncrpc.Success
	case nfs.NFSProcedureRename:
		out = oncrpc.AppendUint32(out, uint32(nfs.NFSStatusROFS))
		return append(out, make([]byte, 16)...), oncrpc.Success // two empty wcc_data
	case nfs.NFSProcedureLink:
		out = oncrpc.AppendUint32(out, uint32(nfs.NFSStatusROFS))
		return append(out, make([]byte, 12)...), oncrpc.Success // post_op_attr + wcc_data
	}
	return out, oncrpc.ProcUnavail
}

func appendStatus(out []byte, st nfs.NFSStatus) []byte { return oncrpc.AppendUint32(out, uint32(st)) }

// stat resolves a handle and returns the attributes of the file it names, from the
// attribute cache when it can.
func (s *Server) stat(fh []byte) (*tree, uint32, string, unix.Stat_t, error) {
	t, i, rel, err := s.h.resolve(fh)
	if err != nil {
		return nil, 0, "", unix.Stat_t{}, err
	}
	if st, ok := s.attrs.get(t, t.inos[i]); ok {
		return t, i, rel, st, nil
	}
	st, err := t.lstat(rel)
	if errors.Is(err, unix.ENOENT) {
		err = errStale
	}
	if err == nil {
		s.attrs.put(t, &st)
	}
	return t, i, rel, st, err
}

// lookupChild finds a name in a directory: in the directory's cached listing when there
// is one, else on disk.
func (s *Server) lookupChild(t *tree, dirIno uint64, rel, name string) (unix.Stat_t, error) {
	if ents, ok := s.dirs.peek(t, dirIno); ok {
		k, found := slices.BinarySearchFunc(ents, name, func(e dirEntry, n string) int { return strings.Compare(e.name, n) })
		if !found {
			return unix.Stat_t{}, unix.ENOENT
		}
		return ents[k].st, nil
	}
	objRel := name
	if rel != "." {
		objRel = rel + "/" + name
	}
	st, err := t.lstat(objRel)
	if err == nil {
		s.attrs.put(t, &st)
	}
	return st, err
}

func (s *Server) getattr(fh []byte, out []byte) []byte {
	t, _, _, st, err := s.stat(fh)
	if err != nil {
		return appendStatus(out, statusOf(err))
	}
	a := t.fattr(&st)
	return appendFattr(appendStatus(out, nfs.NFSStatusOk), &a)
}

func (s *Server) lookup(c *call, fh []byte, name string, out []byte) []byte {
	t, i, rel, dst, err := s.stat(fh)
	if err != nil {
		return appendPostOpAttr(appendStatus(out, statusOf(err)), nil)
	}
	dattr := t.fattr(&dst)
	head := out // fail starts the reply over from here, whatever was appended since
	fail := func(st nfs.NFSStatus) []byte { return appendPostOpAttr(appendStatus(head, st), &dattr) }
	switch {
	case dst.Mode&unix.S_IFMT != unix.S_IFDIR:
		return fail(nfs.NFSStatusNotDir)
	case len(name) > maxName:
		return fail(nfs.NFSStatusNameTooLong)
	case name == "" || strings.ContainsAny(name, "/\x00"):
		return fail(nfs.NFSStatusAccess)
	case c.cred.perm(&dst)&1 == 0:
		return fail(nfs.NFSStatusAccess)
	}
	var ost unix.Stat_t
	switch name {
	case ".":
		ost = dst
	case "..":
		// Never above the export's root: ".." of the root is the root.
		_, _, _, ost, err = s.stat(t.handle(t.inos[t.parentOf(i)]))
	default:
		ost, err = s.lookupChild(t, dst.Ino, rel, name)
	}
	if err != nil {
		return fail(statusOf(err))
	}
	oattr := t.fattr(&ost)
	out = appendStatus(out, nfs.NFSStatusOk)
	out = oncrpc.AppendOpaque(out, t.handle(ost.Ino))
	out = appendPostOpAttr(out, &oattr)
	return appendPostOpAttr(out, &dattr)
}

func (s *Server) access(c *call, fh []byte, want uint32, out []byte) []byte {
	t, _, _, st, err := s.stat(fh)
	if err != nil {
		return appendPostOpAttr(appendStatus(out, statusOf(err)), nil)
	}
	a := t.fattr(&st)
	out = appendPostOpAttr(appendStatus(out, nfs.NFSStatusOk), &a)
	return oncrpc.AppendUint32(out, c.cred.access(&st, want))
}

func (s *Server) readlink(fh []byte, out []byte) []byte {
	t, _, rel, st, err := s.stat(fh)
	if err != nil {
		return appendPostOpAttr(appendStatus(out, statusOf(err)), nil)
	}
	a := t.fattr(&st)
	if st.Mode&unix.S_IFMT != unix.S_IFLNK {
		return appendPostOpAttr(appendStatus(out, nfs.NFSStatusInval), &a)
	}
	target, err := t.readlink(rel)
	if err != nil {
		return appendPostOpAttr(appendStatus(out, statusOf(err)), &a)
	}
	out = appendPostOpAttr(appendStatus(out, nfs.NFSStatusOk), &a)
	return oncrpc.AppendString(out, target)
}

func (s *Server) read(c *call, fh []byte, off uint64, count uint32, out []byte) []byte {
	t, i, rel, err := s.h.resolve(fh)
	if err != nil {
		return appendPostOpAttr(appendStatus(out, statusOf(err)), nil)
	}
	f, err := s.files.open(t, t.inos[i], rel)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			err = errStale
		}
		return appendPostOpAttr(appendStatus(out, statusOf(err)), nil)
	}
	keep := false
	defer func() {
		if !keep {
			s.files.release(f)
		}
	}()
	a := t.fattr(&f.st)
	switch {
	case f.st.Mode&unix.S_IFMT == unix.S_IFDIR:
		return appendPostOpAttr(appendStatus(out, nfs.NFSStatusIsDir), &a)
	case f.st.Mode&unix.S_IFMT != unix.S_IFREG:
		return appendPostOpAttr(appendStatus(out, nfs.NFSStatusInval), &a)
	case c.cred.perm(&f.st)&5 == 0:
		// Read needs r, or x so an executable can still be paged in.
		return appendPostOpAttr(appendStatus(out, nfs.NFSStatusAccess), &a)
	}
	if count > maxIO {
		count = maxIO
	}
	size := uint64(f.st.Size)
	if off >= size {
		count = 0
	} else if uint64(count) > size-off {
		count = uint32(size - off)
	}
	out = appendPostOpAttr(appendStatus(out, nfs.NFSStatusOk), &a)
	eof := off+uint64(count) >= size
	if c.stream && f.data != nil && count > 0 {
		// The file cannot change (published versions are immutable), so count is exact.
		keep = true
		c.tail = &fileTail{f: f, data: f.data[off : off+uint64(count)], pad: (4 - int(count)%4) % 4}
		s.m.readBytes.Add(float64(count))
		out = oncrpc.AppendUint32(out, count)
		out = oncrpc.AppendBool(out, eof)
		return oncrpc.AppendUint32(out, count)
	}
	hdr := len(out)
	out = append(out, make([]byte, 12)...) // count, eof, data length
	start := len(out)
	out = append(out, make([]byte, count)...)
	n := 0
	for n < int(count) {
		m, err := unix.Pread(f.fd, out[start+n:], int64(off)+int64(n))
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return appendPostOpAttr(appendStatus(out[:hdr-4-4-fattrSize], statusOf(err)), &a)
		}
		if m == 0 {
			break
		}
		n += m
	}
	out = out[:start+n]
	s.m.readBytes.Add(float64(n))
	binary.BigEndian.PutUint32(out[hdr:], uint32(n))
	eof = off+uint64(n) >= size
	if eof {
		binary.BigEndian.PutUint32(out[hdr+4:], 1)
	} else {
		binary.BigEndian.PutUint32(out[hdr+4:], 0)
	}
	binary.BigEndian.PutUint32(out[hdr+8:], uint32(n))
	return oncrpc.AppendPad(out, n)
}

// cookieVerf is the READDIR cookie verifier of a version: its directories never change.
func (t *tree) cookieVerf() uint64 { return t.fsid | 1 }

func (s *Server) readdir(c *call, fh []byte, cookie, verf uint64, count uint32, plus bool, out []byte) []byte {
	t, i, rel, dst, err := s.stat(fh)
	if err != nil {
		return appendPostOpAttr(appendStatus(out, statusOf(err)), nil)
	}
	dattr := t.fattr(&dst)
	head := out // fail starts the reply over from here, whatever was appended since
	fail := func(st nfs.NFSStatus) []byte { return appendPostOpAttr(appendStatus(head, st), &dattr) }
	switch {
	case dst.Mode&unix.S_IFMT != unix.S_IFDIR:
		return fail(nfs.NFSStatusNotDir)
	case c.cred.perm(&dst)&4 == 0:
		return fail(nfs.NFSStatusAccess)
	case cookie != 0 && verf != 0 && verf != t.cookieVerf():
		return fail(nfs.NFSStatusBadCookie)
	}
	ents, err := s.dirs.get(t, dst.Ino, rel)
	if err != nil {
		return fail(statusOf(err))
	}
	if count > maxIO {
		count = maxIO
	}
	base := len(out)
	out = appendPostOpAttr(appendStatus(out, nfs.NFSStatusOk), &dattr)
	out = oncrpc.AppendUint64(out, t.cookieVerf())
	limit := base + int(count) - 8 // room for the list end and eof
	total := uint64(len(ents)) + 2 // "." and ".." come first
	written := 0
	var pst unix.Stat_t
	k := cookie
	for ; k < total; k++ {
		var name string
		var st *unix.Stat_t
		switch k {
		case 0:
			name, st = ".", &dst
		case 1:
			name = ".."
			if pst.Ino == 0 {
				if p := t.parentOf(i); p == i {
					pst = dst
				} else if _, _, _, pst, err = s.stat(t.handle(t.inos[p])); err != nil {
					pst = dst
				}
			}
			st = &pst
		default:
			e := &ents[k-2]
			name, st = e.name, &e.st
		}
		mark := len(out)
		out = oncrpc.AppendBool(out, true)
		out = oncrpc.AppendUint64(out, st.Ino)
		out = oncrpc.AppendString(out, name)
		out = oncrpc.AppendUint64(out, k+1)
		if plus {
			a := t.fattr(st)
			out = appendPostOpAttr(out, &a)
			out = oncrpc.AppendBool(out, true)
			out = oncrpc.AppendOpaque(out, t.handle(st.Ino))
		}
		if len(out) > limit {
			out = out[:mark]
			break
		}
		written++
	}
	if written == 0 && k < total {
		return fail(nfs.NFSStatusTooSmall)
	}
	out = oncrpc.AppendBool(out, false)
	return oncrpc.AppendBool(out, k >= total)
}

func (s *Server) fsstat(fh []byte, out []byte) []byte {
	t, _, _, st, err := s.stat(fh)
	if err != nil {
		return appendPostOpAttr(appendStatus(out, statusOf(err)), nil)
	}
	a := t.fattr(&st)
	var fs nfs.FSStat
	if err := t.fsstat(&fs); err != nil {
		return appendPostOpAttr(appendStatus(out, nfs.NFSStatusIO), &a)
	}
	out = appendPostOpAttr(appendStatus(out, nfs.NFSStatusOk), &a)
	for _, v := range []uint64{fs.TotalSize, fs.FreeSize, fs.AvailableSize, fs.TotalFiles, fs.FreeFiles, fs.AvailableFiles} {
		out = oncrpc.AppendUint64(out, v)
	}
	return oncrpc.AppendUint32(out, 0) // invarsec
}

func (s *Server) fsinfo(fh []byte, pathconf bool, out []byte) []byte {
	t, _, _, st, err := s.stat(fh)
	if err != nil {
		return appendPostOpAttr(appendStatus(out, statusOf(err)), nil)
	}
	a := t.fattr(&st)
	out = appendPostOpAttr(appendStatus(out, nfs.NFSStatusOk), &a)
	if pathconf {
		out = oncrpc.AppendUint32(out, 65000)   // linkmax
		out = oncrpc.AppendUint32(out, maxName) // name_max
		out = oncrpc.AppendBool(out, true)      // no_trunc
		out = oncrpc.AppendBool(out, true)      // chown_restricted
		out = oncrpc.AppendBool(out, false)     // case_insensitive
		return oncrpc.AppendBool(out, true)     // case_preserving
	}
	for _, v := range []uint32{maxIO, maxIO, 4096, maxIO, maxIO, 4096, 64 << 10} {
		out = oncrpc.AppendUint32(out, v) // rtmax rtpref rtmult wtmax wtpref wtmult dtpref
	}
	out = oncrpc.AppendUint64(out, 1<<63-1) // maxfilesize
	out = oncrpc.AppendUint32(out, 0)       // time_delta: 1 ns
	out = oncrpc.AppendUint32(out, 1)
	return oncrpc.AppendUint32(out, fsfPropertiesRO)
}
