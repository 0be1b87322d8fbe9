// Package head is the pool head: on a machine with the kernel's aoe/iSCSI initiators and
// mdadm (the appliance host, or a booted node with the pool-head role) it makes the planned
// md RAID6 arrays real. It attaches members, creates arrays with an internal write-intent
// bitmap, assembles existing ones (degraded within parity), re-adds a returning member (the
// bitmap resyncs only what changed), fails a withdrawing member at once instead of waiting
// out the aoe driver's 180 s dead timer, and stops an overnight array cleanly before its
// window closes. On top it puts ext4, mounted under MountRoot/<array>; exporting that
// directory (NFS, or the md device as an iSCSI LUN of the appliance) is the Exporter's job.
//
// A degraded *and* dirty RAID6 does not start by itself: if the head went down mid-write
// (superblocks "active", not "clean") with a member missing then or at the next start, md
// refuses it with one member missing as with two (kernel: "cannot start dirty degraded
// array"; mdadm --run: "not clean - consider --force"), because a half-written stripe's
// parity may not match its data. Stopping cleanly avoids it; a head that dies idle (md marks
// the array clean after safe_mode_delay without writes) leaves a clean array, which then
// assembles degraded as usual. When it happens, Up reports the array failed (ErrDirtyDegraded,
// with the recovery in the message), never forces it, tries again only when the set of
// present members changes, and leaves the superblocks untouched. The recovery, tested in a
// guest (TestE2EPoolHeadDirtyDegraded): the current members are those with the highest
// Events in `mdadm --examine`; `mdadm --assemble --force --run /dev/md/<name> <members...>`
// (mdadm marks it clean; with one member missing it starts a parity repair, with two there
// is no parity left to repair); then `e2fsck -f -y /dev/md/<name>` before it is mounted. The
// head's next pass finds it running, checks it in full itself (e2fsck -f -p) and mounts it.
package head

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/distonet/distonet/donate/pool"
)

// Exporter publishes a mounted array to the cluster and withdraws it before the array stops.
type Exporter interface {
	Export(ctx context.Context, array, device, mountpoint string) error
	Unexport(ctx context.Context, array, device, mountpoint string) error
}

// Config tunes a Head. The zero value drives the real tools with the defaults below.
type Config struct {
	Runner Runner // default ExecRunner{}
	// Attachers by transport (pool.TransportAoE, pool.TransportISCSI); default AoE and
	// ISCSI (without CHAP credentials) over Runner.
	Attachers map[string]Attacher
	Mdadm     string // default "mdadm"
	// Mkfs makes the filesystem (default "/sbin/mke2fs", called with -t ext4: busybox's
	// own mke2fs only makes ext2).
	Mkfs  string
	Fsck  string // default "/sbin/e2fsck", run with -p before mounting an existing filesystem
	Blkid string // default "blkid"
	// Filesystem is "ext4" (default) or "none" to leave arrays raw for the admin.
	Filesystem string
	MountRoot  string // default /srv/distonet/pool
	Mounts     string // the mount table read to know what is mounted; default /proc/self/mounts
	DevMD      string // default /dev/md
	Mdstat     string // default /proc/mdstat: finer sync progress than mdadm --detail
	Exporter   Exporter
	Logger     *slog.Logger
}

// Head drives mdadm for the arrays of a plan.
type Head struct {
	cfg Config
	log *slog.Logger

	mu   sync.Mutex
	devs map[string]string // disk ID -> device path, as last attached
	// refused holds arrays md would not start dirty and degraded, with the members tried:
	// the same members get the same answer, so the head does not retry (and does not hold
	// them while the admin recovers); a change in who is present is worth another try.
	refused map[string]refusal
	// fullCheck marks arrays an admin force-started after a refusal: their filesystem gets
	// a full e2fsck -f before it is mounted.
	fullCheck map[string]bool
}

type refusal struct {
	members string
	err     error
}

// ErrDirtyDegraded is wrapped by Up's error when md refuses to start an array that is both
// dirty (the head stopped without a clean stop, mid-write) and degraded: starting it could
// serve stale parity as data, so only an admin may force it (see the package doc).
var ErrDirtyDegraded = errors.New("dirty and degraded: md will not start it by itself")

// New returns a Head; see Config for the defaults.
func New(cfg Config) *Head {
	if cfg.Runner == nil {
		cfg.Runner = ExecRunner{}
	}
	if cfg.Attachers == nil {
		cfg.Attachers = map[string]Attacher{
			pool.TransportAoE:   &AoE{Runner: cfg.Runner},
			pool.TransportISCSI: &ISCSI{Runner: cfg.Runner},
		}
	}
	def := func(s *string, v string) {
		if *s == "" {
			*s = v
		}
	}
	def(&cfg.Mdadm, "mdadm")
	def(&cfg.Mkfs, "/sbin/mke2fs")
	def(&cfg.Fsck, "/sbin/e2fsck")
	def(&cfg.Blkid, "blkid")
	def(&cfg.Filesystem, "ext4")
	def(&cfg.MountRoot, "/srv/distonet/pool")
	def(&cfg.Mounts, "/proc/self/mounts")
	def(&cfg.DevMD, "/dev/md")
	def(&cfg.Mdstat, "/proc/mdstat")
	if cfg.Filesystem == "none" {
		cfg.Filesystem = ""
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Head{cfg: cfg, log: log, devs: map[string]string{}, refused: map[string]refusal{}, fullCheck: map[string]bool{}}
}

// Device is the md device path of an array.
func (h *Head) Device(array string) string { return filepath.Join(h.cfg.DevMD, array) }

// MountPoint is where an array's filesystem is mounted.
func (h *Head) MountPoint(array string) string { return filepath.Join(h.cfg.MountRoot, array) }

func (h *Head) mdadm(ctx context.Context, args ...string) ([]byte, error) {
	return h.cfg.Runner.Run(ctx, h.cfg.Mdadm, args...)
}

func (h *Head) attacher(d pool.Disk) (Attacher, error) {
	a, ok := h.cfg.Attachers[d.Transport]
	if !ok {
		return nil, fmt.Errorf("disk %s of node %s: no attacher for transport %q", d.ID(), d.Node, d.Transport)
	}
	return a, nil
}

// plannedDisks lists an array's disks: members in slot order, then spares.
func plannedDisks(a pool.Array) (disks []pool.Disk, roles []string, slots []int) {
	for i, d := range a.Members {
		if d.Address != "" {
			disks, roles, slots = append(disks, d), append(roles, "member"), append(slots, i)
		}
	}
	for _, d := range a.Spares {
		disks, roles, slots = append(disks, d), append(roles, "spare"), append(slots, -1)
	}
	return disks, roles, slots
}

// attach attaches every planned disk that present says is exported; it returns the device
// paths by disk ID. A disk that does not show up is left out (the array may run without it).
func (h *Head) attach(ctx context.Context, a pool.Array, present func(pool.Disk) bool) map[string]string {
	devs := map[string]string{}
	disks, _, _ := plannedDisks(a)
	for _, d := range disks {
		if present != nil && !present(d) {
			continue
		}
		at, err := h.attacher(d)
		if err == nil {
			var dev string
			dev, err = at.Attach(ctx, d)
			if err == nil {
				devs[d.ID()] = dev
				h.mu.Lock()
				h.devs[d.ID()] = dev
				h.mu.Unlock()
				continue
			}
		}
		h.log.Warn("pool member not attached", "array", a.Name, "node", d.Node, "disk", d.ID(), "stage", "attach", "err", err)
	}
	return devs
}

// detail returns the running array's description, or ok=false when it is not assembled.
func (h *Head) detail(ctx context.Context, array string) (Detail, bool, error) {
	out, err := h.mdadm(ctx, "--detail", h.Device(array))
	if err != nil {
		msg := stderrOf(err)
		if strings.Contains(msg, "does not exist") || strings.Contains(msg, "No such file") || strings.Contains(msg, "cannot open") {
			return Detail{}, false, nil
		}
		return Detail{}, false, fmt.Errorf("array %s: %w", array, err)
	}
	d, err := ParseDetail(out)
	if err != nil {
		return Detail{}, false, fmt.Errorf("array %s: %w", array, err)
	}
	return d, true, nil
}

// examine reads a device's md superblock; ok=false when it has none.
func (h *Head) examine(ctx context.Context, dev string) (Examine, bool, error) {
	out, err := h.mdadm(ctx, "--examine", "--export", dev)
	if err != nil {
		if strings.Contains(stderrOf(err), "No md superblock") {
			return Examine{}, false, nil
		}
		return Examine{}, false, fmt.Errorf("examine %s: %w", dev, err)
	}
	e, err := ParseExamineExport(out)
	if err != nil {
		return Examine{}, false, fmt.Errorf("examine %s: %w", dev, err)
	}
	return e, true, nil
}

func (h *Head) ours(a pool.Array, e Examine) bool {
	if a.UUID != "" {
		return e.UUID == a.UUID
	}
	return e.ShortName() == a.Name
}

// Up brings a planned array up: attaches the present members, creates the array when none
// has a superblock yet and all members are there, else assembles it when at most two are
// missing, re-adds or adds members that are back, makes and mounts the filesystem. present
// says which disks their agents report as exported (nil: try all). The returned status
// carries md's UUID once the array exists; the caller records it in the plan.
func (h *Head) Up(ctx context.Context, a pool.Array, present func(pool.Disk) bool) (pool.ArrayStatus, error) {
	devs := h.attach(ctx, a, present)
	d, running, err := h.detail(ctx, a.Name)
	if err != nil {
		return h.failed(a, err), err
	}
	if running && hasWord(d.State, "inactive") {
		// Assembled but never started (too few members at boot): start over.
		if _, err := h.mdadm(ctx, "--stop", h.Device(a.Name)); err != nil {
			return h.failed(a, err), fmt.Errorf("array %s: stop inactive: %w", a.Name, err)
		}
		running = false
	}
	if running {
		h.mu.Lock()
		if _, ok := h.refused[a.Name]; ok {
			// Someone (the admin, per the recovery) started what md refused: check it all.
			delete(h.refused, a.Name)
			h.fullCheck[a.Name] = true
		}
		h.mu.Unlock()
	}
	created := false
	if !running {
		st, made, err := h.assembleOrCreate(ctx, a, devs)
		if err != nil || st.State == pool.ArrayWaiting {
			return st, err
		}
		created = made
	}
	if err := h.rejoin(ctx, a, devs); err != nil {
		return h.failed(a, err), err
	}
	if err := h.filesystem(ctx, a, created); err != nil {
		return h.failed(a, err), err
	}
	return h.Status(ctx, a)
}

// failed is the status of an array the head could not bring up; the message is one line
// (tools print several, e.g. mdadm's refusal of a dirty degraded array).
func (h *Head) failed(a pool.Array, err error) pool.ArrayStatus {
	msg := strings.Join(strings.FieldsFunc(err.Error(), func(r rune) bool { return r == '\n' }), "; ")
	return pool.ArrayStatus{Name: a.Name, Window: a.Window, UUID: a.UUID, Device: h.Device(a.Name), State: pool.ArrayFailed,
		RaidDevices: len(a.Members), Message: msg}
}

func (h *Head) assembleOrCreate(ctx context.Context, a pool.Array, devs map[string]string) (pool.ArrayStatus, bool, error) {
	disks, _, _ := plannedDisks(a)
	type sb struct {
		has  bool
		mine bool
	}
	seen := map[string]sb{}
	var mine []string
	uuid := a.UUID
	for _, d := range disks {
		dev, ok := devs[d.ID()]
		if !ok {
			continue
		}
		e, has, err := h.examine(ctx, dev)
		if err != nil {
			return h.failed(a, err), false, err
		}
		s := sb{has: has, mine: has && h.ours(a, e)}
		seen[d.ID()] = s
		switch {
		case s.mine:
			mine = append(mine, dev)
			if uuid == "" {
				uuid = e.UUID
			}
		case has:
			// Never touch another array's member: it may hold someone's data.
			h.log.Warn("pool member carries another array's superblock; left alone", "array", a.Name, "node", d.Node,
				"disk", d.ID(), "other", e.Name, "stage", "examine")
		}
	}
	need := len(a.Members) - 2
	switch {
	case len(mine) > 0 && len(mine) >= need:
		tried := strings.Join(mine, " ")
		h.mu.Lock()
		r, refused := h.refused[a.Name]
		h.mu.Unlock()
		if refused && r.members == tried {
			return h.failed(a, r.err), false, r.err
		}
		args := []string{"--assemble", h.Device(a.Name), "--run", "--uuid=" + uuid}
		if _, err := h.mdadm(ctx, append(args, mine...)...); err != nil {
			if dirtyDegraded(err) {
				dev := h.Device(a.Name)
				err = fmt.Errorf("array %s (tried with %d of %d members): %w; the head leaves it and its members alone: compare Events in "+
					"`mdadm --examine` of the members, then `mdadm --assemble --force --run %s <the current members, e.g. %s>`, "+
					"then `e2fsck -f %s` before it is mounted: %w", a.Name, len(mine), len(a.Members), ErrDirtyDegraded, dev, tried, dev, err)
				h.mu.Lock()
				h.refused[a.Name] = refusal{members: tried, err: err}
				h.mu.Unlock()
				h.log.Error("pool array dirty and degraded: not started", "array", a.Name, "members", len(mine), "stage", "assemble")
				return h.failed(a, err), false, err
			}
			err = fmt.Errorf("array %s: assemble from %d member(s): %w", a.Name, len(mine), err)
			return h.failed(a, err), false, err
		}
		h.mu.Lock()
		delete(h.refused, a.Name)
		h.mu.Unlock()
		h.log.Info("pool array assembled", "array", a.Name, "members", len(mine), "stage", "assemble")
		return pool.ArrayStatus{}, false, nil
	case len(mine) > 0:
		return h.waiting(a, fmt.Sprintf("%d of %d members present; RAID6 needs %d to assemble", len(mine), len(a.Members), need)), false, nil
	case a.UUID != "":
		// The plan says it was created: blank disks alone must not become a new, empty array.
		return h.waiting(a, "no member with this array's superblock is present"), false, nil
	}
	// No superblock of ours anywhere: a new array, made only with every member present.
	var members, spares []string
	for i, d := range a.Members {
		if d.Address == "" {
			return h.waiting(a, fmt.Sprintf("slot %d has no disk: a new array is made with every member", i)), false, nil
		}
		dev, ok := devs[d.ID()]
		if !ok {
			return h.waiting(a, fmt.Sprintf("member %s of node %s is not attached: a new array is made with every member", d.ID(), d.Node)), false, nil
		}
		if seen[d.ID()].has {
			return h.waiting(a, fmt.Sprintf("member %s of node %s carries another array's superblock: not creating over it", d.ID(), d.Node)), false, nil
		}
		members = append(members, dev)
	}
	for _, d := range a.Spares {
		if dev, ok := devs[d.ID()]; ok && !seen[d.ID()].has {
			spares = append(spares, dev)
		}
	}
	args := []string{"--create", h.Device(a.Name), "--run", "--metadata=1.2", "--homehost=any", "--name=" + a.Name,
		"--level=6", "--raid-devices=" + strconv.Itoa(len(members)), "--bitmap=internal"}
	if len(spares) > 0 {
		args = append(args, "--spare-devices="+strconv.Itoa(len(spares)))
	}
	args = append(append(args, members...), spares...)
	if _, err := h.mdadm(ctx, args...); err != nil {
		err = fmt.Errorf("array %s: create over %d members: %w", a.Name, len(members), err)
		return h.failed(a, err), false, err
	}
	h.log.Info("pool array created", "array", a.Name, "members", len(members), "spares", len(spares), "stage", "create")
	return pool.ArrayStatus{}, true, nil
}

// dirtyDegraded says whether a failed assembly is md refusing a dirty degraded array: mdadm
// prints "consider --force" after the kernel's "cannot start dirty degraded array".
func dirtyDegraded(err error) bool {
	msg := stderrOf(err)
	return strings.Contains(msg, "not clean - consider --force") || strings.Contains(msg, "dirty degraded")
}

func (h *Head) waiting(a pool.Array, msg string) pool.ArrayStatus {
	return pool.ArrayStatus{Name: a.Name, Window: a.Window, UUID: a.UUID, Device: h.Device(a.Name), State: pool.ArrayWaiting,
		RaidDevices: len(a.Members), UsableBytes: a.UsableBytes(), Message: msg}
}

// rejoin brings attached planned disks that the running array lacks back in: --re-add when
// the disk holds this array's superblock (the bitmap resyncs only what changed), --add for a
// blank disk (a replacement or spare: full rebuild). A faulty entry is removed first.
func (h *Head) rejoin(ctx context.Context, a pool.Array, devs map[string]string) error {
	d, running, err := h.detail(ctx, a.Name)
	if err != nil {
		return err
	}
	if !running {
		return fmt.Errorf("array %s: not running after assembly", a.Name)
	}
	disks, _, _ := plannedDisks(a)
	changed := false
	for _, disk := range disks {
		dev, ok := devs[disk.ID()]
		if !ok {
			continue
		}
		if m, in := d.Member(dev); in {
			if !hasWord(m.State, "faulty") {
				continue
			}
			if _, err := h.mdadm(ctx, h.Device(a.Name), "--remove", dev); err != nil {
				return fmt.Errorf("array %s: remove faulty %s: %w", a.Name, dev, err)
			}
			changed = true
		}
		e, has, err := h.examine(ctx, dev)
		if err != nil {
			return fmt.Errorf("array %s: %w", a.Name, err)
		}
		if has && e.UUID != d.UUID {
			h.log.Warn("pool member carries another array's superblock; not added", "array", a.Name, "node", disk.Node,
				"disk", disk.ID(), "other", e.Name, "stage", "rejoin")
			continue
		}
		if has {
			if _, err := h.mdadm(ctx, h.Device(a.Name), "--re-add", dev); err == nil {
				changed = true
				h.log.Info("pool member re-added", "array", a.Name, "node", disk.Node, "disk", disk.ID(), "stage", "re-add")
				continue
			} else if !strings.Contains(stderrOf(err), "not possible") {
				return fmt.Errorf("array %s: re-add %s: %w", a.Name, dev, err)
			}
			// Too far behind for the bitmap (or it was a spare): rebuild in full.
		}
		if _, err := h.mdadm(ctx, h.Device(a.Name), "--add", dev); err != nil {
			return fmt.Errorf("array %s: add %s: %w", a.Name, dev, err)
		}
		changed = true
		h.log.Info("pool member added", "array", a.Name, "node", disk.Node, "disk", disk.ID(), "stage", "add")
	}
	if changed {
		if d, running, err = h.detail(ctx, a.Name); err != nil || !running {
			return err
		}
	}
	return h.replaceUnplanned(ctx, a, d, devs)
}

// replaceUnplanned handles members md still uses that the plan no longer holds (a retired
// donor whose slot the planner gave to another disk, now a spare here): each is hot-replaced
// (--replace --with), so redundancy never drops during the copy; md fails it when the copy is
// done and the next pass removes it. Without a spare in place it stays: better an unplanned
// member than a degraded array.
func (h *Head) replaceUnplanned(ctx context.Context, a pool.Array, d Detail, devs map[string]string) error {
	// Every path a planned disk may show under: attached now, attached before, or where its
	// attacher says it appears.
	planned := map[string]bool{}
	mark := func(dev string) {
		if dev == "" {
			return
		}
		planned[dev] = true
		if real, err := filepath.EvalSymlinks(dev); err == nil {
			planned[real] = true
		}
	}
	disks, _, _ := plannedDisks(a)
	for _, disk := range disks {
		mark(devs[disk.ID()])
		h.mu.Lock()
		mark(h.devs[disk.ID()])
		h.mu.Unlock()
		if at, err := h.attacher(disk); err == nil {
			if p, ok := at.(Pather); ok {
				mark(p.Path(disk))
			}
		}
	}
	attached := map[string]bool{}
	for _, dev := range devs {
		attached[dev] = true
	}
	var spares []string
	replacing := false
	for _, m := range d.Members {
		if m.Device != "" && attached[m.Device] && m.RaidDevice < 0 && hasWord(m.State, "spare") && !hasWord(m.State, "rebuilding") {
			spares = append(spares, m.Device)
		}
		replacing = replacing || hasWord(m.State, "replacement")
	}
	for _, m := range d.Members {
		if m.Device == "" || planned[m.Device] {
			continue
		}
		if hasWord(m.State, "faulty") {
			if _, err := h.mdadm(ctx, h.Device(a.Name), "--remove", m.Device); err != nil {
				return fmt.Errorf("array %s: remove replaced %s: %w", a.Name, m.Device, err)
			}
			h.log.Info("pool unplanned member removed", "array", a.Name, "device", m.Device, "stage", "replace")
			continue
		}
		if m.RaidDevice < 0 || replacing || hasWord(m.State, "rebuilding") {
			continue // an unplanned spare is harmless; one replacement at a time
		}
		if len(spares) == 0 {
			h.log.Warn("pool member no longer planned; kept until a spare is in place", "array", a.Name, "device", m.Device, "stage", "replace")
			continue
		}
		if _, err := h.mdadm(ctx, h.Device(a.Name), "--replace", m.Device, "--with", spares[0]); err != nil {
			return fmt.Errorf("array %s: replace %s with %s: %w", a.Name, m.Device, spares[0], err)
		}
		h.log.Info("pool member being replaced", "array", a.Name, "device", m.Device, "with", spares[0], "stage", "replace")
		spares = spares[1:]
		replacing = true
	}
	return nil
}

// filesystem makes ext4 on an array that carries no signature at all (just created, or the
// head died between create and mkfs), or checks the one it holds, then mounts and exports it.
func (h *Head) filesystem(ctx context.Context, a pool.Array, created bool) error {
	if h.cfg.Filesystem == "" {
		return nil
	}
	dev := h.Device(a.Name)
	mnt := h.MountPoint(a.Name)
	if mounted, err := h.mounted(mnt); err != nil || mounted {
		return err
	}
	out, err := h.cfg.Runner.Run(ctx, h.cfg.Blkid, "-p", "-o", "value", "-s", "TYPE", dev)
	fstype := strings.TrimSpace(string(out))
	switch {
	case err == nil && fstype != h.cfg.Filesystem:
		return fmt.Errorf("array %s: holds %q, not %s: left unmounted for the admin", a.Name, fstype, h.cfg.Filesystem)
	case err != nil && exitCode(err) == 2:
		// blkid exits 2 when it finds no signature: safe to format.
		label := a.Name
		if len(label) > 16 {
			label = label[len(label)-16:] // ext4 labels hold 16 bytes; the tail keeps the index
		}
		if _, err := h.cfg.Runner.Run(ctx, h.cfg.Mkfs, "-t", h.cfg.Filesystem, "-q", "-L", label, dev); err != nil {
			return fmt.Errorf("array %s: mkfs: %w", a.Name, err)
		}
		h.log.Info("pool filesystem made", "array", a.Name, "fs", h.cfg.Filesystem, "created", created, "stage", "mkfs")
	case err != nil:
		return fmt.Errorf("array %s: probe filesystem: %w", a.Name, err)
	default:
		// An existing filesystem: preen it first (quick when it was unmounted cleanly; in
		// full after a forced start). e2fsck exits 1 or 2 when it fixed something, 4 and up
		// when it could not.
		args := []string{"-p", dev}
		h.mu.Lock()
		full := h.fullCheck[a.Name]
		h.mu.Unlock()
		if full {
			args = []string{"-f", "-p", dev}
		}
		if _, err := h.cfg.Runner.Run(ctx, h.cfg.Fsck, args...); err != nil {
			if code := exitCode(err); code < 1 || code > 2 {
				return fmt.Errorf("array %s: filesystem check failed, left unmounted for the admin: %w", a.Name, err)
			}
			h.log.Warn("pool filesystem repaired", "array", a.Name, "stage", "fsck")
		}
		h.mu.Lock()
		delete(h.fullCheck, a.Name)
		h.mu.Unlock()
	}
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		return fmt.Errorf("array %s: %w", a.Name, err)
	}
	if _, err := h.cfg.Runner.Run(ctx, "mount", "-t", h.cfg.Filesystem, dev, mnt); err != nil {
		return fmt.Errorf("array %s: mount: %w", a.Name, err)
	}
	if h.cfg.Exporter != nil {
		if err := h.cfg.Exporter.Export(ctx, a.Name, dev, mnt); err != nil {
			return fmt.Errorf("array %s: export: %w", a.Name, err)
		}
	}
	return nil
}

// mounted reads the mount table for mnt.
func (h *Head) mounted(mnt string) (bool, error) {
	f, err := os.Open(h.cfg.Mounts)
	if err != nil {
		return false, fmt.Errorf("mount table: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 2 && unescapeMount(fields[1]) == mnt {
			return true, nil
		}
	}
	return false, sc.Err()
}

// unescapeMount undoes the octal escapes (\040 for a space) of /proc/mounts.
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// Withdraw fails and removes a member at once (its agent is leaving: waiting for the aoe
// driver to notice would stall writes for minutes), then releases it. The bitmap records
// what changes while it is away, so Up re-adds it with a short resync.
func (h *Head) Withdraw(ctx context.Context, a pool.Array, disk pool.Disk) error {
	h.mu.Lock()
	dev, known := h.devs[disk.ID()]
	h.mu.Unlock()
	d, running, err := h.detail(ctx, a.Name)
	if err != nil {
		return err
	}
	if running && known {
		if _, in := d.Member(dev); in {
			if _, err := h.mdadm(ctx, h.Device(a.Name), "--fail", dev, "--remove", dev); err != nil {
				// md keeps a failed member while requests to it are in flight (a donor that
				// lost power: until the aoe driver gives up): it is out of the array's I/O
				// already, and a later pass removes and releases it.
				if d2, ok, derr := h.detail(ctx, a.Name); derr == nil && ok {
					if m, still := d2.Member(dev); still && hasWord(m.State, "faulty") {
						h.log.Debug("pool member failed, not removable yet", "array", a.Name, "node", disk.Node, "disk", disk.ID(), "stage", "withdraw", "err", err)
						return nil
					}
				}
				return fmt.Errorf("array %s: fail %s (node %s): %w", a.Name, dev, disk.Node, err)
			}
			h.log.Info("pool member withdrawn", "array", a.Name, "node", disk.Node, "disk", disk.ID(), "stage", "withdraw")
		} else {
			var names []string
			for _, m := range d.Members {
				names = append(names, m.Device)
			}
			h.log.Info("pool member to withdraw is not in the array", "array", a.Name, "node", disk.Node, "disk", disk.ID(),
				"device", dev, "members", strings.Join(names, ","), "stage", "withdraw")
		}
	} else {
		h.log.Info("pool member released", "array", a.Name, "node", disk.Node, "disk", disk.ID(), "running", running, "attached", known, "stage", "withdraw")
	}
	return h.detach(ctx, disk)
}

func (h *Head) detach(ctx context.Context, disk pool.Disk) error {
	at, err := h.attacher(disk)
	if err != nil {
		return err
	}
	if err := at.Detach(ctx, disk); err != nil {
		return err
	}
	h.mu.Lock()
	delete(h.devs, disk.ID())
	h.mu.Unlock()
	return nil
}

// Stop takes an array down cleanly: unexport, unmount, mdadm --stop (superblocks marked
// clean, so the next assembly needs no resync), then releases every member. It refuses to
// stop an array whose filesystem will not unmount.
func (h *Head) Stop(ctx context.Context, a pool.Array) error {
	dev, mnt := h.Device(a.Name), h.MountPoint(a.Name)
	if h.cfg.Filesystem != "" {
		mounted, err := h.mounted(mnt)
		if err != nil {
			return err
		}
		if mounted {
			if h.cfg.Exporter != nil {
				if err := h.cfg.Exporter.Unexport(ctx, a.Name, dev, mnt); err != nil {
					return fmt.Errorf("array %s: unexport: %w", a.Name, err)
				}
			}
			if _, err := h.cfg.Runner.Run(ctx, "umount", mnt); err != nil {
				return fmt.Errorf("array %s: unmount before stop: %w", a.Name, err)
			}
		}
	}
	if _, running, err := h.detail(ctx, a.Name); err != nil {
		return err
	} else if running {
		if _, err := h.mdadm(ctx, "--stop", dev); err != nil {
			return fmt.Errorf("array %s: stop: %w", a.Name, err)
		}
		h.log.Info("pool array stopped", "array", a.Name, "stage", "stop")
	}
	var errs []error
	disks, _, _ := plannedDisks(a)
	for _, d := range disks {
		if err := h.detach(ctx, d); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Status reports the array as md sees it, with each planned disk's state.
func (h *Head) Status(ctx context.Context, a pool.Array) (pool.ArrayStatus, error) {
	st := pool.ArrayStatus{Name: a.Name, Window: a.Window, UUID: a.UUID, Device: h.Device(a.Name), State: pool.ArrayStopped,
		RaidDevices: len(a.Members), UsableBytes: a.UsableBytes()}
	d, running, err := h.detail(ctx, a.Name)
	if err != nil {
		return h.failed(a, err), err
	}
	h.mu.Lock()
	devs := make(map[string]string, len(h.devs))
	for k, v := range h.devs {
		devs[k] = v
	}
	h.mu.Unlock()
	disks, roles, slots := plannedDisks(a)
	for i, disk := range disks {
		ms := pool.MemberStatus{Disk: disk.ID(), Node: disk.Node, Device: devs[disk.ID()], Role: roles[i], Slot: slots[i], State: "detached"}
		if running && ms.Device != "" {
			ms.State = "missing"
			if m, ok := d.Member(ms.Device); ok {
				ms.State = memberState(m)
			}
		}
		st.Members = append(st.Members, ms)
	}
	if !running {
		return st, nil
	}
	st.UUID = d.UUID
	st.RaidDevices, st.Active, st.Spares, st.Failed = d.RaidDevices, d.ActiveDevices, d.SpareDevices, d.Failed
	st.UsableBytes = d.ArraySizeKiB * 1024
	st.Degraded = d.Degraded()
	st.State = pool.ArrayRunning
	if st.Degraded {
		st.State = pool.ArrayDegraded
	}
	if d.SyncAction != "" {
		st.State = pool.ArraySyncing
		st.SyncAction = d.SyncAction
		st.SyncPercent = float64(d.SyncPercent)
	}
	h.refineSync(&st, a.Name)
	if hasWord(d.State, "FAILED") {
		st.State = pool.ArrayFailed
		st.Message = "more members lost than RAID6 survives"
	}
	if h.cfg.Filesystem != "" {
		if mounted, err := h.mounted(h.MountPoint(a.Name)); err == nil && mounted {
			st.Filesystem, st.MountPoint = h.cfg.Filesystem, h.MountPoint(a.Name)
		}
	}
	return st, nil
}

func memberState(m DetailMember) string {
	switch {
	case hasWord(m.State, "faulty"):
		return "faulty"
	case hasWord(m.State, "rebuilding"):
		return "rebuilding"
	case hasWord(m.State, "spare"):
		return "spare"
	case hasWord(m.State, "sync"):
		return "in_sync"
	}
	return strings.Join(m.State, " ")
}

// refineSync takes the sync progress from /proc/mdstat, which has a tenth of a percent, the
// speed and md's estimate of the time left.
func (h *Head) refineSync(st *pool.ArrayStatus, array string) {
	link, err := os.Readlink(h.Device(array))
	if err != nil {
		return
	}
	b, err := os.ReadFile(h.cfg.Mdstat)
	if err != nil {
		return
	}
	ms, err := ParseMdstat(b)
	if err != nil {
		return
	}
	m, ok := ms.Array(filepath.Base(link))
	if !ok || m.Action == "" {
		return
	}
	st.State = pool.ArraySyncing
	st.SyncAction, st.SyncPercent, st.SyncSpeed, st.SyncFinish = m.Action, m.Progress, m.Speed, m.Finish
}
