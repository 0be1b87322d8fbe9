package dhcp_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/distonet/distonet/internal/lab"
	"github.com/distonet/distonet/netboot/dhcp"
)

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) != "" {
		os.Exit(helperMain())
	}
	_ = lab.Sweep()
	os.Exit(m.Run())
}

// Addresses of this package's test networks: 10.67.x.0/24.
var subnetSeq struct {
	sync.Mutex
	n int
}

// testNet is one boot link: the server's namespace and a client namespace
// joined by a veth pair.
type testNet struct {
	srv, cli       *lab.Netns
	srvIf, cliIf   string
	subnet         *net.IPNet
	serverIP       net.IP
	prefix         string // "10.67.N."
	rangeLo, rngHi net.IP
}

func newTestNet(t *testing.T) *testNet {
	t.Helper()
	subnetSeq.Lock()
	subnetSeq.n++
	n := subnetSeq.n
	subnetSeq.Unlock()
	p := fmt.Sprintf("10.67.%d.", n)
	tn := &testNet{srv: lab.NewNetns(t), cli: lab.NewNetns(t), prefix: p}
	tn.srvIf, tn.cliIf = lab.Veth(t, tn.srv, p+"1/24", tn.cli, "")
	_, tn.subnet, _ = net.ParseCIDR(p + "0/24")
	tn.serverIP = net.ParseIP(p + "1").To4()
	tn.rangeLo, tn.rngHi = net.ParseIP(p+"100").To4(), net.ParseIP(p+"199").To4()
	return tn
}

func (tn *testNet) config(t *testing.T) dhcp.Config {
	cfg := dhcp.DefaultConfig()
	cfg.Interface = tn.srvIf
	cfg.ServerIP = tn.serverIP
	cfg.Subnet = tn.subnet
	cfg.RangeStart, cfg.RangeEnd = tn.rangeLo, tn.rngHi
	cfg.Router = tn.serverIP
	cfg.DNS = []net.IP{tn.serverIP}
	cfg.Domain = "boot.test"
	cfg.LeaseTime = 10 * time.Minute
	cfg.LeaseFile = filepath.Join(t.TempDir(), "leases.log")
	cfg.BootHTTPBase = "http://" + tn.serverIP.String()
	cfg.ProbeTimeout = 600 * time.Millisecond
	cfg.Logger = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	return cfg
}

// start runs a server inside the server namespace until the test ends.
func (tn *testNet) start(t *testing.T, cfg dhcp.Config, nodes dhcp.Nodes) *dhcp.Server {
	t.Helper()
	srv, err := dhcp.New(cfg, nodes)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- tn.srv.Do(func() error { return srv.Serve(ctx) }) }()
	t.Cleanup(func() {
		cancel()
		srv.Close()
	})
	select {
	case <-srv.Ready():
	case err := <-errc:
		t.Fatalf("server did not start: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("server not ready after 20s")
	}
	return srv
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// fakeNodes is the registry seam.
type fakeNodes struct {
	mu    sync.Mutex
	hosts map[string]dhcp.Host
	seen  []dhcp.ClientInfo
}

func newFakeNodes() *fakeNodes { return &fakeNodes{hosts: map[string]dhcp.Host{}} }

func (f *fakeNodes) add(mac net.HardwareAddr, h dhcp.Host) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.hosts[mac.String()] = h
}

func (f *fakeNodes) Host(mac net.HardwareAddr) (dhcp.Host, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	h, ok := f.hosts[mac.String()]
	return h, ok
}

func (f *fakeNodes) Seen(ci dhcp.ClientInfo) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.seen = append(f.seen, ci)
}

func (f *fakeNodes) ReservedFor(ip net.IP) (net.HardwareAddr, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for m, h := range f.hosts {
		if h.IP != nil && h.IP.Equal(ip) {
			mac, _ := net.ParseMAC(m)
			return mac, true
		}
	}
	return nil, false
}

func (f *fakeNodes) seenMACs() map[string]dhcp.ClientInfo {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[string]dhcp.ClientInfo{}
	for _, ci := range f.seen {
		out[ci.MAC.String()] = ci
	}
	return out
}

// envScript writes a client hook script that appends its environment to a
// file per invocation, and returns the script path and the output directory.
func envScript(t *testing.T) (script, dir string) {
	dir = t.TempDir()
	script = filepath.Join(dir, "hook.sh")
	body := "#!/bin/sh\nenv > \"" + dir + "/env.$$.${1:-$reason}\"\n"
	if err := os.WriteFile(script, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	return script, dir
}

// readEnv returns the variables of the first hook run whose name ends with suffix.
func readEnv(t *testing.T, dir, suffix string) map[string]string {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(dir, "env.*."+suffix))
	if len(files) == 0 {
		all, _ := filepath.Glob(filepath.Join(dir, "env.*"))
		t.Fatalf("no hook run %q; runs: %v", suffix, all)
	}
	data, err := os.ReadFile(files[0])
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{}
	for _, line := range strings.Split(string(data), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			env[k] = v
		}
	}
	return env
}

// startKept is ns.Start for a process that must live until the test ends.
// lab's Start sets Pdeathsig, which Linux delivers when the forking *thread*
// exits; ns.Do retires every thread it locks, so a process forked on such a
// thread dies at a random moment mid-test. Forking from a thread that stays
// locked until cleanup avoids that.
func startKept(t *testing.T, ns *lab.Netns, name string, args ...string) *exec.Cmd {
	t.Helper()
	ch := make(chan *exec.Cmd, 1)
	release := make(chan struct{})
	go func() {
		runtime.LockOSThread()
		ch <- ns.Start(name, args...)
		<-release
	}()
	t.Cleanup(func() { close(release) })
	select {
	case c := <-ch:
		return c
	case <-time.After(30 * time.Second):
		t.Fatalf("could not start %s", name)
		return nil
	}
}
