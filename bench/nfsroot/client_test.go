package nfsrootbench

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/distonet/distonet/internal/lab"
	"github.com/distonet/distonet/nfsroot/oncrpc"
)

const (
	progPortmap = 100000
	progNFS     = 100003
	progMount   = 100005

	nf3Reg = 1
	nf3Dir = 2

	procLookup      = 3
	procRead        = 6
	procReaddirplus = 17

	rsize = 1 << 20
	// window is how many READs a simulated node keeps in flight on its connection, as the
	// Linux client does with readahead and several processes paging in at once.
	window = 8
	// fattrSize is the XDR size of fattr3.
	fattrSize = 84
)

// copyData makes the boot clients copy READ data into user space like a real client;
// by default they drop it in the kernel (see bootClient).
var copyData = os.Getenv("NFSROOT_BENCH_COPY") != ""

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

// bootClient is one simulated node: one TCP connection that walks directories with
// READDIRPLUS (one call at a time) and then reads every regular file in 1 MiB READs with
// up to `window` calls in flight, one goroutine doing both the sending and the receiving.
//
// It is the same client for both servers and is built to cost as little CPU as it can,
// because on this 2-core machine it shares the cores with the server under test: READ
// data is dropped in the kernel with recv(MSG_TRUNC) (no copy to user space) after the
// reply's status, count, eof and length were checked against the file's size. What the
// data contains is checked by nfsroot's own tests with libnfs and the kernel client.
type bootClient struct {
	conn net.Conn
	rc   syscall.RawConn
	br   *bufio.Reader
	cred oncrpc.OpaqueAuth
	xid  uint32
	wbuf []byte
	rbuf []byte
	data []byte // READ data lands here when copyData is set
}

func dialBoot(ns *lab.Netns, addr string) (*bootClient, error) {
	var conn net.Conn
	if err := ns.Do(func() (err error) {
		conn, err = net.Dial("tcp", addr)
		return err
	}); err != nil {
		return nil, err
	}
	rc, err := conn.(*net.TCPConn).SyscallConn()
	if err != nil {
		conn.Close()
		return nil, err
	}
	_ = conn.SetDeadline(time.Now().Add(2 * time.Minute))
	// A small read buffer: it should take in a READ reply's header and as little of its
	// data as it can, since what it takes in is copied and the rest is dropped uncopied.
	return &bootClient{conn: conn, rc: rc, br: bufio.NewReaderSize(conn, 512),
		cred: oncrpc.SysCred("bench", 0, 0), xid: uint32(time.Now().UnixNano())}, nil
}

func (c *bootClient) Close() error { return c.conn.Close() }

// queue appends one call to the write buffer and returns its XID.
func (c *bootClient) queue(proc uint32, args []byte) (uint32, error) {
	c.xid++
	start := len(c.wbuf)
	call := oncrpc.Call{XID: c.xid, Prog: progNFS, Vers: 3, Proc: proc, Cred: c.cred, Args: args}
	b, err := call.AppendBinary(append(c.wbuf, 0, 0, 0, 0))
	if err != nil {
		return 0, err
	}
	mark := oncrpc.RecordMark(len(b) - start - 4)
	copy(b[start:], mark[:])
	c.wbuf = b
	return c.xid, nil
}

func (c *bootClient) flush() error {
	if len(c.wbuf) == 0 {
		return nil
	}
	_, err := c.conn.Write(c.wbuf)
	c.wbuf = c.wbuf[:0]
	if err != nil {
		return fmt.Errorf("send: %w", err)
	}
	return nil
}

// call runs one NFS call and returns its results (valid until the next call).
func (c *bootClient) call(proc uint32, args []byte) ([]byte, error) {
	xid, err := c.queue(proc, args)
	if err != nil {
		return nil, err
	}
	if err := c.flush(); err != nil {
		return nil, err
	}
	c.rbuf, err = oncrpc.ReadRecord(c.br, c.rbuf, 4<<20)
	if err != nil {
		return nil, fmt.Errorf("receive: %w", err)
	}
	var rep oncrpc.Reply
	if err := rep.UnmarshalBinary(c.rbuf); err != nil {
		return nil, err
	}
	if rep.XID != xid || rep.Stat != oncrpc.ReplyAccepted || rep.AcceptStat != oncrpc.Success {
		return nil, fmt.Errorf("reply xid %d (want %d) stat %d accept %d", rep.XID, xid, rep.Stat, rep.AcceptStat)
	}
	return rep.Results, nil
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
	d.Fixed("rest", fattrSize-4-16-8)
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
		res, err := c.call(procReaddirplus, args)
		if err != nil {
			return nil, fmt.Errorf("readdirplus: %w", err)
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
	res, err := c.call(procLookup, oncrpc.AppendString(oncrpc.AppendOpaque(nil, dir), name))
	if err != nil {
		return nil, fmt.Errorf("lookup %s: %w", name, err)
	}
	d := oncrpc.NewDecoder(res)
	if st := d.Uint32("status"); st != 0 {
		return nil, fmt.Errorf("lookup %s: status %d", name, st)
	}
	return append([]byte(nil), d.Opaque("fh", 64)...), d.Err
}

// listTree lists the regular files below dir (symlinks are not followed).
func (c *bootClient) listTree(dir []byte, files []entry) ([]entry, error) {
	ents, err := c.readdirplus(dir)
	if err != nil {
		return files, err
	}
	for _, e := range ents {
		switch e.typ {
		case nf3Dir:
			if files, err = c.listTree(e.fh, files); err != nil {
				return files, err
			}
		case nf3Reg:
			files = append(files, e)
		}
	}
	return files, nil
}

// readReq is one READ in flight: which file, which part.
type readReq struct {
	xid   uint32
	file  *entry
	off   uint64
	count uint32
}

// readFiles reads every file to its end with up to window READs in flight and returns the
// bytes read; each reply's count and eof must agree with the size READDIRPLUS gave.
func (c *bootClient) readFiles(files []entry) (int64, error) {
	var work []readReq
	for i := range files {
		f := &files[i]
		for off := uint64(0); off == 0 || off < f.size; off += rsize {
			work = append(work, readReq{file: f, off: off, count: rsize})
		}
	}
	var total int64
	inflight := make([]readReq, 0, window)
	next := 0
	for next < len(work) || len(inflight) > 0 {
		for len(inflight) < window && next < len(work) {
			r := work[next]
			args := oncrpc.AppendUint32(oncrpc.AppendUint64(oncrpc.AppendOpaque(nil, r.file.fh), r.off), r.count)
			xid, err := c.queue(procRead, args)
			if err != nil {
				return total, err
			}
			r.xid = xid
			inflight = append(inflight, r)
			next++
		}
		if err := c.flush(); err != nil {
			return total, err
		}
		xid, n, eof, err := c.readReply()
		if err != nil {
			return total, err
		}
		k := 0
		for k < len(inflight) && inflight[k].xid != xid {
			k++
		}
		if k == len(inflight) {
			return total, fmt.Errorf("read: reply to unknown xid %d", xid)
		}
		r := inflight[k]
		inflight = append(inflight[:k], inflight[k+1:]...)
		want := min(uint64(r.count), r.file.size-r.off)
		if uint64(n) != want || eof != (r.off+want >= r.file.size) {
			return total, fmt.Errorf("read %s at %d: %d bytes eof %v, want %d bytes of %d", r.file.name, r.off, n, eof, want, r.file.size)
		}
		total += int64(n)
	}
	return total, nil
}

// readHdr is the longest READ reply before its data: record mark, RPC reply header with
// an empty verifier, status, post_op_attr, count, eof, data length.
const readHdr = 4 + 24 + 4 + 4 + fattrSize + 12

// readReply receives one READ reply, checks its framing and drops its data.
func (c *bootClient) readReply() (xid, count uint32, eof bool, err error) {
	var hdr [readHdr]byte
	if _, err := io.ReadFull(c.br, hdr[:4]); err != nil {
		return 0, 0, false, fmt.Errorf("read reply: %w", err)
	}
	mark := binary.BigEndian.Uint32(hdr[:4])
	if mark&(1<<31) == 0 {
		return 0, 0, false, errors.New("read reply: fragmented record")
	}
	size := int(mark &^ (1 << 31))
	// Only what is surely header is read here: a short reply (an error) is all header.
	h := hdr[4 : 4+min(size, readHdr-4)]
	if _, err := io.ReadFull(c.br, h); err != nil {
		return 0, 0, false, fmt.Errorf("read reply: %w", err)
	}
	var rep oncrpc.Reply
	if err := rep.UnmarshalBinary(h); err != nil {
		return 0, 0, false, err
	}
	if rep.Stat != oncrpc.ReplyAccepted || rep.AcceptStat != oncrpc.Success {
		return rep.XID, 0, false, fmt.Errorf("read reply: stat %d accept %d", rep.Stat, rep.AcceptStat)
	}
	d := oncrpc.NewDecoder(rep.Results)
	if st := d.Uint32("status"); st != 0 {
		return rep.XID, 0, false, fmt.Errorf("read: status %d", st)
	}
	skipPostOp(d)
	count = d.Uint32("count")
	eof = d.Bool("eof")
	n := d.Uint32("data length")
	if d.Err != nil {
		return rep.XID, 0, false, fmt.Errorf("read reply: %w", d.Err)
	}
	// The record holds the data and its padding after what was decoded.
	rest := size - (len(h) - len(d.B))
	if n != count || rest != int(n)+int(-n&3) {
		return rep.XID, 0, false, fmt.Errorf("read reply: count %d, data %d, %d bytes left in the record", count, n, rest)
	}
	return rep.XID, count, eof, c.discard(rest)
}

// sink is the buffer named to recv(MSG_TRUNC), which the kernel does not write to.
var sink = make([]byte, rsize+4)

// discard drops n bytes of the stream: first what bufio already holds, then the rest in
// the kernel, with nothing copied.
func (c *bootClient) discard(n int) error {
	if copyData {
		if cap(c.data) < n {
			c.data = make([]byte, n)
		}
		_, err := io.ReadFull(c.br, c.data[:n])
		return err
	}
	k, _ := c.br.Discard(min(n, c.br.Buffered()))
	n -= k
	var opErr error
	err := c.rc.Read(func(fd uintptr) bool {
		for n > 0 {
			m, _, err := unix.Recvfrom(int(fd), sink[:min(n, len(sink))], unix.MSG_TRUNC|unix.MSG_DONTWAIT)
			switch {
			case errors.Is(err, unix.EAGAIN):
				return false
			case errors.Is(err, unix.EINTR):
				continue
			case err != nil:
				opErr = err
				return true
			case m == 0:
				opErr = io.ErrUnexpectedEOF
				return true
			}
			n -= m
		}
		return true
	})
	if err == nil {
		err = opErr
	}
	if err != nil {
		return fmt.Errorf("read data: %w", err)
	}
	return nil
}
