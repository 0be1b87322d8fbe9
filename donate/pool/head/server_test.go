package head

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/distonet/distonet/donate/pool"
	"github.com/google/go-cmp/cmp"
)

type fakeRegistry struct {
	mu      sync.Mutex
	layout  pool.Layout
	members []pool.Member
	reports []pool.ArrayStatus
	// reported, when set, receives a value after each report.
	reported chan struct{}
}

func (f *fakeRegistry) Layout(context.Context) (pool.Layout, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.layout, nil
}

func (f *fakeRegistry) Members(context.Context) ([]pool.Member, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]pool.Member(nil), f.members...), nil
}

func (f *fakeRegistry) Report(_ context.Context, st pool.ArrayStatus) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reports = append(f.reports, st)
	if f.reported != nil {
		select {
		case f.reported <- struct{}{}:
		default:
		}
	}
	return nil
}

func (f *fakeRegistry) last() pool.ArrayStatus {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.reports[len(f.reports)-1]
}

func (f *fakeRegistry) setState(addr, state string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := range f.members {
		if f.members[i].Address == addr {
			f.members[i].State = state
		}
	}
}

func inventoryOf(a pool.Array) []pool.Member {
	var inv []pool.Member
	for _, d := range append(append([]pool.Disk(nil), a.Members...), a.Spares...) {
		inv = append(inv, pool.Member{Node: d.Node, Transport: d.Transport, Address: d.Address, SizeBytes: d.SizeBytes, Window: "", State: pool.StateOnline})
	}
	return inv
}

func TestAvailable(t *testing.T) {
	s, err := NewServer(ServerConfig{Head: New(Config{}), Registry: &fakeRegistry{}, Location: time.UTC})
	if err != nil {
		t.Fatal(err)
	}
	at := func(hm string) time.Time {
		tm, _ := time.Parse("2006-01-02 15:04", "2026-11-26 "+hm)
		return tm
	}
	tests := []struct {
		window string
		now    string
		want   bool
	}{
		{"", "12:00", true},
		{"22:00-06:00", "12:00", false},
		{"22:00-06:00", "21:59", false},
		{"22:00-06:00", "22:00", true},
		{"22:00-06:00", "03:00", true},
		{"22:00-06:00", "05:49", true},
		{"22:00-06:00", "05:50", false}, // StopBefore (10 min) reached
		{"22:00-06:00", "06:00", false},
		{"08:00-18:00", "17:30", true},
		{"08:00-18:00", "17:55", false},
	}
	for _, tt := range tests {
		t.Run(tt.window+"@"+tt.now, func(t *testing.T) {
			got, _, err := s.Available(pool.Array{Name: "x", Window: tt.window}, at(tt.now))
			if err != nil || got != tt.want {
				t.Errorf("Available = %v, %v; want %v", got, err, tt.want)
			}
		})
	}
}

// TestServerOvernightCycle walks one array through a night: closed, opened (created),
// a member withdraws, the window closes (stopped and released).
func TestServerOvernightCycle(t *testing.T) {
	a := data0("")
	a.Spares = nil
	a.Window = "22:00-06:00"
	reg := &fakeRegistry{layout: pool.Layout{Arrays: []pool.Array{a}}, members: inventoryOf(a)}
	script := map[string][]reply{mdadmDet: {fail(1, noArray)}}
	for _, d := range []string{"a", "b", "c", "d"} {
		script["mdadm --examine --export /dev/vd"+d] = []reply{fail(1, fmt.Sprintf(noSuper, "/dev/vd"+d))}
	}
	r := newRig(t, devMap(1, 2, 3, 4), script)
	r.head.cfg.Filesystem = ""
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	s, err := NewServer(ServerConfig{Head: r.head, Registry: reg, Location: time.UTC, Now: func() time.Time { return now }, Name: "head1"})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	// Noon: closed, nothing assembled, nothing to do but look.
	if err := s.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{mdadmDet}, r.run.calls); diff != "" {
		t.Errorf("noon (-want +got):\n%s", diff)
	}

	// 23:00: open; the array is created.
	now = time.Date(2026, 11, 26, 23, 0, 0, 0, time.UTC)
	create := "mdadm --create /dev/md/data0 --run --metadata=1.2 --homehost=any --name=data0 --level=6 --raid-devices=4 --bitmap=internal /dev/vda /dev/vdb /dev/vdc /dev/vdd"
	script[create] = []reply{ok("")}
	r.run.script[mdadmDet] = []reply{fail(1, noArray), ok(string(fixture(t, "detail-clean.txt")))}
	r.run.calls = nil
	if err := s.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(strings.Join(r.run.calls, "\n"), create) {
		t.Errorf("not created: %q", r.run.calls)
	}
	if st := reg.last(); st.State != pool.ArrayRunning || st.UUID != fixtureUUID || st.Head != "head1" || !st.UpdatedAt.Equal(now) {
		t.Errorf("report %+v", st)
	}

	// 02:00: e1's agent withdraws: failed and removed at once, then released.
	now = time.Date(2026, 11, 27, 2, 0, 0, 0, time.UTC)
	reg.setState("e1.0", pool.StateWithdrawing)
	script["mdadm /dev/md/data0 --fail /dev/vda --remove /dev/vda"] = []reply{ok("")}
	r.run.calls = nil
	if err := s.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	if len(r.run.calls) < 2 || r.run.calls[1] != "mdadm /dev/md/data0 --fail /dev/vda --remove /dev/vda" {
		t.Errorf("withdraw: %q", r.run.calls)
	}
	if diff := cmp.Diff([]string{"aoe:e1.0"}, r.at.detached); diff != "" {
		t.Errorf("detached (-want +got):\n%s", diff)
	}

	// 05:55: inside StopBefore: stopped cleanly and every member released.
	now = time.Date(2026, 11, 27, 5, 55, 0, 0, time.UTC)
	script["mdadm --stop /dev/md/data0"] = []reply{ok("")}
	r.run.script[mdadmDet] = []reply{ok(string(fixture(t, "detail-clean.txt"))), fail(1, noArray)}
	r.run.calls, r.at.detached = nil, nil
	if err := s.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{mdadmDet, "mdadm --stop /dev/md/data0", mdadmDet}, r.run.calls); diff != "" {
		t.Errorf("stop (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"aoe:e1.0", "aoe:e2.0", "aoe:e3.0", "aoe:e4.0"}, r.at.detached); diff != "" {
		t.Errorf("released (-want +got):\n%s", diff)
	}
	if st := reg.last(); st.State != pool.ArrayStopped {
		t.Errorf("report after stop %+v", st)
	}
}

func TestServeStopsArraysOnExit(t *testing.T) {
	a := data0(fixtureUUID)
	a.Spares = nil
	reg := &fakeRegistry{layout: pool.Layout{Arrays: []pool.Array{a}}, members: inventoryOf(a), reported: make(chan struct{}, 1)}
	script := map[string][]reply{
		mdadmDet:                     {ok(string(fixture(t, "detail-clean.txt")))},
		"mdadm --stop /dev/md/data0": {ok("")},
	}
	r := newRig(t, devMap(1, 2, 3, 4), script)
	r.head.cfg.Filesystem = ""
	s, err := NewServer(ServerConfig{Head: r.head, Registry: reg, Interval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- s.Serve(ctx) }()
	<-reg.reported // the first pass is done
	cancel()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	r.run.mu.Lock()
	defer r.run.mu.Unlock()
	if last := r.run.calls[len(r.run.calls)-1]; last != "mdadm --stop /dev/md/data0" {
		t.Errorf("last command %q, want the array stopped", last)
	}
}

func TestServerWaitsForLateDonorsBeforeAssemblingDegraded(t *testing.T) {
	a := data0(fixtureUUID)
	a.Spares = nil
	a.Window = "22:00-06:00"
	reg := &fakeRegistry{layout: pool.Layout{Arrays: []pool.Array{a}}, members: inventoryOf(a)}
	reg.setState("e4.0", pool.StateOffline)
	assemble := "mdadm --assemble /dev/md/data0 --run --uuid=" + fixtureUUID + " /dev/vda /dev/vdb /dev/vdc"
	script := map[string][]reply{mdadmDet: {fail(1, noArray)}, assemble: {ok("")}}
	for _, d := range []string{"a", "b", "c"} {
		script["mdadm --examine --export /dev/vd"+d] = []reply{ok(examineOut(fixtureUUID, "data0"))}
	}
	r := newRig(t, devMap(1, 2, 3), script)
	r.head.cfg.Filesystem = ""
	now := time.Date(2026, 11, 26, 21, 0, 0, 0, time.UTC)
	s, err := NewServer(ServerConfig{Head: r.head, Registry: reg, Location: time.UTC, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := s.Reconcile(ctx); err != nil { // 21:00: closed
		t.Fatal(err)
	}
	now = time.Date(2026, 11, 26, 22, 2, 0, 0, time.UTC)
	if err := s.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	if st := reg.last(); st.State != pool.ArrayWaiting || !strings.Contains(st.Message, "waiting up to 3m0s more") {
		t.Errorf("22:02 report %+v", st)
	}
	if strings.Contains(strings.Join(r.run.calls, "\n"), "--assemble") {
		t.Errorf("assembled degraded within the grace: %q", r.run.calls)
	}
	now = time.Date(2026, 11, 26, 22, 6, 0, 0, time.UTC)
	// The fixture's degraded array holds vdc, vdd and vde: vda and vdb get re-added.
	r.run.script[mdadmDet] = []reply{fail(1, noArray), ok(string(fixture(t, "detail-degraded.txt")))}
	r.run.script["mdadm /dev/md/data0 --re-add /dev/vda"] = []reply{ok("")}
	r.run.script["mdadm /dev/md/data0 --re-add /dev/vdb"] = []reply{ok("")}
	if err := s.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(strings.Join(r.run.calls, "\n"), assemble) {
		t.Errorf("not assembled after the grace: %q", r.run.calls)
	}
}

func TestServerStopsAnArrayDroppedFromThePlan(t *testing.T) {
	a := data0(fixtureUUID)
	a.Spares = nil
	reg := &fakeRegistry{layout: pool.Layout{Arrays: []pool.Array{a}}, members: inventoryOf(a)}
	script := map[string][]reply{
		mdadmDet:                     {ok(string(fixture(t, "detail-clean.txt")))},
		"mdadm --stop /dev/md/data0": {ok("")},
	}
	r := newRig(t, devMap(1, 2, 3, 4), script)
	r.head.cfg.Filesystem = ""
	s, err := NewServer(ServerConfig{Head: r.head, Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Reconcile(context.Background()); err != nil {
		t.Fatal(err)
	}
	reg.mu.Lock()
	reg.layout = pool.Layout{Arrays: []pool.Array{}}
	reg.mu.Unlock()
	r.run.calls = nil
	if err := s.Reconcile(context.Background()); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{mdadmDet, "mdadm --stop /dev/md/data0"}, r.run.calls); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"aoe:e1.0", "aoe:e2.0", "aoe:e3.0", "aoe:e4.0"}, r.at.detached); diff != "" {
		t.Errorf("released (-want +got):\n%s", diff)
	}
}
