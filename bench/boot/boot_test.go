package boot

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/distonet/distonet/images/qemu"
	"github.com/distonet/distonet/images/qemu/classic"
	"github.com/distonet/distonet/internal/bootconfig"
	"github.com/distonet/distonet/internal/lab"
)

func TestMain(m *testing.M) {
	_ = lab.Sweep()
	os.Exit(m.Run())
}

func TestStages(t *testing.T) {
	lines := []qemu.Line{
		{At: 1 * time.Second, Text: "iPXE 1.21.1+ -- Open Source Network Boot Firmware"},
		{At: 2 * time.Second, Text: "[    0.000000] Linux version 6.1.0-56-amd64"},
		{At: 4 * time.Second, Text: "distonet-init: init: distonet node init starting"},
		{At: 4 * time.Second, Text: "distonet-init: nfs: FAILED (try 1): connection refused"},
		{At: 5 * time.Second, Text: "distonet-init: nfs: mounted"},
		{At: 6 * time.Second, Text: "DISTONET-IMAGE-INIT hostname=n root=overlay"},
		{At: 10 * time.Second, Text: "[    0.000000] Linux version 6.1.0-56-amd64"},
		{At: 13 * time.Second, Text: "DISTONET-IMAGE-INIT hostname=n root=overlay"},
	}
	first := Stages(lines, 0)
	if len(first) != 5 || first[4].Name != "image init" || Total(first, 0) != 6*time.Second {
		t.Errorf("first boot stages %+v", first)
	}
	second := Stages(lines, 9*time.Second)
	if len(second) != 2 || Total(second, 9*time.Second) != 4*time.Second {
		t.Errorf("second boot stages %+v", second)
	}
}

// BenchmarkBootClassic boots the demo image against the classic stack — by direct kernel
// boot, and by network boot through QEMU's iPXE ROM with dnsmasq and an HTTP server — and
// reports the seconds to the image's init on a first boot and on a reboot, stage by stage.
// It runs with DISTONET_BENCH=1 (make bench).
func BenchmarkBootClassic(b *testing.B) {
	if os.Getenv("DISTONET_BENCH") != "1" {
		b.Skip("QEMU boot benchmark: set DISTONET_BENCH=1 (make bench)")
	}
	lab.Require(b, "qemu-system-x86_64")
	dir := b.TempDir()
	demo := classic.BuildDemo(b, dir, "")
	// direct-quiet adds the kernel's "quiet": under TCG every console byte costs, and the
	// kernel's boot messages are most of them.
	for _, mode := range []string{"direct", "direct-quiet", "pxe"} {
		b.Run(mode, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				first, again := bootOnce(b, demo, dir, mode, i)
				b.ReportMetric(first.Seconds(), "s-first-boot")
				b.ReportMetric(again.Seconds(), "s-reboot")
			}
		})
	}
}

func bootOnce(b *testing.B, demo classic.Demo, dir, mode string, i int) (first, again time.Duration) {
	vol := filepath.Join(dir, fmt.Sprintf("vol-%s-%d.img", mode, i))
	classic.FormatVolume(b, vol, 256<<20)
	const token = "bench-token"
	subnet := "10.208.0"
	url := "http://" + subnet + ".1:8080"
	mac := "52:54:00:20:80:01"
	cmdline := fmt.Sprintf("console=ttyS0 no_timer_check %s=%s %s=%s", bootconfig.ArgServer, url, bootconfig.ArgToken, token)
	if mode == "direct-quiet" {
		cmdline += " quiet"
	}
	script := filepath.Join(dir, "boot.ipxe")
	ipxe := fmt.Sprintf("#!ipxe\nkernel %s/vmlinuz %s BOOTIF=01-${net0/mac:hexhyp}\ninitrd %s/initramfs.img\nboot\n", url, cmdline, url)
	if err := os.WriteFile(script, []byte(ipxe), 0o644); err != nil {
		b.Fatal(err)
	}
	o := classic.Options{Subnet: subnet, Rootfs: demo.Rootfs, Volume: vol, CHAPUser: "node1", CHAPSecret: "bench-secret-0123", Token: token}
	if mode == "pxe" {
		o.Files = map[string]string{"/vmlinuz": demo.Kernel, "/initramfs.img": demo.Initrd, "/boot.ipxe": script}
		o.IPXEBoot = url + "/boot.ipxe"
	}
	st := classic.Start(b, o)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	qo := qemu.Options{Netns: st.NS.Name(), Tap: st.Tap(), MAC: mac}
	if mode == "pxe" {
		qo.NetBoot = true
	} else {
		qo.Kernel, qo.Initrd, qo.Append = demo.Kernel, demo.Initrd, cmdline+" BOOTIF=01-"+strings.ReplaceAll(mac, ":", "-")
	}
	vm, err := qemu.Start(ctx, qo)
	if err != nil {
		b.Fatal(err)
	}
	defer vm.Close()
	ready := regexp.MustCompile(`DISTONET-IMAGE-INIT hostname=node1 root=overlay`)
	if _, err := vm.WaitFor(ready, 8*time.Minute); err != nil {
		b.Fatalf("%v\nconsole:\n%s", err, vm.Output())
	}
	// Let the ready line's end reach the console log before marking the reboot, so the
	// second boot's stages are not taken from the first boot's last line.
	time.Sleep(time.Second)
	rebootAt := vm.Elapsed()
	// The image's shell is on the console; a forced reboot restarts the same machine.
	if err := vm.Send("sync; reboot -f\n"); err != nil {
		b.Fatal(err)
	}
	if _, err := vm.WaitFor(ready, 8*time.Minute); err != nil {
		b.Fatalf("reboot: %v\nconsole:\n%s", err, vm.Output())
	}
	time.Sleep(time.Second) // let the last line end
	lines := vm.Lines()
	// Keep the console for whoever reads the figures.
	logFile := filepath.Join(os.TempDir(), "distonet-bench-boot-"+mode+".console")
	_ = os.WriteFile(logFile, []byte(vm.Output()), 0o644)
	fmt.Printf("console of the %s run: %s\n", mode, logFile)
	s1 := Stages(lines, 0)
	s2 := Stages(lines, rebootAt)
	Print(os.Stdout, fmt.Sprintf("classic stack, %s boot #%d, first boot (from QEMU start):", mode, i+1), s1, 0)
	Print(os.Stdout, fmt.Sprintf("classic stack, %s boot #%d, reboot (from the reboot command):", mode, i+1), s2, rebootAt)
	first, again = Total(s1, 0), Total(s2, rebootAt)
	// The node init prints the kernel's own uptime when it starts: the kernel's share.
	up := regexp.MustCompile(`node init starting \(kernel up ([0-9.]+)s\)`).FindAllStringSubmatch(vm.Output(), -1)
	var ups []string
	for _, m := range up {
		ups = append(ups, m[1]+"s")
	}
	fmt.Printf("classic stack, %s: first boot %.1fs, reboot %.1fs to the image's init (kernel uptime at init start: %s)\n",
		mode, first.Seconds(), again.Seconds(), strings.Join(ups, ", "))
	return first, again
}
