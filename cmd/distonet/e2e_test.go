package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/distonet/distonet/images/debian"
	"github.com/distonet/distonet/images/qemu"
	"github.com/distonet/distonet/internal/demolab"
	"github.com/distonet/distonet/internal/lab"
)

// e2e gates the QEMU boots: minutes each under TCG (make e2e sets DISTONET_E2E=1).
func e2e(t *testing.T) {
	t.Helper()
	if os.Getenv("DISTONET_E2E") != "1" {
		t.Skip("end-to-end QEMU boot: run with DISTONET_E2E=1 (make e2e)")
	}
	lab.Require(t, "qemu-system-x86_64", "apt-get", "dpkg", "depmod", "mkfs.ext4", "cp")
}

// artifacts is where console logs go: $DISTONET_ARTIFACTS or the test's temp dir.
func artifacts(t *testing.T) string {
	if d := os.Getenv("DISTONET_ARTIFACTS"); d != "" {
		os.MkdirAll(d, 0o755)
		return d
	}
	return t.TempDir()
}

func consoleLog(t *testing.T, name string) *os.File {
	f, err := os.Create(filepath.Join(artifacts(t), name+".console.log"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

var initRE = regexp.MustCompile(debian.InitMarker + ` hostname=(\S+) root=(\S+)\r?\n`)

// waitInit waits for the image's own init and returns hostname and root fs type.
func waitInit(t *testing.T, vm *qemu.VM, what string) (host, rootType string) {
	t.Helper()
	m, err := vm.WaitFor(initRE, 8*time.Minute)
	if err != nil {
		t.Fatalf("%s: %v\nconsole tail:\n%s", what, err, tail(vm.Output(), 60))
	}
	return m[1], m[2]
}

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// guestRun types a command on the guest's console and waits (2 min) for a marker it prints
// after it.
func guestRun(t *testing.T, vm *qemu.VM, cmd string) string {
	t.Helper()
	return guestRunWithin(t, vm, cmd, 2*time.Minute)
}

func guestRunWithin(t *testing.T, vm *qemu.VM, cmd string, within time.Duration) string {
	t.Helper()
	marker := "DONE-" + time.Now().Format("150405.000000")
	if err := vm.Send(cmd + "; echo " + marker + "-$?\n"); err != nil {
		t.Fatal(err)
	}
	m, err := vm.WaitFor(regexp.MustCompile(`(?s)(.*)`+regexp.QuoteMeta(marker)+`-(\d+)`), within)
	if err != nil {
		t.Fatalf("guest command %q: %v\n%s", cmd, err, tail(vm.Output(), 40))
	}
	if m[2] != "0" {
		t.Fatalf("guest command %q exited %s:\n%s", cmd, m[2], m[1])
	}
	return m[1]
}

func newE2ELab(t *testing.T) *demolab.Lab {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	rootfs, err := demolab.Rootfs(ctx, testWriter{t})
	if err != nil {
		t.Fatalf("demo rootfs: %v", err)
	}
	d := demolab.New(t, distonet, t.TempDir(), testWriter{t})
	if err := d.ImportImage("demo", rootfs); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() && d.ServeLog != nil {
			raw, _ := os.ReadFile(d.ServeLog.Name())
			t.Logf("serve log:\n%s", tail(string(raw), 80))
		}
	})
	return d
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// A QEMU guest PXE-boots through its iPXE ROM against distonet serve and reaches the image's
// init with root = overlay(NFS read-only + its iSCSI volume); a file written under / survives
// a reboot.
func TestE2EPXEBootPersistentRoot(t *testing.T) {
	e2e(t)
	d := newE2ELab(t)
	const mac = "52:54:00:e2:e0:01"
	if _, err := d.CLI("node", "add", "n1", "--mac", mac, "--image", "demo"); err != nil {
		t.Fatal(err)
	}
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	vm, err := d.BootNode(context.Background(), "n1", mac, qemu.Options{Serial: consoleLog(t, "n1")})
	if err != nil {
		t.Fatal(err)
	}
	host, root := waitInit(t, vm, "first boot")
	t.Logf("first boot: image init after %s: hostname=%s root=%s", vm.Elapsed().Round(time.Second), host, root)
	if host != "n1" || root != "overlay" {
		t.Fatalf("hostname=%s root=%s, want n1 on overlay", host, root)
	}
	mounts := guestRun(t, vm, "cat /proc/mounts")
	if !regexp.MustCompile(`(?m)^\S+ /run/distonet/lower nfs .*\bro\b`).MatchString(mounts) && !strings.Contains(mounts, " nfs ") {
		t.Errorf("no read-only NFS lower layer in /proc/mounts:\n%s", mounts)
	}
	guestRun(t, vm, "echo persisted-$(cat /proc/sys/kernel/random/uuid) > /root/proof && sync && cat /root/proof")
	proof := strings.TrimSpace(lastLine(guestRun(t, vm, "cat /root/proof")))
	vm.Send("reboot -f\n")
	host, root = waitInit(t, vm, "second boot")
	t.Logf("second boot: image init, hostname=%s root=%s", host, root)
	after := strings.TrimSpace(lastLine(guestRun(t, vm, "cat /root/proof")))
	if !strings.HasPrefix(proof, "persisted-") || after != proof {
		t.Fatalf("file under / did not survive the reboot: before %q, after %q", proof, after)
	}
	out, err := d.CLI("node", "show", "n1", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var shown struct {
		State    string `json:"state"`
		LastBoot struct {
			Stages []struct {
				Stage string  `json:"stage"`
				Since float64 `json:"since_ns"`
			} `json:"stages"`
		} `json:"last_boot"`
	}
	json.Unmarshal([]byte(out), &shown)
	t.Logf("timeline: %s", out)
	if shown.State != "ready" {
		t.Errorf("node state = %q after boot, want ready", shown.State)
	}
	stages := map[string]bool{}
	for _, st := range shown.LastBoot.Stages {
		stages[st.Stage] = true
	}
	for _, want := range []string{"dhcp", "bootfile", "kernel", "nfs", "iscsi", "overlay", "ready"} {
		if !stages[want] {
			t.Errorf("timeline lacks stage %q", want)
		}
	}
	metrics, err := d.Get("/metrics")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`distonet_boot_stage_seconds_count{stage="ready"}`, `distonet_boot_stage_seconds_count{stage="iscsi"}`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}

	// An appliance restart only pauses the node: its kernel logs in to the restarted target
	// again and the root keeps working.
	d.Stop()
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	guestRun(t, vm, "echo after-restart > /root/after && sync && cat /root/after")
	if got := strings.TrimSpace(lastLine(guestRun(t, vm, "cat /root/after"))); got != "after-restart" {
		t.Fatalf("root after an appliance restart reads %q", got)
	}
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(strings.ReplaceAll(s, "\r", "")), "\n")
	return lines[len(lines)-1]
}

// Two nodes boot at once. One is unknown at power-on: it gets the enrollment script and is
// listed as discovered; after `node add` it boots. Each sees only its own volume. The known
// node has a blank second disk and donates it over AoE: the pool inventory shows it online.
func TestE2EEnrollTwoNodesAndDonate(t *testing.T) {
	e2e(t)
	d := newE2ELab(t)
	const macA, macB = "52:54:00:e2:e0:0a", "52:54:00:e2:e0:0b"
	if _, err := d.CLI("node", "add", "na", "--mac", macA, "--image", "demo", "--donate", "aoe"); err != nil {
		t.Fatal(err)
	}
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	spare := filepath.Join(t.TempDir(), "spare.img")
	if err := os.WriteFile(spare, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(spare, 2<<30); err != nil { // sparse; the agent's policy wants ≥ 1 GiB
		t.Fatal(err)
	}
	vmA, err := d.BootNode(context.Background(), "na", macA, qemu.Options{Disks: []string{spare}, Serial: consoleLog(t, "na")})
	if err != nil {
		t.Fatal(err)
	}
	vmB, err := d.BootNode(context.Background(), "nb", macB, qemu.Options{Serial: consoleLog(t, "nb")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := vmB.WaitFor(regexp.MustCompile(`not enrolled in DiStoNet`), 5*time.Minute); err != nil {
		t.Fatalf("unknown node: no enrollment script: %v\n%s", err, tail(vmB.Output(), 30))
	}
	var listed []listed
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		out, err := d.CLI("node", "list", "--json")
		if err != nil {
			t.Fatal(err)
		}
		json.Unmarshal([]byte(out), &listed)
		if slicesContains(listed, macB, "discovered") {
			break
		}
		time.Sleep(time.Second)
	}
	if !slicesContains(listed, macB, "discovered") {
		t.Fatalf("%s not listed as discovered: %+v", macB, listed)
	}
	if _, err := d.CLI("node", "add", "nb", "--mac", macB, "--image", "demo"); err != nil {
		t.Fatal(err)
	}
	if host, root := waitInit(t, vmB, "enrolled node"); host != "nb" || root != "overlay" {
		t.Fatalf("nb: hostname=%s root=%s", host, root)
	}
	if host, root := waitInit(t, vmA, "known node"); host != "na" || root != "overlay" {
		t.Fatalf("na: hostname=%s root=%s", host, root)
	}
	guestRun(t, vmA, "echo from-na > /root/owner && sync")
	guestRun(t, vmB, "echo from-nb > /root/owner && sync")
	if got := strings.TrimSpace(lastLine(guestRun(t, vmA, "cat /root/owner"))); got != "from-na" {
		t.Errorf("na reads its /root/owner as %q", got)
	}
	if got := strings.TrimSpace(lastLine(guestRun(t, vmB, "cat /root/owner"))); got != "from-nb" {
		t.Errorf("nb reads its /root/owner as %q", got)
	}
	// Each node has exactly one iSCSI disk: its own volume.
	for name, vm := range map[string]*qemu.VM{"na": vmA, "nb": vmB} {
		out := guestRun(t, vm, "ls /sys/class/iscsi_session/ | wc -l")
		if n := strings.TrimSpace(lastLine(out)); n != "1" {
			t.Errorf("%s has %s iSCSI sessions, want 1", name, n)
		}
	}

	// na's agent donates its blank second disk over AoE.
	var disks []struct {
		Node, Transport, Address, State string
		SizeBytes                       int64 `json:"size_bytes"`
	}
	deadline = time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		out, err := d.CLI("pool", "status", "--json")
		if err != nil {
			t.Fatal(err)
		}
		var st struct {
			Disks json.RawMessage `json:"disks"`
		}
		json.Unmarshal([]byte(out), &st)
		json.Unmarshal(st.Disks, &disks)
		if len(disks) > 0 {
			break
		}
		time.Sleep(2 * time.Second)
	}
	if len(disks) != 1 || disks[0].Node != "na" || disks[0].Transport != "aoe" || disks[0].State != "online" || disks[0].SizeBytes != 2<<30 {
		t.Fatalf("pool inventory = %+v\nconsole of na:\n%s", disks, tail(vmA.Output(), 30))
	}
	t.Logf("na donates %s (%d MiB) over AoE", disks[0].Address, disks[0].SizeBytes>>20)
}

func slicesContains(ls []listed, mac, state string) bool {
	for _, l := range ls {
		if l.MAC == mac && l.State == state {
			return true
		}
	}
	return false
}

// The legacy path: a UEFI machine (OVMF) whose own PXE client is not iPXE gets snponly.efi
// from the appliance's TFTP server, which chains into iPXE, which fetches the node script over
// HTTP — no chainload loop — and the node boots to the image's init.
func TestE2EUEFIFirmwarePXEChainloadsIPXE(t *testing.T) {
	e2e(t)
	const ovmf = "/usr/share/ovmf/OVMF.fd"
	if _, err := os.Stat(ovmf); err != nil {
		t.Fatalf("UEFI firmware: %v (Debian package ovmf)", err)
	}
	d := newE2ELab(t)
	const mac = "52:54:00:e2:ef:01"
	if _, err := d.CLI("node", "add", "uefi1", "--mac", mac, "--image", "demo"); err != nil {
		t.Fatal(err)
	}
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	// No option ROM: OVMF's own virtio-net driver and PXE client, not iPXE's.
	vm, err := d.BootNode(context.Background(), "uefi1", mac, qemu.Options{NIC: "virtio-net-pci,romfile=", Serial: consoleLog(t, "uefi1"),
		Extra: []string{"-bios", ovmf}})
	if err != nil {
		t.Fatal(err)
	}
	host, root := waitInit(t, vm, "UEFI PXE boot")
	if host != "uefi1" || root != "overlay" {
		t.Fatalf("hostname=%s root=%s", host, root)
	}
	out, err := d.CLI("node", "show", "uefi1", "--json")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, `"message": "PXE ROM"`) {
		t.Errorf("the timeline does not start with the firmware's own PXE request:\n%s", out)
	}
	t.Logf("UEFI firmware PXE → TFTP snponly.efi → iPXE → HTTP → image init in %s", vm.Elapsed().Round(time.Second))
}
