package donate

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/distonet/distonet/donate/aoe"
	"github.com/distonet/distonet/donate/disk"
	"github.com/distonet/distonet/internal/lab"
)

func TestMain(m *testing.M) {
	_ = lab.Sweep()
	os.Exit(m.Run())
}

func TestParseAoEAddress(t *testing.T) {
	for _, tc := range []struct {
		in    string
		shelf uint16
		slot  uint8
		ok    bool
	}{
		{"145.0", 145, 0, true}, {"e1.15", 1, 15, true}, {"65535.0", 0, 0, false}, {"1.255", 0, 0, false},
		{"1", 0, 0, false}, {"a.b", 0, 0, false}, {"1.256", 0, 0, false},
	} {
		t.Run(tc.in, func(t *testing.T) {
			sh, sl, err := ParseAoEAddress(tc.in)
			if (err == nil) != tc.ok || sh != tc.shelf || sl != tc.slot {
				t.Fatalf("ParseAoEAddress(%q) = %d, %d, %v", tc.in, sh, sl, err)
			}
		})
	}
}

func ext4File(t *testing.T) string {
	p := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(p, make([]byte, 16<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("/sbin/mkfs.ext4", "-q", "-F", p).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v: %s", err, out)
	}
	return p
}

// TestExportRefusesFilesystemUnlessWipe: the contract of `distonet donate export`.
func TestExportRefusesFilesystemUnlessWipe(t *testing.T) {
	lab.Require(t, "/sbin/mkfs.ext4")
	a, b := lab.NewNetns(t), lab.NewNetns(t)
	aIf, bIf := lab.Veth(t, a, "", b, "")
	file := ext4File(t)
	err := b.Do(func() error {
		return Export(context.Background(), ExportOptions{Device: file, Interface: bIf, Shelf: 3, Slot: 1})
	})
	if !errors.Is(err, disk.ErrSignature) {
		t.Fatalf("export of an ext4 file without --wipe: %v, want a refusal (disk.ErrSignature)", err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- b.Do(func() error {
			return Export(ctx, ExportOptions{Device: file, Interface: bIf, Shelf: 3, Slot: 1, Wipe: true,
				StateFile: filepath.Join(t.TempDir(), "aoe.json"), AllowMACs: []net.HardwareAddr{a.HardwareAddr(aIf)}})
		})
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Export: %v", err)
		}
	}()
	var c *aoe.Client
	for range 50 {
		err = a.Do(func() (err error) {
			c, err = aoe.DialConfig(context.Background(), aIf, b.HardwareAddr(bIf), 3, 1, aoe.ClientConfig{Timeout: 100 * time.Millisecond, Retries: 2})
			return
		})
		if err == nil {
			break
		}
	}
	if err != nil {
		t.Fatalf("dial the exported device: %v", err)
	}
	defer c.Close()
	sb := make([]byte, 4096)
	if _, err := c.ReadAt(sb, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(sb, make([]byte, 4096)) {
		t.Fatal("--wipe exported the device without erasing its superblock")
	}
}

func TestExportRefusesMountedDevice(t *testing.T) {
	lab.Require(t, "losetup", "mount")
	file := ext4File(t)
	out, err := exec.Command("losetup", "--find", "--show", file).CombinedOutput()
	if err != nil {
		t.Fatalf("losetup: %v: %s", err, out)
	}
	dev := string(bytes.TrimSpace(out))
	t.Cleanup(func() { _ = exec.Command("losetup", "-d", dev).Run() })
	mnt := t.TempDir()
	if out, err := exec.Command("mount", "-o", "ro", dev, mnt).CombinedOutput(); err != nil {
		t.Fatalf("mount: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("umount", mnt).Run() })
	err = Export(context.Background(), ExportOptions{Device: dev, Interface: "lo", Shelf: 1, Slot: 1, Wipe: true})
	if !errors.Is(err, disk.ErrMounted) {
		t.Fatalf("export of a mounted device with --wipe: %v, want disk.ErrMounted", err)
	}
}

type fakeISCSI struct{ devices []string }

func (f *fakeISCSI) ExportISCSI(_ context.Context, device string) error {
	f.devices = append(f.devices, device)
	return nil
}

// TestExportISCSIGoesThroughTheSameChecks: the iSCSI path is refused and wiped exactly like AoE.
func TestExportISCSIGoesThroughTheSameChecks(t *testing.T) {
	file := ext4File(t)
	ex := &fakeISCSI{}
	if err := Export(context.Background(), ExportOptions{Device: file, ISCSI: ex}); !errors.Is(err, disk.ErrSignature) || len(ex.devices) != 0 {
		t.Fatalf("iSCSI export of an ext4 file: %v (exported %v), want a refusal", err, ex.devices)
	}
	if err := Export(context.Background(), ExportOptions{Device: file, ISCSI: ex, Wipe: true}); err != nil || len(ex.devices) != 1 {
		t.Fatalf("iSCSI export with --wipe: %v (exported %v)", err, ex.devices)
	}
	if err := disk.CheckDonatable(file, disk.Policy{MinSize: -1}); err != nil {
		t.Fatalf("--wipe left signatures: %v", err)
	}
}

// TestExportHoldsBlockDevice: while a block device is exported, the kernel refuses other
// exclusive users (a mount, md, another exporter): CheckDonatable sees it as in use.
func TestExportHoldsBlockDevice(t *testing.T) {
	lab.Require(t, "losetup")
	file := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(file, make([]byte, 8<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("losetup", "--find", "--show", file).CombinedOutput()
	if err != nil {
		t.Fatalf("losetup: %v: %s", err, out)
	}
	dev := string(bytes.TrimSpace(out))
	t.Cleanup(func() { _ = exec.Command("losetup", "-d", dev).Run() })
	ns, head := lab.NewNetns(t), lab.NewNetns(t)
	nsIf, headIf := lab.Veth(t, ns, "", head, "")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- ns.Do(func() error { return Export(ctx, ExportOptions{Device: dev, Interface: nsIf, Shelf: 2, Slot: 2}) })
	}()
	// Once an initiator gets answers, the target has the device open.
	var c *aoe.Client
	for range 50 {
		if err = head.Do(func() (err error) {
			c, err = aoe.DialConfig(context.Background(), headIf, ns.HardwareAddr(nsIf), 2, 2, aoe.ClientConfig{Timeout: 100 * time.Millisecond, Retries: 2})
			return
		}); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatalf("dial the export: %v", err)
	}
	c.Close()
	policy := disk.Policy{MinSize: -1}
	held := disk.CheckDonatable(dev, policy)
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Export: %v", err)
	}
	if !errors.Is(held, disk.ErrInUse) {
		t.Fatalf("while exported: %v, want disk.ErrInUse", held)
	}
	if err := disk.CheckDonatable(dev, policy); err != nil {
		t.Fatalf("after the export stopped: %v", err)
	}
}
