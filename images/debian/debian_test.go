package debian

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestBuild(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("needs root: dpkg -x must keep owners and modes")
	}
	for _, tool := range []string{"apt-get", "apt-cache", "dpkg", "depmod"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("needs %s: %v", tool, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	dir := filepath.Join(t.TempDir(), "rootfs")
	var progress bytes.Buffer
	if err := Build(ctx, Options{Dir: dir, CacheDir: CacheDirForTests(), Hostname: "demo", Progress: &progress}); err != nil {
		t.Fatalf("%v\n%s", err, progress.String())
	}
	t.Logf("progress:\n%s", progress.String())
	for _, want := range []string{"linux-image-amd64 is linux-image-", "unpacked busybox-static", "depmod", "applets linked"} {
		if !strings.Contains(progress.String(), want) {
			t.Errorf("progress lacks %q", want)
		}
	}
	kernels, _ := filepath.Glob(filepath.Join(dir, "boot/vmlinuz-*"))
	deps, _ := filepath.Glob(filepath.Join(dir, "lib/modules/*/modules.dep"))
	if len(kernels) != 1 || len(deps) != 1 {
		t.Fatalf("kernels %v, modules.dep %v: want one each", kernels, deps)
	}
	dep, err := os.ReadFile(deps[0])
	if err != nil || !strings.Contains(string(dep), "iscsi_tcp.ko:") || !strings.Contains(string(dep), "overlay.ko:") {
		t.Errorf("modules.dep lacks iscsi_tcp/overlay (%v)", err)
	}
	if target, err := os.Readlink(filepath.Join(dir, "bin/sh")); err != nil || target != "/bin/busybox" {
		t.Errorf("bin/sh -> %q, %v", target, err)
	}
	init, err := os.ReadFile(filepath.Join(dir, "sbin/init"))
	if err != nil || !strings.Contains(string(init), InitMarker) {
		t.Fatalf("sbin/init: %v", err)
	}
	if fi, err := os.Stat(filepath.Join(dir, "sbin/init")); err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("sbin/init mode: %v %v", fi, err)
	}
	// The script must at least parse with the image's own shell.
	if out, err := exec.Command(filepath.Join(dir, "bin/busybox"), "sh", "-n", filepath.Join(dir, "sbin/init")).CombinedOutput(); err != nil {
		t.Errorf("sh -n sbin/init: %v: %s", err, out)
	}
	if err := Build(ctx, Options{Dir: dir, CacheDir: CacheDirForTests()}); err == nil {
		t.Error("Build into a non-empty directory succeeded")
	}
}

// The rootfs cache key changes with the package lists and with every skeleton file.
func TestFingerprintCoversPackagesAndSkeleton(t *testing.T) {
	base := Fingerprint([]string{"mdadm"}, "")
	if base != Fingerprint([]string{"mdadm"}, "distonet-demo") {
		t.Error("the default hostname is not the one Build uses")
	}
	if base == Fingerprint([]string{"mdadm", "bash"}, "") {
		t.Error("a package added does not change the fingerprint")
	}
	if base == Fingerprint([]string{"mdadm"}, "other") {
		t.Error("a skeleton file (hostname) changed does not change the fingerprint")
	}
}
