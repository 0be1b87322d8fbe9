package disk

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// System names the kernel interfaces the package reads; tests point it at a fake tree.
// Zero values mean "/sys", "/proc" and "/dev".
type System struct {
	SysRoot, ProcRoot, DevRoot string
}

func (s System) sys(p ...string) string {
	return filepath.Join(append([]string{or(s.SysRoot, "/sys")}, p...)...)
}
func (s System) proc(p ...string) string {
	return filepath.Join(append([]string{or(s.ProcRoot, "/proc")}, p...)...)
}
func (s System) dev(name string) string { return filepath.Join(or(s.DevRoot, "/dev"), name) }

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// Disk is a whole block device as /sys/block describes it.
type Disk struct {
	Name         string // "sda", "nvme0n1"
	Path         string // "/dev/sda"
	Major, Minor uint32
	Size         int64 // bytes
	Rotational   bool
	Removable    bool
	ReadOnly     bool
	Holders      []string // devices stacked on it: dm-0, md127...
	Partitions   []Partition
	Model        string
	// Network is set for a disk reached over the network (an iSCSI session: on a booted node,
	// its own overlay volume), which is never a spare internal disk.
	Network bool
}

// Partition is one partition of a Disk.
type Partition struct {
	Number       int // as in sda<Number>
	Name         string
	Path         string
	Major, Minor uint32
	Size         int64
	Holders      []string
}

// virtualPrefixes are /sys/block entries that are never spare internal disks. Loop devices
// are listed (they are how tests and file-backed exports look) but never chosen automatically.
var virtualPrefixes = []string{"ram", "zram", "dm-", "md", "sr", "nbd", "etherd", "rbd", "fd", "zd"}

// Disks lists /sys/block, skipping RAM disks, device-mapper, md, optical, network devices.
func (s System) Disks() ([]Disk, error) {
	ents, err := os.ReadDir(s.sys("block"))
	if err != nil {
		return nil, fmt.Errorf("list block devices: %w", err)
	}
	var out []Disk
	for _, e := range ents {
		name := e.Name()
		if slices.ContainsFunc(virtualPrefixes, func(p string) bool { return strings.HasPrefix(name, p) }) {
			continue
		}
		d, err := s.disk(name)
		if err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	return out, nil
}

func (s System) disk(name string) (Disk, error) {
	dir := s.sys("block", name)
	d := Disk{Name: name, Path: s.dev(name)}
	var err error
	if d.Major, d.Minor, err = readDev(filepath.Join(dir, "dev")); err != nil {
		return Disk{}, err
	}
	sectors, err := readInt(filepath.Join(dir, "size"))
	if err != nil {
		return Disk{}, err
	}
	d.Size = sectors * 512 // sysfs counts 512-byte units whatever the logical block size
	d.Rotational = readFlag(filepath.Join(dir, "queue", "rotational"))
	d.Removable = readFlag(filepath.Join(dir, "removable"))
	d.ReadOnly = readFlag(filepath.Join(dir, "ro"))
	d.Holders = listDir(filepath.Join(dir, "holders"))
	if b, err := os.ReadFile(filepath.Join(dir, "device", "model")); err == nil {
		d.Model = strings.TrimSpace(string(b))
	}
	if link, err := filepath.EvalSymlinks(filepath.Join(dir, "device")); err == nil {
		d.Network = strings.Contains(link, "/session") // SCSI host of an iSCSI session
	}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		pdir := filepath.Join(dir, e.Name())
		if _, err := os.Stat(filepath.Join(pdir, "partition")); err != nil {
			continue
		}
		p := Partition{Name: e.Name(), Path: s.dev(e.Name())}
		if p.Major, p.Minor, err = readDev(filepath.Join(pdir, "dev")); err != nil {
			return Disk{}, err
		}
		ps, err := readInt(filepath.Join(pdir, "size"))
		if err != nil {
			return Disk{}, err
		}
		p.Size = ps * 512
		if n, err := readInt(filepath.Join(pdir, "partition")); err == nil {
			p.Number = int(n)
		}
		p.Holders = listDir(filepath.Join(pdir, "holders"))
		d.Partitions = append(d.Partitions, p)
	}
	return d, nil
}

// owner returns the whole disk a block device number belongs to (itself or its parent) and
// the partition when the number is a partition's.
func (s System) owner(major, minor uint32) (Disk, *Partition, error) {
	link := s.sys("dev", "block", fmt.Sprintf("%d:%d", major, minor))
	real, err := filepath.EvalSymlinks(link)
	if err != nil {
		return Disk{}, nil, fmt.Errorf("block device %d:%d not in sysfs: %w", major, minor, err)
	}
	name := filepath.Base(real)
	if _, err := os.Stat(filepath.Join(real, "partition")); err == nil {
		d, err := s.disk(filepath.Base(filepath.Dir(real)))
		if err != nil {
			return Disk{}, nil, err
		}
		for i := range d.Partitions {
			if d.Partitions[i].Name == name {
				return d, &d.Partitions[i], nil
			}
		}
		return Disk{}, nil, fmt.Errorf("partition %s not found under %s", name, d.Name)
	}
	d, err := s.disk(name)
	return d, nil, err
}

// Mounts reads the calling process's mount table.
func (s System) Mounts() ([]Mount, error) {
	f, err := os.Open(s.proc("self", "mountinfo"))
	if err != nil {
		return nil, fmt.Errorf("read mounts: %w", err)
	}
	defer f.Close()
	return ParseMountInfo(f)
}

// Swaps lists active swap devices and files.
func (s System) Swaps() ([]string, error) {
	f, err := os.Open(s.proc("swaps"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read swaps: %w", err)
	}
	defer f.Close()
	return ParseSwaps(f)
}

// BootDisks returns the names of the whole disks that hold the root filesystem, /boot,
// /boot/efi, /usr or /var: the disk a machine boots and runs from is never donated. A
// diskless node (root on NFS/overlay) has none.
func (s System) BootDisks() ([]string, error) {
	mounts, err := s.Mounts()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, m := range mounts {
		switch m.MountPoint {
		case "/", "/boot", "/boot/efi", "/usr", "/var":
		default:
			continue
		}
		if m.Major == 0 { // virtual filesystems (nfs, overlay, tmpfs) have major 0
			continue
		}
		d, _, err := s.owner(m.Major, m.Minor)
		if err != nil {
			continue // dm/md stacks without a plain disk: nothing to protect by name here
		}
		if !slices.Contains(out, d.Name) {
			out = append(out, d.Name)
		}
	}
	return out, nil
}

func readDev(p string) (uint32, uint32, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return 0, 0, fmt.Errorf("read %s: %w", p, err)
	}
	ma, mi, ok := strings.Cut(strings.TrimSpace(string(b)), ":")
	a, err1 := strconv.ParseUint(ma, 10, 32)
	i, err2 := strconv.ParseUint(mi, 10, 32)
	if !ok || err1 != nil || err2 != nil {
		return 0, 0, fmt.Errorf("%s: bad major:minor %q", p, b)
	}
	return uint32(a), uint32(i), nil
}

func readInt(p string) (int64, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", p, err)
	}
	v, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", p, err)
	}
	return v, nil
}

func readFlag(p string) bool {
	b, err := os.ReadFile(p)
	return err == nil && strings.TrimSpace(string(b)) == "1"
}

func listDir(p string) []string {
	ents, err := os.ReadDir(p)
	if err != nil {
		return nil
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}
