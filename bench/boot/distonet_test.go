package boot

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/distonet/distonet/images/qemu"
	"github.com/distonet/distonet/images/qemu/classic"
	"github.com/distonet/distonet/internal/demolab"
	"github.com/distonet/distonet/internal/lab"
)

// BenchmarkBootDiStoNetVsClassic PXE-boots the same demo image through QEMU's iPXE ROM
// against `distonet serve` and against the classic stack (dnsmasq, HTTP, nfs-ganesha, tgt),
// in the same run, and prints seconds from QEMU start to the image's init (first boot) and
// from the reboot command to it (reboot), stage by stage, with the ratio classic/DiStoNet.
func BenchmarkBootDiStoNetVsClassic(b *testing.B) {
	if os.Getenv("DISTONET_BENCH") != "1" {
		b.Skip("QEMU boot benchmark: set DISTONET_BENCH=1 (make bench)")
	}
	lab.Require(b, "qemu-system-x86_64")
	dir := b.TempDir()
	bin := filepath.Join(dir, "distonet")
	build := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", bin, "github.com/distonet/distonet/cmd/distonet")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		b.Fatalf("build distonet: %v: %s", err, out)
	}
	for i := 0; i < b.N; i++ {
		dFirst, dAgain := bootDiStoNet(b, bin, dir, i)
		demo := classic.BuildDemo(b, dir, "")
		cFirst, cAgain := bootOnce(b, demo, dir, "pxe", i)
		fmt.Printf("boot to the image's init: first boot DiStoNet %.1fs vs classic %.1fs (ratio classic/DiStoNet %.2f); reboot %.1fs vs %.1fs (%.2f)\n",
			dFirst.Seconds(), cFirst.Seconds(), cFirst.Seconds()/dFirst.Seconds(), dAgain.Seconds(), cAgain.Seconds(), cAgain.Seconds()/dAgain.Seconds())
		b.ReportMetric(dFirst.Seconds(), "s-first-boot")
		b.ReportMetric(dAgain.Seconds(), "s-reboot")
		b.ReportMetric(cFirst.Seconds()/dFirst.Seconds(), "x-classic-first")
		b.ReportMetric(cAgain.Seconds()/dAgain.Seconds(), "x-classic-reboot")
	}
}

func bootDiStoNet(b *testing.B, bin, dir string, i int) (first, again time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	rootfs, err := demolab.Rootfs(ctx, os.Stderr)
	if err != nil {
		b.Fatal(err)
	}
	labDir := filepath.Join(dir, fmt.Sprintf("distonet-%d", i))
	if err := os.MkdirAll(labDir, 0o755); err != nil {
		b.Fatal(err)
	}
	d := demolab.New(b, bin, labDir, os.Stderr)
	if err := d.ImportImage("demo", rootfs); err != nil {
		b.Fatal(err)
	}
	const mac = "52:54:00:b0:07:01"
	if _, err := d.CLI("node", "add", "node1", "--mac", mac, "--image", "demo"); err != nil {
		b.Fatal(err)
	}
	if err := d.Start(); err != nil {
		b.Fatal(err)
	}
	vm, err := d.BootNode(ctx, "node1", mac, qemu.Options{})
	if err != nil {
		b.Fatal(err)
	}
	ready := regexp.MustCompile(`DISTONET-IMAGE-INIT hostname=node1 root=overlay\r?\n`)
	if _, err := vm.WaitFor(ready, 8*time.Minute); err != nil {
		b.Fatalf("%v\nconsole:\n%s", err, vm.Output())
	}
	time.Sleep(time.Second)
	rebootAt := vm.Elapsed()
	if err := vm.Send("sync; reboot -f\n"); err != nil {
		b.Fatal(err)
	}
	if _, err := vm.WaitFor(ready, 8*time.Minute); err != nil {
		b.Fatalf("reboot: %v\nconsole:\n%s", err, vm.Output())
	}
	lines := vm.Lines()
	s1, s2 := Stages(lines, 0), Stages(lines, rebootAt)
	Print(os.Stdout, fmt.Sprintf("DiStoNet, pxe boot #%d, first boot (from QEMU start):", i+1), s1, 0)
	Print(os.Stdout, fmt.Sprintf("DiStoNet, pxe boot #%d, reboot (from the reboot command):", i+1), s2, rebootAt)
	d.Stop()
	return Total(s1, 0), Total(s2, rebootAt)
}
