package nfsroot

import (
	"context"
	"net"
	"time"

	nfs "github.com/willscott/go-nfs"

	"github.com/distonet/distonet/nfsroot/oncrpc"
)

// mount runs a MOUNT procedure (RFC 1813 appendix I; versions 1 and 2 share every
// procedure but MNT, which this server only offers in version 3).
func (s *Server) mount(vers uint32, c *call, remote net.Addr, out []byte) ([]byte, oncrpc.AcceptStat) {
	d := oncrpc.NewDecoder(c.args)
	switch nfs.MountProcedure(c.proc) {
	case nfs.MountProcNull:
		return out, oncrpc.Success
	case nfs.MountProcMount:
		dirpath := d.Opaque("dirpath", nfs.MntPathLen)
		if d.Err != nil {
			return out, oncrpc.GarbageArgs
		}
		if vers != 3 {
			// fhstatus of MOUNT v1/v2: an NFSv2 handle this server cannot serve.
			return oncrpc.AppendUint32(out, uint32(nfs.MountStatusErrAcces)), oncrpc.Success
		}
		// The handler answers MOUNT as it would under go-nfs's own server.
		status, fs, flavors := s.h.Mount(context.Background(), remoteConn{remote}, nfs.MountRequest{Dirpath: dirpath})
		var fh []byte
		if status == nfs.MountStatusOk {
			if fh = s.h.ToHandle(fs, nil); fh == nil {
				status = nfs.MountStatusErrServerFault
			}
		}
		s.m.mounts.WithLabelValues(mountResult(status)).Inc()
		s.log.Info("nfs mount", "stage", "nfs", "ip", addrIP(remote), "path", string(dirpath), "status", uint32(status))
		out = oncrpc.AppendUint32(out, uint32(status))
		if status != nfs.MountStatusOk {
			return out, oncrpc.Success
		}
		out = oncrpc.AppendOpaque(out, fh)
		out = oncrpc.AppendUint32(out, uint32(len(flavors)))
		for _, f := range flavors {
			out = oncrpc.AppendUint32(out, uint32(f))
		}
		return out, oncrpc.Success
	case nfs.MountProcDump:
		return oncrpc.AppendBool(out, false), oncrpc.Success // no mount list is kept
	case nfs.MountProcUmnt:
		d.Opaque("dirpath", nfs.MntPathLen)
		if d.Err != nil {
			return out, oncrpc.GarbageArgs
		}
		return out, oncrpc.Success
	case nfs.MountProcUmntAll:
		return out, oncrpc.Success
	case nfs.MountProcExport:
		for _, exp := range s.exports.List() {
			out = oncrpc.AppendBool(out, true)
			out = oncrpc.AppendString(out, exp.Path)
			for _, n := range s.cfg.AllowedNets {
				out = oncrpc.AppendBool(out, true)
				out = oncrpc.AppendString(out, n.String())
			}
			out = oncrpc.AppendBool(out, false)
		}
		return oncrpc.AppendBool(out, false), oncrpc.Success
	}
	return out, oncrpc.ProcUnavail
}

func mountResult(st nfs.MountStatus) string {
	switch st {
	case nfs.MountStatusOk:
		return "ok"
	case nfs.MountStatusErrNoEnt, nfs.MountStatusErrNotDir:
		return "noent"
	case nfs.MountStatusErrAcces, nfs.MountStatusErrPerm:
		return "denied"
	}
	return "error"
}

// remoteConn carries the caller's address to Handler.Mount, which takes a net.Conn.
type remoteConn struct{ remote net.Addr }

func (r remoteConn) RemoteAddr() net.Addr { return r.remote }

func (remoteConn) Read([]byte) (int, error)  { return 0, net.ErrClosed }
func (remoteConn) Write([]byte) (int, error) { return 0, net.ErrClosed }
func (remoteConn) Close() error              { return nil }
func (remoteConn) LocalAddr() net.Addr       { return nil }

func (remoteConn) SetDeadline(t time.Time) error      { return nil }
func (remoteConn) SetReadDeadline(t time.Time) error  { return nil }
func (remoteConn) SetWriteDeadline(t time.Time) error { return nil }

func addrIP(a net.Addr) string {
	switch a := a.(type) {
	case *net.TCPAddr:
		return a.IP.String()
	case *net.UDPAddr:
		return a.IP.String()
	case nil:
		return ""
	}
	return a.String()
}
