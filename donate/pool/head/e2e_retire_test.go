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

// Retiring a donor: five AoE donors make four members and a hot spare; the admin retires
// one member's node; the planner gives its slot to the spare, and the head hot-replaces the
// retired member (redundancy kept during the copy), then removes it.
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
	if calls := strings.Join(run.take(), "\n"); !strings.Contains(calls, "--replace /dev/etherd/e3.0 --with /dev/etherd/e5.0") {
		return fmt.Errorf("replace: not hot-replaced:\n%s", calls)
	}
	g.say("CHECK retired e3.0 being hot-replaced by e5.0: " + strings.ReplaceAll(mdstatText(), "\n", " / "))
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
	if m, ok := d.Member("/dev/etherd/e5.0"); !ok || m.RaidDevice != 2 {
		return fmt.Errorf("after replace: e5.0 not in slot 2: %s", out)
	}
	if err := dropCaches(); err != nil {
		return err
	}
	if got, err := fileSum(data); err != nil || got != want {
		return fmt.Errorf("after replace: read back %s %v", got, err)
	}
	g.say("CHECK e5.0 holds slot 2, e3.0 removed, never degraded, data intact")
	return h.Stop(ctx, na)
}
