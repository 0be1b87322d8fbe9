package nfsroot

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
	nfsfile "github.com/willscott/go-nfs/file"
	"golang.org/x/sys/unix"
)

// The read-only billy filesystem handed to go-nfs: reads work, every change is EROFS,
// modes keep their special bits, and symlinks resolve inside the image only.
func TestReadOnlyFilesystem(t *testing.T) {
	t.Parallel()
	im := newImage(t, "billy\n")
	// An absolute symlink: inside the image it names the image's own /etc/issue.
	if err := os.Symlink("/etc/issue", filepath.Join(im.root, "etc/abs-issue")); err != nil {
		t.Fatal(err)
	}
	h := newHandler(newFakeExports(), nil, discardLogger())
	tr, err := h.tree(Export{Path: exportPath, Root: im.root, Version: 1})
	if err != nil {
		t.Fatal(err)
	}
	fs := &rofs{t: tr, base: "."}

	f, err := fs.Open("etc/issue")
	if err != nil {
		t.Fatal(err)
	}
	data, _ := io.ReadAll(f)
	f.Close()
	if string(data) != "billy\n" {
		t.Errorf("Open etc/issue read %q", data)
	}
	for name, err := range map[string]error{
		"Create":   func() error { _, err := fs.Create("etc/new"); return err }(),
		"OpenFile": func() error { _, err := fs.OpenFile("etc/issue", os.O_RDWR, 0); return err }(),
		"Remove":   fs.Remove("etc/issue"),
		"Rename":   fs.Rename("etc/issue", "etc/x"),
		"MkdirAll": fs.MkdirAll("new/dir", 0o755),
		"Symlink":  fs.Symlink("a", "b"),
		"TempFile": func() error { _, err := fs.TempFile("tmp", "x"); return err }(),
	} {
		if !errors.Is(err, unix.EROFS) {
			t.Errorf("%s: %v, want EROFS", name, err)
		}
	}

	fi, err := fs.Lstat("usr/bin/su")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := fi.Mode(), 0o755|os.ModeSetuid; got != want {
		t.Errorf("Lstat su mode %v, want %v", got, want)
	}
	info := nfsfile.GetInfo(fi)
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(im.root, "usr/bin/su"), &st); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(&nfsfile.FileInfo{Nlink: 1, Fileid: st.Ino}, info); diff != "" {
		t.Errorf("go-nfs file info (-want +got):\n%s", diff)
	}
	if fi, err := fs.Lstat("tmp"); err != nil || fi.Mode() != os.ModeDir|os.ModeSticky|0o777 {
		t.Errorf("Lstat tmp: %v %v", fi.Mode(), err)
	}
	if fi, err := fs.Lstat("lib64"); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Errorf("Lstat lib64 does not see a symlink: %v", err)
	}
	if target, err := fs.Readlink("etc/escape-rel"); err != nil || target != "../../outside-secret" {
		t.Errorf("Readlink = %q, %v", target, err)
	}
	// Stat follows symlinks, but within the image: the absolute link finds the image's
	// issue, the escaping ones find nothing.
	if fi, err := fs.Stat("etc/abs-issue"); err != nil || fi.Size() != int64(len("billy\n")) {
		t.Errorf("Stat of an absolute symlink: %v, %v", fi, err)
	}
	for _, link := range []string{"etc/escape-rel", "etc/escape-abs", "etc/escape-dotdot"} {
		if f, err := fs.Open(link); err == nil {
			data, _ := io.ReadAll(f)
			f.Close()
			if string(data) == im.secret {
				t.Errorf("Open %s read the host file outside the image", link)
			}
		}
	}
	ents, err := fs.ReadDir("usr/bin")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if diff := cmp.Diff([]string{"su", "wall"}, names); diff != "" {
		t.Errorf("ReadDir usr/bin (-want +got):\n%s", diff)
	}
	sub, err := fs.Chroot("etc")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sub.Lstat("../usr/bin/su"); err == nil {
		t.Errorf("a chrooted filesystem reached above its root")
	}
	if fh := h.ToHandle(sub, []string{"issue"}); fh == nil {
		t.Errorf("ToHandle of a chrooted path failed")
	} else if _, path, err := h.FromHandle(fh); err != nil || cmp.Diff([]string{"etc", "issue"}, path) != "" {
		t.Errorf("FromHandle = %v, %v", path, err)
	}
	if fh := h.ToHandle(nil, nil); fh != nil {
		t.Errorf("ToHandle of no filesystem = %x", fh)
	}
}
