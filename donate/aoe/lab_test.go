package aoe

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/distonet/distonet/internal/lab"
)

func TestMain(m *testing.M) {
	_ = lab.Sweep()
	os.Exit(m.Run())
}

// link is two namespaces joined by a veth pair: the initiator side (I) and the target side (T).
type link struct {
	I, T     *lab.Netns
	IIf, TIf string
	IMAC     net.HardwareAddr
	TMAC     net.HardwareAddr
}

func newLink(t *testing.T, mtu int) *link {
	t.Helper()
	lab.Require(t, "vblade")
	l := &link{I: lab.NewNetns(t), T: lab.NewNetns(t)}
	l.IIf, l.TIf = lab.Veth(t, l.I, "", l.T, "")
	if mtu != 0 {
		l.I.SetMTU(l.IIf, mtu)
		l.T.SetMTU(l.TIf, mtu)
	}
	l.IMAC = l.I.HardwareAddr(l.IIf)
	l.TMAC = l.T.HardwareAddr(l.TIf)
	return l
}

// diskFile makes a sparse backing file of the given size.
func diskFile(t *testing.T, size int64) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(p, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(p, size); err != nil {
		t.Fatal(err)
	}
	return p
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) { w.t.Log(string(p)); return len(p), nil }

// startTarget creates our target inside l.T and serves it until the test ends.
func startTarget(t *testing.T, l *link, cfg TargetConfig) *Target {
	t.Helper()
	tg := newTargetIn(t, l, cfg)
	serveTarget(t, tg)
	return tg
}

// serveTarget serves tg until the test ends and returns an idempotent stop.
func serveTarget(t *testing.T, tg *Target) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- tg.Serve(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-errc; err != nil {
				t.Errorf("Serve: %v", err)
			}
			if err := tg.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// newTargetIn creates a target inside l.T without serving it.
func newTargetIn(t *testing.T, l *link, cfg TargetConfig) *Target {
	t.Helper()
	cfg.Interface = l.TIf
	var tg *Target
	if err := l.T.Do(func() (err error) { tg, err = NewTarget(cfg, testLogger(t)); return }); err != nil {
		t.Fatal(err)
	}
	return tg
}

// startVblade runs Debian's vblade inside l.T.
func startVblade(t *testing.T, l *link, shelf, slot int, file string, args ...string) {
	t.Helper()
	args = append(args, fmt.Sprint(shelf), fmt.Sprint(slot), l.TIf, file)
	startPeer(t, l.T, "vblade", args...)
}

// startPeer runs a long-lived peer inside ns until the test ends. It does not use
// lab.Netns.Start: that sets Pdeathsig, which fires when the forking OS *thread* exits, and
// the threads lab.Netns.Do locks do exit, so peers died at random mid-test.
func startPeer(t *testing.T, ns *lab.Netns, name string, args ...string) {
	t.Helper()
	c := ns.Command(context.Background(), name, args...)
	var out bytes.Buffer
	var mu sync.Mutex
	c.Stdout = writerFunc(func(p []byte) (int, error) { mu.Lock(); defer mu.Unlock(); return out.Write(p) })
	c.Stderr = c.Stdout
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := c.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	t.Cleanup(func() {
		_ = syscall.Kill(-c.Process.Pid, syscall.SIGKILL)
		_ = c.Wait()
		if t.Failed() {
			mu.Lock()
			t.Logf("output of %s %v:\n%s", name, args, out.String())
			mu.Unlock()
		}
	})
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// discover polls Discover from l.I until want answers (bounded).
func discover(t *testing.T, l *link, shelf uint16, slot uint8) Config {
	t.Helper()
	for range 50 {
		var cfgs []Config
		err := l.I.Do(func() (err error) {
			cfgs, err = Discover(context.Background(), l.IIf, 200*time.Millisecond)
			return
		})
		if err != nil {
			t.Fatalf("Discover: %v", err)
		}
		for _, c := range cfgs {
			if c.Shelf == shelf && c.Slot == slot {
				return c
			}
		}
	}
	t.Fatalf("e%d.%d never answered discovery", shelf, slot)
	return Config{}
}

func dial(t *testing.T, l *link, shelf uint16, slot uint8, cfg ClientConfig) *Client {
	t.Helper()
	c, err := dialErr(l, shelf, slot, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func dialErr(l *link, shelf uint16, slot uint8, cfg ClientConfig) (*Client, error) {
	var c *Client
	err := l.I.Do(func() (err error) {
		c, err = DialConfig(context.Background(), l.IIf, l.TMAC, shelf, slot, cfg)
		return
	})
	return c, err
}

func randomBytes(t *testing.T, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}
