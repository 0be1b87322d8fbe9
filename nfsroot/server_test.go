package nfsroot

import (
	"errors"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	nfs "github.com/willscott/go-nfs"

	"github.com/distonet/distonet/nfsroot/oncrpc"
)

func serveImage(t *testing.T, issue string) (*testNet, *image, *fakeExports) {
	t.Helper()
	n := newTestNet(t)
	im := newImage(t, issue)
	ex := newFakeExports()
	ex.publish(Export{Path: exportPath, Root: im.root, Version: 1})
	startServer(t, n.srv, ex)
	return n, im, ex
}

// Every mutating procedure answers NFS3ERR_ROFS; libnfs cannot create a file.
func TestWritesRefused(t *testing.T) {
	t.Parallel()
	n, im, _ := serveImage(t, "v1\n")
	c := dialNFS(t, n.cli, addr(srvIP, 2049), 0, 0)
	root := c.mustMount(exportPath)
	issue := c.walk(root, "etc/issue")
	dirop := func(name string) []byte { return oncrpc.AppendString(oncrpc.AppendOpaque(nil, root), name) }
	sattr := make([]byte, 6*4) // nothing set
	for _, tc := range []struct {
		proc nfs.NFSProcedure
		args []byte
	}{
		{nfs.NFSProcedureSetAttr, append(append(oncrpc.AppendOpaque(nil, issue), sattr...), 0, 0, 0, 0)},
		{nfs.NFSProcedureWrite, oncrpc.AppendOpaque(oncrpc.AppendUint32(oncrpc.AppendUint32(oncrpc.AppendUint64(oncrpc.AppendOpaque(nil, issue), 0), 5), 2), []byte("hello"))},
		{nfs.NFSProcedureCreate, append(oncrpc.AppendUint32(dirop("new"), 0), sattr...)},
		{nfs.NFSProcedureMkDir, append(dirop("newdir"), sattr...)},
		{nfs.NFSProcedureSymlink, oncrpc.AppendString(append(dirop("ln"), sattr...), "etc/issue")},
		{nfs.NFSProcedureMkNod, oncrpc.AppendUint32(dirop("fifo"), 7)},
		{nfs.NFSProcedureRemove, dirop("etc")},
		{nfs.NFSProcedureRmDir, dirop("tmp")},
		{nfs.NFSProcedureRename, append(dirop("etc"), dirop("etc2")...)},
		{nfs.NFSProcedureLink, append(oncrpc.AppendOpaque(nil, issue), dirop("issue2")...)},
		{nfs.NFSProcedureCommit, oncrpc.AppendUint32(oncrpc.AppendUint64(oncrpc.AppendOpaque(nil, issue), 0), 0)},
	} {
		t.Run(tc.proc.String(), func(t *testing.T) {
			d := c.mustCall(uint32(tc.proc), tc.args)
			if st := nfs.NFSStatus(d.Uint32("status")); st != nfs.NFSStatusROFS {
				t.Errorf("status %v, want NFS3ERR_ROFS", st)
			}
		})
	}
	t.Run("nfs-cp upload", func(t *testing.T) {
		local := filepath.Join(t.TempDir(), "up")
		if err := os.WriteFile(local, []byte("upload"), 0o644); err != nil {
			t.Fatal(err)
		}
		if out, err := n.cli.Exec("nfs-cp", local, url("/etc/up")); err == nil {
			t.Errorf("nfs-cp to the export succeeded: %s", out)
		}
		if _, err := os.Stat(filepath.Join(im.root, "etc/up")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("file appeared in the image: %v", err)
		}
	})
}

// A client outside AllowedNets gets an RPC AUTH_ERROR, from MOUNT and from NFS with a
// handle obtained elsewhere.
func TestOutsiderRefused(t *testing.T) {
	t.Parallel()
	n, _, _ := serveImage(t, "v1\n")
	if out, err := n.out.Exec("nfs-ls", "nfs://"+srvOutIP+exportPath); err == nil {
		t.Errorf("nfs-ls from outside the allowed subnet succeeded: %s", out)
	}
	inside := dialNFS(t, n.cli, addr(srvIP, 2049), 0, 0)
	root := inside.mustMount(exportPath)

	outside := dialNFS(t, n.out, addr(srvOutIP, 2049), 0, 0)
	_, rep, err := outside.call(progMount, 3, uint32(nfs.MountProcMount), oncrpc.AppendString(nil, exportPath))
	if !errors.Is(err, oncrpc.ErrNotAccepted) || rep == nil || rep.Stat != oncrpc.ReplyDenied || rep.RejectStat != oncrpc.AuthError {
		t.Fatalf("MOUNT from outside: %v, reply %+v; want MSG_DENIED AUTH_ERROR", err, rep)
	}
	_, rep, err = outside.call(progNFS, 3, uint32(nfs.NFSProcedureGetAttr), oncrpc.AppendOpaque(nil, root))
	if !errors.Is(err, oncrpc.ErrNotAccepted) || rep == nil || rep.RejectStat != oncrpc.AuthError {
		t.Fatalf("GETATTR from outside: %v, reply %+v; want AUTH_ERROR", err, rep)
	}
}

// MOUNT of an unknown path answers MNT3ERR_NOENT and the server keeps serving.
func TestUnknownMount(t *testing.T) {
	t.Parallel()
	n, _, _ := serveImage(t, "v1\n")
	c := dialNFS(t, n.cli, addr(srvIP, 2049), 0, 0)
	for _, path := range []string{"/nope", "/images", "/images/test/../test", "/images/test/etc/issue", "relative", "/images/test/nope"} {
		st, _, err := c.mount(path)
		if err != nil {
			t.Fatalf("mount %s: %v", path, err)
		}
		if st == nfs.MountStatusOk {
			t.Errorf("mount %s succeeded", path)
		}
	}
	if out, err := n.cli.Exec("nfs-ls", "nfs://"+srvIP+"/nope"); err == nil {
		t.Errorf("nfs-ls of an unknown export succeeded: %s", out)
	}
	if got := n.cli.MustExec("nfs-cat", url("/etc/issue")); got != "v1\n" {
		t.Errorf("after unknown mounts, nfs-cat = %q", got)
	}
}

// Symlinks are served as symlinks, never followed by the server; ".." never leaves the
// export.
func TestEscapesRefused(t *testing.T) {
	t.Parallel()
	n, im, _ := serveImage(t, "v1\n")
	c := dialNFS(t, n.cli, addr(srvIP, 2049), 0, 0)
	root := c.mustMount(exportPath)
	_, rootAttr := c.getattr(root)

	st, up, upAttr := c.lookup(root, "..")
	if st != nfs.NFSStatusOk || upAttr.Fileid != rootAttr.Fileid {
		t.Errorf("LOOKUP .. of the root: status %v fileid %v, want the root (%d)", st, upAttr, rootAttr.Fileid)
	}
	if _, upup, _ := c.lookup(up, ".."); string(upup) != string(root) {
		t.Errorf("LOOKUP ../.. left the root")
	}
	for _, name := range []string{"a/b", "../etc", "x\x00y", ""} {
		if st, _, _ := c.lookup(root, name); st == nfs.NFSStatusOk {
			t.Errorf("LOOKUP %q succeeded", name)
		}
	}
	etc := c.walk(root, "etc")
	for _, link := range []string{"escape-rel", "escape-abs", "escape-dotdot"} {
		st, fh, a := c.lookup(etc, link)
		if st != nfs.NFSStatusOk || a.Type != nfs.FileTypeLink {
			t.Fatalf("LOOKUP %s: status %v attr %+v, want a symlink", link, st, a)
		}
		if st, data, _ := c.read(fh, 0, 4096); st == nfs.NFSStatusOk || strings.Contains(string(data), im.secret) {
			t.Errorf("READ of symlink %s: status %v, data %q", link, st, data)
		}
		out, _ := n.cli.Exec("nfs-cat", url("/etc/"+link))
		if strings.Contains(out, im.secret) {
			t.Errorf("nfs-cat %s printed the host file outside the export", link)
		}
	}
	d := c.mustCall(uint32(nfs.NFSProcedureReadlink), oncrpc.AppendOpaque(nil, c.walk(root, "etc/escape-rel")))
	if st := nfs.NFSStatus(d.Uint32("status")); st != nfs.NFSStatusOk {
		t.Fatalf("READLINK: %v", st)
	}
	decodePostOp(d)
	if got := d.String("path", 4096); got != "../../outside-secret" {
		t.Errorf("READLINK = %q, want the link text unchanged", got)
	}
	// A symlink inside the image still works through the client's own resolution.
	if got := n.cli.MustExec("nfs-cat", url("/etc/motd")); got != "v1\n" {
		t.Errorf("nfs-cat through an inner symlink = %q", got)
	}
}

// Attributes keep setuid, setgid and sticky bits, the inode as fileid, sizes and owners.
func TestAttributes(t *testing.T) {
	t.Parallel()
	n, im, _ := serveImage(t, "v1\n")
	c := dialNFS(t, n.cli, addr(srvIP, 2049), 0, 0)
	root := c.mustMount(exportPath)
	for _, tc := range []struct {
		path string
		mode uint32
		typ  nfs.FileType
		uid  uint32
	}{
		{"usr/bin/su", 0o4755, nfs.FileTypeRegular, 0},
		{"usr/bin/wall", 0o2755, nfs.FileTypeRegular, 0},
		{"tmp", 0o1777, nfs.FileTypeDirectory, 0},
		{"root/secret", 0o600, nfs.FileTypeRegular, 0},
		{"home/user/f", 0o644, nfs.FileTypeRegular, 1000},
		{"lib64", 0o777, nfs.FileTypeLink, 0},
	} {
		t.Run(tc.path, func(t *testing.T) {
			st, a := c.getattr(c.walk(root, tc.path))
			if st != nfs.NFSStatusOk {
				t.Fatalf("GETATTR: %v", st)
			}
			var want os.FileInfo
			want, err := os.Lstat(filepath.Join(im.root, tc.path))
			if err != nil {
				t.Fatal(err)
			}
			sys := want.Sys().(*syscallStat)
			got := struct {
				Mode      uint32
				Type      nfs.FileType
				UID       uint32
				Size      uint64
				Fileid    uint64
				Nlink     uint32
				Used      uint64
				MtimeSec  uint32
				MtimeNsec uint32
			}{a.FileMode, a.Type, a.UID, a.Filesize, a.Fileid, a.Nlink, a.Used, a.Mtime.Seconds, a.Mtime.Nseconds}
			wantAttr := got
			wantAttr.Mode, wantAttr.Type, wantAttr.UID = tc.mode, tc.typ, tc.uid
			wantAttr.Size, wantAttr.Fileid, wantAttr.Nlink = uint64(want.Size()), sys.Ino, uint32(sys.Nlink)
			wantAttr.Used = uint64(sys.Blocks) * 512
			wantAttr.MtimeSec, wantAttr.MtimeNsec = uint32(sys.Mtim.Sec), uint32(sys.Mtim.Nsec)
			if diff := cmp.Diff(wantAttr, got); diff != "" {
				t.Errorf("attributes (-want +got):\n%s", diff)
			}
		})
	}
}

// ACCESS and READ honour the caller's uid and gid: uid 1000 cannot read a root-only file.
func TestAccessByUID(t *testing.T) {
	t.Parallel()
	n, _, _ := serveImage(t, "v1\n")
	rootc := dialNFS(t, n.cli, addr(srvIP, 2049), 0, 0)
	userc := dialNFS(t, n.cli, addr(srvIP, 2049), 1000, 1000)
	root := rootc.mustMount(exportPath)
	secret := rootc.walk(root, "root/secret")
	userFile := rootc.walk(root, "home/user/f")
	issue := rootc.walk(root, "etc/issue")
	all := uint32(access3Read | access3Lookup | access3Modify | access3Extend | access3Delete | access3Execute)
	for _, tc := range []struct {
		name string
		c    *nfsClient
		fh   []byte
		want uint32
	}{
		{"root reads secret", rootc, secret, access3Read},
		{"user denied secret", userc, secret, 0},
		{"user reads own file", userc, userFile, access3Read},
		{"user reads world-readable", userc, issue, access3Read},
		{"root never modifies", rootc, issue, access3Read},
		{"user looks up /", userc, root, access3Read | access3Lookup},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, got := tc.c.access(tc.fh, all)
			if st != nfs.NFSStatusOk || got != tc.want {
				t.Errorf("ACCESS = %v %#x, want %#x", st, got, tc.want)
			}
		})
	}
	if st, _, _ := userc.read(secret, 0, 100); st != nfs.NFSStatusAccess {
		t.Errorf("READ of root-only file as uid 1000: %v, want NFS3ERR_ACCES", st)
	}
	if st, data, _ := rootc.read(secret, 0, 100); st != nfs.NFSStatusOk || string(data) != "root only\n" {
		t.Errorf("READ as root: %v %q", st, data)
	}
	if out, err := n.cli.Exec("nfs-cat", url("/root/secret")+"?uid=1000&gid=1000"); err == nil || strings.Contains(out, "root only") {
		t.Errorf("nfs-cat as uid 1000 read a 0600 root file: %v %q", err, out)
	}
	if got := n.cli.MustExec("nfs-cat", url("/root/secret")); got != "root only\n" {
		t.Errorf("nfs-cat as root = %q", got)
	}
}

// showmount finds the export through the portmapper.
func TestShowmount(t *testing.T) {
	t.Parallel()
	n, _, _ := serveImage(t, "v1\n")
	out := n.cli.MustExec("showmount", "-e", srvIP)
	if !strings.Contains(out, exportPath) || !strings.Contains(out, "10.41.0.0/24") {
		t.Errorf("showmount -e:\n%s", out)
	}
	out = n.cli.MustExec("rpcinfo", "-p", srvIP)
	for _, want := range []string{"100003", "100005", "2049"} {
		if !strings.Contains(out, want) {
			t.Errorf("rpcinfo -p misses %s:\n%s", want, out)
		}
	}
	if out := n.cli.MustExec("nfs-ls", "-D", "nfs://"+srvIP); !strings.Contains(out, exportPath) {
		t.Errorf("nfs-ls -D:\n%s", out)
	}
}

// READDIRPLUS pages through a big directory: every entry once, with attributes and handles.
func TestReaddirPlusPaging(t *testing.T) {
	t.Parallel()
	n, _, _ := serveImage(t, "v1\n")
	c := dialNFS(t, n.cli, addr(srvIP, 2049), 0, 0)
	dir := c.walk(c.mustMount(exportPath), "usr/share/many")
	st, ents, calls := c.readdirplus(dir, 8192)
	if st != nfs.NFSStatusOk {
		t.Fatal(st)
	}
	var names []string
	for _, e := range ents {
		if e.attr == nil || e.fh == nil || e.attr.Fileid != e.fileid {
			t.Fatalf("entry %q without attributes or handle", e.name)
		}
		names = append(names, e.name)
	}
	sort.Strings(names)
	want := []string{".", ".."}
	for i := range 1500 {
		want = append(want, "file-"+itoa(i))
	}
	sort.Strings(want)
	if diff := cmp.Diff(want, names); diff != "" {
		t.Errorf("entries (-want +got):\n%s", diff)
	}
	if calls < 10 {
		t.Errorf("1500 entries came in %d calls of 8 KiB: paging not exercised", calls)
	}
}
