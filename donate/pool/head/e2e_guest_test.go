package head

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/distonet/distonet/donate/pool"
	"github.com/distonet/distonet/donate/pool/poolvm"
	"golang.org/x/sys/unix"
)

// guestMain is the pool head inside the QEMU guest: the real Head and Server over the
// kernel's aoe initiator and md, a registry kept in memory, and a clock it moves by hand.
func guestMain() int {
	ctl, err := poolvm.OpenControl()
	if err != nil {
		fmt.Println(err)
		return 1
	}
	g := &guest{ctl: ctl}
	switch os.Getenv(guestEnv) {
	case "iscsi":
		err = g.iscsiScenario()
	case "retire":
		err = g.retireScenario()
	case "dirty-crash":
		err = g.dirtyCrashScenario()
	case "dirty-restart":
		err = g.dirtyRestartScenario()
	case "dirty-clean-restart":
		err = g.dirtyCleanRestartScenario()
	case "dirty-two-missing":
		err = g.dirtyTwoMissingScenario()
	default:
		err = g.scenario()
	}
	ctl.Result(err)
	if err != nil {
		return 1
	}
	return 0
}

type guest struct{ ctl *poolvm.Control }

func (g *guest) say(line string) { g.ctl.Say(line) }

func (g *guest) need(verb string, shelf int) error { return g.ctl.Need(verb, shelf) }

// recordingRunner runs for real and keeps every argv.
type recordingRunner struct {
	mu    sync.Mutex
	calls []string
}

func (r *recordingRunner) Run(ctx context.Context, name string, args ...string) ([]byte, error) {
	r.mu.Lock()
	r.calls = append(r.calls, strings.Join(append([]string{name}, args...), " "))
	r.mu.Unlock()
	return ExecRunner{}.Run(ctx, name, args...)
}

func (r *recordingRunner) take() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.calls
	r.calls = nil
	return c
}

// memRegistry stands in for the appliance: it keeps the plan (recording md's UUID once the
// head reports it) and the agents' states.
type memRegistry struct {
	mu      sync.Mutex
	layout  pool.Layout
	members []pool.Member
	last    map[string]pool.ArrayStatus
}

func (m *memRegistry) Layout(context.Context) (pool.Layout, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.layout, nil
}

func (m *memRegistry) Members(context.Context) ([]pool.Member, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]pool.Member(nil), m.members...), nil
}

func (m *memRegistry) Report(_ context.Context, st pool.ArrayStatus) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.last[st.Name] = st
	for i := range m.layout.Arrays {
		if a := &m.layout.Arrays[i]; a.Name == st.Name && a.UUID == "" && st.UUID != "" {
			a.UUID = st.UUID
		}
	}
	return nil
}

func (m *memRegistry) set(addr, state string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for i := range m.members {
		if m.members[i].Address == addr {
			m.members[i].State = state
		}
	}
}

func (m *memRegistry) status(name string) pool.ArrayStatus {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.last[name]
}

func fileSum(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func dropCaches() error { return os.WriteFile("/proc/sys/vm/drop_caches", []byte("3\n"), 0o200) }

func mdstatText() string {
	b, _ := os.ReadFile("/proc/mdstat")
	return string(b)
}

func (g *guest) scenario() error {
	ctx, cancel := context.WithTimeout(context.Background(), 35*time.Minute)
	defer cancel()
	run := &recordingRunner{}
	logger := slog.New(slog.NewTextHandler(os.Stdout, &slog.HandlerOptions{Level: slog.LevelDebug}))
	if err := startNFSServer(ctx); err != nil {
		return err
	}
	h := New(Config{Runner: run, MountRoot: "/mnt/pool", Logger: logger,
		Exporter:  &KernelNFS{Runner: run, Clients: "10.78.0.0/24"},
		Attachers: map[string]Attacher{pool.TransportAoE: &AoE{Runner: run, Wait: 30 * time.Second}}})

	// The inventory: four overnight donors in two rooms, sizes as the agents report them.
	if _, err := run.Run(ctx, "aoe-discover"); err != nil {
		return err
	}
	var inv []pool.Member
	for s := 1; s <= 4; s++ {
		addr := fmt.Sprintf("e%d.0", s)
		dev, err := (&AoE{Runner: run, Wait: 30 * time.Second}).Attach(ctx, pool.Disk{Node: "n", Transport: pool.TransportAoE, Address: addr})
		if err != nil {
			return err
		}
		sz, err := os.ReadFile(filepath.Join("/sys/block", "etherd!"+addr, "size"))
		if err != nil {
			return fmt.Errorf("size of %s: %w", dev, err)
		}
		sectors, _ := strconv.ParseInt(strings.TrimSpace(string(sz)), 10, 64)
		inv = append(inv, pool.Member{Node: fmt.Sprintf("pc%d", s), Group: fmt.Sprintf("room%d", (s+1)/2), Transport: pool.TransportAoE,
			Address: addr, SizeBytes: sectors * 512, Window: "22:00-06:00", State: pool.StateOnline})
	}
	layout, reasons := pool.Plan(pool.Layout{}, inv, pool.Options{})
	if len(layout.Arrays) != 1 || len(layout.Arrays[0].Members) != 4 {
		return fmt.Errorf("plan: %+v %v", layout, reasons)
	}
	a := layout.Arrays[0]
	g.say("STEP planned " + a.Name + " over " + strings.Join(memberAddrs(a), " "))
	reg := &memRegistry{layout: layout, members: inv, last: map[string]pool.ArrayStatus{}}
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	srv, err := NewServer(ServerConfig{Head: h, Registry: reg, Location: time.UTC, Now: func() time.Time { return now }, Logger: logger})
	if err != nil {
		return err
	}
	mnt := h.MountPoint(a.Name)
	data := filepath.Join(mnt, "data.bin")

	// 1. Window opens: the array is created with a bitmap, ext4 made and mounted.
	now = time.Date(2026, 11, 26, 23, 0, 0, 0, time.UTC)
	run.take()
	if err := srv.Reconcile(ctx); err != nil {
		return fmt.Errorf("open: %w", err)
	}
	calls := strings.Join(run.take(), "\n")
	if !strings.Contains(calls, "--create /dev/md/"+a.Name) || !strings.Contains(calls, "--bitmap=internal") || !strings.Contains(calls, "mke2fs -t ext4") || !strings.Contains(calls, "exportfs -r") {
		return fmt.Errorf("open: no create/mkfs in:\n%s", calls)
	}
	if st := reg.status(a.Name); st.UUID == "" || st.MountPoint != mnt {
		return fmt.Errorf("open: status %+v", st)
	}
	g.say("STEP created and mounted: " + reg.status(a.Name).State)
	if _, err := run.Run(ctx, "mdadm", "--wait", h.Device(a.Name)); err != nil && exitCode(err) != 1 {
		return fmt.Errorf("wait for resync: %w", err)
	}
	buf := make([]byte, 24<<20)
	if _, err := rand.Read(buf); err != nil {
		return err
	}
	if err := os.WriteFile(data, buf, 0o644); err != nil {
		return err
	}
	unix.Sync()
	want := fmt.Sprintf("%x", sha256.Sum256(buf))
	g.say("CHECK wrote 24 MiB, sha256 " + want[:16])
	g.say("CHECK nfs " + data + " " + want)
	if err := g.need("nfsread", 0); err != nil {
		return fmt.Errorf("nfs export: %w", err)
	}

	// 2. Donor pc2 dies; its agent stops heartbeating and the registry marks it offline:
	// the head fails it at once, and the data still reads back.
	if err := g.need("kill", 2); err != nil {
		return err
	}
	reg.set("e2.0", pool.StateOffline)
	if err := srv.Reconcile(ctx); err != nil {
		return fmt.Errorf("after kill: %w", err)
	}
	calls = strings.Join(run.take(), "\n")
	if !strings.Contains(calls, "--fail /dev/etherd/e2.0 --remove /dev/etherd/e2.0") {
		return fmt.Errorf("after kill: member not failed:\n%s", calls)
	}
	if st := reg.status(a.Name); st.State != pool.ArrayDegraded || !st.Degraded {
		return fmt.Errorf("after kill: status %+v\n%s", st, mdstatText())
	}
	if err := dropCaches(); err != nil {
		return err
	}
	if got, err := fileSum(data); err != nil || got != want {
		return fmt.Errorf("after kill: read back %s, %v (want %s)", got, err, want)
	}
	g.say("CHECK degraded, data intact")
	// Write while it is away, so the bitmap has something to resync.
	if err := os.WriteFile(filepath.Join(mnt, "while-away.txt"), []byte("written while pc2 was gone\n"), 0o644); err != nil {
		return err
	}
	unix.Sync()

	// 3. The donor returns: re-added (bitmap), not rebuilt from scratch.
	if err := g.need("start", 2); err != nil {
		return err
	}
	reg.set("e2.0", pool.StateOnline)
	if err := srv.Reconcile(ctx); err != nil {
		return fmt.Errorf("return: %w", err)
	}
	calls = strings.Join(run.take(), "\n")
	if !strings.Contains(calls, "--re-add /dev/etherd/e2.0") || strings.Contains(calls, "--add /dev/etherd/e2.0") {
		return fmt.Errorf("return: not re-added through the bitmap:\n%s", calls)
	}
	g.say("CHECK re-added: " + strings.ReplaceAll(mdstatText(), "\n", " / "))
	if _, err := run.Run(ctx, "mdadm", "--wait", h.Device(a.Name)); err != nil && exitCode(err) != 1 {
		return fmt.Errorf("wait for re-add resync: %w", err)
	}
	if err := srv.Reconcile(ctx); err != nil {
		return err
	}
	if st := reg.status(a.Name); st.State != pool.ArrayRunning || st.Active != 4 {
		return fmt.Errorf("after re-add: status %+v", st)
	}
	g.say("CHECK back in sync with 4 members")

	// 4. The window closes: unmounted, stopped, members released (aoe devices flushed).
	now = time.Date(2026, 11, 27, 5, 55, 0, 0, time.UTC)
	if err := srv.Reconcile(ctx); err != nil {
		return fmt.Errorf("close: %w", err)
	}
	run.take()
	if strings.Contains(mdstatText(), "md") && strings.Contains(mdstatText(), "active") {
		return fmt.Errorf("close: array still active:\n%s", mdstatText())
	}
	if left, _ := filepath.Glob("/dev/etherd/e[0-9]*"); len(left) != 0 {
		return fmt.Errorf("close: members not released: %v", left)
	}
	if st := reg.status(a.Name); st.State != pool.ArrayStopped {
		return fmt.Errorf("close: status %+v", st)
	}
	g.say("CHECK stopped cleanly, members released")

	// 5. The window opens again: assembled (never re-created), data intact.
	now = time.Date(2026, 11, 27, 22, 30, 0, 0, time.UTC)
	if err := srv.Reconcile(ctx); err != nil {
		return fmt.Errorf("reopen: %w", err)
	}
	calls = strings.Join(run.take(), "\n")
	if !strings.Contains(calls, "--assemble /dev/md/"+a.Name) || strings.Contains(calls, "--create") || strings.Contains(calls, "mke2fs") {
		return fmt.Errorf("reopen: not a plain assembly:\n%s", calls)
	}
	if err := dropCaches(); err != nil {
		return err
	}
	if got, err := fileSum(data); err != nil || got != want {
		return fmt.Errorf("reopen: read back %s, %v (want %s)", got, err, want)
	}
	if b, err := os.ReadFile(filepath.Join(mnt, "while-away.txt")); err != nil || !strings.Contains(string(b), "pc2 was gone") {
		return fmt.Errorf("reopen: file written while degraded: %q %v", b, err)
	}
	if st := reg.status(a.Name); st.State != pool.ArrayRunning {
		return fmt.Errorf("reopen: status %+v", st)
	}
	g.say("CHECK reassembled, data intact")

	// Leave cleanly, as the daemon does on shutdown.
	now = time.Date(2026, 11, 28, 5, 55, 0, 0, time.UTC)
	return srv.Reconcile(ctx)
}

func memberAddrs(a pool.Array) []string {
	var out []string
	for _, d := range a.Members {
		out = append(out, d.Address)
	}
	return out
}

// startNFSServer brings up the guest's kernel NFS server the way nfs-kernel-server's unit
// does: nfsd filesystem, rpcbind, mountd, nfsd threads.
func startNFSServer(ctx context.Context) error {
	for _, d := range []string{"/proc/fs/nfsd", "/var/lib/nfs", "/run/rpcbind", "/etc/exports.d"} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	for _, f := range []string{"/var/lib/nfs/etab", "/var/lib/nfs/rmtab"} {
		if err := os.WriteFile(f, nil, 0o644); err != nil {
			return err
		}
	}
	if out, err := exec.CommandContext(ctx, "mount", "-t", "nfsd", "nfsd", "/proc/fs/nfsd").CombinedOutput(); err != nil {
		return fmt.Errorf("mount nfsd: %v: %s", err, out)
	}
	for _, argv := range [][]string{{"/sbin/rpcbind", "-f", "-w"}, {"/usr/sbin/rpc.mountd", "-F"}} {
		c := exec.Command(argv[0], argv[1:]...)
		c.Stdout, c.Stderr = os.Stdout, os.Stdout
		if err := c.Start(); err != nil {
			return fmt.Errorf("%s: %w", argv[0], err)
		}
		time.Sleep(500 * time.Millisecond) // let it register with rpcbind before the next
	}
	if out, err := exec.CommandContext(ctx, "/usr/sbin/rpc.nfsd", "-p", "2049", "4").CombinedOutput(); err != nil {
		return fmt.Errorf("rpc.nfsd: %v: %s", err, out)
	}
	return nil
}
