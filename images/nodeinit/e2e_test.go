package nodeinit

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

// e2e tests boot a QEMU guest; they run with DISTONET_E2E=1 (make e2e).
func needE2E(t *testing.T) {
	t.Helper()
	if os.Getenv("DISTONET_E2E") != "1" {
		t.Skip("QEMU boot test: set DISTONET_E2E=1 (make e2e)")
	}
	lab.Require(t, "qemu-system-x86_64")
}

type consoleLog struct{ t *testing.T }

func (c consoleLog) Write(p []byte) (int, error) {
	if os.Getenv("DISTONET_E2E_CONSOLE") == "1" {
		os.Stderr.Write(p)
	}
	return len(p), nil
}

// TestE2EBootClassicStack boots the Debian kernel with the node init against dnsmasq,
// nfs-ganesha and tgt, checks the image's init runs on overlay(NFS + iSCSI) with the node's
// hostname, writes a file, reboots, and finds the file again. Then it kills and restarts
// tgtd under the running node: I/O must pause, the relogin watcher must log in again, and
// the write must complete without an I/O error. The node's 2-minute DHCP lease must be renewed.
func TestE2EBootClassicStack(t *testing.T) {
	needE2E(t)
	dir := t.TempDir()
	demo := classic.BuildDemo(t, dir, "")
	vol := filepath.Join(dir, "node1.img")
	classic.FormatVolume(t, vol, 256<<20)
	const token = "tok-e2e-1"
	st := classic.Start(t, classic.Options{Subnet: "10.206.0", Rootfs: demo.Rootfs, Volume: vol,
		CHAPUser: "node1", CHAPSecret: "chap-secret-0123", Token: token, LeaseTime: "2m"})
	tap := st.Tap()
	const mac = "52:54:00:20:60:01"
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	vm, err := qemu.Start(ctx, qemu.Options{Netns: st.NS.Name(), Kernel: demo.Kernel, Initrd: demo.Initrd,
		Append: fmt.Sprintf("console=ttyS0 no_timer_check panic=10 %s=%s %s=%s %s=01-%s",
			bootconfig.ArgServer, st.URL, bootconfig.ArgToken, token, bootconfig.ArgMAC, strings.ReplaceAll(mac, ":", "-")),
		Tap: tap, MAC: mac, Serial: consoleLog{t}})
	if err != nil {
		t.Fatal(err)
	}
	defer vm.Close()
	defer func() {
		if t.Failed() {
			t.Logf("console:\n%s", vm.Output())
		}
	}()
	// Up to the line's end: a match on a partly received line would cut the words short.
	ready := regexp.MustCompile(`DISTONET-IMAGE-INIT hostname=(\S+) root=(\S+)\r?\n`)
	m, err := vm.WaitFor(ready, 6*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("first boot: image init after %s", vm.Elapsed().Round(time.Second))
	if m[1] != "node1" || m[2] != "overlay" {
		t.Fatalf("image init reports hostname=%s root=%s, want node1 and overlay", m[1], m[2])
	}
	run := func(cmd, marker string) string {
		t.Helper()
		if err := vm.Send(cmd + "; echo " + marker + "-$((20+22))\n"); err != nil {
			t.Fatal(err)
		}
		m, err := vm.WaitFor(regexp.MustCompile(`(?s)(.*)`+marker+`-42`), 2*time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		return m[1]
	}
	mounts := run(`awk '$2=="/" || $2 ~ /distonet/ {print "MNT", $1, $2, $3}' /proc/mounts`, "MOUNTS")
	for _, want := range []string{
		"MNT overlay / overlay",
		"MNT 10.206.0.1:/images/demo /run/distonet/lower nfs",
		"/run/distonet/upper ext4",
	} {
		if !strings.Contains(mounts, want) {
			t.Errorf("mounts lack %q:\n%s", want, mounts)
		}
	}
	run("echo persisted-by-$(hostname) > /root/persist.txt; sync", "WROTE")
	if err := vm.Send("reboot -f\n"); err != nil {
		t.Fatal(err)
	}
	if _, err = vm.WaitFor(ready, 6*time.Minute); err != nil {
		t.Fatal(err)
	}
	t.Logf("second boot: image init after %s", vm.Elapsed().Round(time.Second))
	got := run("cat /root/persist.txt", "READ")
	if !strings.Contains(got, "persisted-by-node1") {
		t.Errorf("after reboot /root/persist.txt reads %q, want persisted-by-node1", got)
	}
	// Appliance restart: kill the target, start a write, bring the target back.
	st.StopTgt(t)
	if err := vm.Send("echo during-outage > /root/outage.txt; sync; echo SYNCED-$((20+22))\n"); err != nil {
		t.Fatal(err)
	}
	if _, err := vm.WaitFor(regexp.MustCompile(`distonet-iscsid: session \d+: connection lost`), time.Minute); err != nil {
		t.Errorf("relogin watcher did not notice the lost connection: %v", err)
	}
	time.Sleep(5 * time.Second)
	if strings.Contains(vm.Output(), "SYNCED-42") {
		t.Errorf("sync finished while the target was down: the write did not wait for the volume")
	}
	st.StartTgt(t)
	if _, err := vm.WaitFor(regexp.MustCompile(`distonet-iscsid: session \d+: logged in again`), 2*time.Minute); err != nil {
		t.Fatalf("no relogin after the target came back: %v", err)
	}
	if _, err := vm.WaitFor(regexp.MustCompile(`SYNCED-42`), 2*time.Minute); err != nil {
		t.Fatalf("sync did not complete after relogin: %v", err)
	}
	if got := run("cat /root/outage.txt; dmesg | grep -c 'I/O error'", "OUTAGE"); !strings.Contains(got, "during-outage") {
		t.Errorf("file written across the outage reads %q", got)
	} else if lines := strings.Fields(got); len(lines) > 0 && lines[len(lines)-1] != "0" {
		t.Errorf("kernel logged I/O errors across the outage:\n%s", got)
	}

	// With a 2-minute lease the node's keeper renews after a minute.
	renewed := regexp.MustCompile(`distonet-iscsid: dhcp: renewed 10\.206\.0\.\d+ on eth0 for 2m0s`)
	for deadline := time.Now().Add(2 * time.Minute); !renewed.MatchString(vm.Output()); {
		if time.Now().After(deadline) {
			t.Errorf("the DHCP lease was not renewed within 2 minutes")
			break
		}
		time.Sleep(time.Second)
	}

	stages := map[string]bool{}
	for _, ev := range st.Events() {
		if ev.OK {
			stages[ev.Stage] = true
		}
	}
	for _, s := range []string{bootconfig.StageKernel, bootconfig.StageNFS, bootconfig.StageISCSI, bootconfig.StageOverlay, bootconfig.StageReady} {
		if !stages[s] {
			t.Errorf("no successful %q event reached the server (got %+v)", s, st.Events())
		}
	}
	if n := st.ConfigFetches(); n != 2 {
		t.Errorf("boot config fetched %d times, want 2 (one per boot)", n)
	}
}

// TestE2EBootWrongCHAP boots with a CHAP secret the target does not accept: the console must
// say why, and the init must keep retrying rather than hang silently. It also covers the
// other NIC path: an e1000 (the legacy PXE machine) and no BOOTIF=, so the init must load
// the e1000 driver and pick the NIC that has a link.
func TestE2EBootWrongCHAP(t *testing.T) {
	needE2E(t)
	dir := t.TempDir()
	demo := classic.BuildDemo(t, dir, "")
	vol := filepath.Join(dir, "node1.img")
	classic.FormatVolume(t, vol, 64<<20)
	const token = "tok-e2e-2"
	st := classic.Start(t, classic.Options{Subnet: "10.206.1", Rootfs: demo.Rootfs, Volume: vol,
		CHAPUser: "node1", CHAPSecret: "chap-secret-0123", ServeSecret: "wrong-secret-456", Token: token})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	vm, err := qemu.Start(ctx, qemu.Options{Netns: st.NS.Name(), Kernel: demo.Kernel, Initrd: demo.Initrd,
		Append: fmt.Sprintf("console=ttyS0 no_timer_check %s=%s %s=%s", bootconfig.ArgServer, st.URL, bootconfig.ArgToken, token),
		Tap:    st.Tap(), NIC: "e1000", Serial: consoleLog{t}})
	if err != nil {
		t.Fatal(err)
	}
	defer vm.Close()
	defer func() {
		if t.Failed() {
			t.Logf("console:\n%s", vm.Output())
		}
	}()
	if _, err := vm.WaitFor(regexp.MustCompile(`distonet-init: network: eth0 \(\S+\) is 10\.206\.1\.\d+/24`), 6*time.Minute); err != nil {
		t.Fatal(err)
	}
	if _, err := vm.WaitFor(regexp.MustCompile(`distonet-init: iscsi: FAILED \(try 1\): iSCSI login refused: authentication failed \(CHAP\)`), 6*time.Minute); err != nil {
		t.Fatal(err)
	}
	if _, err := vm.WaitFor(regexp.MustCompile(`distonet-init: iscsi: FAILED \(try 2\)`), 2*time.Minute); err != nil {
		t.Errorf("no retry after a refused login: %v", err)
	}
	var failed bool
	for _, ev := range st.Events() {
		if ev.Stage == bootconfig.StageISCSI && !ev.OK && strings.Contains(ev.Message, "CHAP") {
			failed = true
		}
	}
	if !failed {
		t.Errorf("no failed iscsi event naming CHAP reached the server: %+v", st.Events())
	}
}
