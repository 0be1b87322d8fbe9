package head

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/distonet/distonet/donate/pool"
	"github.com/distonet/distonet/donate/pool/poolvm"
	"golang.org/x/sys/unix"
)

// Spares and retirement: five AoE donors make four members and a hot spare. A member's donor
// dies: md rebuilds onto the spare; it returns and becomes the spare. Then the admin retires
// another member's node: the planner gives its slot to the planned spare, and the head
// hot-replaces the retired member with md's spare (redundancy kept during the copy), then
// removes it.
func TestE2EPoolHeadRetireReplace(t *testing.T) {
	if os.Getenv("DISTONET_E2E") == "" {
		t.Skip("real md runs in a QEMU guest: set DISTONET_E2E=1 (make e2e)")
	}
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	if got := poolvm.Run(t, poolvm.Config{Package: wd, GuestEnv: guestEnv, GuestArg: "retire", Donors: 5}); got != "ok" {
		t.Errorf("guest scenario: %s", got)
	}
}

func (g *guest) retireScenario() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	run := &recordingRunner{}
	logger := slog.New(slog.NewTextHandler(os.Stdout, nil))
	aoe := &AoE{Runner: run, Wait: 30 * time.Second}
	h := New(Config{Runner: run, MountRoot: "/mnt/pool", Logger: logger, Attachers: map[string]Attacher{pool.TransportAoE: aoe}})
	var inv []pool.Member
	for s := 1; s <= 5; s++ {
		inv = append(inv, pool.Member{Node: fmt.Sprintf("pc%d", s), Group: fmt.Sprintf("room%d", (s+1)/2), Transport: pool.TransportAoE,
			Address: fmt.Sprintf("e%d.0", s), SizeBytes: 96 << 20, State: pool.StateOnline})
	}
	layout, _ := pool.Plan(pool.Layout{}, inv, pool.Options{})
	if len(layout.Arrays) != 1 || len(layout.Arrays[0].Spares) != 1 {
		return fmt.Errorf("plan: %+v", layout)
	}
	reg := &memRegistry{layout: layout, members: inv, last: map[string]pool.ArrayStatus{}}
	srv, err := NewServer(ServerConfig{Head: h, Registry: reg, Logger: logger})
	if err != nil {
		return err
	}
	if err := srv.Reconcile(ctx); err != nil {
		return fmt.Errorf("create: %w", err)
	}
	a := layout.Arrays[0]
	if calls := strings.Join(run.take(), "\n"); !strings.Contains(calls, "--spare-devices=1") {
		return fmt.Errorf("create: no spare in:\n%s", calls)
	}
	if _, err := run.Run(ctx, "mdadm", "--wait", h.Device(a.Name)); err != nil && exitCode(err) != 1 {
		return err
	}
	data := filepath.Join(h.MountPoint(a.Name), "data.bin")
	buf := make([]byte, 16<<20)
	if _, err := rand.Read(buf); err != nil {
		return err
	}
	if err := os.WriteFile(data, buf, 0o644); err != nil {
		return err
	}
	unix.Sync()
	want := fmt.Sprintf("%x", sha256.Sum256(buf))
	g.say(fmt.Sprintf("CHECK %s: 4 members and spare %s, 16 MiB written", a.Name, a.Spares[0].Address))

	// pc2 dies: failed at once, md rebuilds onto the hot spare by itself.
	if err := g.need("kill", 2); err != nil {
		return err
	}
	reg.set("e2.0", pool.StateOffline)
	if err := srv.Reconcile(ctx); err != nil {
		return fmt.Errorf("kill: %w", err)
	}
	if calls := strings.Join(run.take(), "\n"); !strings.Contains(calls, "--fail /dev/etherd/e2.0 --remove /dev/etherd/e2.0") {
		return fmt.Errorf("kill: not failed:\n%s", calls)
	}
	if _, err := run.Run(ctx, "mdadm", "--wait", h.Device(a.Name)); err != nil && exitCode(err) != 1 {
		return err
	}
	if d, err := h.Status(ctx, a); err != nil || d.Degraded || d.Active != 4 {
		return fmt.Errorf("kill: after the spare's rebuild: %+v %v\n%s", d, err, mdstatText())
	}
	g.say("CHECK pc2 lost, the spare rebuilt its slot: 4 in sync")

	// pc2 returns: its slot is taken, so the bitmap re-add is refused and it is added back as
	// the new spare (plan and md now differ on who is the spare; both are fine).
	if err := g.need("start", 2); err != nil {
		return err
	}
	reg.set("e2.0", pool.StateOnline)
	if err := srv.Reconcile(ctx); err != nil {
		return fmt.Errorf("return: %w", err)
	}
	if calls := strings.Join(run.take(), "\n"); !strings.Contains(calls, "--add /dev/etherd/e2.0") {
		return fmt.Errorf("return: not added back:\n%s", calls)
	}
	if st := reg.status(a.Name); st.Spares != 1 || st.Active != 4 {
		return fmt.Errorf("return: status %+v", st)
	}
	g.say("CHECK pc2 back as the spare")

	// pc3 is retired: re-plan, the spare takes its slot.
	reg.set("e3.0", pool.StateRetired)
	next, reasons := pool.Plan(layout, reg.members, pool.Options{})
	na := next.Arrays[0]
	if na.Members[2].Address != "e5.0" || len(na.Spares) != 0 {
		return fmt.Errorf("re-plan: %+v %v", na, reasons)
	}
	na.UUID = reg.status(a.Name).UUID
	reg.mu.Lock()
	reg.layout = pool.Layout{Arrays: []pool.Array{na}}
	reg.mu.Unlock()
	if err := srv.Reconcile(ctx); err != nil {
		return fmt.Errorf("replace: %w", err)
	}
	// md's spare is now pc2's disk (see above): it is the one that replaces e3.0.
	if calls := strings.Join(run.take(), "\n"); !strings.Contains(calls, "--replace /dev/etherd/e3.0 --with /dev/etherd/e2.0") {
		return fmt.Errorf("replace: not hot-replaced:\n%s", calls)
	}
	g.say("CHECK retired e3.0 being hot-replaced by md's spare e2.0: " + strings.ReplaceAll(mdstatText(), "\n", " / "))
	if _, err := run.Run(ctx, "mdadm", "--wait", h.Device(a.Name)); err != nil && exitCode(err) != 1 {
		return err
	}
	if err := srv.Reconcile(ctx); err != nil {
		return fmt.Errorf("after replace: %w", err)
	}
	out, err := run.Run(ctx, "mdadm", "--detail", h.Device(a.Name))
	if err != nil {
		return err
	}
	d, err := ParseDetail(out)
	if err != nil {
		return err
	}
	if _, still := d.Member("/dev/etherd/e3.0"); still || d.ActiveDevices != 4 || d.Degraded() {
		return fmt.Errorf("after replace: %s", out)
	}
	for _, dev := range []string{"/dev/etherd/e1.0", "/dev/etherd/e2.0", "/dev/etherd/e4.0", "/dev/etherd/e5.0"} {
		if m, ok := d.Member(dev); !ok || m.RaidDevice < 0 || !hasWord(m.State, "sync") {
			return fmt.Errorf("after replace: %s not an in-sync member: %s", dev, out)
		}
	}
	if err := dropCaches(); err != nil {
		return err
	}
	if got, err := fileSum(data); err != nil || got != want {
		return fmt.Errorf("after replace: read back %s %v", got, err)
	}
	g.say("CHECK every planned disk in sync, e3.0 removed, data intact")
	return h.Stop(ctx, na)
}
