package nfsroot

import (
	"bufio"
	"bytes"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	nfs "github.com/willscott/go-nfs"

	"github.com/distonet/distonet/nfsroot/oncrpc"
)

// Calls sent back to back on one connection, as the kernel sends them, each get one whole
// reply matched to its call by XID: READs (written from the file's mapping, with their
// padding) answered by the connection's reader, GETATTRs between them by its workers.
func TestPipelinedCalls(t *testing.T) {
	t.Parallel()
	im := newImage(t, "pipelined\n")
	ex := newFakeExports()
	ex.publish(Export{Path: exportPath, Root: im.root, Version: 1})
	s := serveLoopback(t, Config{}, ex)
	c := dialNFS(t, nil, s.Addr().String(), 0, 0)
	busybox := c.walk(c.mustMount(exportPath), "bin/busybox")
	want, err := os.ReadFile(filepath.Join(im.root, "bin/busybox"))
	if err != nil {
		t.Fatal(err)
	}

	conn, err := net.Dial("tcp", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	type req struct {
		getattr bool
		off     uint64
		count   uint32
	}
	reqs := map[uint32]req{}
	var stream []byte
	var list []req
	for i := range 144 {
		// Offsets and sizes up to 90 KiB that end unaligned.
		list = append(list, req{getattr: i%3 == 2, off: uint64(i) * 22221, count: uint32(1000 + (i%4)*30001)})
	}
	// At the end of the file and past it: no data, eof set.
	list = append(list, req{off: uint64(len(want)), count: 4096}, req{off: uint64(len(want)) + 1<<20, count: 4096})
	for i, r := range list {
		xid := uint32(1000 + i)
		reqs[xid] = r
		proc, args := uint32(nfs.NFSProcedureRead), oncrpc.AppendUint32(oncrpc.AppendUint64(oncrpc.AppendOpaque(nil, busybox), r.off), r.count)
		if r.getattr {
			proc, args = uint32(nfs.NFSProcedureGetAttr), oncrpc.AppendOpaque(nil, busybox)
		}
		msg, _ := (&oncrpc.Call{XID: xid, Prog: progNFS, Vers: 3, Proc: proc, Cred: oncrpc.SysCred("p", 0, 0), Args: args}).MarshalBinary()
		mark := oncrpc.RecordMark(len(msg))
		stream = append(append(stream, mark[:]...), msg...)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); _, _ = conn.Write(stream) }()
	_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	br := bufio.NewReader(conn)
	for range len(reqs) {
		rec, err := oncrpc.ReadRecord(br, nil, 2<<20)
		if err != nil {
			t.Fatalf("reply: %v", err)
		}
		var rep oncrpc.Reply
		if err := rep.UnmarshalBinary(rec); err != nil {
			t.Fatal(err)
		}
		r, ok := reqs[rep.XID]
		if !ok {
			t.Fatalf("reply to unknown or repeated xid %d", rep.XID)
		}
		delete(reqs, rep.XID)
		d := oncrpc.NewDecoder(rep.Results)
		if st := nfs.NFSStatus(d.Uint32("status")); st != nfs.NFSStatusOk {
			t.Fatalf("xid %d: %v", rep.XID, st)
		}
		if r.getattr {
			if a := decodeFattr(d); d.Err != nil || len(d.B) != 0 || a.Filesize != uint64(len(want)) {
				t.Fatalf("xid %d: getattr reply malformed (%v, %d trailing bytes) or size %d, want %d", rep.XID, d.Err, len(d.B), a.Filesize, len(want))
			}
			continue
		}
		decodePostOp(d)
		n := d.Uint32("count")
		eof := d.Bool("eof")
		data := d.Opaque("data", 1<<21)
		if d.Err != nil || len(d.B) != 0 {
			t.Fatalf("xid %d: reply malformed (%v, %d trailing bytes)", rep.XID, d.Err, len(d.B))
		}
		start := min(int(r.off), len(want))
		end := min(int(r.off)+int(r.count), len(want))
		if int(n) != end-start || !bytes.Equal(data, want[start:end]) {
			t.Fatalf("xid %d: %d bytes at %d differ from the file", rep.XID, n, r.off)
		}
		if eof != (end == len(want)) {
			t.Fatalf("xid %d: %d bytes at %d: eof %v", rep.XID, n, r.off, eof)
		}
	}
	if len(reqs) != 0 {
		t.Errorf("%d calls got no reply", len(reqs))
	}
	wg.Wait()
}

// A file truncated under the server (images are immutable, but a host admin can still
// break one) fails only the READ's connection: the reply written from the file's mapping
// hits EFAULT, the server closes that connection and keeps serving.
func TestReadOfFileTruncatedUnderTheServer(t *testing.T) {
	t.Parallel()
	im := newImage(t, "truncated\n")
	path := filepath.Join(im.root, "etc", "shrinks.bin")
	data := randomBytes(t, 1<<20)
	writeFile(t, path, data, 0o644, 0, 0)
	ex := newFakeExports()
	ex.publish(Export{Path: exportPath, Root: im.root, Version: 1})
	s := serveLoopback(t, Config{}, ex)

	c := dialNFS(t, nil, s.Addr().String(), 0, 0)
	root := c.mustMount(exportPath)
	fh := c.walk(root, "etc/shrinks.bin")
	if st, got, _ := c.read(fh, 0, 64<<10); st != nfs.NFSStatusOk || !bytes.Equal(got, data[:64<<10]) {
		t.Fatalf("first read: %v, %d bytes", st, len(got))
	}
	if err := os.Truncate(path, 4096); err != nil {
		t.Fatal(err)
	}
	args := oncrpc.AppendUint32(oncrpc.AppendUint64(oncrpc.AppendOpaque(nil, fh), 512<<10), 256<<10)
	if _, _, err := c.call(progNFS, 3, uint32(nfs.NFSProcedureRead), args); err == nil {
		t.Fatal("a READ past the truncated end was answered")
	} else {
		t.Logf("READ past the truncated end: %v", err)
	}
	// The server lives on: a new connection reads what is left of the file.
	c2 := dialNFS(t, nil, s.Addr().String(), 0, 0)
	if st, got, _ := c2.read(fh, 0, 4096); st != nfs.NFSStatusOk || !bytes.Equal(got, data[:4096]) {
		t.Fatalf("read after truncation: %v, %d bytes", st, len(got))
	}
}

// panickyExports panics on a MOUNT of /boom, as a buggy registry might.
type panickyExports struct{ *fakeExports }

func (p panickyExports) Export(path string) (Export, bool) {
	if path == "/boom" {
		panic("registry bug")
	}
	return p.fakeExports.Export(path)
}

// A panic inside a procedure answers that call with SYSTEM_ERR and leaves the server,
// and the connection, serving.
func TestPanicInProcedureAnswersSystemErr(t *testing.T) {
	t.Parallel()
	im := newImage(t, "panics\n")
	ex := newFakeExports()
	ex.publish(Export{Path: exportPath, Root: im.root, Version: 1})
	s := serveLoopback(t, Config{}, panickyExports{ex})
	c := dialNFS(t, nil, s.Addr().String(), 0, 0)
	_, rep, err := c.call(progMount, 3, uint32(nfs.MountProcMount), oncrpc.AppendString(nil, "/boom"))
	if rep == nil || rep.AcceptStat != oncrpc.SystemErr {
		t.Fatalf("MOUNT /boom: reply %+v, err %v; want SYSTEM_ERR", rep, err)
	}
	// Same connection, next call: served.
	root := c.mustMount(exportPath)
	if st, _ := c.getattr(root); st != nfs.NFSStatusOk {
		t.Fatalf("getattr after the panic: %v", st)
	}
}
