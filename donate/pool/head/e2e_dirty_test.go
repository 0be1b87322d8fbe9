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

// Power cuts of the head, four boots over the same five AoE donors' disks (RAID6, no spare,
// ext4, checksummed files):
//  1. "crash": the array is made; donor 2 dies and is failed out; the head keeps writing
//     and is SIGKILLed mid-write: dirty, one member missing.
//  2. "restart": the head must not start it (with two members missing while donor 4 is late,
//     nor with one), must say why, try once per member set and leave the superblocks as they
//     are; the recovery the package doc gives (mdadm --assemble --force --run, e2fsck -f)
//     brings it back with the files intact, and donor 2, back, is re-added. Then donor 2 dies
//     again and the power is cut once md has marked the array clean (idle).
//  3. "clean-restart": that clean degraded array assembles by itself. Then donor 4 dies as
//     well and the power is cut mid-write: dirty, two members missing.
//  4. "two-missing": refused again; the same recovery starts it on three members (no
//     parity left to repair), the files are intact, both donors come back and are re-added.
func TestE2EPoolHeadDirtyDegraded(t *testing.T) {
	if os.Getenv("DISTONET_E2E") == "" {
		t.Skip("real md runs in a QEMU guest: set DISTONET_E2E=1 (make e2e)")
	}
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	disks := t.TempDir()
	// What a boot hands to the next (the guest keeps nothing): the plan with md's UUID, and
	// the checksums of the files written while the array was sound.
	var plan string
	var sums []string
	keep := func(line string) {
		if rest, ok := strings.CutPrefix(line, "KEEP plan "); ok {
			plan = rest
		} else if rest, ok := strings.CutPrefix(line, "KEEP sum "); ok {
			sums = append(sums, rest)
		}
	}
	boot := func(arg string, absent []int, want string) bool {
		return t.Run(arg, func(t *testing.T) {
			c := poolvm.Config{Package: wd, GuestEnv: guestEnv, GuestArg: "dirty-" + arg, Donors: dirtyDonors, DonorBytes: dirtyDonorBytes,
				Disks: disks, Absent: absent, OnLine: keep}
			if plan != "" {
				c.Files = map[string]string{"/dirty/plan.json": plan, "/dirty/sums": strings.Join(sums, "\n") + "\n"}
			}
			if got := poolvm.Run(t, c); got != want {
				t.Fatalf("guest scenario: %s", got)
			}
		})
	}
	// superblocks checks what the cut left on the donors' files: State of the survivors, and
	// the dead donors' Events behind theirs.
	superblocks := func(state string, dead ...int) {
		t.Helper()
		isDead := map[int]bool{}
		for _, d := range dead {
			isDead[d] = true
		}
		events := map[int]int64{}
		for s := 1; s <= dirtyDonors; s++ {
			img := filepath.Join(disks, fmt.Sprintf("donor%d.img", s))
			out, err := exec.Command("mdadm", "--examine", img).CombinedOutput()
			if err != nil {
				t.Fatalf("mdadm --examine %s: %v: %s", img, err, out)
			}
			events[s], _ = strconv.ParseInt(examineField(string(out), "Events"), 10, 64)
			got := examineField(string(out), "State")
			t.Logf("host: donor %d after the cut: State %q, Events %d, Array State %q", s, got, events[s], examineField(string(out), "Array State"))
			if !isDead[s] && got != state {
				t.Errorf("donor %d: superblock State %q after the cut, want %s", s, got, state)
			}
		}
		for s := 1; s <= dirtyDonors; s++ {
			for _, d := range dead {
				if !isDead[s] && events[s] <= events[d] {
					t.Errorf("donor %d: Events %d not ahead of dead donor %d's %d", s, events[s], d, events[d])
				}
			}
		}
	}

	if !boot("crash", nil, poolvm.Crashed) {
		return
	}
	if plan == "" || len(sums) == 0 {
		t.Fatalf("boot 1 handed over no plan (%q) or no checksums (%d)", plan, len(sums))
	}
	if superblocks("active", dirtyKilled); t.Failed() {
		return
	}
	if !boot("restart", []int{dirtyKilled}, poolvm.Crashed) {
		return
	}
	if superblocks("clean", dirtyKilled); t.Failed() {
		return
	}
	if !boot("clean-restart", []int{dirtyKilled}, poolvm.Crashed) {
		return
	}
	if superblocks("active", dirtyKilled, dirtyLate); t.Failed() {
		return
	}
	boot("two-missing", []int{dirtyKilled, dirtyLate}, "ok")
}

const (
	dirtyDonors     = 5
	dirtyDonorBytes = 64 << 20
	dirtyKilled     = 2 // the donor that dies before the first cut
	dirtyLate       = 4 // late at the second boot; dies before the third cut
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

func aoeAddress(shelf int) string { return fmt.Sprintf("e%d.0", shelf) }

func aoeDevice(shelf int) string { return "/dev/etherd/" + aoeAddress(shelf) }

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

func startDirtyDegraded() string {
	b, err := os.ReadFile("/sys/module/md_mod/parameters/start_dirty_degraded")
	if err != nil {
		return err.Error()
	}
	return strings.TrimSpace(string(b))
}

// writeKept writes n files of size random bytes under mnt/dir and hands their checksums to
// the next boot.
func (g *guest) writeKept(mnt, dir string, n, size int) error {
	if err := os.MkdirAll(filepath.Join(mnt, dir), 0o755); err != nil {
		return err
	}
	buf := make([]byte, size)
	for i := 0; i < n; i++ {
		if _, err := rand.Read(buf); err != nil {
			return err
		}
		name := fmt.Sprintf("%s/f%02d.bin", dir, i)
		if err := os.WriteFile(filepath.Join(mnt, name), buf, 0o644); err != nil {
			return err
		}
		g.say(fmt.Sprintf("KEEP sum %s %x", name, sha256.Sum256(buf)))
	}
	unix.Sync()
	return nil
}

// cutWhileWriting keeps writing synced files (so md stays "active", i.e. dirty) and has the
// host cut the power in the middle of it. md marks an array clean after safe_mode_delay
// without writes; a longer delay keeps a TCG guest that the busy host pauses between two
// writes from being clean when the kill lands (the idle cut shows the default at work).
func (g *guest) cutWhileWriting(ctx context.Context, dev, mnt, dir string) error {
	if err := os.WriteFile(filepath.Join("/sys/block", mdName(dev), "md", "safe_mode_delay"), []byte("10\n"), 0o644); err != nil {
		return fmt.Errorf("safe_mode_delay: %w", err)
	}
	if err := os.MkdirAll(filepath.Join(mnt, dir), 0o755); err != nil {
		return err
	}
	var written atomic.Int64
	werr := make(chan error, 1)
	go func() {
		b := make([]byte, 256<<10)
		for i := 0; ; i++ {
			_, _ = rand.Read(b)
			f, err := os.Create(filepath.Join(mnt, dir, fmt.Sprintf("w%05d.bin", i)))
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
		return fmt.Errorf("array_state %q while writing: the cut would not leave it dirty", state)
	}
	return g.ctl.Crash()
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
	// Files whose checksums the next boots check: written while every member was there.
	if err := g.writeKept(mnt, "before", 8, 2<<20); err != nil {
		return err
	}
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
		if d.Address == aoeAddress(dirtyKilled) {
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
	return g.cutWhileWriting(ctx, dev, mnt, "during")
}

// dirtyBoot is what the boots after the first share: the plan and checksums handed over, a
// fresh head, and a server whose clock the scenario moves, over a registry in which the
// dead donors are offline.
type dirtyBoot struct {
	g        *guest
	a        pool.Array
	sums     []string
	run      *recordingRunner
	aoe      *AoE
	h        *Head
	reg      *memRegistry
	srv      *Server
	t0, now  time.Time
	dev, mnt string
}

func (g *guest) newDirtyBoot(ctx context.Context, offline ...int) (*dirtyBoot, error) {
	pj, err := os.ReadFile("/dirty/plan.json")
	if err != nil {
		return nil, err
	}
	var layout pool.Layout
	if err := json.Unmarshal(pj, &layout); err != nil {
		return nil, fmt.Errorf("plan from boot 1: %w", err)
	}
	sumText, err := os.ReadFile("/dirty/sums")
	if err != nil {
		return nil, err
	}
	b := &dirtyBoot{g: g, a: layout.Arrays[0], sums: strings.Split(strings.TrimSpace(string(sumText)), "\n"), run: &recordingRunner{}}
	logger := slog.New(slog.NewTextHandler(os.Stdout, nil))
	b.aoe = &AoE{Runner: b.run, Wait: 30 * time.Second}
	b.h = New(Config{Runner: b.run, MountRoot: "/mnt/pool", Logger: logger, Attachers: map[string]Attacher{pool.TransportAoE: b.aoe}})
	b.dev, b.mnt = b.h.Device(b.a.Name), b.h.MountPoint(b.a.Name)
	off := map[int]bool{}
	for _, s := range offline {
		off[s] = true
	}
	b.reg = &memRegistry{layout: layout, last: map[string]pool.ArrayStatus{}, members: dirtyInventory(func(s int) bool { return !off[s] })}
	b.t0 = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	b.now = b.t0
	b.srv, err = NewServer(ServerConfig{Head: b.h, Registry: b.reg, Location: time.UTC, Now: func() time.Time { return b.now }, Logger: logger})
	if err != nil {
		return nil, err
	}
	if _, err := b.run.Run(ctx, "aoe-discover"); err != nil {
		return nil, err
	}
	return b, nil
}

// superblocks attaches devs (outside the head) and returns mdadm --examine of each.
func (b *dirtyBoot) superblocks(ctx context.Context, devs []string) (map[string]string, error) {
	out := map[string]string{}
	for _, d := range devs {
		if _, err := b.aoe.Attach(ctx, pool.Disk{Node: "n", Transport: pool.TransportAoE, Address: filepath.Base(d)}); err != nil {
			return nil, err
		}
		text, err := exec.CommandContext(ctx, "mdadm", "--examine", d).CombinedOutput()
		if err != nil {
			return nil, fmt.Errorf("mdadm --examine %s: %v: %s", d, err, text)
		}
		out[d] = string(text)
	}
	return out, nil
}

// refused runs a pass the head must refuse: ErrDirtyDegraded, reported failed with the
// recovery in the message.
func (b *dirtyBoot) refused(ctx context.Context, what string) error {
	err := b.srv.Reconcile(ctx)
	st := b.reg.status(b.a.Name)
	b.g.say(fmt.Sprintf("CHECK %s: reported %s: %s", what, st.State, st.Message))
	b.g.say("CHECK kernel: " + kernelMD())
	if !errors.Is(err, ErrDirtyDegraded) || st.State != pool.ArrayFailed || !strings.Contains(st.Message, "--assemble --force --run "+b.dev) {
		return fmt.Errorf("%s: err %v, status %+v\n%s", what, err, st, mdstatText())
	}
	return nil
}

// untouched checks what the head ran while refusing, and that the superblocks are as before.
func (b *dirtyBoot) untouched(ctx context.Context, before map[string]string, attempts int) error {
	var assembles []string
	for _, c := range b.run.take() {
		for _, bad := range []string{"--force", "--create", "mke2fs", "--add", "--re-add", "--zero-superblock", "e2fsck", "mount"} {
			if strings.Contains(c, bad) {
				return fmt.Errorf("the head ran %q on a refused array", c)
			}
		}
		if strings.Contains(c, "--assemble") {
			assembles = append(assembles, c)
		}
	}
	if len(assembles) != attempts {
		return fmt.Errorf("want %d assembly attempt(s), one per member set, got:\n%s", attempts, strings.Join(assembles, "\n"))
	}
	if strings.Contains(mdstatText(), "active") {
		return fmt.Errorf("an array is active after the refusal:\n%s", mdstatText())
	}
	devs := make([]string, 0, len(before))
	for d := range before {
		devs = append(devs, d)
	}
	after, err := b.superblocks(ctx, devs)
	if err != nil {
		return err
	}
	for _, d := range devs {
		if before[d] != after[d] {
			return fmt.Errorf("%s: superblock changed by the refused assembly:\nbefore:\n%s\nafter:\n%s", d, before[d], after[d])
		}
	}
	return nil
}

// recover is the admin's recovery as the package doc and donate/README.md give it: the
// current members (highest Events), a forced start, a full fsck.
func (b *dirtyBoot) recover(ctx context.Context, present []string) error {
	var newest int64
	evs := map[string]int64{}
	for _, d := range present {
		out, err := exec.CommandContext(ctx, "mdadm", "--examine", d).Output()
		if err != nil {
			return fmt.Errorf("mdadm --examine %s: %w", d, err)
		}
		evs[d], _ = strconv.ParseInt(examineField(string(out), "Events"), 10, 64)
		newest = max(newest, evs[d])
	}
	var current []string
	for _, d := range present {
		if evs[d] == newest {
			current = append(current, d)
		}
	}
	sort.Strings(current)
	out, err := combined(ctx, "mdadm", append([]string{"--assemble", "--force", "--run", b.dev}, current...)...)
	b.g.say("CHECK admin: mdadm --assemble --force --run " + b.dev + " " + strings.Join(current, " ") + ": " + oneLine(out))
	if err != nil {
		return fmt.Errorf("forced assembly: %w: %s", err, out)
	}
	b.g.say(fmt.Sprintf("CHECK after the forced start: array_state %s, sync_action %s, degraded %s", mdAttr(b.dev, "array_state"),
		mdAttr(b.dev, "sync_action"), mdAttr(b.dev, "degraded")))
	out, err = combined(ctx, "/sbin/e2fsck", "-f", "-y", b.dev)
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		return err
	}
	b.g.say(fmt.Sprintf("CHECK admin: e2fsck -f -y %s: exit %d: %s", b.dev, code, oneLine(out)))
	if code > 1 {
		return fmt.Errorf("e2fsck -f -y: exit %d:\n%s", code, out)
	}
	if out, err := combined(ctx, "/sbin/e2fsck", "-f", "-n", b.dev); err != nil {
		return fmt.Errorf("a second e2fsck -f -n still finds problems: %w\n%s", err, out)
	}
	return nil
}

// takeOver is the head's pass after the admin's recovery: a full check of its own, mounted.
func (b *dirtyBoot) takeOver(ctx context.Context) error {
	if err := b.srv.Reconcile(ctx); err != nil {
		return fmt.Errorf("after recovery: %w", err)
	}
	calls := b.run.take()
	if !strings.Contains(strings.Join(calls, "\n"), "e2fsck -f -p "+b.dev) {
		return fmt.Errorf("after recovery: no full check before mounting:\n%s", strings.Join(calls, "\n"))
	}
	if st := b.reg.status(b.a.Name); st.MountPoint != b.mnt || !st.Degraded {
		return fmt.Errorf("after recovery: status %+v", st)
	}
	return nil
}

// check reads back every file whose checksum an earlier boot handed over.
func (b *dirtyBoot) check(when string) error {
	if err := dropCaches(); err != nil {
		return err
	}
	for _, l := range b.sums {
		name, want, ok := strings.Cut(l, " ")
		if !ok {
			return fmt.Errorf("bad checksum line %q", l)
		}
		if got, err := fileSum(filepath.Join(b.mnt, name)); err != nil || got != want {
			return fmt.Errorf("%s: %s reads back %s, %v (want %s)", when, name, got, err, want)
		}
	}
	b.g.say(fmt.Sprintf("CHECK %s: %d checksummed files read back intact", when, len(b.sums)))
	return nil
}

// back has dead donors return and waits until the array is whole again.
func (b *dirtyBoot) back(ctx context.Context, shelves ...int) error {
	for _, s := range shelves {
		if err := b.g.need("start", s); err != nil {
			return err
		}
		b.reg.set(aoeAddress(s), pool.StateOnline)
	}
	if err := b.srv.Reconcile(ctx); err != nil {
		return fmt.Errorf("return: %w", err)
	}
	b.g.say("CHECK returned: " + strings.Join(filterCalls(b.run.take(), "add"), "; "))
	// md may rebuild two returning members one after the other: wait until none is left.
	for i := 0; ; i++ {
		if _, err := b.run.Run(ctx, "mdadm", "--wait", b.dev); err != nil && exitCode(err) != 1 {
			return err
		}
		if err := b.srv.Reconcile(ctx); err != nil {
			return err
		}
		st := b.reg.status(b.a.Name)
		if st.State == pool.ArrayRunning && st.Active == dirtyDonors {
			return nil
		}
		if i == 4 {
			return fmt.Errorf("after the return: status %+v\n%s", st, mdstatText())
		}
		time.Sleep(time.Second)
	}
}

// lose has a donor die and the head fail it out.
func (b *dirtyBoot) lose(ctx context.Context, shelf int) error {
	if err := b.g.need("kill", shelf); err != nil {
		return err
	}
	b.reg.set(aoeAddress(shelf), pool.StateOffline)
	if err := b.srv.Reconcile(ctx); err != nil {
		return fmt.Errorf("losing %s: %w", aoeAddress(shelf), err)
	}
	if st := b.reg.status(b.a.Name); st.State != pool.ArrayDegraded {
		return fmt.Errorf("losing %s: status %+v", aoeAddress(shelf), st)
	}
	return nil
}

// dirtyRestartScenario is boot 2: the head starts again over the disks the cut left.
func (g *guest) dirtyRestartScenario() error {
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Minute)
	defer cancel()
	b, err := g.newDirtyBoot(ctx, dirtyKilled, dirtyLate) // e4 is late at first
	if err != nil {
		return err
	}
	var survivors []string
	for s := 1; s <= dirtyDonors; s++ {
		if s != dirtyKilled {
			survivors = append(survivors, aoeDevice(s))
		}
	}
	before, err := b.superblocks(ctx, survivors)
	if err != nil {
		return err
	}
	for _, d := range survivors {
		g.say(fmt.Sprintf("CHECK %s: State %s, Events %s, Array State %s", d, examineField(before[d], "State"),
			examineField(before[d], "Events"), examineField(before[d], "Array State")))
	}
	b.run.take()

	// 1. Members missing right after start: the server waits for latecomers.
	if err := b.srv.Reconcile(ctx); err != nil {
		return fmt.Errorf("first pass: %w", err)
	}
	if st := b.reg.status(b.a.Name); st.State != pool.ArrayWaiting {
		return fmt.Errorf("first pass: status %+v", st)
	}
	g.say("CHECK within the grace period: " + b.reg.status(b.a.Name).Message)
	if v := startDirtyDegraded(); v != "0" {
		return fmt.Errorf("md_mod start_dirty_degraded is %q: md would start a dirty degraded array", v)
	}
	// 2. Grace over, two members missing (dead e2, late e4): refused.
	b.now = b.t0.Add(6 * time.Minute)
	if err := b.refused(ctx, "missing 2"); err != nil {
		return err
	}
	// 3. The late one arrives: one missing, parity to spare, still refused (dirty).
	b.reg.set(aoeAddress(dirtyLate), pool.StateOnline)
	if err := b.refused(ctx, "missing 1"); err != nil {
		return err
	}
	// 4. The same members again: no new attempt (the admin may be at work on them).
	if err := b.srv.Reconcile(ctx); !errors.Is(err, ErrDirtyDegraded) {
		return fmt.Errorf("third pass: %v", err)
	}
	if err := b.untouched(ctx, before, 2); err != nil {
		return err
	}
	g.say("CHECK refused twice, one attempt per member set, superblocks unchanged, nothing started")

	// 5. The recovery, then the head takes over; the data is intact.
	if err := b.recover(ctx, survivors); err != nil {
		return err
	}
	if err := b.takeOver(ctx); err != nil {
		return err
	}
	if err := b.check("after recovery"); err != nil {
		return err
	}
	during, _ := filepath.Glob(filepath.Join(b.mnt, "during", "*"))
	g.say(fmt.Sprintf("CHECK %d files written while degraded survived the cut (the last ones may not)", len(during)))

	// 6. The dead donor returns: re-added through the bitmap, redundancy restored.
	if err := b.back(ctx, dirtyKilled); err != nil {
		return err
	}
	if err := b.check("back to 5 in sync"); err != nil {
		return err
	}

	// 7. The control case: the donor dies again, a few more files, then nothing for a while:
	// md marks the array clean after safe_mode_delay without writes. Cut the power then.
	if err := b.lose(ctx, dirtyKilled); err != nil {
		return err
	}
	if err := g.writeKept(b.mnt, "idle", 4, 1<<20); err != nil {
		return err
	}
	state := ""
	for i := 0; i < 300 && state != "clean"; i++ {
		time.Sleep(100 * time.Millisecond)
		state = mdAttr(b.dev, "array_state")
	}
	if state != "clean" {
		return fmt.Errorf("array_state %q after 30 s without writes", state)
	}
	g.say("CHECK degraded again, idle: md array_state clean: cutting the power")
	return g.ctl.Crash()
}

// dirtyCleanRestartScenario is boot 3: a degraded array that md had marked clean before the
// cut starts by itself, without the admin. Then a second donor dies and the power is cut
// mid-write: dirty with two members missing.
func (g *guest) dirtyCleanRestartScenario() error {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	b, err := g.newDirtyBoot(ctx, dirtyKilled)
	if err != nil {
		return err
	}
	if err := b.srv.Reconcile(ctx); err != nil {
		return fmt.Errorf("first pass: %w", err)
	}
	b.now = b.t0.Add(6 * time.Minute)
	if err := b.srv.Reconcile(ctx); err != nil {
		return fmt.Errorf("after the grace period: %w", err)
	}
	calls := strings.Join(b.run.take(), "\n")
	if !strings.Contains(calls, "--assemble "+b.dev+" --run") || strings.Contains(calls, "--force") || strings.Contains(calls, "e2fsck -f") {
		return fmt.Errorf("not a plain degraded assembly:\n%s", calls)
	}
	st := b.reg.status(b.a.Name)
	if st.State != pool.ArrayDegraded || st.Active != dirtyDonors-1 || st.MountPoint != b.mnt {
		return fmt.Errorf("status %+v\n%s", st, mdstatText())
	}
	g.say(fmt.Sprintf("CHECK clean before the cut: assembled degraded by the head (%d of %d), mounted", st.Active, st.RaidDevices))
	if err := b.check("clean degraded start"); err != nil {
		return err
	}
	if err := b.lose(ctx, dirtyLate); err != nil {
		return err
	}
	g.say("CHECK two members missing: " + strings.ReplaceAll(strings.TrimSpace(mdstatText()), "\n", " / "))
	return g.cutWhileWriting(ctx, b.dev, b.mnt, "during2")
}

// dirtyTwoMissingScenario is boot 4: dirty with two members missing, no parity left.
func (g *guest) dirtyTwoMissingScenario() error {
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Minute)
	defer cancel()
	b, err := g.newDirtyBoot(ctx, dirtyKilled, dirtyLate)
	if err != nil {
		return err
	}
	survivors := []string{aoeDevice(1), aoeDevice(3), aoeDevice(5)}
	before, err := b.superblocks(ctx, survivors)
	if err != nil {
		return err
	}
	b.run.take()
	if err := b.srv.Reconcile(ctx); err != nil {
		return fmt.Errorf("first pass: %w", err)
	}
	b.now = b.t0.Add(6 * time.Minute)
	if err := b.refused(ctx, "missing 2, both dead"); err != nil {
		return err
	}
	if err := b.untouched(ctx, before, 1); err != nil {
		return err
	}
	if err := b.recover(ctx, survivors); err != nil {
		return err
	}
	if err := b.takeOver(ctx); err != nil {
		return err
	}
	if err := b.check("after recovery on 3 of 5"); err != nil {
		return err
	}
	if err := b.back(ctx, dirtyKilled, dirtyLate); err != nil {
		return err
	}
	if err := b.check("back to 5 in sync"); err != nil {
		return err
	}
	return b.h.Stop(ctx, b.a)
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
		if strings.Contains(l, "md/raid") || strings.Contains(l, "md:") {
			lines = append(lines, strings.TrimSpace(l))
		}
	}
	if len(lines) > 6 {
		lines = lines[len(lines)-6:]
	}
	return strings.Join(lines, " | ")
}
