package aoe

import (
	"bufio"
	"bytes"
	"context"
	"crypto/md5"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/distonet/distonet/donate/pool/poolvm"
	"github.com/distonet/distonet/internal/lab"
)

// TestE2ELinuxKernelDriver boots a QEMU guest (TCG) whose initramfs loads the Linux aoe driver
// and uses our target through /dev/etherd: discovery, the size the driver derives from
// IDENTIFY, a bit-exact read, and a write checked on the host. It is slow (one TCG boot), so
// it runs only with DISTONET_E2E=1 (make e2e). The kernel is Debian's, fetched once by
// poolvm.Kernel into the shared cache, unless DISTONET_E2E_KERNEL (vmlinuz) and
// DISTONET_E2E_MODULES (lib/modules/<version> with aoe.ko and e1000.ko) name one.
func TestE2ELinuxKernelDriver(t *testing.T) {
	for _, mtu := range []int{1500, 9000} {
		t.Run(mtuName(mtu), func(t *testing.T) { kernelDriver(t, mtu, false) })
	}
	// The guest's MAC is not on the allow-list: the driver must never see the device.
	t.Run("masked", func(t *testing.T) { kernelDriver(t, 1500, true) })
}

func kernelDriver(t *testing.T, mtu int, masked bool) {
	if os.Getenv("DISTONET_E2E") != "1" {
		t.Skip("end-to-end: set DISTONET_E2E=1 (make e2e)")
	}
	kernel, modules := os.Getenv("DISTONET_E2E_KERNEL"), os.Getenv("DISTONET_E2E_MODULES")
	if kernel == "" || modules == "" {
		kernel, modules = poolvm.Kernel(t)
	}
	lab.Require(t, "qemu-system-x86_64", "cpio", "gzip", "busybox")

	const size = 64 << 20
	file := diskFile(t, size)
	content := randomBytes(t, 1<<20)
	if err := os.WriteFile(file+".head", content, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(file, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(content, 0); err != nil {
		t.Fatal(err)
	}
	f.Close()
	pattern := randomBytes(t, 1<<20)
	wait := 90
	if masked {
		wait = 20
	}
	initrd := buildInitramfs(t, modules, pattern, mtu, wait)

	ns := lab.NewNetns(t)
	br := ns.Bridge("")
	tap := ns.Tap(br)
	ns.SetMTU(tap, mtu)
	ns.SetMTU(br, mtu)
	cfg := TargetConfig{Shelf: 7, Slot: 3, Device: file}
	if masked {
		cfg.AllowMACs = []net.HardwareAddr{otherMAC}
	}
	tg := newTargetIn(t, &link{T: ns, TIf: br}, cfg)
	serveTarget(t, tg)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	q := ns.Command(ctx, "qemu-system-x86_64", "-accel", "tcg", "-m", "384", "-no-reboot",
		"-kernel", kernel, "-initrd", initrd,
		"-append", "console=ttyS0 panic=-1 no_timer_check loglevel=4",
		"-netdev", "tap,id=n0,ifname="+tap+",script=no,downscript=no",
		"-device", "e1000,netdev=n0,mac=52:54:00:a0:e0:01",
		"-display", "none", "-monitor", "none", "-serial", "stdio", "-nodefaults")
	out, err := q.CombinedOutput()
	results := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if k, v, ok := strings.Cut(line, " "); ok && strings.HasPrefix(k, "AOE-") {
			results[k] = v
		}
	}
	if _, done := results["AOE-DONE"]; !done {
		t.Fatalf("guest did not finish (qemu: %v):\n%s", err, out)
	}
	t.Logf("guest results: %v; target %+v", results, tg.Stats())
	if masked {
		if results["AOE-NODEV"] != "yes" {
			t.Errorf("a guest outside the allow-list used the device: %v", results)
		}
		if st := tg.Stats(); st.Dropped == 0 || st.Reads != 0 || st.Writes != 0 {
			t.Errorf("target %+v: want only dropped frames", st)
		}
		return
	}
	if got, want := results["AOE-FRAME"], fmt.Sprint(SectorsPerFrame(mtu)*SectorSize); got != want {
		t.Errorf("kernel uses %s-byte data frames, want %s", got, want)
	}
	if got, want := results["AOE-SIZE"], fmt.Sprint(size/SectorSize); got != want {
		t.Errorf("kernel sees %s sectors, want %s", got, want)
	}
	got, _, _ := strings.Cut(results["AOE-MD5"], " ")
	if want := fmt.Sprintf("%x", md5.Sum(content)); got != want {
		t.Errorf("kernel read md5 %q, want %s", got, want)
	}
	if results["AOE-WRITE"] != "0" {
		t.Errorf("guest write failed: %q\n%s", results["AOE-WRITE"], out)
	}
	written := make([]byte, len(pattern))
	f, err = os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.ReadAt(written, 8<<20); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(written, pattern) {
		t.Errorf("what the kernel wrote through /dev/etherd is not on the backing file")
	}
	if st := tg.Stats(); st.Writes == 0 || st.Syncs == 0 {
		t.Errorf("target stats %+v: want durable writes", st)
	}
}

const guestInit = `#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
insmod /e1000.ko
insmod /aoe.ko
ip link set eth0 mtu @MTU@
ip link set eth0 up
dev=/dev/etherd/e7.3
for i in $(seq 1 @WAIT@); do
	[ -b $dev ] && break
	[ -e /dev/etherd/discover ] && echo > /dev/etherd/discover
	sleep 1
done
if [ -b $dev ]; then
	echo "AOE-SIZE $(cat '/sys/block/etherd!e7.3/size')"
	echo "AOE-FRAME $(cat '/sys/block/etherd!e7.3/payload' 2>/dev/null || echo none)"
	echo "AOE-MD5 $(dd if=$dev bs=4096 count=256 2>/dev/null | md5sum)"
	dd if=/pattern of=$dev bs=4096 seek=2048 conv=fsync 2>/dev/null
	echo "AOE-WRITE $?"
	sync
else
	echo "AOE-NODEV yes"
fi
echo "AOE-DONE ok"
poweroff -f
`

func buildInitramfs(t *testing.T, modules string, pattern []byte, mtu, wait int) string {
	t.Helper()
	root := t.TempDir()
	for _, d := range []string{"bin", "proc", "sys", "dev"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	bb, err := exec.LookPath("busybox")
	if err != nil {
		t.Fatal(err)
	}
	copyFile(t, bb, filepath.Join(root, "bin", "busybox"), 0o755)
	for name, rel := range map[string]string{
		"aoe.ko":   "kernel/drivers/block/aoe/aoe.ko",
		"e1000.ko": "kernel/drivers/net/ethernet/intel/e1000/e1000.ko",
	} {
		src := filepath.Join(modules, rel)
		if _, err := os.Stat(src); err != nil {
			if _, xzErr := os.Stat(src + ".xz"); xzErr == nil {
				t.Fatalf("%s is xz-compressed: decompress the module tree first", src)
			}
			t.Fatal(err)
		}
		copyFile(t, src, filepath.Join(root, name), 0o644)
	}
	if err := os.WriteFile(filepath.Join(root, "init"), []byte(strings.NewReplacer("@MTU@", fmt.Sprint(mtu), "@WAIT@", fmt.Sprint(wait)).Replace(guestInit)), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "pattern"), pattern, 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "initrd.gz")
	cmd := exec.Command("sh", "-c", "find . | cpio -o -H newc --quiet | gzip -1 > "+out)
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build initramfs: %v: %s", err, b)
	}
	return out
}

func copyFile(t *testing.T, src, dst string, mode os.FileMode) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, mode); err != nil {
		t.Fatal(err)
	}
}
