package nfsroot

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	nfs "github.com/willscott/go-nfs"
	"github.com/willscott/go-nfs-client/nfs/xdr"
	"golang.org/x/sys/unix"

	"github.com/distonet/distonet/nfsroot/oncrpc"
)

func TestFileHandle(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		h    fileHandle
	}{
		{"zero", fileHandle{}},
		{"typical", fileHandle{ExportID: exportID("/images/debian"), Version: 3, Gen: 0xabcdef01, Ino: 1234567}},
		{"max", fileHandle{^uint64(0), ^uint64(0), ^uint32(0), ^uint64(0)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, _ := tc.h.MarshalBinary()
			if len(b) != handleLen || len(b) > nfs.FHSize {
				t.Fatalf("handle of %d bytes", len(b))
			}
			var got fileHandle
			if err := got.UnmarshalBinary(b); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.h, got); diff != "" {
				t.Errorf("round trip (-want +got):\n%s", diff)
			}
		})
	}
	good, _ := fileHandle{Ino: 5}.MarshalBinary()
	for _, tc := range []struct {
		name string
		in   []byte
		want string
	}{
		{"short", good[:31], "length 31"},
		{"long", append(good, 0), "length 33"},
		{"format", append([]byte{2}, good[1:]...), "format 2"},
		{"reserved", append([]byte{1, 0, 1}, good[3:]...), "reserved"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var h fileHandle
			if err := h.UnmarshalBinary(tc.in); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want %q", err, tc.want)
			}
		})
	}
}

func FuzzFileHandle(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		var h fileHandle
		if err := h.UnmarshalBinary(b); err != nil {
			return
		}
		out, _ := h.MarshalBinary()
		if !bytes.Equal(out, b) {
			t.Fatalf("re-encoding %x differs from %x", out, b)
		}
	})
}

func TestParseDirents(t *testing.T) {
	t.Parallel()
	buf := appendDirent(nil, 2, unix.DT_DIR, ".")
	buf = appendDirent(buf, 1, unix.DT_DIR, "..")
	buf = appendDirent(buf, 77, unix.DT_REG, "busybox")
	buf = appendDirent(buf, 1<<40, unix.DT_LNK, strings.Repeat("n", 255))
	type ent struct {
		Ino  uint64
		Typ  uint8
		Name string
	}
	var got []ent
	if err := parseDirents(buf, func(ino uint64, typ uint8, name []byte) { got = append(got, ent{ino, typ, string(name)}) }); err != nil {
		t.Fatal(err)
	}
	want := []ent{{2, unix.DT_DIR, "."}, {1, unix.DT_DIR, ".."}, {77, unix.DT_REG, "busybox"}, {1 << 40, unix.DT_LNK, strings.Repeat("n", 255)}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("entries (-want +got):\n%s", diff)
	}
	for _, tc := range []struct {
		name string
		in   []byte
		want string
	}{
		{"short header", buf[:10], "header needs"},
		{"reclen zero", func() []byte { b := bytes.Clone(buf[:24]); b[16], b[17] = 0, 0; return b }(), "d_reclen 0"},
		{"reclen past end", buf[:20], "d_reclen 24 out of range"},
		{"no NUL", func() []byte {
			b := appendDirent(nil, 1, 0, "abcd")
			for i := 19; i < len(b); i++ {
				b[i] = 'x'
			}
			return b
		}(), "NUL"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := parseDirents(tc.in, func(uint64, uint8, []byte) {})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want %q", err, tc.want)
			}
		})
	}
}

func FuzzParseDirents(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		var rebuilt []byte
		err := parseDirents(b, func(ino uint64, typ uint8, name []byte) {
			if bytes.IndexByte(name, 0) >= 0 {
				t.Fatalf("name %q holds a NUL", name)
			}
			rebuilt = appendDirent(rebuilt, ino, typ, string(name))
		})
		if err != nil {
			return
		}
		n := 0
		if err := parseDirents(rebuilt, func(uint64, uint8, []byte) { n++ }); err != nil {
			t.Fatalf("re-encoded entries do not parse: %v", err)
		}
	})
}

// The hand-written fattr3 encoder writes what go-nfs's reflective XDR writer writes.
func TestFattrMatchesGoNFS(t *testing.T) {
	t.Parallel()
	a := nfs.FileAttribute{
		Type: nfs.FileTypeRegular, FileMode: 0o4755, Nlink: 2, UID: 1000, GID: 100, Filesize: 1 << 33, Used: 4096,
		SpecData: [2]uint32{8, 1}, FSID: 0x1122334455667788, Fileid: 99,
		Atime: nfs.FileTime{Seconds: 1, Nseconds: 2}, Mtime: nfs.FileTime{Seconds: 3, Nseconds: 4}, Ctime: nfs.FileTime{Seconds: 5, Nseconds: 6},
	}
	var want bytes.Buffer
	if err := xdr.Write(&want, a); err != nil {
		t.Fatal(err)
	}
	got := appendFattr(nil, &a)
	if !bytes.Equal(got, want.Bytes()) || len(got) != fattrSize {
		t.Errorf("appendFattr = %x\nxdr.Write   = %x", got, want.Bytes())
	}
}

// The index maps every inode of a tree back to a path that names that inode.
func TestTreeIndex(t *testing.T) {
	t.Parallel()
	im := newImage(t, "x\n")
	if err := os.Link(filepath.Join(im.root, "etc/issue"), filepath.Join(im.root, "etc/issue.net")); err != nil {
		t.Fatal(err)
	}
	tr, err := buildTree(Export{Path: "/images/t", Root: im.root, Version: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.close()
	seen := 0
	err = filepath.Walk(im.root, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		st := info.Sys().(*syscallStat)
		i, ok := tr.lookupIno(st.Ino)
		if !ok {
			return fmt.Errorf("%s (inode %d) not indexed", p, st.Ino)
		}
		var got unix.Stat_t
		if got, err = tr.lstat(tr.pathOf(i)); err != nil || got.Ino != st.Ino {
			return fmt.Errorf("%s: index path %q gives inode %d, %v", p, tr.pathOf(i), got.Ino, err)
		}
		seen++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := seen - 1; len(tr.inos) != want { // etc/issue.net is a second name of etc/issue
		t.Errorf("index holds %d inodes, walk saw %d names for %d inodes", len(tr.inos), seen, want)
	}
	if p := tr.pathOf(tr.rootIdx); p != "." {
		t.Errorf("root path %q", p)
	}
	if tr.parentOf(tr.rootIdx) != tr.rootIdx {
		t.Errorf("the root's parent is not the root")
	}
}

// Any message thrown at the dispatcher gets an answer or none, never a panic.
func FuzzHandle(f *testing.F) {
	im := newImage(f, "fuzz\n")
	ex := newFakeExports()
	ex.publish(Export{Path: exportPath, Root: im.root, Version: 1})
	s, err := NewServer(Config{AllowedNets: allowedNets(f, "127.0.0.0/8")}, ex, discardLogger())
	if err != nil {
		f.Fatal(err)
	}
	tr, err := s.h.tree(Export{Path: exportPath, Root: im.root, Version: 1})
	if err != nil {
		f.Fatal(err)
	}
	root := tr.handle(tr.rootIno)
	for _, seed := range seedCalls(root) {
		f.Add(seed)
	}
	remote := &netTCPAddr
	f.Fuzz(func(t *testing.T, b []byte) {
		out, tail := s.handle(b, remote, true, false, make([]byte, 0, 4096))
		s.releaseTail(tail)
		if out == nil {
			return
		}
		var r oncrpc.Reply
		if err := r.UnmarshalBinary(out[4:]); err != nil {
			t.Fatalf("reply does not parse: %v", err)
		}
	})
}
