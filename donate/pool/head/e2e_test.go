package head

// The real-md test: md has no module on the host, so a QEMU guest (Debian's kernel, TCG) runs
// this package's own test binary as the pool head, against four donors that are vblade
// processes exporting files over AoE on a bridge inside a test namespace. It runs with
// DISTONET_E2E=1 (make e2e); the guest half is guestMain in e2e_guest_test.go.

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/distonet/distonet/internal/lab"
)

// guestEnv makes the test binary run the guest scenario instead of tests.
const guestEnv = "DISTONET_POOL_GUEST"

func TestMain(m *testing.M) {
	if os.Getenv(guestEnv) != "" {
		os.Exit(guestMain())
	}
	if os.Geteuid() == 0 {
		_ = lab.Sweep()
	}
	os.Exit(m.Run())
}

// guestModules are loaded in this order (dependencies resolved from modules.dep); crc32c
// first: libcrc32c asks the crypto API for it at load time.
var guestModules = []string{"crc32c_generic", "virtio_pci", "virtio_net", "raid456", "ext4", "aoe"}

// guestBinaries are copied with the shared libraries ldd lists.
var guestBinaries = []string{"/sbin/mdadm", "/sbin/mke2fs", "/sbin/blkid", "/bin/bash"}

func TestE2EPoolHeadOverAoE(t *testing.T) {
	if os.Getenv("DISTONET_E2E") == "" {
		t.Skip("real md runs in a QEMU guest: set DISTONET_E2E=1 (make e2e)")
	}
	lab.Require(t, "qemu-system-x86_64", "vblade", "mdadm", "cpio", "gzip", "apt-get", "apt-cache", "dpkg", "depmod", "ldd", "busybox")
	dir := t.TempDir()
	kernel, modDir := guestKernel(t)
	initrd := buildGuestInitrd(t, dir, modDir)

	ns := lab.NewNetns(t)
	br := ns.Bridge("")
	tap := ns.Tap(br)
	donors := map[int]*exec.Cmd{}
	startDonor := func(shelf int) {
		img := filepath.Join(dir, fmt.Sprintf("donor%d.img", shelf))
		if _, err := os.Stat(img); err != nil {
			if err := os.WriteFile(img, nil, 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(img, 96<<20); err != nil {
				t.Fatal(err)
			}
		}
		donors[shelf] = ns.Start("vblade", fmt.Sprint(shelf), "0", br, img)
	}
	killDonor := func(shelf int) {
		if c := donors[shelf]; c != nil && c.Process != nil {
			_ = syscall.Kill(-c.Process.Pid, syscall.SIGKILL)
			_ = c.Wait()
		}
	}
	for s := 1; s <= 4; s++ {
		startDonor(s)
	}

	ctlPath := filepath.Join(dir, "ctl.sock")
	console := filepath.Join(dir, "console.log")
	qemu := ns.Start("qemu-system-x86_64", "-accel", "tcg", "-m", "768", "-smp", "1", "-display", "none", "-no-reboot",
		"-kernel", kernel, "-initrd", initrd,
		"-append", "console=ttyS0 quiet no_timer_check panic=-1",
		"-serial", "file:"+console,
		"-chardev", "socket,id=ctl,path="+ctlPath+",server=on,wait=off",
		"-device", "isa-serial,chardev=ctl",
		"-netdev", "tap,id=n0,ifname="+tap+",script=no,downscript=no", "-device", "virtio-net-pci,netdev=n0",
		"-nic", "none")
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(console)
			t.Logf("guest console:\n%s", b)
		}
	})

	var conn net.Conn
	for i := 0; i < 200; i++ { // QEMU creates the socket within a second or two
		c, err := net.Dial("unix", ctlPath)
		if err == nil {
			conn = c
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if conn == nil {
		t.Fatalf("guest control socket %s never appeared", ctlPath)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(40 * time.Minute))

	sc := bufio.NewScanner(conn)
	result := ""
	for result == "" && sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case strings.HasPrefix(line, "NEED "):
			var verb string
			var shelf int
			if _, err := fmt.Sscanf(line, "NEED %s %d", &verb, &shelf); err != nil {
				t.Fatalf("guest asked %q: %v", line, err)
			}
			switch verb {
			case "kill":
				killDonor(shelf)
			case "start":
				startDonor(shelf)
			default:
				t.Fatalf("guest asked %q", line)
			}
			t.Logf("host: %s %d done", verb, shelf)
			if _, err := conn.Write([]byte("DONE\n")); err != nil {
				t.Fatal(err)
			}
		case strings.HasPrefix(line, "STEP "), strings.HasPrefix(line, "CHECK "):
			t.Log("guest: " + line)
		case strings.HasPrefix(line, "RESULT "):
			result = strings.TrimPrefix(line, "RESULT ")
		}
	}
	if result != "ok" {
		t.Errorf("guest scenario: %q (scan error %v)", result, sc.Err())
	}
	done := make(chan error, 1)
	go func() { done <- qemu.Wait() }()
	select {
	case <-done:
	case <-time.After(2 * time.Minute):
		t.Error("guest did not power off")
	}
}

// guestKernel returns Debian's kernel and its module tree (depmod'ed), downloaded once into
// the shared cache ($DISTONET_CACHE, default /var/cache/distonet/debian).
func guestKernel(t *testing.T) (kernel, modDir string) {
	t.Helper()
	cache := os.Getenv("DISTONET_CACHE")
	if cache == "" {
		cache = "/var/cache/distonet/debian"
	}
	out, err := exec.Command("apt-cache", "depends", "linux-image-amd64").Output()
	if err != nil {
		t.Fatalf("apt-cache depends linux-image-amd64: %v (run apt-get update)", err)
	}
	var pkg string
	for _, l := range strings.Split(string(out), "\n") {
		if f := strings.Fields(l); len(f) == 2 && f[0] == "Depends:" && strings.HasPrefix(f[1], "linux-image-") {
			pkg = f[1]
		}
	}
	if pkg == "" {
		t.Fatalf("linux-image-amd64 depends on no kernel package:\n%s", out)
	}
	tree := filepath.Join(cache, "pool-e2e", pkg)
	version := strings.TrimPrefix(pkg, "linux-image-")
	kernel = filepath.Join(tree, "boot", "vmlinuz-"+version)
	modDir = filepath.Join(tree, "lib", "modules", version)
	if _, err := os.Stat(filepath.Join(modDir, "modules.dep")); err == nil {
		return kernel, modDir
	}
	if err := os.MkdirAll(cache, 0o755); err != nil {
		t.Fatal(err)
	}
	debs, _ := filepath.Glob(filepath.Join(cache, pkg+"_*.deb"))
	if len(debs) == 0 {
		cmd := exec.Command("apt-get", "download", "-q", pkg)
		cmd.Dir = cache
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("apt-get download %s: %v: %s", pkg, err, out)
		}
		debs, _ = filepath.Glob(filepath.Join(cache, pkg+"_*.deb"))
	}
	if len(debs) == 0 {
		t.Fatalf("no %s .deb in %s", pkg, cache)
	}
	tmp := tree + ".tmp"
	_ = os.RemoveAll(tmp)
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, argv := range [][]string{{"dpkg", "-x", debs[0], tmp}, {"depmod", "-b", tmp, version}} {
		if out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v: %s", argv, err, out)
		}
	}
	if err := os.Rename(tmp, tree); err != nil {
		t.Fatal(err)
	}
	return kernel, modDir
}

const guestInit = `#!/bin/sh
export PATH=/sbin:/bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
for m in $(cat /modules/order); do insmod /modules/$m || echo "insmod $m failed"; done
ip link set lo up; ip link set eth0 up
echo 200000 > /proc/sys/dev/raid/speed_limit_min
` + guestEnv + `=1 /pool.test
echo "guest scenario exited $?"
sync
poweroff -f
`

// buildGuestInitrd packs busybox, mdadm and friends with their libraries, aoetools, the
// modules and this test binary (rebuilt static) into a gzip'd newc cpio.
func buildGuestInitrd(t *testing.T, dir, modDir string) string {
	t.Helper()
	root := filepath.Join(dir, "root")
	for _, d := range []string{"bin", "sbin", "lib", "lib64", "proc", "sys", "dev", "tmp", "mnt", "run", "etc", "modules"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	copyFile := func(src, dst string, mode os.FileMode) {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst, b, mode); err != nil {
			t.Fatal(err)
		}
	}
	bb, err := exec.LookPath("busybox")
	if err != nil {
		t.Fatal(err)
	}
	copyFile(bb, filepath.Join(root, "bin", "busybox"), 0o755)
	for _, a := range []string{"sh", "mount", "umount", "insmod", "sleep", "cat", "echo", "ls", "mkdir", "sync", "grep", "poweroff",
		"sed", "awk", "cut", "tr", "basename", "test", "expr", "sort", "head", "ip", "sha256sum", "dd", "wc", "find", "dirname", "printf"} {
		if err := os.Symlink("busybox", filepath.Join(root, "bin", a)); err != nil {
			t.Fatal(err)
		}
	}
	for _, b := range guestBinaries {
		copyFile(b, filepath.Join(root, b), 0o755)
		out, err := exec.Command("ldd", b).Output()
		if err != nil {
			t.Fatalf("ldd %s: %v", b, err)
		}
		for _, f := range strings.Fields(string(out)) {
			if strings.HasPrefix(f, "/") {
				copyFile(f, filepath.Join(root, f), 0o755)
			}
		}
	}
	if _, err := os.Stat("/etc/mke2fs.conf"); err == nil {
		copyFile("/etc/mke2fs.conf", filepath.Join(root, "etc", "mke2fs.conf"), 0o644)
	}
	for _, s := range []string{"aoe-discover", "aoe-flush", "aoe-stat"} {
		p, err := exec.LookPath(s)
		if err != nil {
			t.Fatal(err)
		}
		copyFile(p, filepath.Join(root, "sbin", s), 0o755)
	}
	// Modules in dependency order.
	dep, err := os.ReadFile(filepath.Join(modDir, "modules.dep"))
	if err != nil {
		t.Fatal(err)
	}
	deps := map[string][]string{}
	byName := map[string]string{}
	for _, l := range strings.Split(string(dep), "\n") {
		k, v, ok := strings.Cut(l, ":")
		if !ok {
			continue
		}
		deps[k] = strings.Fields(v)
		name := strings.TrimSuffix(filepath.Base(k), ".ko")
		byName[strings.ReplaceAll(name, "-", "_")] = k
	}
	var order []string
	seen := map[string]bool{}
	var add func(string)
	add = func(p string) {
		if seen[p] {
			return
		}
		seen[p] = true
		// modules.dep lists the deepest dependency last.
		for i := len(deps[p]) - 1; i >= 0; i-- {
			add(deps[p][i])
		}
		order = append(order, p)
	}
	for _, m := range guestModules {
		p, ok := byName[m]
		if !ok {
			t.Fatalf("module %s not in %s", m, modDir)
		}
		add(p)
	}
	var list bytes.Buffer
	for _, p := range order {
		copyFile(filepath.Join(modDir, p), filepath.Join(root, "modules", filepath.Base(p)), 0o644)
		fmt.Fprintln(&list, filepath.Base(p))
	}
	if err := os.WriteFile(filepath.Join(root, "modules", "order"), list.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "init"), []byte(guestInit), 0o755); err != nil {
		t.Fatal(err)
	}
	// This package's test binary, static, is the guest's pool head.
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the guest binary is built with go: %v", err)
	}
	build := exec.Command(gobin, "test", "-c", "-o", filepath.Join(root, "pool.test"), ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build guest binary: %v: %s", err, out)
	}
	initrd := filepath.Join(dir, "initrd.gz")
	pack := exec.Command("sh", "-c", "find . | cpio -o -H newc --quiet | gzip -1 > "+initrd)
	pack.Dir = root
	if out, err := pack.CombinedOutput(); err != nil {
		t.Fatalf("pack initramfs: %v: %s", err, out)
	}
	return initrd
}
