package disk

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"
)

func zeroFile(t *testing.T, size int64) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(p, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(p, size); err != nil {
		t.Fatal(err)
	}
	return p
}

func ext4File(t *testing.T, size int64) string {
	t.Helper()
	p := zeroFile(t, size)
	if out, err := exec.Command("/sbin/mkfs.ext4", "-q", "-F", "-L", "data", p).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v: %s", err, out)
	}
	return p
}

var anySize = Policy{MinSize: -1}

func TestCheckDonatableFiles(t *testing.T) {
	ext4 := ext4File(t, 32<<20)
	zero := zeroFile(t, 32<<20)
	cases := []struct {
		name   string
		path   string
		policy Policy
		want   error
	}{
		{"blank file", zero, anySize, nil},
		{"ext4 superblock refused", ext4, anySize, ErrSignature},
		{"ext4 with wipe but not named", ext4, Policy{MinSize: -1, Wipe: true}, ErrSignature},
		{"ext4 named without wipe", ext4, Policy{MinSize: -1, Devices: []string{ext4}}, ErrSignature},
		{"ext4 named and wipe", ext4, Policy{MinSize: -1, Devices: []string{ext4}, Wipe: true}, nil},
		{"ext4 named by label and wipe", ext4, Policy{MinSize: -1, Devices: []string{"LABEL=data"}, Wipe: true}, nil},
		{"too small for default minimum", zero, Policy{}, ErrTooSmall},
		{"directory", t.TempDir(), anySize, ErrNotBlockDevice},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckDonatable(tc.path, tc.policy)
			if !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
				t.Fatalf("CheckDonatable = %v, want %v", err, tc.want)
			}
			var re *RefusedError
			if err != nil && (!errors.As(err, &re) || !strings.Contains(err.Error(), tc.path)) {
				t.Fatalf("error %q does not name the device", err)
			}
		})
	}
	if err := CheckDonatable(ext4, anySize); !strings.Contains(err.Error(), `ext4 (label "data")`) {
		t.Errorf("refusal does not say what was found: %v", err)
	}
	if err := Wipe(ext4); err != nil {
		t.Fatal(err)
	}
	if err := CheckDonatable(ext4, anySize); err != nil {
		t.Fatalf("after Wipe: %v", err)
	}
}

// losetup attaches a file to a free loop device, detached at cleanup.
func losetup(t *testing.T, file string) string {
	t.Helper()
	out, err := exec.Command("losetup", "--find", "--show", file).CombinedOutput()
	if err != nil {
		t.Fatalf("losetup: %v: %s", err, out)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() { _ = exec.Command("losetup", "-d", dev).Run() })
	return dev
}

// TestCheckDonatableBlockDevices uses real loop devices: the kernel answers O_EXCL, sysfs
// and mountinfo for them exactly as for a disk.
func TestCheckDonatableBlockDevices(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("needs root for loop devices")
	}
	zero := zeroFile(t, 32<<20)
	dev := losetup(t, zero)
	if err := CheckDonatable(dev, anySize); err != nil {
		t.Fatalf("blank loop device: %v", err)
	}
	if err := CheckDonatable(zero, anySize); !errors.Is(err, ErrInUse) {
		t.Fatalf("file backing %s: %v, want ErrInUse", dev, err)
	}
	// Another exclusive opener (an exporter, md, a filesystem) makes the device busy.
	fd, err := unix.Open(dev, unix.O_RDONLY|unix.O_EXCL, 0)
	if err != nil {
		t.Fatal(err)
	}
	err = CheckDonatable(dev, anySize)
	unix.Close(fd)
	if !errors.Is(err, ErrInUse) {
		t.Fatalf("exclusively opened device: %v, want ErrInUse", err)
	}

	ext4dev := losetup(t, ext4File(t, 32<<20))
	mnt := t.TempDir()
	if out, err := exec.Command("mount", "-t", "ext4", "-o", "ro", ext4dev, mnt).CombinedOutput(); err != nil {
		t.Fatalf("mount: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("umount", mnt).Run() })
	for _, p := range []Policy{anySize, {MinSize: -1, Wipe: true, Devices: []string{ext4dev}}} {
		if err := CheckDonatable(ext4dev, p); !errors.Is(err, ErrMounted) {
			t.Fatalf("mounted device with policy %+v: %v, want ErrMounted always", p, err)
		}
	}
}

// fakeSys builds a /sys, /proc and /dev tree with the given disks.
type fakeDisk struct {
	name, dev  string
	sectors    int
	removable  bool
	iscsi      bool
	holders    []string
	partitions []fakeDisk
}

func fakeSys(t *testing.T, mountinfo string, disks ...fakeDisk) System {
	t.Helper()
	root := t.TempDir()
	s := System{SysRoot: filepath.Join(root, "sys"), ProcRoot: filepath.Join(root, "proc"), DevRoot: "/dev"}
	write := func(p, v string) {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(v+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	node := func(dir string, d fakeDisk) {
		write(filepath.Join(dir, "dev"), d.dev)
		write(filepath.Join(dir, "size"), fmt.Sprint(d.sectors))
		if err := os.MkdirAll(filepath.Join(dir, "holders"), 0o755); err != nil {
			t.Fatal(err)
		}
		for _, h := range d.holders {
			write(filepath.Join(dir, "holders", h), "")
		}
		if err := os.MkdirAll(s.sys("dev", "block"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(dir, s.sys("dev", "block", d.dev)); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range disks {
		dir := s.sys("block", d.name)
		node(dir, d)
		rem := "0"
		if d.removable {
			rem = "1"
		}
		write(filepath.Join(dir, "removable"), rem)
		write(filepath.Join(dir, "ro"), "0")
		write(filepath.Join(dir, "queue", "rotational"), "1")
		if d.iscsi {
			target := filepath.Join(root, "sys", "devices", "platform", "host2", "session1", "target2:0:0", "2:0:0:0")
			if err := os.MkdirAll(target, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(target, filepath.Join(dir, "device")); err != nil {
				t.Fatal(err)
			}
		}
		for i, p := range d.partitions {
			pdir := filepath.Join(dir, p.name)
			node(pdir, p)
			write(filepath.Join(pdir, "partition"), fmt.Sprint(i+1))
		}
	}
	write(s.proc("self", "mountinfo"), mountinfo)
	write(s.proc("swaps"), "Filename Type Size Used Priority")
	return s
}

func TestDisksAndBootDisk(t *testing.T) {
	sys := fakeSys(t, "1 0 8:1 / / rw - ext4 /dev/sda1 rw\n2 1 0:30 / /proc rw - proc proc rw\n",
		fakeDisk{name: "sda", dev: "8:0", sectors: 1000, partitions: []fakeDisk{{name: "sda1", dev: "8:1", sectors: 900}}},
		fakeDisk{name: "sdb", dev: "8:16", sectors: 4000, holders: []string{"md127"}},
		fakeDisk{name: "sdc", dev: "8:32", sectors: 2000, removable: true},
		fakeDisk{name: "zram0", dev: "252:0", sectors: 10},
		fakeDisk{name: "sdd", dev: "8:48", sectors: 8000, iscsi: true},
	)
	disks, err := sys.Disks()
	if err != nil {
		t.Fatal(err)
	}
	want := []Disk{
		{Name: "sda", Path: "/dev/sda", Major: 8, Minor: 0, Size: 512000, Rotational: true, Partitions: []Partition{{Number: 1, Name: "sda1", Path: "/dev/sda1", Major: 8, Minor: 1, Size: 460800}}},
		{Name: "sdb", Path: "/dev/sdb", Major: 8, Minor: 16, Size: 2048000, Rotational: true, Holders: []string{"md127"}},
		{Name: "sdc", Path: "/dev/sdc", Major: 8, Minor: 32, Size: 1024000, Rotational: true, Removable: true},
		{Name: "sdd", Path: "/dev/sdd", Major: 8, Minor: 48, Size: 4096000, Rotational: true, Network: true},
	}
	if diff := cmp.Diff(want, disks); diff != "" {
		t.Fatalf("Disks (-want +got):\n%s", diff)
	}
	boot, err := sys.BootDisks()
	if err != nil || !cmp.Equal(boot, []string{"sda"}) {
		t.Fatalf("BootDisks = %v, %v; want [sda]", boot, err)
	}
	refuse := func(string) func(error, string, ...any) error {
		return func(kind error, f string, a ...any) error {
			return &RefusedError{Kind: kind, Reason: fmt.Sprintf(f, a...)}
		}
	}
	for _, tc := range []struct {
		disk   int
		policy Policy
		want   error
	}{
		{0, Policy{System: sys}, ErrBootDisk},
		{1, Policy{System: sys}, ErrInUse},
		{2, Policy{System: sys}, ErrRemovable},
		{2, Policy{System: sys, AllowRemovable: true}, nil},
		{3, Policy{System: sys, Wipe: true, Devices: []string{"/dev/sdd"}}, ErrNetworkDisk},
	} {
		t.Run(disks[tc.disk].Name, func(t *testing.T) {
			err := checkBlock(sys, tc.policy, disks[tc.disk], nil, refuse(disks[tc.disk].Name))
			if !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
				t.Fatalf("checkBlock = %v, want %v", err, tc.want)
			}
		})
	}
}

// TestClassroomPartitionByLabel: a dual-boot PC's policy names its GPT partition "DISTONET";
// only that partition is chosen, never the disk or the Windows partition.
func TestClassroomPartitionByLabel(t *testing.T) {
	sys := fakeSys(t, "1 0 0:20 / / rw - nfs 10.0.0.1:/images/x ro\n",
		fakeDisk{name: "sda", dev: "8:0", sectors: imgSize / 512, partitions: []fakeDisk{
			{name: "sda1", dev: "8:1", sectors: 2048}, {name: "sda2", dev: "8:2", sectors: 2048}}},
	)
	devRoot := t.TempDir()
	sys.DevRoot = devRoot
	ntfs := img(map[int64][]byte{3: []byte("NTFS    "), 510: {0x55, 0xaa}})
	for name, b := range map[string][]byte{"sda": gptImage("windows", "DISTONET"), "sda1": ntfs[:1<<20], "sda2": make([]byte, 1<<20)} {
		if err := os.WriteFile(filepath.Join(devRoot, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	got, err := Choose(Policy{Devices: []string{"LABEL=DISTONET"}, MinSize: -1, System: sys})
	if err != nil || got != filepath.Join(devRoot, "sda2") {
		t.Fatalf("Choose = %q, %v; want the DISTONET partition %s", got, err, filepath.Join(devRoot, "sda2"))
	}
	if _, err := Choose(Policy{Devices: []string{"LABEL=windows"}, MinSize: -1, System: sys}); !errors.Is(err, ErrSignature) {
		t.Fatalf("the NTFS partition was not refused: %v", err)
	}
	if _, err := Choose(Policy{Devices: []string{"LABEL=nothing"}, MinSize: -1, System: sys}); err == nil {
		t.Fatal("an unknown label was chosen")
	}
}
