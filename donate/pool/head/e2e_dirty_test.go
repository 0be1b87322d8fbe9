package head

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/distonet/distonet/donate/pool"
	"github.com/distonet/distonet/donate/pool/poolvm"
	"golang.org/x/sys/unix"
)

// A power cut of the head while a member is missing: five AoE donors make a RAID6 (no
// spare) with ext4 and checksummed files; one donor dies and is failed out; the head keeps
// writing and is SIGKILLed mid-write (boot 1). Booted again over the same disks (boot 2),
// the head must not start the dirty degraded array, with two members missing or one, must
// say why and leave the members as they are; then the recovery the package doc gives
// (mdadm --assemble --force --run, e2fsck -f) brings it back with the files written before
// the donor died intact, and the returning donor is re-added. The control case ends boot 2:
// the donor dies again, and the power is cut once md has marked the array clean (no write
// for md's safe_mode_delay); boot 3 assembles that degraded array by itself, data intact.
func TestE2EPoolHeadDirtyDegraded(t *testing.T) {
	if os.Getenv("DISTONET_E2E") == "" {
		t.Skip("real md runs in a QEMU guest: set DISTONET_E2E=1 (make e2e)")
	}
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	disks := t.TempDir()
	// What boot 1 hands to boot 2 (the guest keeps nothing): the plan with md's UUID, and
	// the checksums of the files written before the donor died.
	var plan string
	var sums []string
	keep := func(line string) {
		if rest, ok := strings.CutPrefix(line, "KEEP plan "); ok {
			plan = rest
		} else if rest, ok := strings.CutPrefix(line, "KEEP sum "); ok {
			sums = append(sums, rest)
		}
	}
	cfg := poolvm.Config{Package: wd, GuestEnv: guestEnv, Donors: dirtyDonors, DonorBytes: dirtyDonorBytes, Disks: disks, OnLine: keep}
	t.Run("crash", func(t *testing.T) {
		c := cfg
		c.GuestArg = "dirty-crash"
		if got := poolvm.Run(t, c); got != poolvm.Crashed {
			t.Fatalf("guest scenario: %s", got)
		}
	})
	if t.Failed() {
		return
	}
	if plan == "" || len(sums) == 0 {
		t.Fatalf("boot 1 handed over no plan (%q) or no checksums (%d)", plan, len(sums))
	}
	// The crash left the survivors' superblocks dirty (mdadm: "State : active") and the
	// dead donor's one behind (it was failed out before the crash).
	events := map[int]int64{}
	for s := 1; s <= dirtyDonors; s++ {
		img := filepath.Join(disks, fmt.Sprintf("donor%d.img", s))
		out, err := exec.Command("mdadm", "--examine", img).CombinedOutput()
		if err != nil {
			t.Fatalf("mdadm --examine %s: %v: %s", img, err, out)
		}
		state := examineField(string(out), "State")
		events[s], _ = strconv.ParseInt(examineField(string(out), "Events"), 10, 64)
		t.Logf("host: donor %d after the crash: State %q, Events %d, Array State %q", s, state, events[s], examineField(string(out), "Array State"))
		if s != dirtyKilled && state != "active" {
			t.Errorf("donor %d: superblock State %q after the crash, want active (dirty)", s, state)
		}
	}
	for s := 1; s <= dirtyDonors; s++ {
		if s != dirtyKilled && events[s] <= events[dirtyKilled] {
			t.Errorf("donor %d: Events %d not ahead of the dead donor's %d", s, events[s], events[dirtyKilled])
		}
	}
	if t.Failed() {
		return
	}
	t.Run("restart", func(t *testing.T) {
		c := cfg
		c.GuestArg = "dirty-restart"
		c.Absent = []int{dirtyKilled}
		c.Files = map[string]string{"/dirty/plan.json": plan, "/dirty/sums": strings.Join(sums, "\n") + "\n"}
		if got := poolvm.Run(t, c); got != poolvm.Crashed {
			t.Fatalf("guest scenario: %s", got)
		}
	})
	if t.Failed() {
		return
	}
	// The second cut came while the array was idle: clean superblocks.
	for s := 1; s <= dirtyDonors; s++ {
		if s == dirtyKilled {
			continue
		}
		img := filepath.Join(disks, fmt.Sprintf("donor%d.img", s))
		out, err := exec.Command("mdadm", "--examine", img).CombinedOutput()
		if err != nil {
			t.Fatalf("mdadm --examine %s: %v: %s", img, err, out)
		}
		if state := examineField(string(out), "State"); state != "clean" {
			t.Errorf("donor %d: superblock State %q after the idle cut, want clean", s, state)
		}
	}
	if t.Failed() {
		return
	}
	t.Run("clean-restart", func(t *testing.T) {
		c := cfg
		c.GuestArg = "dirty-clean-restart"
		c.Absent = []int{dirtyKilled}
		c.Files = map[string]string{"/dirty/plan.json": plan, "/dirty/sums": strings.Join(sums, "\n") + "\n"}
		if got := poolvm.Run(t, c); got != "ok" {
			t.Errorf("guest scenario: %s", got)
		}
	})
}

const (
	dirtyDonors     = 5
	dirtyDonorBytes = 64 << 20
	dirtyKilled     = 2 // the donor that dies before the crash
)

// examineField returns a "Key : value" field of mdadm --examine's text.
func examineField(text, key string) string {
	re := regexp.MustCompile(`(?m)^\s*` + regexp.QuoteMeta(key) + `\s*:\s*(.*?)\s*$`)
	if m := re.FindStringSubmatch(text); m != nil {
		return m[1]
	}
	return ""
}

func dirtyInventory(online func(shelf int) bool) []pool.Member {
	var inv []pool.Member
	for s := 1; s <= dirtyDonors; s++ {
		st := pool.StateOnline
		if !online(s) {
			st = pool.StateOffline
		}
		inv = append(inv, pool.Member{Node: fmt.Sprintf("pc%d", s), Group: fmt.Sprintf("room%d", (s+1)/2), Transport: pool.TransportAoE,
			Address: fmt.Sprintf("e%d.0", s), SizeBytes: dirtyDonorBytes, State: st})
	}
	return inv
}

// mdName is the kernel's name (md127) behind /dev/md/<array>.
func mdName(dev string) string {
	link, err := os.Readlink(dev)
	if err != nil {
		return ""
	}
	return filepath.Base(link)
}

func mdAttr(dev, attr string) string {
	b, _ := os.ReadFile(filepath.Join("/sys/block", mdName(dev), "md", attr))
	return strings.TrimSpace(string(b))
}

// dirtyCrashScenario is boot 1.
func (g *guest) dirtyCrashScenario() error {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	run := &recordingRunner{}
	logger := slog.New(slog.NewTextHandler(os.Stdout, nil))
	aoe := &AoE{Runner: run, Wait: 30 * time.Second}
	h := New(Config{Runner: run, MountRoot: "/mnt/pool", Logger: logger, Attachers: map[string]Attacher{pool.TransportAoE: aoe}})
	if _, err := run.Run(ctx, "aoe-discover"); err != nil {
		return err
	}
	layout, reasons := pool.Plan(pool.Layout{}, dirtyInventory(func(int) bool { return true }), pool.Options{Spares: -1})
	if len(layout.Arrays) != 1 || len(layout.Arrays[0].Members) != dirtyDonors || len(layout.Arrays[0].Spares) != 0 {
		return fmt.Errorf("plan: %+v %v", layout, reasons)
	}
	a := layout.Arrays[0]
	st, err := h.Up(ctx, a, nil)
	if err != nil {
		return fmt.Errorf("create: %w", err)
	}
	if st.UUID == "" || st.MountPoint == "" {
		return fmt.Errorf("create: status %+v", st)
	}
	a.UUID = st.UUID
	layout.Arrays[0] = a
	dev, mnt := h.Device(a.Name), h.MountPoint(a.Name)
	if _, err := run.Run(ctx, "mdadm", "--wait", dev); err != nil && exitCode(err) != 1 {
		return fmt.Errorf("wait for the initial resync: %w", err)
	}
	g.say(fmt.Sprintf("STEP %s created over %d donors, ext4 mounted, in sync; md safe_mode_delay %s s, start_dirty_degraded %s",
		a.Name, dirtyDonors, mdAttr(dev, "safe_mode_delay"), startDirtyDegraded()))

	// Files whose checksums boot 2 checks: written and synced while every member was there.
	if err := os.MkdirAll(filepath.Join(mnt, "before"), 0o755); err != nil {
		return err
	}
	buf := make([]byte, 2<<20)
	for i := 0; i < 8; i++ {
		if _, err := rand.Read(buf); err != nil {
			return err
		}
		name := fmt.Sprintf("before/f%02d.bin", i)
		if err := os.WriteFile(filepath.Join(mnt, name), buf, 0o644); err != nil {
			return err
		}
		g.say(fmt.Sprintf("KEEP sum %s %x", name, sha256.Sum256(buf)))
	}
	unix.Sync()
	pj, err := json.Marshal(layout)
	if err != nil {
		return err
	}
	g.say("KEEP plan " + string(pj))

	// A donor dies; the head fails it out at once (what the Server does when its agent is
	// reported offline): the array runs degraded.
	if err := g.need("kill", dirtyKilled); err != nil {
		return err
	}
	var gone pool.Disk
	for _, d := range a.Members {
		if d.Address == fmt.Sprintf("e%d.0", dirtyKilled) {
			gone = d
		}
	}
	if err := h.Withdraw(ctx, a, gone); err != nil {
		return fmt.Errorf("withdraw %s: %w", gone.Address, err)
	}
	if st, err := h.Status(ctx, a); err != nil || st.State != pool.ArrayDegraded {
		return fmt.Errorf("after the donor died: %+v %v\n%s", st, err, mdstatText())
	}
	g.say("CHECK degraded: " + strings.ReplaceAll(strings.TrimSpace(mdstatText()), "\n", " / "))

	// Keep writing (synced writes, so md stays "active", i.e. dirty) and cut the power in
	// the middle of it. md marks the array clean after safe_mode_delay without writes; a
	// longer delay keeps a TCG guest that the busy host pauses between two writes from being
	// clean when the kill lands (boot 2's idle cut shows the default at work).
	if err := os.WriteFile(filepath.Join("/sys/block", mdName(dev), "md", "safe_mode_delay"), []byte("10\n"), 0o644); err != nil {
		return fmt.Errorf("safe_mode_delay: %w", err)
	}
	if err := os.MkdirAll(filepath.Join(mnt, "during"), 0o755); err != nil {
		return err
	}
	var written atomic.Int64
	werr := make(chan error, 1)
	go func() {
		b := make([]byte, 256<<10)
		for i := 0; ; i++ {
			_, _ = rand.Read(b)
			f, err := os.Create(filepath.Join(mnt, "during", fmt.Sprintf("w%05d.bin", i)))
			if err == nil {
				_, err = f.Write(b)
				if err == nil {
					err = f.Sync()
				}
				f.Close()
			}
			if err != nil {
				werr <- err
				return
			}
			written.Add(1)
		}
	}()
	for written.Load() < 12 {
		select {
		case err := <-werr:
			return fmt.Errorf("writing while degraded: %w", err)
		case <-time.After(100 * time.Millisecond):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	state := mdAttr(dev, "array_state")
	g.say(fmt.Sprintf("CHECK %d files written while degraded, md array_state %s: cutting the power", written.Load(), state))
	if state != "active" {
		return fmt.Errorf("array_state %q while writing: the crash would not leave it dirty", state)
	}
	return g.ctl.Crash()
}

// dirtyRestartScenario is boot 2: the head starts again over the disks the crash left.
func (g *guest) dirtyRestartScenario() error {
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Minute)
	defer cancel()
	pj, err := os.ReadFile("/dirty/plan.json")
	if err != nil {
		return err
	}
	var layout pool.Layout
	if err := json.Unmarshal(pj, &layout); err != nil {
		return fmt.Errorf("plan from boot 1: %w", err)
	}
	sumText, err := os.ReadFile("/dirty/sums")
	if err != nil {
		return err
	}
	a := layout.Arrays[0]
	run := &recordingRunner{}
	logger := slog.New(slog.NewTextHandler(os.Stdout, nil))
	aoe := &AoE{Runner: run, Wait: 30 * time.Second}
	h := New(Config{Runner: run, MountRoot: "/mnt/pool", Logger: logger, Attachers: map[string]Attacher{pool.TransportAoE: aoe}})
	dev, mnt := h.Device(a.Name), h.MountPoint(a.Name)
	if _, err := run.Run(ctx, "aoe-discover"); err != nil {
		return err
	}
	// e4 is late as well at first: two members missing, then one.
	const late = 4
	lateOnline := false
	reg := &memRegistry{layout: layout, last: map[string]pool.ArrayStatus{},
		members: dirtyInventory(func(s int) bool { return s != dirtyKilled && s != late })}
	t0 := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	now := t0
	srv, err := NewServer(ServerConfig{Head: h, Registry: reg, Location: time.UTC, Now: func() time.Time { return now }, Logger: logger})
	if err != nil {
		return err
	}

	// The survivors' superblocks as the crash left them, to show nothing touches them.
	var survivors []string
	for s := 1; s <= dirtyDonors; s++ {
		if s != dirtyKilled {
			survivors = append(survivors, fmt.Sprintf("/dev/etherd/e%d.0", s))
		}
	}
	superblocks := func() (map[string]string, error) {
		out := map[string]string{}
		for i, d := range survivors {
			if _, err := aoe.Attach(ctx, pool.Disk{Node: "n", Transport: pool.TransportAoE, Address: strings.TrimPrefix(d, "/dev/etherd/")}); err != nil {
				return nil, err
			}
			b, err := exec.CommandContext(ctx, "mdadm", "--examine", survivors[i]).CombinedOutput()
			if err != nil {
				return nil, fmt.Errorf("mdadm --examine %s: %v: %s", d, err, b)
			}
			out[d] = string(b)
		}
		return out, nil
	}
	before, err := superblocks()
	if err != nil {
		return err
	}
	for _, d := range survivors {
		g.say(fmt.Sprintf("CHECK %s: State %s, Events %s, Array State %s", d, examineField(before[d], "State"),
			examineField(before[d], "Events"), examineField(before[d], "Array State")))
	}
	run.take()

	// 1. Members missing right after start: the server waits for latecomers.
	if err := srv.Reconcile(ctx); err != nil {
		return fmt.Errorf("first pass: %w", err)
	}
	if st := reg.status(a.Name); st.State != pool.ArrayWaiting {
		return fmt.Errorf("first pass: status %+v", st)
	}
	g.say("CHECK within the grace period: " + reg.status(a.Name).Message)
	if v := startDirtyDegraded(); v != "0" {
		return fmt.Errorf("md_mod start_dirty_degraded is %q: md would start a dirty degraded array", v)
	}

	// 2. Grace over, two members missing (dead e2, late e4): md refuses, the head says why.
	now = t0.Add(6 * time.Minute)
	err = srv.Reconcile(ctx)
	st := reg.status(a.Name)
	g.say(fmt.Sprintf("CHECK missing 2: err %v; reported %s: %s", err, st.State, st.Message))
	g.say("CHECK kernel: " + kernelMD())
	if !errors.Is(err, ErrDirtyDegraded) || st.State != pool.ArrayFailed || !strings.Contains(st.Message, "--assemble --force --run "+dev) {
		return fmt.Errorf("missing 2: err %v, status %+v\n%s", err, st, mdstatText())
	}

	// 3. The late one arrives: one missing, parity to spare, still refused (dirty).
	reg.set(fmt.Sprintf("e%d.0", late), pool.StateOnline)
	lateOnline = true
	err = srv.Reconcile(ctx)
	st = reg.status(a.Name)
	g.say(fmt.Sprintf("CHECK missing 1: err %v; reported %s: %s", err, st.State, st.Message))
	g.say("CHECK kernel: " + kernelMD())
	if !errors.Is(err, ErrDirtyDegraded) || st.State != pool.ArrayFailed {
		return fmt.Errorf("missing 1: err %v, status %+v\n%s", err, st, mdstatText())
	}
	// 4. The same members again: no new attempt (the admin may be at work on them).
	if err := srv.Reconcile(ctx); !errors.Is(err, ErrDirtyDegraded) {
		return fmt.Errorf("third pass: %v", err)
	}
	calls := run.take()
	var assembles []string
	for _, c := range calls {
		for _, bad := range []string{"--force", "--create", "mke2fs", "--add", "--re-add", "--zero-superblock", "e2fsck", "mount"} {
			if strings.Contains(c, bad) {
				return fmt.Errorf("the head ran %q on a refused array", c)
			}
		}
		if strings.Contains(c, "--assemble") {
			assembles = append(assembles, c)
		}
	}
	if len(assembles) != 2 || !lateOnline {
		return fmt.Errorf("want one assembly attempt per member set, got:\n%s", strings.Join(assembles, "\n"))
	}
	if strings.Contains(mdstatText(), "active") {
		return fmt.Errorf("an array is active after the refusal:\n%s", mdstatText())
	}
	after, err := superblocks()
	if err != nil {
		return err
	}
	for _, d := range survivors {
		if before[d] != after[d] {
			return fmt.Errorf("%s: superblock changed by the refused assembly:\nbefore:\n%s\nafter:\n%s", d, before[d], after[d])
		}
	}
	g.say("CHECK refused twice, one attempt per member set, superblocks unchanged, nothing started")

	// 5. The recovery, as documented: the current members (highest Events), forced start,
	// full fsck.
	admin := ExecRunner{}
	var newest int64
	evs := map[string]int64{}
	for _, d := range survivors {
		out, err := admin.Run(ctx, "mdadm", "--examine", d)
		if err != nil {
			return err
		}
		evs[d], _ = strconv.ParseInt(examineField(string(out), "Events"), 10, 64)
		newest = max(newest, evs[d])
	}
	var current []string
	for _, d := range survivors {
		if evs[d] == newest {
			current = append(current, d)
		}
	}
	sort.Strings(current)
	out, err := combined(ctx, "mdadm", append([]string{"--assemble", "--force", "--run", dev}, current...)...)
	g.say("CHECK admin: mdadm --assemble --force --run " + dev + " " + strings.Join(current, " ") + ": " + oneLine(out))
	if err != nil {
		return fmt.Errorf("forced assembly: %w: %s", err, out)
	}
	g.say(fmt.Sprintf("CHECK after the forced start: array_state %s, sync_action %s, degraded %s", mdAttr(dev, "array_state"),
		mdAttr(dev, "sync_action"), mdAttr(dev, "degraded")))
	out, err = combined(ctx, "/sbin/e2fsck", "-f", "-y", dev)
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		return err
	}
	g.say(fmt.Sprintf("CHECK admin: e2fsck -f -y %s: exit %d: %s", dev, code, oneLine(out)))
	if code > 1 {
		return fmt.Errorf("e2fsck -f -y: exit %d:\n%s", code, out)
	}
	if out, err := combined(ctx, "/sbin/e2fsck", "-f", "-n", dev); err != nil {
		return fmt.Errorf("a second e2fsck -f -n still finds problems: %w\n%s", err, out)
	}

	// 6. The head takes over: mounts it (after its own full check), data intact.
	if err := srv.Reconcile(ctx); err != nil {
		return fmt.Errorf("after recovery: %w", err)
	}
	calls = run.take()
	if !strings.Contains(strings.Join(calls, "\n"), "e2fsck -f -p "+dev) {
		return fmt.Errorf("after recovery: no full check before mounting:\n%s", strings.Join(calls, "\n"))
	}
	if st := reg.status(a.Name); st.MountPoint != mnt || !st.Degraded {
		return fmt.Errorf("after recovery: status %+v", st)
	}
	check := func(when string) error {
		if err := dropCaches(); err != nil {
			return err
		}
		n := 0
		for _, l := range strings.Split(strings.TrimSpace(string(sumText)), "\n") {
			name, want, ok := strings.Cut(l, " ")
			if !ok {
				return fmt.Errorf("bad checksum line %q", l)
			}
			if got, err := fileSum(filepath.Join(mnt, name)); err != nil || got != want {
				return fmt.Errorf("%s: %s reads back %s, %v (want %s)", when, name, got, err, want)
			}
			n++
		}
		g.say(fmt.Sprintf("CHECK %s: %d files written before the donor died read back intact", when, n))
		return nil
	}
	if err := check("after recovery"); err != nil {
		return err
	}
	during, _ := filepath.Glob(filepath.Join(mnt, "during", "*"))
	g.say(fmt.Sprintf("CHECK %d files written while degraded survived the crash (the last ones may not)", len(during)))

	// 7. The dead donor returns: back in (bitmap re-add or full rebuild), redundancy restored.
	if err := g.need("start", dirtyKilled); err != nil {
		return err
	}
	reg.set(fmt.Sprintf("e%d.0", dirtyKilled), pool.StateOnline)
	if err := srv.Reconcile(ctx); err != nil {
		return fmt.Errorf("return: %w", err)
	}
	g.say("CHECK returned donor: " + strings.Join(filterCalls(run.take(), "add"), "; "))
	if _, err := run.Run(ctx, "mdadm", "--wait", dev); err != nil && exitCode(err) != 1 {
		return err
	}
	if err := srv.Reconcile(ctx); err != nil {
		return err
	}
	if st := reg.status(a.Name); st.State != pool.ArrayRunning || st.Active != dirtyDonors {
		return fmt.Errorf("after the return: status %+v\n%s", st, mdstatText())
	}
	if err := check("back to 5 in sync"); err != nil {
		return err
	}

	// 8. The control case: the donor dies again, a few more files, then nothing for a while:
	// md marks the array clean after safe_mode_delay without writes. Cut the power then.
	if err := g.need("kill", dirtyKilled); err != nil {
		return err
	}
	reg.set(fmt.Sprintf("e%d.0", dirtyKilled), pool.StateOffline)
	if err := srv.Reconcile(ctx); err != nil {
		return fmt.Errorf("second loss: %w", err)
	}
	if st := reg.status(a.Name); st.State != pool.ArrayDegraded {
		return fmt.Errorf("second loss: status %+v", st)
	}
	if err := os.MkdirAll(filepath.Join(mnt, "idle"), 0o755); err != nil {
		return err
	}
	buf := make([]byte, 1<<20)
	for i := 0; i < 4; i++ {
		if _, err := rand.Read(buf); err != nil {
			return err
		}
		name := fmt.Sprintf("idle/f%02d.bin", i)
		if err := os.WriteFile(filepath.Join(mnt, name), buf, 0o644); err != nil {
			return err
		}
		g.say(fmt.Sprintf("KEEP sum %s %x", name, sha256.Sum256(buf)))
	}
	unix.Sync()
	state := ""
	for i := 0; i < 300 && state != "clean"; i++ {
		time.Sleep(100 * time.Millisecond)
		state = mdAttr(dev, "array_state")
	}
	if state != "clean" {
		return fmt.Errorf("array_state %q after 30 s without writes", state)
	}
	g.say("CHECK degraded again, idle: md array_state clean: cutting the power")
	return g.ctl.Crash()
}

// dirtyCleanRestartScenario is boot 3: a degraded array that md had marked clean before the
// cut starts by itself, without the admin.
func (g *guest) dirtyCleanRestartScenario() error {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	pj, err := os.ReadFile("/dirty/plan.json")
	if err != nil {
		return err
	}
	var layout pool.Layout
	if err := json.Unmarshal(pj, &layout); err != nil {
		return fmt.Errorf("plan from boot 1: %w", err)
	}
	sumText, err := os.ReadFile("/dirty/sums")
	if err != nil {
		return err
	}
	a := layout.Arrays[0]
	run := &recordingRunner{}
	logger := slog.New(slog.NewTextHandler(os.Stdout, nil))
	h := New(Config{Runner: run, MountRoot: "/mnt/pool", Logger: logger,
		Attachers: map[string]Attacher{pool.TransportAoE: &AoE{Runner: run, Wait: 30 * time.Second}}})
	dev, mnt := h.Device(a.Name), h.MountPoint(a.Name)
	if _, err := run.Run(ctx, "aoe-discover"); err != nil {
		return err
	}
	reg := &memRegistry{layout: layout, last: map[string]pool.ArrayStatus{},
		members: dirtyInventory(func(s int) bool { return s != dirtyKilled })}
	t0 := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	now := t0
	srv, err := NewServer(ServerConfig{Head: h, Registry: reg, Location: time.UTC, Now: func() time.Time { return now }, Logger: logger})
	if err != nil {
		return err
	}
	if err := srv.Reconcile(ctx); err != nil {
		return fmt.Errorf("first pass: %w", err)
	}
	now = t0.Add(6 * time.Minute)
	if err := srv.Reconcile(ctx); err != nil {
		return fmt.Errorf("after the grace period: %w", err)
	}
	calls := strings.Join(run.take(), "\n")
	if !strings.Contains(calls, "--assemble "+dev+" --run") || strings.Contains(calls, "--force") || strings.Contains(calls, "e2fsck -f") {
		return fmt.Errorf("not a plain degraded assembly:\n%s", calls)
	}
	st := reg.status(a.Name)
	if st.State != pool.ArrayDegraded || st.Active != dirtyDonors-1 || st.MountPoint != mnt {
		return fmt.Errorf("status %+v\n%s", st, mdstatText())
	}
	g.say(fmt.Sprintf("CHECK clean before the cut: assembled degraded by the head (%d of %d), mounted", st.Active, st.RaidDevices))
	if err := dropCaches(); err != nil {
		return err
	}
	n := 0
	for _, l := range strings.Split(strings.TrimSpace(string(sumText)), "\n") {
		name, want, _ := strings.Cut(l, " ")
		if got, err := fileSum(filepath.Join(mnt, name)); err != nil || got != want {
			return fmt.Errorf("%s reads back %s, %v (want %s)", name, got, err, want)
		}
		n++
	}
	g.say(fmt.Sprintf("CHECK %d checksummed files intact", n))
	return h.Stop(ctx, a)
}

func startDirtyDegraded() string {
	b, err := os.ReadFile("/sys/module/md_mod/parameters/start_dirty_degraded")
	if err != nil {
		return err.Error()
	}
	return strings.TrimSpace(string(b))
}

func combined(ctx context.Context, name string, args ...string) (string, error) {
	var b bytes.Buffer
	c := exec.CommandContext(ctx, name, args...)
	c.Stdout, c.Stderr = &b, &b
	err := c.Run()
	return b.String(), err
}

func oneLine(s string) string { return strings.ReplaceAll(strings.TrimSpace(s), "\n", " | ") }

func filterCalls(calls []string, word string) []string {
	var out []string
	for _, c := range calls {
		if strings.Contains(c, word) {
			out = append(out, c)
		}
	}
	return out
}

// kernelMD is what the kernel said about md lately.
func kernelMD() string {
	b, err := exec.Command("dmesg").Output()
	if err != nil {
		return err.Error()
	}
	var lines []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, "md/raid") || strings.Contains(l, "md127") || strings.Contains(l, "md:") {
			lines = append(lines, strings.TrimSpace(l))
		}
	}
	if len(lines) > 6 {
		lines = lines[len(lines)-6:]
	}
	return strings.Join(lines, " | ")
}
