package disk

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

// Reasons a device is refused; CheckDonatable's error wraps one of them.
var (
	ErrNotBlockDevice = errors.New("not a block device or regular file")
	ErrTooSmall       = errors.New("too small")
	ErrRemovable      = errors.New("removable media")
	ErrReadOnly       = errors.New("read-only")
	ErrMounted        = errors.New("mounted")
	ErrInUse          = errors.New("in use")
	ErrBootDisk       = errors.New("boot disk")
	ErrSignature      = errors.New("carries data")
	ErrNetworkDisk    = errors.New("network disk")
)

// RefusedError says why a device may not be donated.
type RefusedError struct {
	Path   string
	Kind   error // one of the Err* values above
	Reason string
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("refusing to donate %s: %s: %s", e.Path, e.Kind, e.Reason)
}

func (e *RefusedError) Unwrap() error { return e.Kind }

// DefaultMinSize is the smallest device worth a pool member.
const DefaultMinSize = 1 << 30

// Policy is what the node's donation policy says about disks.
type Policy struct {
	// Devices the policy names: paths (/dev/sdb, /dev/disk/by-id/...) or LABEL=<name>, a GPT
	// partition name (a classroom PC's "DISTONET" partition) or a filesystem label.
	// Only a named device may be donated despite signatures, and only with Wipe.
	Devices []string
	// Wipe allows a named device carrying a partition table or filesystem to be donated
	// (its signatures are then erased by Wipe before export).
	Wipe bool
	// AllowRemovable lets USB sticks and card readers through (default: refused).
	AllowRemovable bool
	// MinSize in bytes; 0 means DefaultMinSize, negative means no minimum.
	MinSize int64
	// AcceptSignatures lists signature types that do not count, e.g. "linux_raid_member"
	// on a disk this node donated before (the pool head's own superblock, which must survive
	// so the member re-adds with its write-intent bitmap instead of a full resync).
	AcceptSignatures []string
	// System locates /sys, /proc and /dev (tests use a fake tree).
	System System
}

func (p Policy) minSize() int64 {
	switch {
	case p.MinSize == 0:
		return DefaultMinSize
	case p.MinSize < 0:
		return 0
	}
	return p.MinSize
}

// named reports whether the policy names path, directly or through a symlink, or by one of
// the labels found on it.
func (p Policy) named(path string, sigs []Signature) bool {
	real, _ := filepath.EvalSymlinks(path)
	for _, d := range p.Devices {
		if label, ok := strings.CutPrefix(d, "LABEL="); ok {
			if slices.ContainsFunc(sigs, func(s Signature) bool { return !s.IsPartitionTable() && s.Label == label && label != "" }) {
				return true
			}
			if found, err := FindByLabel(p.System, label); err == nil && found == path {
				return true
			}
			continue
		}
		if filepath.Clean(d) == filepath.Clean(path) {
			return true
		}
		if r, err := filepath.EvalSymlinks(d); err == nil && r == real {
			return true
		}
	}
	return false
}

// CheckDonatable returns nil when the device or file at path may be given to the pool under
// policy, else a *RefusedError that says why. It never refuses for a reason the policy can
// override unless the policy does not override it; mounted, held, swap and boot disks are
// refused always.
func CheckDonatable(path string, policy Policy) error {
	refuse := func(kind error, format string, a ...any) error {
		return &RefusedError{Path: path, Kind: kind, Reason: fmt.Sprintf(format, a...)}
	}
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return fmt.Errorf("check %s: %w", path, err)
	}
	sys := policy.System
	var size int64
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFBLK:
		major, minor := unix.Major(st.Rdev), unix.Minor(st.Rdev)
		d, part, err := sys.owner(major, minor)
		if err != nil {
			return fmt.Errorf("check %s: %w", path, err)
		}
		if err := checkBlock(sys, policy, d, part, refuse); err != nil {
			return err
		}
		size = d.Size
		if part != nil {
			size = part.Size
		}
	case unix.S_IFREG:
		size = st.Size
		if loop := loopBacking(sys, path); loop != "" {
			return refuse(ErrInUse, "the file backs %s", loop)
		}
	default:
		return refuse(ErrNotBlockDevice, "file mode %#o", st.Mode&unix.S_IFMT)
	}
	if size < policy.minSize() {
		return refuse(ErrTooSmall, "%d bytes, the policy needs at least %d", size, policy.minSize())
	}
	// O_EXCL on a block device fails with EBUSY while a filesystem, md, dm or another
	// exclusive opener holds it: the kernel's own answer to "is this in use".
	flags := unix.O_RDONLY | unix.O_CLOEXEC
	if st.Mode&unix.S_IFMT == unix.S_IFBLK {
		flags |= unix.O_EXCL
	}
	fd, err := unix.Open(path, flags, 0)
	if errors.Is(err, unix.EBUSY) {
		return refuse(ErrInUse, "exclusive open failed: the kernel holds the device (mounted, RAID/LVM member or open by another exporter)")
	}
	if err != nil {
		return fmt.Errorf("check %s: open: %w", path, err)
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close()
	sigs, err := Detect(f, size)
	if err != nil {
		return fmt.Errorf("check %s: %w", path, err)
	}
	sigs = slices.DeleteFunc(sigs, func(s Signature) bool { return slices.Contains(policy.AcceptSignatures, s.Type) })
	if len(sigs) > 0 {
		if policy.Wipe && policy.named(path, sigs) {
			return nil
		}
		var what []string
		for _, s := range sigs {
			what = append(what, s.String())
		}
		hint := "name the device in the node's policy and allow wipe to donate it anyway"
		if policy.Wipe {
			hint = "wipe is allowed only for a device the policy names"
		}
		return refuse(ErrSignature, "found %s; %s", strings.Join(what, ", "), hint)
	}
	return nil
}

func checkBlock(sys System, policy Policy, d Disk, part *Partition, refuse func(error, string, ...any) error) error {
	if d.Network {
		return refuse(ErrNetworkDisk, "%s is reached over an iSCSI session (the node's own volume?), not a local disk", d.Name)
	}
	if d.Removable && !policy.AllowRemovable {
		return refuse(ErrRemovable, "%s reports removable media", d.Name)
	}
	if d.ReadOnly {
		return refuse(ErrReadOnly, "%s is read-only", d.Name)
	}
	boot, err := sys.BootDisks()
	if err != nil {
		return err
	}
	if slices.Contains(boot, d.Name) {
		return refuse(ErrBootDisk, "%s holds the running system's root or boot filesystem", d.Name)
	}
	// The device itself, or for a whole disk any of its partitions, must be unused.
	type dev struct {
		name         string
		major, minor uint32
		holders      []string
	}
	devs := []dev{{d.Name, d.Major, d.Minor, d.Holders}}
	if part != nil {
		devs = []dev{{part.Name, part.Major, part.Minor, part.Holders}}
	} else {
		for _, p := range d.Partitions {
			devs = append(devs, dev{p.Name, p.Major, p.Minor, p.Holders})
		}
	}
	mounts, err := sys.Mounts()
	if err != nil {
		return err
	}
	swaps, err := sys.Swaps()
	if err != nil {
		return err
	}
	for _, x := range devs {
		if len(x.holders) > 0 {
			return refuse(ErrInUse, "%s is held by %s", x.name, strings.Join(x.holders, ", "))
		}
		for _, m := range mounts {
			if m.Major == x.major && m.Minor == x.minor {
				return refuse(ErrMounted, "%s is mounted at %s (%s)", x.name, m.MountPoint, m.FSType)
			}
		}
		for _, sw := range swaps {
			var st unix.Stat_t
			if unix.Stat(sw, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFBLK && unix.Major(st.Rdev) == x.major && unix.Minor(st.Rdev) == x.minor {
				return refuse(ErrInUse, "%s is active swap", x.name)
			}
		}
	}
	return nil
}

// loopBacking returns the loop device a file backs, if any.
func loopBacking(sys System, path string) string {
	abs, err := filepath.Abs(path)
	if err != nil {
		return ""
	}
	real, err := filepath.EvalSymlinks(abs)
	if err != nil {
		real = abs
	}
	ents, _ := os.ReadDir(sys.sys("block"))
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), "loop") {
			continue
		}
		b, err := os.ReadFile(sys.sys("block", e.Name(), "loop", "backing_file"))
		if err != nil {
			continue
		}
		if f := strings.TrimSuffix(strings.TrimSpace(string(b)), " (deleted)"); f == real || f == abs {
			return "/dev/" + e.Name()
		}
	}
	return ""
}

// Wipe erases the signatures CheckDonatable looks for: the first and last MiB of the device
// (partition tables and their backups, filesystem and RAID superblocks, LVM and LUKS headers).
func Wipe(path string) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("wipe %s: %w", path, err)
	}
	defer f.Close()
	size, err := f.Seek(0, 2)
	if err != nil {
		return fmt.Errorf("wipe %s: %w", path, err)
	}
	zero := make([]byte, 1<<20)
	for _, off := range []int64{0, max(0, size-int64(len(zero)))} {
		n := min(int64(len(zero)), size-off)
		if _, err := f.WriteAt(zero[:n], off); err != nil {
			return fmt.Errorf("wipe %s at %d: %w", path, off, err)
		}
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("wipe %s: %w", path, err)
	}
	return nil
}

// Candidate is a disk the agent considered and, when Err is nil, may donate.
type Candidate struct {
	Disk Disk
	Path string
	Err  error
}

// Candidates checks the devices the policy names (LABEL= resolved through FindByLabel) or,
// when it names none, every whole disk except loop devices. A classroom PC's policy names its
// spare partition, so nothing else of that machine is ever considered.
func Candidates(policy Policy) ([]Candidate, error) {
	var out []Candidate
	for _, d := range policy.Devices {
		if label, ok := strings.CutPrefix(d, "LABEL="); ok {
			p, err := FindByLabel(policy.System, label)
			if err != nil {
				out = append(out, Candidate{Path: d, Err: err})
				continue
			}
			d = p
		}
		out = append(out, Candidate{Path: d, Err: CheckDonatable(d, policy)})
	}
	if len(policy.Devices) > 0 {
		return out, nil
	}
	disks, err := policy.System.Disks()
	if err != nil {
		return nil, err
	}
	for _, d := range disks {
		if strings.HasPrefix(d.Name, "loop") || d.Network {
			continue
		}
		out = append(out, Candidate{Disk: d, Path: d.Path, Err: CheckDonatable(d.Path, policy)})
	}
	return out, nil
}

// FindByLabel returns the partition whose GPT partition name is label or, failing that, the
// disk or partition whose filesystem label is label.
func FindByLabel(sys System, label string) (string, error) {
	disks, err := sys.Disks()
	if err != nil {
		return "", err
	}
	for _, d := range disks {
		f, err := os.Open(d.Path)
		if err != nil {
			continue
		}
		size, _ := f.Seek(0, 2)
		names, _ := GPTPartitionNames(f, size)
		f.Close()
		for _, p := range d.Partitions {
			if p.Number > 0 && names[p.Number] == label {
				return p.Path, nil
			}
		}
	}
	for _, d := range disks {
		paths := []string{d.Path}
		for _, p := range d.Partitions {
			paths = append(paths, p.Path)
		}
		for _, p := range paths {
			f, err := os.Open(p)
			if err != nil {
				continue
			}
			size, _ := f.Seek(0, 2)
			sigs, _ := Detect(f, size)
			f.Close()
			if slices.ContainsFunc(sigs, func(s Signature) bool { return !s.IsPartitionTable() && s.Label == label }) {
				return p, nil
			}
		}
	}
	return "", fmt.Errorf("no disk or partition labelled %q", label)
}

// Choose returns the device to donate: the first donatable device the policy names, else the
// largest donatable whole disk. The error lists every refusal when nothing qualifies.
func Choose(policy Policy) (string, error) {
	cands, err := Candidates(policy)
	if err != nil {
		return "", err
	}
	if len(policy.Devices) > 0 {
		for _, c := range cands {
			if c.Err == nil {
				return c.Path, nil
			}
		}
	}
	best := -1
	for i, c := range cands {
		if c.Err == nil && (best < 0 || c.Disk.Size > cands[best].Disk.Size) {
			best = i
		}
	}
	if best >= 0 {
		return cands[best].Path, nil
	}
	var errs []error
	for _, c := range cands {
		errs = append(errs, c.Err)
	}
	return "", fmt.Errorf("no donatable disk: %w", errors.Join(errs...))
}
