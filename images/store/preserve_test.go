package store

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestImportPreservesRootfs checks what a root filesystem needs survives the copy: hard
// links, device nodes, FIFOs, owners, extended attributes (file capabilities live there) and
// modification times.
func TestImportPreservesRootfs(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("needs root: device nodes and owners")
	}
	src := fakeRootfs(t, "preserve")
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.WriteFile(filepath.Join(src, "usr/bin/a"), []byte("same inode"), 0o755))
	must(os.Link(filepath.Join(src, "usr/bin/a"), filepath.Join(src, "usr/bin/b")))
	must(os.MkdirAll(filepath.Join(src, "dev"), 0o755))
	must(unix.Mknod(filepath.Join(src, "dev/null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))))
	must(unix.Mkfifo(filepath.Join(src, "dev/initctl"), 0o600))
	must(os.Chown(filepath.Join(src, "usr/bin/a"), 1000, 1001))
	must(unix.Setxattr(filepath.Join(src, "usr/bin/a"), "user.distonet", []byte("kept"), 0))
	old := time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)
	must(os.Chtimes(filepath.Join(src, "sbin/init"), old, old))

	s := Store{Dir: t.TempDir()}
	v, err := s.Import(context.Background(), "keep", ImportOptions{Rootfs: src, Binary: fakeBinary(t)})
	if err != nil {
		t.Fatal(err)
	}
	root := v.Rootfs()
	var a, b, null unix.Stat_t
	must(unix.Lstat(filepath.Join(root, "usr/bin/a"), &a))
	must(unix.Lstat(filepath.Join(root, "usr/bin/b"), &b))
	if a.Ino != b.Ino || a.Nlink != 2 {
		t.Errorf("hard link lost: inodes %d %d, links %d", a.Ino, b.Ino, a.Nlink)
	}
	if a.Uid != 1000 || a.Gid != 1001 {
		t.Errorf("owner %d:%d, want 1000:1001", a.Uid, a.Gid)
	}
	must(unix.Lstat(filepath.Join(root, "dev/null"), &null))
	if null.Mode&unix.S_IFMT != unix.S_IFCHR || unix.Major(null.Rdev) != 1 || unix.Minor(null.Rdev) != 3 {
		t.Errorf("dev/null mode %o rdev %d:%d", null.Mode, unix.Major(null.Rdev), unix.Minor(null.Rdev))
	}
	if fi, err := os.Lstat(filepath.Join(root, "dev/initctl")); err != nil || fi.Mode()&os.ModeNamedPipe == 0 {
		t.Errorf("FIFO lost: %v %v", fi, err)
	}
	buf := make([]byte, 16)
	if n, err := unix.Getxattr(filepath.Join(root, "usr/bin/a"), "user.distonet", buf); err != nil || string(buf[:n]) != "kept" {
		t.Errorf("xattr lost: %q %v", buf[:n], err)
	}
	if fi, err := os.Stat(filepath.Join(root, "sbin/init")); err != nil || !fi.ModTime().Equal(old) {
		t.Errorf("mtime %v, want %v (%v)", fi.ModTime(), old, err)
	}
	if target, err := os.Readlink(filepath.Join(root, "usr/bin/init-link")); err != nil || target != "../sbin/init" {
		t.Errorf("symlink -> %q, %v", target, err)
	}
}

// TestCrashLeftoversIgnored: a temporary directory an interrupted import left behind is
// neither a version nor current.
func TestCrashLeftoversIgnored(t *testing.T) {
	s := Store{Dir: t.TempDir()}
	if _, err := s.Import(context.Background(), "demo", ImportOptions{Rootfs: fakeRootfs(t, "one"), Binary: fakeBinary(t)}); err != nil {
		t.Fatal(err)
	}
	// What a kill -9 during the copy of v2 leaves.
	if err := os.MkdirAll(filepath.Join(s.Dir, "demo", ".v2.tmp-123", "rootfs"), 0o755); err != nil {
		t.Fatal(err)
	}
	vs, err := s.Versions("demo")
	if err != nil || len(vs) != 1 || vs[0].Version != 1 {
		t.Fatalf("versions %+v, %v; want only v1", vs, err)
	}
	cur, err := s.Current("demo")
	if err != nil || cur.Version != 1 {
		t.Fatalf("current %+v, %v; want v1", cur, err)
	}
	v2, err := s.Import(context.Background(), "demo", ImportOptions{Rootfs: fakeRootfs(t, "two"), Binary: fakeBinary(t)})
	if err != nil || v2.Version != 2 {
		t.Fatalf("next import %+v, %v; want v2", v2.Manifest, err)
	}
}
