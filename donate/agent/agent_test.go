package agent

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/distonet/distonet/donate/aoe"
	"github.com/distonet/distonet/internal/lab"
	"github.com/google/go-cmp/cmp"
)

func TestMain(m *testing.M) {
	_ = lab.Sweep()
	os.Exit(m.Run())
}

// fakeAppliance is the registry seam: it hands out a policy, records what the agent says and
// releases a withdrawing member on the second withdrawing heartbeat.
type fakeAppliance struct {
	mu         sync.Mutex
	policy     Policy
	registered bool
	registers  []Export
	events     []string
	withdrawHB int
	withdrawn  int
}

func (f *fakeAppliance) Register(_ context.Context, e Export) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.registers = append(f.registers, e)
	f.registered = true
	f.events = append(f.events, "register")
	return nil
}

func (f *fakeAppliance) Heartbeat(_ context.Context, s Status) (Reply, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	r := Reply{Policy: f.policy, Registered: f.registered}
	if s.State == StateWithdrawing {
		f.withdrawHB++
		if f.withdrawHB == 1 {
			f.events = append(f.events, "withdrawing")
		}
		if f.withdrawHB >= 2 {
			r.Released = true
			if f.withdrawHB == 2 {
				f.events = append(f.events, "released")
			}
		}
	}
	return r, nil
}

func (f *fakeAppliance) Withdrawn(context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.withdrawn++
	f.registered = false
	f.events = append(f.events, "withdrawn")
	return nil
}

func (f *fakeAppliance) restart() {
	f.mu.Lock()
	f.registered = false
	f.mu.Unlock()
}

func (f *fakeAppliance) snapshot() (regs int, events []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.registers), append([]string(nil), f.events...)
}

// recordingExporter wraps an exporter to put "stop" into the appliance's event log.
type recordingExporter struct {
	Exporter
	app *fakeAppliance
}

func (r recordingExporter) Start(dev string, p Policy) (Running, error) {
	run, err := r.Exporter.Start(dev, p)
	if err != nil {
		return nil, err
	}
	return recordingRunning{run, r.app}, nil
}

type recordingRunning struct {
	Running
	app *fakeAppliance
}

func (r recordingRunning) Stop() error {
	r.app.mu.Lock()
	r.app.events = append(r.app.events, "stop")
	r.app.mu.Unlock()
	return r.Running.Stop()
}

type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) set(t time.Time)     { c.mu.Lock(); c.now = t; c.mu.Unlock() }
func at(h, m int, day int) time.Time { return time.Date(2026, 11, day, h, m, 0, 0, time.UTC) }

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for range 1500 { // up to 15 s: generous for loaded CI machines
		if cond() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}

// TestAgentDonatesInsideWindow runs the agent with the real AoE target in one namespace and
// our initiator in another: nothing before the window, a readable/writable export inside it,
// re-registration after an appliance restart, and a clean withdrawal at close (the appliance
// is told first, the export stops only after the release).
func TestAgentDonatesInsideWindow(t *testing.T) {
	lab.Require(t)
	node, head := lab.NewNetns(t), lab.NewNetns(t)
	nodeIf, headIf := lab.Veth(t, node, "", head, "")
	headMAC, nodeMAC := head.HardwareAddr(headIf), node.HardwareAddr(nodeIf)
	dev := filepath.Join(t.TempDir(), "spare.img")
	if err := os.WriteFile(dev, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(dev, 64<<20); err != nil {
		t.Fatal(err)
	}
	app := &fakeAppliance{policy: Policy{Mode: "aoe", Device: dev, Window: "20:00-07:00", Shelf: 4, Slot: 2, AllowMACs: []string{headMAC.String()}, AfterWindow: "reboot"}}
	power := make(chan string, 1)
	clk := &clock{now: at(19, 0, 26)}
	log := slog.New(slog.NewTextHandler(testWriter{t}, nil))
	a, err := New(Config{
		Appliance: app, AoE: recordingExporter{AoEExporter{Interface: nodeIf, StateDir: t.TempDir(), Logger: log}, app},
		Now: clk.Now, Location: time.UTC, HeartbeatInterval: 20 * time.Millisecond, ReleasePoll: 10 * time.Millisecond,
		ReleaseTimeout: 5 * time.Second, MinSize: -1, StateDir: t.TempDir(), Logger: log,
		Power: func(action string) error { power <- action; return nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- node.Do(func() error { return a.Run(ctx) }) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()

	dial := func(cfg aoe.ClientConfig) (*aoe.Client, error) {
		var c *aoe.Client
		err := head.Do(func() (err error) {
			c, err = aoe.DialConfig(context.Background(), headIf, nodeMAC, 4, 2, cfg)
			return
		})
		return c, err
	}
	quick := aoe.ClientConfig{Timeout: 50 * time.Millisecond, Retries: 1}

	time.Sleep(100 * time.Millisecond) // a few heartbeats outside the window
	if st, _ := a.State(); st != StateIdle {
		t.Fatalf("state before the window: %s", st)
	}
	if _, err := dial(quick); !errors.Is(err, aoe.ErrTimeout) {
		t.Fatalf("dial before the window: %v, want no answer", err)
	}

	clk.set(at(20, 30, 26))
	waitFor(t, "registration", func() bool { n, _ := app.snapshot(); return n >= 1 })
	c, err := dial(aoe.ClientConfig{})
	if err != nil {
		t.Fatalf("dial inside the window: %v", err)
	}
	defer c.Close()
	cq, err := dial(quick) // for the read that must get no answer after the withdrawal
	if err != nil {
		t.Fatalf("dial inside the window: %v", err)
	}
	defer cq.Close()
	want := make([]byte, 256<<10)
	rand.Read(want)
	if _, err := c.WriteAt(want, 1<<20); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(want))
	if _, err := c.ReadAt(got, 1<<20); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("read back through the agent's export: %v, equal=%v", err, bytes.Equal(got, want))
	}
	app.mu.Lock()
	reg := app.registers[0]
	app.mu.Unlock()
	if diff := cmp.Diff(Export{Device: dev, Transport: "aoe", Address: "e4.2", SizeBytes: 64 << 20, MAC: nodeMAC.String(), Window: "20:00-07:00"}, reg); diff != "" {
		t.Fatalf("registered export (-want +got):\n%s", diff)
	}

	app.restart()
	waitFor(t, "re-registration after appliance restart", func() bool { n, _ := app.snapshot(); return n >= 2 })

	clk.set(at(7, 5, 27))
	waitFor(t, "withdrawal", func() bool { _, ev := app.snapshot(); return len(ev) > 0 && ev[len(ev)-1] == "withdrawn" })
	_, ev := app.snapshot()
	if diff := cmp.Diff([]string{"register", "register", "withdrawing", "released", "stop", "withdrawn"}, ev); diff != "" {
		t.Fatalf("events (-want +got):\n%s", diff)
	}
	if _, err := cq.ReadAt(got[:512], 0); !errors.Is(err, aoe.ErrTimeout) {
		t.Fatalf("read after withdrawal: %v, want no answer", err)
	}
	select {
	case action := <-power:
		if action != "reboot" {
			t.Fatalf("power action %q, want reboot", action)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no power action after the window closed")
	}
}

func TestAgentRefusesFilesystem(t *testing.T) {
	dev := filepath.Join(t.TempDir(), "windows.img")
	if err := os.WriteFile(dev, make([]byte, 16<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("/sbin/mkfs.ext4", "-q", "-F", dev).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v: %s", err, out)
	}
	app := &fakeAppliance{policy: Policy{Mode: "aoe", Device: dev, Shelf: 1, Slot: 1}}
	started := false
	a, _ := New(Config{Appliance: app, AoE: exporterFunc(func(string, Policy) (Running, error) { started = true; return nil, errors.New("unreachable") }),
		MinSize: -1, HeartbeatInterval: 10 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_ = a.Run(ctx)
	if started {
		t.Fatal("exported a device with an ext4 superblock")
	}
	if s := a.status(); s.State != StateIdle || s.Error == "" {
		t.Fatalf("status %+v: want idle with the refusal reason", s)
	}
}

type exporterFunc func(string, Policy) (Running, error)

func (f exporterFunc) Start(d string, p Policy) (Running, error) { return f(d, p) }

func TestHTTPAppliance(t *testing.T) {
	var mu sync.Mutex
	var seen []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer tok123" {
			http.Error(w, "no", http.StatusUnauthorized)
			return
		}
		var body map[string]any
		_ = json.NewDecoder(r.Body).Decode(&body)
		mu.Lock()
		seen = append(seen, r.Method+" "+r.URL.Path+" "+toJSON(body))
		mu.Unlock()
		if r.URL.Path == "/api/agent/heartbeat" {
			_ = json.NewEncoder(w).Encode(Reply{Registered: true, Policy: Policy{Mode: "aoe", Window: "20:00-07:00"}})
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()
	ctx := context.Background()
	h := NewHTTPAppliance(srv.URL+"/", "tok123")
	if err := h.Register(ctx, Export{Device: "/dev/sdb", Transport: "aoe", Address: "e1.2", SizeBytes: 42}); err != nil {
		t.Fatal(err)
	}
	r, err := h.Heartbeat(ctx, Status{State: StateOnline})
	if err != nil || !r.Registered || r.Policy.Window != "20:00-07:00" {
		t.Fatalf("heartbeat: %+v %v", r, err)
	}
	if err := h.Withdrawn(ctx); err != nil {
		t.Fatal(err)
	}
	want := []string{
		`POST /api/agent/register {"address":"e1.2","device":"/dev/sdb","size_bytes":42,"transport":"aoe"}`,
		`POST /api/agent/heartbeat {"state":"online"}`,
		`POST /api/agent/withdraw {"state":"withdrawn"}`,
	}
	if diff := cmp.Diff(want, seen); diff != "" {
		t.Fatalf("(-want +got):\n%s", diff)
	}
	if err := NewHTTPAppliance(srv.URL, "wrong").Withdrawn(ctx); err == nil {
		t.Fatal("a wrong token was accepted")
	}
}

func toJSON(v any) string { b, _ := json.Marshal(v); return string(b) }

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(bytes.TrimSpace(p)))
	return len(p), nil
}

type nopRunning struct{ dev string }

func (r nopRunning) Export() Export {
	return Export{Device: r.dev, Transport: "aoe", Address: "e1.1", SizeBytes: 1}
}
func (nopRunning) Stop() error { return nil }

// TestAgentKeepsOwnRaidSuperblock: a disk this node donated before carries the pool head's md
// superblock and is donated again as is (no wipe, so the member re-adds with its bitmap); a
// disk with a foreign md superblock is refused.
func TestAgentKeepsOwnRaidSuperblock(t *testing.T) {
	mdDisk := func() string {
		p := filepath.Join(t.TempDir(), "md.img")
		b := make([]byte, 8<<20)
		copy(b[4096:], []byte{0xfc, 0x4e, 0x2b, 0xa9}) // md 1.2 superblock magic
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	own, foreign := mdDisk(), mdDisk()
	state := t.TempDir()
	b, _ := json.Marshal(donatedFile{Devices: []string{own}})
	if err := os.WriteFile(filepath.Join(state, "donated.json"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		dev    string
		export bool
	}{{own, true}, {foreign, false}} {
		app := &fakeAppliance{policy: Policy{Mode: "aoe", Device: tc.dev, Shelf: 1, Slot: 1, Wipe: false}}
		var started []string
		a, _ := New(Config{Appliance: app, StateDir: state, MinSize: -1, HeartbeatInterval: 10 * time.Millisecond,
			ReleaseTimeout: 100 * time.Millisecond, Logger: slog.New(slog.DiscardHandler),
			AoE: exporterFunc(func(d string, _ Policy) (Running, error) { started = append(started, d); return nopRunning{d}, nil })})
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		_ = a.Run(ctx)
		cancel()
		if got := len(started) > 0; got != tc.export {
			t.Fatalf("%s: exported=%v, want %v", tc.dev, got, tc.export)
		}
		sb := make([]byte, 4)
		f, _ := os.Open(tc.dev)
		_, _ = f.ReadAt(sb, 4096)
		f.Close()
		if !bytes.Equal(sb, []byte{0xfc, 0x4e, 0x2b, 0xa9}) {
			t.Fatalf("%s: the md superblock was erased", tc.dev)
		}
	}
}

func TestWindowInAppliancesTimeZone(t *testing.T) {
	// 19:30 UTC is 20:30 in Paris (winter): inside "20:00-07:00" only when read in Paris time.
	now := func() time.Time { return time.Date(2026, 11, 26, 19, 30, 0, 0, time.UTC) }
	a, _ := New(Config{Appliance: &fakeAppliance{}, Now: now, Location: time.UTC, Logger: slog.New(slog.DiscardHandler)})
	for _, tc := range []struct {
		tz   string
		want bool
	}{{"", false}, {"UTC", false}, {"Europe/Paris", true}} {
		got, why := a.wanted(true, Policy{Mode: "aoe", Window: "20:00-07:00", TimeZone: tc.tz}, false)
		if got != tc.want {
			t.Errorf("time zone %q: wanted=%v (%s), want %v", tc.tz, got, why, tc.want)
		}
	}
}

// stubborn never releases the member.
type stubborn struct{ fakeAppliance }

func (s *stubborn) Heartbeat(_ context.Context, st Status) (Reply, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st.State == StateWithdrawing {
		s.withdrawHB++
		if s.withdrawHB == 1 {
			s.events = append(s.events, "withdrawing")
		}
	}
	return Reply{Policy: s.policy, Registered: s.registered}, nil
}

// TestWithdrawWithoutRelease: when the pool never confirms, the agent still stops exporting
// after ReleaseTimeout (the node's schedule wins; md fails the member) and reports it.
func TestWithdrawWithoutRelease(t *testing.T) {
	dev := filepath.Join(t.TempDir(), "d.img")
	if err := os.WriteFile(dev, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	app := &stubborn{fakeAppliance{policy: Policy{Mode: "aoe", Device: dev, Shelf: 1, Slot: 1}}}
	var stopped sync.WaitGroup
	stopped.Add(1)
	a, _ := New(Config{Appliance: app, MinSize: -1, HeartbeatInterval: 10 * time.Millisecond, ReleasePoll: 5 * time.Millisecond,
		ReleaseTimeout: 50 * time.Millisecond, Logger: slog.New(slog.DiscardHandler),
		AoE: exporterFunc(func(d string, _ Policy) (Running, error) { return stopRecorder{nopRunning{d}, &stopped}, nil })})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	waitFor(t, "export", func() bool { n, _ := app.snapshot(); return n == 1 })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	stopped.Wait()
	_, ev := app.snapshot()
	if diff := cmp.Diff([]string{"register", "withdrawing", "withdrawn"}, ev); diff != "" {
		t.Fatalf("events (-want +got):\n%s", diff)
	}

	if st, _ := a.State(); st != StateIdle {
		t.Fatalf("state %s after withdrawal", st)
	}
}

type stopRecorder struct {
	nopRunning
	wg *sync.WaitGroup
}

func (s stopRecorder) Stop() error { s.wg.Done(); return nil }
