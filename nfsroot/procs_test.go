package nfsroot

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	nfs "github.com/willscott/go-nfs"

	"github.com/distonet/distonet/nfsroot/oncrpc"
)

// loopbackServer serves an image on 127.0.0.1 for tests of single procedures.
func loopbackServer(t *testing.T) (*nfsClient, *image) {
	t.Helper()
	im := newImage(t, "procs\n")
	ex := newFakeExports()
	ex.publish(Export{Path: exportPath, Root: im.root, Version: 1})
	s := serveLoopback(t, Config{}, ex)
	return dialNFS(t, nil, s.Addr().String(), 0, 0), im
}

// READDIR pages through a big directory with small replies: every name once, fileids
// equal to the inodes.
func TestReaddirPaging(t *testing.T) {
	t.Parallel()
	c, im := loopbackServer(t)
	dir := c.walk(c.mustMount(exportPath), "usr/share/many")
	st, ents, calls := c.readdir(dir, 1024)
	if st != nfs.NFSStatusOk {
		t.Fatal(st)
	}
	got := map[string]uint64{}
	for _, e := range ents {
		if _, dup := got[e.name]; dup {
			t.Fatalf("%s listed twice", e.name)
		}
		got[e.name] = e.fileid
	}
	des, err := os.ReadDir(filepath.Join(im.root, "usr/share/many"))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]uint64{}
	for _, de := range des {
		info, _ := de.Info()
		want[de.Name()] = info.Sys().(*syscallStat).Ino
	}
	delete(got, ".")
	delete(got, "..")
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("entries (-want +got):\n%s", diff)
	}
	if calls < 20 {
		t.Errorf("%d entries in %d calls of 1 KiB", len(ents), calls)
	}
	if st, _, _ := c.readdir(dir, 40); st != nfs.NFSStatusTooSmall {
		t.Errorf("READDIR with room for no entry: %v, want NFS3ERR_TOOSMALL", st)
	}
	file := c.walk(c.mustMount(exportPath), "etc/issue")
	if st, _, _ := c.readdir(file, 4096); st != nfs.NFSStatusNotDir {
		t.Errorf("READDIR of a file: %v", st)
	}
}

// MOUNT accepts the export and directories below it, and nothing else.
func TestMountPaths(t *testing.T) {
	t.Parallel()
	c, im := loopbackServer(t)
	for _, tc := range []struct {
		path string
		want nfs.MountStatus
		dir  string // the directory the handle must name
	}{
		{exportPath, nfs.MountStatusOk, "."},
		{exportPath + "/", nfs.MountStatusOk, "."},
		{exportPath + "/etc", nfs.MountStatusOk, "etc"},
		{exportPath + "/usr/share/many", nfs.MountStatusOk, "usr/share/many"},
		{exportPath + "/etc/issue", nfs.MountStatusErrNotDir, ""},
		{exportPath + "/lib64", nfs.MountStatusErrNotDir, ""}, // a symlink is not followed
		{exportPath + "/../test", nfs.MountStatusErrNoEnt, ""},
		{exportPath + "/etc/../etc", nfs.MountStatusErrNoEnt, ""},
		{"/images", nfs.MountStatusErrNoEnt, ""},
		{"/", nfs.MountStatusErrNoEnt, ""},
		{"", nfs.MountStatusErrNoEnt, ""},
	} {
		t.Run(tc.path, func(t *testing.T) {
			st, fh, err := c.mount(tc.path)
			if err != nil || st != tc.want {
				t.Fatalf("MOUNT %q = %d, %v; want %d", tc.path, st, err, tc.want)
			}
			if tc.dir == "" {
				return
			}
			info, err := os.Lstat(filepath.Join(im.root, tc.dir))
			if err != nil {
				t.Fatal(err)
			}
			if st, a := c.getattr(fh); st != nfs.NFSStatusOk || a.Fileid != info.Sys().(*syscallStat).Ino || a.Type != nfs.FileTypeDirectory {
				t.Errorf("handle names %+v, want directory inode %d", a, info.Sys().(*syscallStat).Ino)
			}
		})
	}
}

// FSINFO announces 1 MiB transfers; PATHCONF and FSSTAT answer.
func TestFSInfo(t *testing.T) {
	t.Parallel()
	c, _ := loopbackServer(t)
	root := c.mustMount(exportPath)
	d := c.mustCall(uint32(nfs.NFSProcedureFSInfo), oncrpc.AppendOpaque(nil, root))
	if st := nfs.NFSStatus(d.Uint32("status")); st != nfs.NFSStatusOk {
		t.Fatal(st)
	}
	decodePostOp(d)
	var got []uint32
	for range 7 {
		got = append(got, d.Uint32("fsinfo"))
	}
	if diff := cmp.Diff([]uint32{1 << 20, 1 << 20, 4096, 1 << 20, 1 << 20, 4096, 64 << 10}, got); diff != "" {
		t.Errorf("rtmax rtpref rtmult wtmax wtpref wtmult dtpref (-want +got):\n%s", diff)
	}
	d.Uint64("maxfilesize")
	d.Uint32("sec")
	d.Uint32("nsec")
	if p := d.Uint32("properties"); p != fsfPropertiesRO || d.Err != nil {
		t.Errorf("properties %#x, %v", p, d.Err)
	}
	d = c.mustCall(uint32(nfs.NFSProcedurePathConf), oncrpc.AppendOpaque(nil, root))
	if st := nfs.NFSStatus(d.Uint32("status")); st != nfs.NFSStatusOk {
		t.Fatal(st)
	}
	decodePostOp(d)
	d.Uint32("linkmax")
	if n := d.Uint32("name_max"); n != 255 {
		t.Errorf("name_max %d", n)
	}
	d = c.mustCall(uint32(nfs.NFSProcedureFSStat), oncrpc.AppendOpaque(nil, root))
	if st := nfs.NFSStatus(d.Uint32("status")); st != nfs.NFSStatusOk {
		t.Fatal(st)
	}
	decodePostOp(d)
	if total := d.Uint64("tbytes"); total == 0 {
		t.Errorf("FSSTAT reports no space")
	}
	// A handle that decodes but names nothing is stale, not a crash.
	bogus, _ := fileHandle{ExportID: exportID(exportPath), Version: 99, Ino: 1}.MarshalBinary()
	if st, _ := c.getattr(bogus); st != nfs.NFSStatusStale {
		t.Errorf("GETATTR of a handle into an unknown version: %v", st)
	}
	if st, _ := c.getattr([]byte("short")); st != nfs.NFSStatusStale {
		t.Errorf("GETATTR of a malformed handle: %v", st)
	}
}

// Many clients at once (each on its own connection) read the same and different files:
// every read is whole and right.
func TestConcurrentClients(t *testing.T) {
	t.Parallel()
	c, im := loopbackServer(t)
	root := c.mustMount(exportPath)
	files := []string{"bin/busybox", "lib/libc.so.6", "etc/issue", "usr/bin/su"}
	errs := make(chan error, 16)
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cl := dialNFS(t, nil, c.remote, 0, 0)
			for k := range 3 {
				name := files[(i+k)%len(files)]
				fh := cl.walk(root, name)
				st, data := cl.readAll(fh, uint32(4096<<(i%9)))
				if st != nfs.NFSStatusOk || sum(data) != im.sums[name] {
					errs <- fmt.Errorf("client %d: %s: %v, sha %s", i, name, st, sum(data))
					return
				}
				if st, ents, _ := cl.readdirplus(cl.walk(root, "usr/share/many"), 16384); st != nfs.NFSStatusOk || len(ents) != 1502 {
					errs <- fmt.Errorf("client %d: readdirplus %v, %d entries", i, st, len(ents))
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
