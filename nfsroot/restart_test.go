package nfsroot

import (
	"context"
	"net"
	"testing"
	"time"

	nfs "github.com/willscott/go-nfs"
)

// A handle taken before a server restart reads the same file after it, and a node that
// mounted version 1 keeps reading version 1 through its handles after version 2 is
// published, while new mounts get version 2.
func TestHandlesSurviveRestartAndUpdate(t *testing.T) {
	t.Parallel()
	n := newTestNet(t)
	v1 := newImage(t, "version one\n")
	ex := newFakeExports()
	ex.publish(Export{Path: exportPath, Root: v1.root, Version: 1})
	stop := startServer(t, n.srv, ex)

	c := dialNFS(t, n.cli, addr(srvIP, 2049), 0, 0)
	root := c.mustMount(exportPath)
	issue := c.walk(root, "etc/issue")
	busybox := c.walk(root, "bin/busybox")
	if st, data := c.readAll(issue, 4096); st != nfs.NFSStatusOk || string(data) != "version one\n" {
		t.Fatalf("before restart: %v %q", st, data)
	}

	stop()
	// A new server: nothing of the old one's memory survives but the exports.
	stop = startServer(t, n.srv, ex)
	c = dialNFS(t, n.cli, addr(srvIP, 2049), 0, 0)
	if st, data := c.readAll(issue, 4096); st != nfs.NFSStatusOk || string(data) != "version one\n" {
		t.Fatalf("old handle after restart: %v %q", st, data)
	}
	if st, data := c.readAll(busybox, 1<<20); st != nfs.NFSStatusOk || sum(data) != v1.sums["bin/busybox"] {
		t.Fatalf("old busybox handle after restart: %v, sha %s", st, sum(data))
	}

	v2 := newImage(t, "version two\n")
	ex.publish(Export{Path: exportPath, Root: v2.root, Version: 2})
	if st, data := c.readAll(issue, 4096); st != nfs.NFSStatusOk || string(data) != "version one\n" {
		t.Fatalf("v1 handle after v2 is published: %v %q", st, data)
	}
	root2 := c.mustMount(exportPath)
	if st, data := c.readAll(c.walk(root2, "etc/issue"), 4096); st != nfs.NFSStatusOk || string(data) != "version two\n" {
		t.Fatalf("new mount after v2: %v %q", st, data)
	}
	if got := n.cli.MustExec("nfs-cat", url("/etc/issue")); got != "version two\n" {
		t.Errorf("nfs-cat after v2 = %q", got)
	}

	// A version whose rootfs the registry dropped goes stale instead of naming a stranger.
	ex.mu.Lock()
	delete(ex.versions[exportPath], 1)
	ex.mu.Unlock()
	stop()
	startServer(t, n.srv, ex)
	c = dialNFS(t, n.cli, addr(srvIP, 2049), 0, 0)
	if st, _ := c.getattr(issue); st != nfs.NFSStatusStale {
		t.Errorf("handle of a removed version: %v, want NFS3ERR_STALE", st)
	}
}

// go-nfs's own server with this package's Handler answers MOUNT of an unknown path with
// MNT3ERR_NOENT instead of panicking (the v0.0.4 caching helper dereferences the nil
// filesystem), and keeps serving.
func TestGoNFSServerWithHandlerSurvivesUnknownMount(t *testing.T) {
	t.Parallel()
	im := newImage(t, "v1\n")
	ex := newFakeExports()
	ex.publish(Export{Path: exportPath, Root: im.root, Version: 1})
	h := newHandler(ex, func(net.Addr) bool { return true }, discardLogger())
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	srv := &nfs.Server{Handler: h, Context: ctx}
	go func() { _ = srv.Serve(l) }()
	defer l.Close()

	c := dialNFS(t, nil, l.Addr().String(), 0, 0)
	c.rpc.Timeout = 5 * time.Second
	st, _, err := c.mount("/nope")
	if err != nil || st != nfs.MountStatusErrNoEnt {
		t.Fatalf("MOUNT /nope: status %d, %v; want MNT3ERR_NOENT", st, err)
	}
	st, fh, err := c.mount(exportPath)
	if err != nil || st != nfs.MountStatusOk {
		t.Fatalf("MOUNT after the unknown one: %d %v", st, err)
	}
	// The root handle is ours (stable) even through go-nfs's server.
	var h1 fileHandle
	if err := h1.UnmarshalBinary(fh); err != nil || h1.Version != 1 {
		t.Fatalf("root handle %x: %v", fh, err)
	}
	if _, _, err := c.call(progNFS, 3, 0, nil); err != nil {
		t.Fatalf("NULL after MOUNTs: %v", err)
	}
}
