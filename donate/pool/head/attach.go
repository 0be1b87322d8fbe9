package head

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/distonet/distonet/donate/pool"
)

// Attacher makes a planned disk a block device on the head, and lets it go.
type Attacher interface {
	// Attach returns the device path of disk once the kernel shows it.
	Attach(ctx context.Context, d pool.Disk) (string, error)
	// Detach releases it: after it returns the donor may stop exporting.
	Detach(ctx context.Context, d pool.Disk) error
}

// Pather is implemented by attachers that know where a disk appears without attaching it,
// so the head recognises a planned member md holds even when it did not attach it this pass.
type Pather interface {
	Path(d pool.Disk) string
}

// ErrNotFound is returned when a disk does not show up in time: its donor is not exporting.
var ErrNotFound = errors.New("disk not found on the network")

var aoeAddr = regexp.MustCompile(`^e([0-9]{1,5})\.([0-9]{1,3})$`)

// AoE attaches AoE disks through the kernel's aoe initiator and aoetools: aoe-discover makes
// the driver probe, the disk appears as /dev/etherd/e<shelf>.<slot>, aoe-flush drops it.
type AoE struct {
	Runner Runner
	// DevDir is where the aoe driver's devices appear (default /dev/etherd).
	DevDir string
	// Wait bounds how long Attach waits for the device after discovery (default 10 s).
	Wait time.Duration
	// Poll is the interval between checks (default 200 ms).
	Poll time.Duration
	// Exists reports whether a device node exists (default: os.Stat); tests replace it.
	Exists func(path string) bool
	// Interfaces, when set, restricts the aoe driver to these network interfaces (the boot
	// network) before its first discovery, so it neither probes nor accepts targets elsewhere.
	Interfaces []string

	once  sync.Once
	ifErr error
}

func (a *AoE) defaults() (dir string, wait, poll time.Duration, exists func(string) bool) {
	dir, wait, poll, exists = a.DevDir, a.Wait, a.Poll, a.Exists
	if dir == "" {
		dir = "/dev/etherd"
	}
	if wait <= 0 {
		wait = 10 * time.Second
	}
	if poll <= 0 {
		poll = 200 * time.Millisecond
	}
	if exists == nil {
		exists = func(p string) bool { _, err := os.Stat(p); return err == nil }
	}
	return
}

// Attach implements Attacher.
func (a *AoE) Attach(ctx context.Context, d pool.Disk) (string, error) {
	if !aoeAddr.MatchString(d.Address) {
		return "", fmt.Errorf("aoe disk %q of node %s: address is not e<shelf>.<slot>", d.Address, d.Node)
	}
	dir, wait, poll, exists := a.defaults()
	dev := filepath.Join(dir, d.Address)
	if exists(dev) {
		return dev, nil
	}
	if len(a.Interfaces) > 0 {
		a.once.Do(func() {
			if _, err := a.Runner.Run(ctx, "aoe-interfaces", a.Interfaces...); err != nil {
				a.ifErr = fmt.Errorf("aoe: restrict to %v: %w", a.Interfaces, err)
			}
		})
		if a.ifErr != nil {
			return "", a.ifErr
		}
	}
	if _, err := a.Runner.Run(ctx, "aoe-discover"); err != nil {
		return "", fmt.Errorf("aoe disk %s of node %s: discover: %w", d.Address, d.Node, err)
	}
	return waitFor(ctx, dev, wait, poll, exists, fmt.Sprintf("aoe disk %s of node %s", d.Address, d.Node))
}

// Path implements Pather.
func (a *AoE) Path(d pool.Disk) string {
	dir, _, _, _ := a.defaults()
	return filepath.Join(dir, d.Address)
}

// Detach implements Attacher. The device must no longer be in an md array. A disk the
// driver does not show (never attached: its donor was away) has nothing to release, and
// aoe-flush would fail on it.
func (a *AoE) Detach(ctx context.Context, d pool.Disk) error {
	if !aoeAddr.MatchString(d.Address) {
		return fmt.Errorf("aoe disk %q of node %s: address is not e<shelf>.<slot>", d.Address, d.Node)
	}
	if dir, _, _, exists := a.defaults(); !exists(filepath.Join(dir, d.Address)) {
		return nil
	}
	if _, err := a.Runner.Run(ctx, "aoe-flush", d.Address); err != nil {
		return fmt.Errorf("aoe disk %s of node %s: flush: %w", d.Address, d.Node, err)
	}
	return nil
}

func waitFor(ctx context.Context, dev string, wait, poll time.Duration, exists func(string) bool, what string) (string, error) {
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	tick := time.NewTicker(poll)
	defer tick.Stop()
	for {
		if exists(dev) {
			return dev, nil
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("%s: %w", what, ctx.Err())
		case <-deadline.C:
			return "", fmt.Errorf("%s: %s did not appear within %v: %w", what, dev, wait, ErrNotFound)
		case <-tick.C:
		}
	}
}

// Credentials gives the CHAP login for a donor's iSCSI target (the registry's seam).
type Credentials interface {
	CHAP(d pool.Disk) (user, secret string, err error)
}

// ISCSI attaches iSCSI disks through the kernel initiator (open-iscsi's iscsiadm, with
// iscsid running): a node record with CHAP, a login, then the disk of LUN found by udev's
// by-path link or, where no udev runs, through sysfs (the session whose targetname is the
// IQN). Logout releases it.
type ISCSI struct {
	Runner      Runner
	Credentials Credentials
	// LUN is the donor target's LUN (default 0).
	LUN int
	// ByPath is the udev by-path directory (default /dev/disk/by-path).
	ByPath string
	// Sysfs is where sysfs is mounted (default /sys) and Dev where device nodes are
	// (default /dev), for the lookup without udev.
	Sysfs, Dev string
	Wait       time.Duration // default 10 s
	Poll       time.Duration // default 200 ms
	Exists     func(path string) bool
}

// Attach implements Attacher.
func (s *ISCSI) Attach(ctx context.Context, d pool.Disk) (string, error) {
	if d.Portal == "" || d.Address == "" {
		return "", fmt.Errorf("iscsi disk %q of node %s: portal and target IQN are required", d.Address, d.Node)
	}
	what := fmt.Sprintf("iscsi disk %s of node %s", d.Address, d.Node)
	aoe := AoE{Wait: s.Wait, Poll: s.Poll, Exists: s.Exists}
	_, wait, poll, exists := aoe.defaults()
	find := func() string {
		if p := s.devPath(d); exists(p) {
			return p
		}
		if p := s.sysfsDisk(d.Address); p != "" && exists(p) {
			return p
		}
		return ""
	}
	if dev := find(); dev != "" {
		return dev, nil
	}
	node := []string{"-m", "node", "-T", d.Address, "-p", d.Portal}
	steps := [][]string{append(append([]string(nil), node...), "-o", "new")}
	if s.Credentials != nil {
		user, secret, err := s.Credentials.CHAP(d)
		if err != nil {
			return "", fmt.Errorf("%s: credentials: %w", what, err)
		}
		for _, kv := range [][2]string{{"node.session.auth.authmethod", "CHAP"}, {"node.session.auth.username", user}, {"node.session.auth.password", secret}} {
			steps = append(steps, append(append([]string(nil), node...), "-o", "update", "-n", kv[0], "-v", kv[1]))
		}
	}
	steps = append(steps, append(append([]string(nil), node...), "--login"))
	for _, argv := range steps {
		if _, err := s.Runner.Run(ctx, "iscsiadm", argv...); err != nil {
			return "", fmt.Errorf("%s: %w", what, redactErr(append([]string{"iscsiadm"}, argv...), err))
		}
	}
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	tick := time.NewTicker(poll)
	defer tick.Stop()
	for {
		if dev := find(); dev != "" {
			return dev, nil
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("%s: %w", what, ctx.Err())
		case <-deadline.C:
			return "", fmt.Errorf("%s: LUN %d did not appear within %v after login: %w", what, s.LUN, wait, ErrNotFound)
		case <-tick.C:
		}
	}
}

// sysfsDisk finds the block device of LUN in the session logged in to iqn, or "".
func (s *ISCSI) sysfsDisk(iqn string) string {
	sys, dev := s.Sysfs, s.Dev
	if sys == "" {
		sys = "/sys"
	}
	if dev == "" {
		dev = "/dev"
	}
	sessions, _ := filepath.Glob(filepath.Join(sys, "class", "iscsi_session", "session*"))
	for _, sess := range sessions {
		b, err := os.ReadFile(filepath.Join(sess, "targetname"))
		if err != nil || strings.TrimSpace(string(b)) != iqn {
			continue
		}
		// session*/device is the session's device; below it target<h>:0:0/<h>:0:0:<lun>/block/<disk>.
		blocks, _ := filepath.Glob(filepath.Join(sess, "device", "target*", fmt.Sprintf("*:*:*:%d", s.LUN), "block", "*"))
		if len(blocks) > 0 {
			return filepath.Join(dev, filepath.Base(blocks[0]))
		}
	}
	return ""
}

// Detach implements Attacher.
func (s *ISCSI) Detach(ctx context.Context, d pool.Disk) error {
	if _, err := s.Runner.Run(ctx, "iscsiadm", "-m", "node", "-T", d.Address, "-p", d.Portal, "--logout"); err != nil {
		if exitCode(err) == 21 { // ISCSI_ERR_NO_OBJS_FOUND: no session, nothing to release
			return nil
		}
		return fmt.Errorf("iscsi disk %s of node %s: logout: %w", d.Address, d.Node, err)
	}
	return nil
}

// Path implements Pather: the by-path link, or the sysfs disk when logged in without udev.
func (s *ISCSI) Path(d pool.Disk) string {
	if p := s.sysfsDisk(d.Address); p != "" {
		return p
	}
	return s.devPath(d)
}

func (s *ISCSI) devPath(d pool.Disk) string {
	dir := s.ByPath
	if dir == "" {
		dir = "/dev/disk/by-path"
	}
	return filepath.Join(dir, fmt.Sprintf("ip-%s-iscsi-%s-lun-%d", d.Portal, d.Address, s.LUN))
}

// Static maps disks to device paths that are already there (disks attached by other means,
// or a test's loop and virtio devices). Detach does nothing.
type Static map[string]string // pool.Disk.ID() -> device path

// Attach implements Attacher.
func (s Static) Attach(_ context.Context, d pool.Disk) (string, error) {
	if dev, ok := s[d.ID()]; ok {
		return dev, nil
	}
	return "", fmt.Errorf("disk %s of node %s: %w", d.ID(), d.Node, ErrNotFound)
}

// Path implements Pather.
func (s Static) Path(d pool.Disk) string { return s[d.ID()] }

// Detach implements Attacher.
func (s Static) Detach(context.Context, pool.Disk) error { return nil }

// redactErr rebuilds a failed command's error without the secrets of its argv, whatever the
// Runner put in it.
func redactErr(argv []string, err error) error {
	var ce *CommandError
	if errors.As(err, &ce) {
		c := *ce
		c.Argv = Redact(argv)
		c.Err = fmt.Errorf("exit status %d", c.ExitCode)
		return &c
	}
	return fmt.Errorf("%s: failed", strings.Join(Redact(argv), " "))
}
