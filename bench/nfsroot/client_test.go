package nfsrootbench

import (
	"context"
	"fmt"
	"net"

	"github.com/distonet/distonet/internal/lab"
	"github.com/distonet/distonet/nfsroot/oncrpc"
)

// bootClient is one simulated node: a TCP connection that mounts the export, walks
// directories with READDIRPLUS and reads every regular file, one call at a time.
type bootClient struct {
	rpc *oncrpc.Client
}

const (
	progPortmap = 100000
	progNFS     = 100003
	progMount   = 100005

	nf3Reg = 1
	nf3Dir = 2
)

// mountPort asks the portmapper of host which TCP port MOUNT v3 uses.
func mountPort(ns *lab.Netns, host string) (int, error) {
	var c *oncrpc.Client
	if err := ns.Do(func() (err error) {
		c, err = oncrpc.Dial(context.Background(), "tcp", net.JoinHostPort(host, "111"))
		return err
	}); err != nil {
		return 0, err
	}
	defer c.Close()
	args := oncrpc.AppendUint32(oncrpc.AppendUint32(oncrpc.AppendUint32(oncrpc.AppendUint32(nil, progMount), 3), 6), 0)
	res, _, err := c.Call(progPortmap, 2, 3, args)
	if err != nil {
		return 0, fmt.Errorf("getport: %w", err)
	}
	d := oncrpc.NewDecoder(res)
	return int(d.Uint32("port")), d.Err
}

// mount gets the export's root handle from the MOUNT service at addr.
func mount(ns *lab.Netns, addr, path string) ([]byte, error) {
	var c *oncrpc.Client
	if err := ns.Do(func() (err error) {
		c, err = oncrpc.Dial(context.Background(), "tcp", addr)
		return err
	}); err != nil {
		return nil, err
	}
	defer c.Close()
	c.Cred = oncrpc.SysCred("bench", 0, 0)
	res, _, err := c.Call(progMount, 3, 1, oncrpc.AppendString(nil, path))
	if err != nil {
		return nil, fmt.Errorf("mount %s: %w", path, err)
	}
	d := oncrpc.NewDecoder(res)
	if st := d.Uint32("status"); st != 0 {
		return nil, fmt.Errorf("mount %s: status %d", path, st)
	}
	fh := d.Opaque("fh", 64)
	return append([]byte(nil), fh...), d.Err
}

func dialBoot(ns *lab.Netns, addr string) (*bootClient, error) {
	var c *oncrpc.Client
	if err := ns.Do(func() (err error) {
		c, err = oncrpc.Dial(context.Background(), "tcp", addr)
		return err
	}); err != nil {
		return nil, err
	}
	c.Cred = oncrpc.SysCred("bench", 0, 0)
	return &bootClient{rpc: c}, nil
}

type entry struct {
	name string
	typ  uint32
	size uint64
	fh   []byte
}

func skipFattr(d *oncrpc.Decoder) (typ uint32, size uint64) {
	typ = d.Uint32("type")
	d.Fixed("mode..gid", 16)
	size = d.Uint64("size")
	d.Fixed("rest", 84-4-16-8)
	return typ, size
}

func skipPostOp(d *oncrpc.Decoder) {
	if d.Bool("attributes_follow") {
		skipFattr(d)
	}
}

// readdirplus lists a directory completely.
func (c *bootClient) readdirplus(fh []byte) ([]entry, error) {
	var out []entry
	var cookie, verf uint64
	for range 100000 {
		args := oncrpc.AppendOpaque(nil, fh)
		args = oncrpc.AppendUint64(args, cookie)
		args = oncrpc.AppendUint64(args, verf)
		args = oncrpc.AppendUint32(args, 8192)
		args = oncrpc.AppendUint32(args, 65536)
		res, _, err := c.rpc.Call(progNFS, 3, 17, args)
		if err != nil {
			return nil, err
		}
		d := oncrpc.NewDecoder(res)
		if st := d.Uint32("status"); st != 0 {
			return nil, fmt.Errorf("readdirplus: status %d", st)
		}
		skipPostOp(d)
		verf = d.Uint64("verf")
		for d.Bool("follows") {
			var e entry
			d.Uint64("fileid")
			e.name = d.String("name", 255)
			cookie = d.Uint64("cookie")
			if d.Bool("attrs") {
				e.typ, e.size = skipFattr(d)
			}
			if d.Bool("fh") {
				e.fh = append([]byte(nil), d.Opaque("fh", 64)...)
			}
			if e.name != "." && e.name != ".." {
				out = append(out, e)
			}
		}
		eof := d.Bool("eof")
		if d.Err != nil {
			return nil, d.Err
		}
		if eof {
			return out, nil
		}
	}
	return nil, fmt.Errorf("readdirplus: no eof")
}

func (c *bootClient) lookup(dir []byte, name string) ([]byte, error) {
	res, _, err := c.rpc.Call(progNFS, 3, 3, oncrpc.AppendString(oncrpc.AppendOpaque(nil, dir), name))
	if err != nil {
		return nil, err
	}
	d := oncrpc.NewDecoder(res)
	if st := d.Uint32("status"); st != 0 {
		return nil, fmt.Errorf("lookup %s: status %d", name, st)
	}
	return append([]byte(nil), d.Opaque("fh", 64)...), d.Err
}

// readFile reads a file to its end in 1 MiB calls and returns the bytes read.
func (c *bootClient) readFile(fh []byte) (int64, error) {
	var off uint64
	for range 1 << 20 {
		args := oncrpc.AppendUint32(oncrpc.AppendUint64(oncrpc.AppendOpaque(nil, fh), off), 1<<20)
		res, _, err := c.rpc.Call(progNFS, 3, 6, args)
		if err != nil {
			return int64(off), err
		}
		d := oncrpc.NewDecoder(res)
		if st := d.Uint32("status"); st != 0 {
			return int64(off), fmt.Errorf("read: status %d", st)
		}
		skipPostOp(d)
		n := d.Uint32("count")
		eof := d.Bool("eof")
		d.Opaque("data", 1<<21)
		if d.Err != nil {
			return int64(off), d.Err
		}
		off += uint64(n)
		if eof || n == 0 {
			return int64(off), nil
		}
	}
	return int64(off), fmt.Errorf("read: no eof")
}

// readTree reads every regular file below dir (symlinks are not followed).
func (c *bootClient) readTree(dir []byte) (files int, bytes int64, err error) {
	ents, err := c.readdirplus(dir)
	if err != nil {
		return 0, 0, err
	}
	for _, e := range ents {
		switch e.typ {
		case nf3Dir:
			f, b, err := c.readTree(e.fh)
			files, bytes = files+f, bytes+b
			if err != nil {
				return files, bytes, err
			}
		case nf3Reg:
			n, err := c.readFile(e.fh)
			files, bytes = files+1, bytes+n
			if err != nil {
				return files, bytes, fmt.Errorf("%s: %w", e.name, err)
			}
		}
	}
	return files, bytes, nil
}
