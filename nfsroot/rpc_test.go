package nfsroot

import (
	"errors"
	"strings"
	"testing"

	nfs "github.com/willscott/go-nfs"

	"github.com/distonet/distonet/internal/lab"
	"github.com/distonet/distonet/nfsroot/oncrpc"
)

// RPC-level errors carry RFC 5531's codes, which real clients decode (go-nfs v0.0.4 sends
// them off by one).
func TestRPCErrorCodes(t *testing.T) {
	t.Parallel()
	n, _, _ := serveImage(t, "v1\n")
	out, err := n.cli.Exec("rpcinfo", "-t", srvIP, "100003", "4")
	if err == nil || !strings.Contains(out, "low version = 3, high version = 3") {
		t.Errorf("rpcinfo of NFS v4: %v\n%s", err, out)
	}
	if out := n.cli.MustExec("rpcinfo", "-u", srvIP, "100005", "3"); !strings.Contains(out, "ready and waiting") {
		t.Errorf("rpcinfo MOUNT v3 over UDP:\n%s", out)
	}
	c := dialNFS(t, n.cli, addr(srvIP, 2049), 0, 0)
	for _, tc := range []struct {
		name       string
		prog, vers uint32
		proc       uint32
		args       []byte
		want       oncrpc.AcceptStat
	}{
		{"unknown procedure", progNFS, 3, 22, nil, oncrpc.ProcUnavail},
		{"truncated arguments", progNFS, 3, uint32(nfs.NFSProcedureGetAttr), []byte{0, 0, 0, 32, 1}, oncrpc.GarbageArgs},
		{"unknown program", 100099, 1, 0, nil, oncrpc.ProgUnavail},
		{"MOUNT v4", progMount, 4, 0, nil, oncrpc.ProgMismatch},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, rep, err := c.call(tc.prog, tc.vers, tc.proc, tc.args)
			if !errors.Is(err, oncrpc.ErrNotAccepted) || rep.Stat != oncrpc.ReplyAccepted || rep.AcceptStat != tc.want {
				t.Errorf("reply %+v, %v; want accept_stat %d", rep, err, tc.want)
			}
		})
	}
}

// With a host rpcbind already on port 111, the server registers NFS and MOUNT with it and
// standard clients find the server through it.
func TestRegistersWithHostRpcbind(t *testing.T) {
	t.Parallel()
	n := newTestNet(t)
	lab.Require(t, "rpcbind", "unshare")
	// rpcbind in the server namespace, with a private /run for its socket.
	startDaemon(t, n.srv, "unshare", "-m", "--propagation", "private", "sh", "-c",
		"mount -t tmpfs tmpfs /run && exec rpcbind -w -f")
	waitFor(t, func() bool {
		out, err := n.cli.Exec("rpcinfo", "-p", srvIP)
		return err == nil && strings.Contains(out, "portmapper")
	})
	im := newImage(t, "via rpcbind\n")
	ex := newFakeExports()
	ex.publish(Export{Path: exportPath, Root: im.root, Version: 1})
	startServer(t, n.srv, ex)
	out := n.cli.MustExec("rpcinfo", "-p", srvIP)
	for _, want := range []string{"100003    3   tcp   2049", "100005    3   tcp   2049"} {
		if !strings.Contains(strings.Join(strings.Fields(out), " "), strings.Join(strings.Fields(want), " ")) {
			t.Errorf("rpcinfo -p misses %q:\n%s", want, out)
		}
	}
	if got := n.cli.MustExec("nfs-cat", url("/etc/issue")); got != "via rpcbind\n" {
		t.Errorf("nfs-cat through the host rpcbind = %q", got)
	}
}
