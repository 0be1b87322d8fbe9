package store

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// fakeRootfs makes a tiny rootfs with a kernel file and an (empty) module tree.
func fakeRootfs(t *testing.T, marker string) string {
	t.Helper()
	dir := t.TempDir()
	for _, d := range []string{"boot", "lib/modules/6.1.0-test", "sbin", "usr/bin"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	write := func(p, s string, mode os.FileMode) {
		if err := os.WriteFile(filepath.Join(dir, p), []byte(s), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(filepath.Join(dir, p), mode); err != nil {
			t.Fatal(err)
		}
	}
	write("boot/vmlinuz-6.1.0-test", "kernel "+marker, 0o644)
	write("lib/modules/6.1.0-test/modules.dep", "", 0o644)
	write("lib/modules/6.1.0-test/modules.builtin", "", 0o644)
	write("sbin/init", "#!/bin/sh\n", 0o755)
	write("usr/bin/passwd", marker, 0o4755|os.ModeSetuid)
	if err := os.Symlink("../sbin/init", filepath.Join(dir, "usr/bin/init-link")); err != nil {
		t.Fatal(err)
	}
	return dir
}

func fakeBinary(t *testing.T) string {
	p := filepath.Join(t.TempDir(), "distonet")
	if err := os.WriteFile(p, []byte("\x7fELF not really"), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestImportVersionsAndCurrent(t *testing.T) {
	s := Store{Dir: t.TempDir()}
	bin := fakeBinary(t)
	v1, err := s.Import(context.Background(), "demo", ImportOptions{Rootfs: fakeRootfs(t, "one"), Binary: bin})
	if err != nil {
		t.Fatal(err)
	}
	if v1.Version != 1 || v1.KernelVersion != "6.1.0-test" {
		t.Fatalf("v1 = %+v", v1.Manifest)
	}
	st, err := os.Stat(filepath.Join(v1.Rootfs(), "usr/bin/passwd"))
	if err != nil || st.Mode()&os.ModeSetuid == 0 {
		t.Fatalf("setuid bit lost: %v %v", st.Mode(), err)
	}
	if l, err := os.Readlink(filepath.Join(v1.Rootfs(), "usr/bin/init-link")); err != nil || l != "../sbin/init" {
		t.Fatalf("symlink not kept: %q %v", l, err)
	}
	for _, f := range []string{v1.Kernel(), v1.Initrd()} {
		if _, err := os.Stat(f); err != nil {
			t.Fatal(err)
		}
	}

	v2, err := s.Import(context.Background(), "demo", ImportOptions{Rootfs: fakeRootfs(t, "two"), Binary: bin})
	if err != nil {
		t.Fatal(err)
	}
	cur, err := s.Current("demo")
	if err != nil || cur.Version != 2 || v2.Version != 2 {
		t.Fatalf("current = %+v, %v", cur.Manifest, err)
	}
	// The old version stays readable for nodes booted on it.
	old, err := s.Get("demo", 1)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(filepath.Join(old.Rootfs(), "usr/bin/passwd"))
	if string(raw) != "one" {
		t.Fatalf("v1 content changed: %q", raw)
	}
	if err := s.Remove("demo", 2); err == nil {
		t.Fatal("removed the current version")
	}
	if err := s.SetCurrent("demo", 1); err != nil {
		t.Fatal(err)
	}
	if err := s.Remove("demo", 2); err != nil {
		t.Fatal(err)
	}
	if names := s.Names(); len(names) != 1 || names[0] != "demo" {
		t.Fatalf("names = %v", names)
	}
}

func TestFailedImportPublishesNothing(t *testing.T) {
	s := Store{Dir: t.TempDir()}
	root := fakeRootfs(t, "x")
	os.Remove(filepath.Join(root, "lib/modules/6.1.0-test/modules.dep"))
	_, err := s.Import(context.Background(), "demo", ImportOptions{Rootfs: root, Binary: fakeBinary(t)})
	if err == nil {
		t.Fatal("import without modules.dep succeeded")
	}
	if _, err := s.Current("demo"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a failed import left a current version: %v", err)
	}
	ents, _ := os.ReadDir(filepath.Join(s.Dir, "demo"))
	for _, e := range ents {
		if e.IsDir() {
			t.Errorf("left behind: %s", e.Name())
		}
	}
}

func TestBadNames(t *testing.T) {
	s := Store{Dir: t.TempDir()}
	for _, n := range []string{"", "../etc", "Demo", "a/b", ".hidden"} {
		if _, err := s.Import(context.Background(), n, ImportOptions{Rootfs: t.TempDir()}); err == nil {
			t.Errorf("name %q accepted", n)
		}
	}
}
