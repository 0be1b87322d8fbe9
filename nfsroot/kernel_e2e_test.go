//go:build e2e

package nfsroot

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/distonet/distonet/internal/lab"
)

// Kernel-side test (go test -tags e2e ./nfsroot -run Kernel): a QEMU guest running a
// Debian kernel mounts the export with the node init's options (vers=3, port=2049,
// mountport=2049, nolock, no portmapper), reads through the Linux NFS client, keeps a file
// open across a server restart and an image update, and checks permissions as uid 1000.

// guestModules are loaded in this order (dependencies first).
var guestModules = []string{
	"virtio_ring", "virtio", "virtio_pci_modern_dev", "virtio_pci_legacy_dev", "virtio_pci",
	"failover", "net_failover", "virtio_net",
	"sunrpc", "grace", "lockd", "nfs_acl", "netfs", "fscache", "nfs", "nfsv3",
}

// kernelDeb finds a Debian kernel package: in this test's cache, in the appliance's shared
// download cache, or fetched with apt-get download.
func kernelDeb(t *testing.T) string {
	t.Helper()
	cache := "/var/cache/distonet/nfsroot-e2e"
	for _, pattern := range []string{cache + "/linux-image-*-amd64_*.deb", "/var/cache/distonet/debian/linux-image-*-amd64_*.deb"} {
		if m, _ := filepath.Glob(pattern); len(m) > 0 {
			return m[0]
		}
	}
	if err := os.MkdirAll(cache, 0o755); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("apt-cache", "depends", "linux-image-amd64").Output()
	if err != nil {
		t.Fatalf("apt-cache depends linux-image-amd64: %v", err)
	}
	name := regexp.MustCompile(`Depends: (linux-image-\S+)`).FindSubmatch(out)
	if name == nil {
		t.Fatalf("no kernel package in:\n%s", out)
	}
	cmd := exec.Command("apt-get", "download", string(name[1]))
	cmd.Dir = cache
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("apt-get download %s: %v\n%s", name[1], err, out)
	}
	m, _ := filepath.Glob(cache + "/linux-image-*-amd64_*.deb")
	if len(m) == 0 {
		t.Fatal("kernel package not downloaded")
	}
	return m[0]
}

func run(t *testing.T, dir, name string, args ...string) {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
}

// guestImage builds the kernel and an initramfs whose init is guestcheck.
func guestImage(t *testing.T, checks []string) (kernel, initrd string) {
	t.Helper()
	dir := t.TempDir()
	deb := kernelDeb(t)
	ex := filepath.Join(dir, "deb")
	if err := os.MkdirAll(ex, 0o755); err != nil {
		t.Fatal(err)
	}
	run(t, ex, "sh", "-c", fmt.Sprintf("dpkg-deb --fsys-tarfile %s | tar -x --wildcards './boot/vmlinuz-*' './lib/modules/*/kernel/drivers/net/*.ko' './lib/modules/*/kernel/drivers/virtio/*.ko' './lib/modules/*/kernel/fs/*' './lib/modules/*/kernel/net/core/*.ko' './lib/modules/*/kernel/net/sunrpc/*'", deb))
	kernels, _ := filepath.Glob(filepath.Join(ex, "boot/vmlinuz-*"))
	if len(kernels) != 1 {
		t.Fatalf("kernels in %s: %v", deb, kernels)
	}
	root := filepath.Join(dir, "initramfs")
	for _, d := range []string{"bin", "dev", "lib/modules", "proc", "sys", "mnt"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, m := range guestModules {
		found, _ := filepath.Glob(filepath.Join(ex, "lib/modules/*/kernel/*/"+m+".ko"))
		more, _ := filepath.Glob(filepath.Join(ex, "lib/modules/*/kernel/*/*/"+m+".ko"))
		more2, _ := filepath.Glob(filepath.Join(ex, "lib/modules/*/kernel/*/*/*/"+m+".ko"))
		found = append(append(found, more...), more2...)
		if len(found) == 0 {
			t.Fatalf("module %s not in %s", m, deb)
		}
		run(t, root, "cp", found[0], "lib/modules/")
	}
	if err := os.WriteFile(filepath.Join(root, "modules.order"), []byte(strings.Join(guestModules, "\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "checks"), []byte(strings.Join(checks, "\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	bb, err := exec.LookPath("busybox")
	if err != nil {
		t.Fatal(err)
	}
	run(t, root, "cp", bb, "bin/busybox")
	build := exec.Command("go", "build", "-o", filepath.Join(root, "init"), "./internal/guestcheck")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build guestcheck: %v\n%s", err, out)
	}
	run(t, root, "mknod", "dev/console", "c", "5", "1")
	initrd = filepath.Join(dir, "initrd.cpio")
	run(t, root, "sh", "-c", "find . | cpio -o -H newc --quiet > "+initrd)
	return kernels[0], initrd
}

// waitConsole waits for a line of the guest's console matching want.
func waitConsole(t *testing.T, path, want string, timeout time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		b, _ := os.ReadFile(path)
		if strings.Contains(string(b), "\nFAIL ") {
			t.Fatalf("guest failed:\n%s", b)
		}
		if strings.Contains(string(b), want) {
			return string(b)
		}
		time.Sleep(time.Second)
	}
	b, _ := os.ReadFile(path)
	t.Fatalf("no %q on the guest console after %v:\n%s", want, timeout, b)
	return ""
}

func TestKernelClient(t *testing.T) {
	t.Parallel()
	lab.Require(t, "qemu-system-x86_64", "dpkg-deb", "cpio", "busybox", "go")
	ns := lab.NewNetns(t)
	br := ns.Bridge("10.41.9.1/24")
	tap := ns.Tap(br)

	v1 := newImage(t, "version one\n")
	ex := newFakeExports()
	ex.publish(Export{Path: exportPath, Root: v1.root, Version: 1})
	stop := startServer(t, ns, ex)

	checks := []string{"etc/issue", "bin/busybox", "usr/bin/su", "usr/bin/wall", "tmp", "root/secret", "lib64", "etc/motd"}
	kernel, initrd := guestImage(t, checks)
	console := filepath.Join(t.TempDir(), "console.log")
	startDaemon(t, ns, "qemu-system-x86_64", "-machine", "pc", "-accel", "tcg", "-m", "512", "-smp", "1",
		"-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
		"-serial", "file:"+console, "-kernel", kernel, "-initrd", initrd,
		"-append", "console=ttyS0 no_timer_check panic=-1 quiet",
		"-netdev", "tap,id=n0,ifname="+tap+",script=no,downscript=no", "-device", "virtio-net-pci,netdev=n0")

	waitConsole(t, console, "PHASE1 DONE", 6*time.Minute)
	// Restart the server and publish version 2 while the guest holds v1 handles.
	stop()
	v2 := newImage(t, "version two\n")
	ex.publish(Export{Path: exportPath, Root: v2.root, Version: 2})
	time.Sleep(2 * time.Second)
	startServer(t, ns, ex)
	out := waitConsole(t, console, "\nDONE", 4*time.Minute)
	t.Logf("guest console:\n%s", out)

	lines := map[string]string{}
	for _, l := range strings.Split(out, "\n") {
		l = strings.TrimSpace(l)
		if k, v, ok := strings.Cut(l, " "); ok {
			if k == "STAT" || k == "AFTER" || k == "UID1000" {
				k2, v2, _ := strings.Cut(v, " ")
				k, v = k+" "+k2, v2
			}
			lines[k] = v
		}
	}
	want := map[string]string{
		"STAT usr/bin/su":   "file 4755 0 ",
		"STAT usr/bin/wall": "file 2755 0 ",
		"STAT tmp":          "dir 1777 0 ",
		"STAT root/secret":  "file 600 0 ",
		"STAT lib64":        "link 777 0 ",
		"CREATE":            "EROFS",
		"REMOVE":            "EROFS",
		"MKDIR":             "EROFS",
		"AFTER open-fd":     `"version one\n"`,
		"AFTER path":        `"version one\n"`,
		"AFTER busybox":     v1.sums["bin/busybox"],
		"NEWMOUNT":          `"version two\n"`,
		"UID1000 secret":    "EACCES",
		"UID1000 own":       "ok",
		"WALK":              fmt.Sprint(countFiles(t, v1.root)),
	}
	for k, w := range want {
		if got := lines[k]; !strings.HasPrefix(got, w) {
			t.Errorf("%s: guest says %q, want %q...", k, got, w)
		}
	}
	for _, p := range []string{"etc/issue", "bin/busybox"} {
		if got := lines["STAT "+p]; !strings.Contains(got, "sha="+v1.sums[p]) {
			t.Errorf("%s through the kernel: %q, want sha %s", p, got, v1.sums[p])
		}
	}
	if !strings.Contains(lines["STAT lib64"], "target=lib") {
		t.Errorf("lib64 is not served as a symlink to lib: %q", lines["STAT lib64"])
	}
	if got := lines["ESCAPE"]; got == sum([]byte(v1.secret)) {
		t.Errorf("the kernel read the host file outside the export through a symlink")
	}
}
