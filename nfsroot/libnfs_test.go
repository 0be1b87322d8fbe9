package nfsroot

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const exportPath = "/images/test"

func url(path string) string { return "nfs://" + srvIP + exportPath + path }

// libnfs lists the tree and reads files whose checksums match the disk.
func TestLibnfsReadsImage(t *testing.T) {
	t.Parallel()
	n := newTestNet(t)
	im := newImage(t, "DiStoNet v1\n")
	ex := newFakeExports()
	ex.publish(Export{Path: exportPath, Root: im.root, Version: 1})
	startServer(t, n.srv, ex)

	out := n.cli.MustExec("nfs-ls", "-R", url(""))
	for _, want := range []string{"etc/issue", "bin/busybox", "usr/share/many/file-1499", "lib64", "usr/bin/su"} {
		if !strings.Contains(out, want) {
			t.Errorf("nfs-ls -R misses %s", want)
		}
	}
	if got := strings.Count(out, "usr/share/many/file-"); got != 1500 {
		t.Errorf("nfs-ls -R lists %d files of the 1500-entry directory", got)
	}
	if got := n.cli.MustExec("nfs-cat", url("/etc/issue")); got != "DiStoNet v1\n" {
		t.Errorf("nfs-cat etc/issue = %q", got)
	}
	dst := t.TempDir()
	for _, name := range []string{"bin/busybox", "lib/libc.so.6", "etc/hostname"} {
		local := filepath.Join(dst, filepath.Base(name))
		n.cli.MustExec("nfs-cp", url("/"+name), local)
		data, err := os.ReadFile(local)
		if err != nil {
			t.Fatal(err)
		}
		if got := sum(data); got != im.sums[name] {
			t.Errorf("nfs-cp %s: sha256 %s, want %s", name, got, im.sums[name])
		}
	}
}
