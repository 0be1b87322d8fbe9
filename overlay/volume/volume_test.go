package volume

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// blockCount reads the ext4 block count and block size with dumpe2fs.
func fsBytes(t *testing.T, path string) int64 {
	t.Helper()
	out, err := exec.Command("/usr/sbin/dumpe2fs", "-h", path).CombinedOutput()
	if err != nil {
		t.Fatalf("dumpe2fs: %v: %s", err, out)
	}
	var count, size int64
	for _, l := range strings.Split(string(out), "\n") {
		k, v, ok := strings.Cut(l, ":")
		if !ok {
			continue
		}
		switch strings.TrimSpace(k) {
		case "Block count":
			count, _ = strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		case "Block size":
			size, _ = strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		}
	}
	return count * size
}

func fsckClean(t *testing.T, path string) {
	t.Helper()
	if out, err := exec.Command("/usr/sbin/e2fsck", "-f", "-n", path).CombinedOutput(); err != nil {
		t.Fatalf("e2fsck -n %s: %v: %s", path, err, out)
	}
}

func TestLifecycle(t *testing.T) {
	for _, tool := range []string{MkfsExt4, E2fsck, Resize2fs, "/usr/sbin/dumpe2fs", "/usr/sbin/debugfs"} {
		if _, err := os.Stat(tool); err != nil {
			t.Fatalf("needs e2fsprogs: %v", err)
		}
	}
	dir := t.TempDir()
	p := filepath.Join(dir, "nodes", "n1.img")
	const size = 64 << 20
	if err := Create(p, size); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if st.Size() != size {
		t.Errorf("size %d, want %d", st.Size(), size)
	}
	if used := st.Sys().(*syscall.Stat_t).Blocks * 512; used >= size/2 {
		t.Errorf("volume not sparse: %d bytes allocated of %d", used, size)
	}
	fsckClean(t, p)
	if got := fsBytes(t, p); got != size {
		t.Errorf("file system spans %d bytes, want %d", got, size)
	}
	if err := Create(p, size); !errors.Is(err, ErrExists) {
		t.Errorf("second Create: %v, want ErrExists", err)
	}

	// Put a file in it, then grow: the file stays, the file system spans the new size.
	marker := filepath.Join(dir, "marker")
	if err := os.WriteFile(marker, []byte("kept"), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("/usr/sbin/debugfs", "-w", "-R", "write "+marker+" marker", p).CombinedOutput(); err != nil {
		t.Fatalf("debugfs write: %v: %s", err, out)
	}
	if err := Resize(p, 2*size); err != nil {
		t.Fatal(err)
	}
	fsckClean(t, p)
	if got := fsBytes(t, p); got != 2*size {
		t.Errorf("after resize the file system spans %d bytes, want %d", got, 2*size)
	}
	if out, err := exec.Command("/usr/sbin/debugfs", "-R", "cat marker", p).CombinedOutput(); err != nil || !strings.Contains(string(out), "kept") {
		t.Errorf("file lost by resize: %v: %s", err, out)
	}
	if err := Resize(p, size); err == nil {
		t.Error("shrinking was accepted")
	}

	// Reset: same size, empty file system.
	if err := Reset(p); err != nil {
		t.Fatal(err)
	}
	fsckClean(t, p)
	if got, _ := Size(p); got != 2*size {
		t.Errorf("size after reset %d, want %d", got, 2*size)
	}
	if out, _ := exec.Command("/usr/sbin/debugfs", "-R", "stat marker", p).CombinedOutput(); !strings.Contains(string(out), "not found") {
		t.Errorf("marker survived reset: %s", out)
	}
	leftovers, _ := filepath.Glob(filepath.Join(dir, "nodes", ".*"))
	if len(leftovers) != 0 {
		t.Errorf("temporary files left: %v", leftovers)
	}

	if err := Remove(p); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("volume still there after Remove: %v", err)
	}
	if err := Remove(p); err != nil {
		t.Errorf("second Remove: %v", err)
	}
}

func TestBadSizes(t *testing.T) {
	p := filepath.Join(t.TempDir(), "v.img")
	for _, size := range []int64{0, -1, MinSize - 4096, MinSize + 1} {
		if err := Create(p, size); err == nil {
			t.Errorf("Create with size %d accepted", size)
		}
	}
}
