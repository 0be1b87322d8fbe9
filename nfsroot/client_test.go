package nfsroot

import (
	"context"
	"fmt"
	"net"
	"testing"

	nfs "github.com/willscott/go-nfs"

	"github.com/distonet/distonet/internal/lab"
	"github.com/distonet/distonet/nfsroot/oncrpc"
)

// nfsClient is a minimal NFSv3 client over the package's RPC client: it keeps raw handles,
// which is what the restart and update tests need.
type nfsClient struct {
	t      testing.TB
	rpc    *oncrpc.Client
	remote string // the server's address
}

// dialNFS connects from inside ns (nil: the test's own namespace) as uid/gid.
func dialNFS(t testing.TB, ns *lab.Netns, addr string, uid, gid uint32) *nfsClient {
	t.Helper()
	var c *oncrpc.Client
	dial := func() (err error) {
		c, err = oncrpc.Dial(context.Background(), "tcp", addr)
		return err
	}
	var err error
	if ns != nil {
		err = ns.Do(dial)
	} else {
		err = dial()
	}
	if err != nil {
		t.Fatal(err)
	}
	c.Cred = oncrpc.SysCred("test", uid, gid)
	t.Cleanup(func() { c.Close() })
	return &nfsClient{t: t, rpc: c, remote: addr}
}

func (c *nfsClient) call(prog, vers, proc uint32, args []byte) (*oncrpc.Decoder, *oncrpc.Reply, error) {
	res, rep, err := c.rpc.Call(prog, vers, proc, args)
	if err != nil {
		return nil, rep, err
	}
	return oncrpc.NewDecoder(res), rep, nil
}

func (c *nfsClient) mustCall(proc uint32, args []byte) *oncrpc.Decoder {
	c.t.Helper()
	d, _, err := c.call(progNFS, 3, proc, args)
	if err != nil {
		c.t.Fatalf("nfs proc %d: %v", proc, err)
	}
	return d
}

// mount returns the MNT status and, on success, the root handle.
func (c *nfsClient) mount(path string) (nfs.MountStatus, []byte, error) {
	d, _, err := c.call(progMount, 3, uint32(nfs.MountProcMount), oncrpc.AppendString(nil, path))
	if err != nil {
		return 0, nil, err
	}
	st := nfs.MountStatus(d.Uint32("status"))
	if st != nfs.MountStatusOk {
		return st, nil, d.Err
	}
	fh := d.Opaque("fh", 64)
	n := d.Uint32("flavors")
	for range n {
		d.Uint32("flavor")
	}
	return st, append([]byte(nil), fh...), d.Err
}

func (c *nfsClient) mustMount(path string) []byte {
	c.t.Helper()
	st, fh, err := c.mount(path)
	if err != nil || st != nfs.MountStatusOk {
		c.t.Fatalf("mount %s: status %d, %v", path, st, err)
	}
	return fh
}

func decodeFattr(d *oncrpc.Decoder) nfs.FileAttribute {
	var a nfs.FileAttribute
	a.Type = nfs.FileType(d.Uint32("type"))
	a.FileMode = d.Uint32("mode")
	a.Nlink = d.Uint32("nlink")
	a.UID = d.Uint32("uid")
	a.GID = d.Uint32("gid")
	a.Filesize = d.Uint64("size")
	a.Used = d.Uint64("used")
	a.SpecData = [2]uint32{d.Uint32("rdev1"), d.Uint32("rdev2")}
	a.FSID = d.Uint64("fsid")
	a.Fileid = d.Uint64("fileid")
	for _, t := range []*nfs.FileTime{&a.Atime, &a.Mtime, &a.Ctime} {
		t.Seconds = d.Uint32("sec")
		t.Nseconds = d.Uint32("nsec")
	}
	return a
}

func decodePostOp(d *oncrpc.Decoder) *nfs.FileAttribute {
	if !d.Bool("attributes_follow") {
		return nil
	}
	a := decodeFattr(d)
	return &a
}

func (c *nfsClient) getattr(fh []byte) (nfs.NFSStatus, nfs.FileAttribute) {
	d := c.mustCall(uint32(nfs.NFSProcedureGetAttr), oncrpc.AppendOpaque(nil, fh))
	st := nfs.NFSStatus(d.Uint32("status"))
	if st != nfs.NFSStatusOk {
		return st, nfs.FileAttribute{}
	}
	return st, decodeFattr(d)
}

func (c *nfsClient) lookup(dir []byte, name string) (nfs.NFSStatus, []byte, *nfs.FileAttribute) {
	d := c.mustCall(uint32(nfs.NFSProcedureLookup), oncrpc.AppendString(oncrpc.AppendOpaque(nil, dir), name))
	st := nfs.NFSStatus(d.Uint32("status"))
	if st != nfs.NFSStatusOk {
		return st, nil, nil
	}
	fh := append([]byte(nil), d.Opaque("fh", 64)...)
	a := decodePostOp(d)
	decodePostOp(d)
	if d.Err != nil {
		c.t.Fatalf("lookup reply: %v", d.Err)
	}
	return st, fh, a
}

// walk looks a slash-separated path up from a directory handle.
func (c *nfsClient) walk(fh []byte, path string) []byte {
	c.t.Helper()
	start := 0
	for i := 0; i <= len(path); i++ {
		if i == len(path) || path[i] == '/' {
			st, next, _ := c.lookup(fh, path[start:i])
			if st != nfs.NFSStatusOk {
				c.t.Fatalf("lookup %q in %s: status %d", path[start:i], path, st)
			}
			fh, start = next, i+1
		}
	}
	return fh
}

func (c *nfsClient) read(fh []byte, off uint64, count uint32) (nfs.NFSStatus, []byte, bool) {
	args := oncrpc.AppendUint32(oncrpc.AppendUint64(oncrpc.AppendOpaque(nil, fh), off), count)
	d := c.mustCall(uint32(nfs.NFSProcedureRead), args)
	st := nfs.NFSStatus(d.Uint32("status"))
	decodePostOp(d)
	if st != nfs.NFSStatusOk {
		return st, nil, false
	}
	n := d.Uint32("count")
	eof := d.Bool("eof")
	data := d.Opaque("data", 1<<21)
	if d.Err != nil || int(n) != len(data) {
		c.t.Fatalf("read reply: count %d data %d: %v", n, len(data), d.Err)
	}
	return st, append([]byte(nil), data...), eof
}

// readAll reads a whole file in chunks of count bytes.
func (c *nfsClient) readAll(fh []byte, count uint32) (nfs.NFSStatus, []byte) {
	var out []byte
	for i := 0; i < 1<<16; i++ {
		st, data, eof := c.read(fh, uint64(len(out)), count)
		if st != nfs.NFSStatusOk {
			return st, nil
		}
		out = append(out, data...)
		if eof {
			return st, out
		}
		if len(data) == 0 {
			c.t.Fatalf("read returned no data before eof")
		}
	}
	c.t.Fatalf("read never reached eof")
	return 0, nil
}

func (c *nfsClient) access(fh []byte, want uint32) (nfs.NFSStatus, uint32) {
	d := c.mustCall(uint32(nfs.NFSProcedureAccess), oncrpc.AppendUint32(oncrpc.AppendOpaque(nil, fh), want))
	st := nfs.NFSStatus(d.Uint32("status"))
	decodePostOp(d)
	if st != nfs.NFSStatusOk {
		return st, 0
	}
	return st, d.Uint32("access")
}

type plusEntry struct {
	fileid uint64
	name   string
	cookie uint64
	attr   *nfs.FileAttribute
	fh     []byte
}

// readdirplus lists a directory completely, maxcount bytes per call.
func (c *nfsClient) readdirplus(fh []byte, maxcount uint32) (nfs.NFSStatus, []plusEntry, int) {
	var all []plusEntry
	var cookie, verf uint64
	calls := 0
	for calls < 100000 {
		calls++
		args := oncrpc.AppendOpaque(nil, fh)
		args = oncrpc.AppendUint64(args, cookie)
		args = oncrpc.AppendUint64(args, verf)
		args = oncrpc.AppendUint32(args, maxcount/8)
		args = oncrpc.AppendUint32(args, maxcount)
		d := c.mustCall(uint32(nfs.NFSProcedureReadDirPlus), args)
		st := nfs.NFSStatus(d.Uint32("status"))
		decodePostOp(d)
		if st != nfs.NFSStatusOk {
			return st, all, calls
		}
		verf = d.Uint64("cookieverf")
		for d.Bool("entry_follows") {
			var e plusEntry
			e.fileid = d.Uint64("fileid")
			e.name = d.String("name", 255)
			e.cookie = d.Uint64("cookie")
			e.attr = decodePostOp(d)
			if d.Bool("handle_follows") {
				e.fh = append([]byte(nil), d.Opaque("fh", 64)...)
			}
			all = append(all, e)
			cookie = e.cookie
		}
		eof := d.Bool("eof")
		if d.Err != nil {
			c.t.Fatalf("readdirplus reply: %v", d.Err)
		}
		if eof {
			return st, all, calls
		}
	}
	c.t.Fatalf("readdirplus never reached eof")
	return 0, nil, 0
}

func addr(ip string, port int) string { return net.JoinHostPort(ip, fmt.Sprint(port)) }

type dirEntry3 struct {
	fileid uint64
	name   string
}

// readdir lists a directory completely with READDIR, count bytes per call.
func (c *nfsClient) readdir(fh []byte, count uint32) (nfs.NFSStatus, []dirEntry3, int) {
	var all []dirEntry3
	var cookie, verf uint64
	calls := 0
	for calls < 100000 {
		calls++
		args := oncrpc.AppendUint32(oncrpc.AppendUint64(oncrpc.AppendUint64(oncrpc.AppendOpaque(nil, fh), cookie), verf), count)
		d := c.mustCall(uint32(nfs.NFSProcedureReadDir), args)
		st := nfs.NFSStatus(d.Uint32("status"))
		decodePostOp(d)
		if st != nfs.NFSStatusOk {
			return st, all, calls
		}
		verf = d.Uint64("cookieverf")
		for d.Bool("entry_follows") {
			var e dirEntry3
			e.fileid = d.Uint64("fileid")
			e.name = d.String("name", 255)
			cookie = d.Uint64("cookie")
			all = append(all, e)
		}
		eof := d.Bool("eof")
		if d.Err != nil {
			c.t.Fatalf("readdir reply: %v", d.Err)
		}
		if eof {
			return st, all, calls
		}
	}
	c.t.Fatalf("readdir never reached eof")
	return 0, nil, 0
}
