// Package lab builds throw-away test networks: network namespaces, veth pairs, bridges and
// tap devices with unique names, processes run inside them, and Go code that opens its
// sockets inside them. Everything a test creates is removed by t.Cleanup, also when the test
// fails; Sweep removes what an interrupted run (kill -9, Ctrl-C) left behind.
//
// Tests that need the lab call lab.Require(t) first: it fails (never skips) when the test is
// not root or a tool is missing, so CI cannot turn green by silently skipping protocol tests.
package lab

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Prefix starts the name of every namespace and link the lab creates, so Sweep can find leftovers.
const Prefix = "dtl"

var seq atomic.Uint32

// T is the part of T the lab uses, so the demo can build a lab outside a test.
type T interface {
	Helper()
	Fatalf(format string, args ...any)
	Fatal(args ...any)
	Errorf(format string, args ...any)
	Logf(format string, args ...any)
	Cleanup(func())
	Failed() bool
}

// uniqueName returns a short name (Linux link names are limited to 15 bytes) unique across
// parallel tests and parallel test binaries.
func uniqueName(kind string) string {
	return fmt.Sprintf("%s%s%d-%d", Prefix, kind, os.Getpid()%100000, seq.Add(1))
}

// Require fails the test unless it runs as root and every named tool is on PATH.
func Require(t T, tools ...string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatalf("lab tests need root (network namespaces); run as root or via .ci/run")
	}
	for _, tool := range append([]string{"ip"}, tools...) {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("lab test needs %q on PATH: run .ci/install-deps (%v)", tool, err)
		}
	}
}

// Netns is a network namespace owned by one test.
type Netns struct {
	name string
	t    T
	mu   sync.Mutex
	cmds []*exec.Cmd
}

// NewNetns creates a namespace with its loopback up; it is deleted (and every process Start
// began in it killed) when the test ends.
func NewNetns(t T) *Netns {
	t.Helper()
	Require(t)
	n := &Netns{name: uniqueName("n"), t: t}
	mustRun(t, "ip", "netns", "add", n.name)
	t.Cleanup(n.destroy)
	n.MustExec("ip", "link", "set", "lo", "up")
	return n
}

// Name is the namespace's name as `ip netns` knows it.
func (n *Netns) Name() string { return n.name }

func (n *Netns) destroy() {
	n.mu.Lock()
	cmds := n.cmds
	n.cmds = nil
	n.mu.Unlock()
	for _, c := range cmds {
		stop(c)
	}
	// Kill anything else still running in the namespace before deleting it.
	if out, err := exec.Command("ip", "netns", "pids", n.name).Output(); err == nil {
		for _, f := range strings.Fields(string(out)) {
			var pid int
			// Never kill ourselves (a thread of ours may still be inside the namespace).
			if _, err := fmt.Sscan(f, &pid); err == nil && pid > 0 && pid != os.Getpid() {
				_ = unix.Kill(pid, unix.SIGKILL)
			}
		}
	}
	if out, err := exec.Command("ip", "netns", "del", n.name).CombinedOutput(); err != nil {
		n.t.Errorf("lab: delete netns %s: %v: %s", n.name, err, out)
	}
}

// Command returns a command that runs inside the namespace.
func (n *Netns) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", n.name, name}, args...)...)
}

// Exec runs a command inside the namespace and returns its combined output.
func (n *Netns) Exec(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := n.Command(ctx, name, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s in %s: %w: %s", name, strings.Join(args, " "), n.name, err, bytes.TrimSpace(out))
	}
	return string(out), nil
}

// MustExec is Exec that fails the test on error.
func (n *Netns) MustExec(name string, args ...string) string {
	n.t.Helper()
	out, err := n.Exec(name, args...)
	if err != nil {
		n.t.Fatal(err)
	}
	return out
}

// Start runs a long-lived process inside the namespace; stdout and stderr go to the test log
// when the test fails. The process is killed at cleanup.
func (n *Netns) Start(name string, args ...string) *exec.Cmd {
	n.t.Helper()
	c := n.Command(context.Background(), name, args...)
	var buf lockedBuffer
	c.Stdout, c.Stderr = &buf, &buf
	c.SysProcAttr = &unix.SysProcAttr{Setpgid: true, Pdeathsig: unix.SIGKILL}
	if err := startOnForkThread(c); err != nil {
		n.t.Fatalf("lab: start %s in %s: %v", name, n.name, err)
	}
	n.mu.Lock()
	n.cmds = append(n.cmds, c)
	n.mu.Unlock()
	t := n.t
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("lab: output of %s %s:\n%s", name, strings.Join(args, " "), buf.String())
		}
	})
	return c
}

// Pdeathsig fires when the OS thread that forked a child exits, not when the process does,
// and Go ends threads (for instance those Do locked). So children are forked from one thread
// that is locked for the life of the process: they die with the test binary, and only then.
var (
	forkOnce sync.Once
	forkReq  chan func()
)

func startOnForkThread(c *exec.Cmd) error {
	forkOnce.Do(func() {
		forkReq = make(chan func())
		go func() {
			runtime.LockOSThread() // never unlocked: this thread lives as long as the process
			for f := range forkReq {
				f()
			}
		}()
	})
	errc := make(chan error, 1)
	forkReq <- func() { errc <- c.Start() }
	return <-errc
}

// Do runs fn on an OS thread that has entered the namespace. Sockets fn opens stay in the
// namespace for their whole life, so an in-process server can listen inside it. Afterwards
// the thread goes back to its own namespace and is released; only if that fails is it left
// locked, and Go then ends it rather than run other goroutines in the wrong namespace.
func (n *Netns) Do(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			errc <- fmt.Errorf("own netns: %w", err)
			return
		}
		defer orig.Close()
		target, err := os.Open("/run/netns/" + n.name)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("open netns %s: %w", n.name, err)
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter netns %s: %w", n.name, err)
			return
		}
		err = fn()
		if unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
		errc <- err
	}()
	return <-errc
}

// Listen opens a TCP listener inside the namespace.
func (n *Netns) Listen(network, addr string) (net.Listener, error) {
	var l net.Listener
	err := n.Do(func() (err error) { l, err = net.Listen(network, addr); return })
	return l, err
}

// ListenPacket opens a packet connection inside the namespace.
func (n *Netns) ListenPacket(network, addr string) (net.PacketConn, error) {
	var pc net.PacketConn
	err := n.Do(func() (err error) { pc, err = net.ListenPacket(network, addr); return })
	return pc, err
}

// Veth links two namespaces with a veth pair, gives each end its address (CIDR, may be "")
// and brings both up. It returns the interface names inside a and b.
func Veth(t T, a *Netns, aAddr string, b *Netns, bAddr string) (aIf, bIf string) {
	t.Helper()
	aIf, bIf = uniqueName("a"), uniqueName("b")
	mustRun(t, "ip", "link", "add", aIf, "netns", a.name, "type", "veth", "peer", "name", bIf, "netns", b.name)
	for _, end := range []struct {
		ns   *Netns
		name string
		addr string
	}{{a, aIf, aAddr}, {b, bIf, bAddr}} {
		if end.addr != "" {
			end.ns.MustExec("ip", "addr", "add", end.addr, "dev", end.name)
		}
		end.ns.MustExec("ip", "link", "set", end.name, "up")
	}
	return aIf, bIf
}

// Bridge creates a bridge inside the namespace with an optional address and brings it up.
func (n *Netns) Bridge(addr string) string {
	n.t.Helper()
	br := uniqueName("br")
	n.MustExec("ip", "link", "add", br, "type", "bridge")
	if addr != "" {
		n.MustExec("ip", "addr", "add", addr, "dev", br)
	}
	n.MustExec("ip", "link", "set", br, "up")
	return br
}

// Tap creates a tap device inside the namespace (for a QEMU guest), attaches it to the bridge
// when one is named, and brings it up.
func (n *Netns) Tap(bridge string) string {
	n.t.Helper()
	tap := uniqueName("t")
	n.MustExec("ip", "tuntap", "add", "dev", tap, "mode", "tap")
	if bridge != "" {
		n.MustExec("ip", "link", "set", tap, "master", bridge)
	}
	n.MustExec("ip", "link", "set", tap, "up")
	return tap
}

// SetMTU sets an interface's MTU inside the namespace.
func (n *Netns) SetMTU(ifname string, mtu int) {
	n.t.Helper()
	n.MustExec("ip", "link", "set", ifname, "mtu", fmt.Sprint(mtu))
}

// HardwareAddr returns an interface's MAC inside the namespace.
func (n *Netns) HardwareAddr(ifname string) net.HardwareAddr {
	n.t.Helper()
	var hw net.HardwareAddr
	if err := n.Do(func() error {
		ifi, err := net.InterfaceByName(ifname)
		if err != nil {
			return err
		}
		hw = ifi.HardwareAddr
		return nil
	}); err != nil {
		n.t.Fatal(err)
	}
	return hw
}

// Sweep deletes namespaces left by lab runs whose process is gone (kill -9, panics). It is
// safe to call while other test binaries run: it spares namespaces of live processes.
func Sweep() error {
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		return fmt.Errorf("list netns: %w", err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		name, _, _ := strings.Cut(strings.TrimSpace(line), " ")
		if !strings.HasPrefix(name, Prefix+"n") {
			continue
		}
		var pid, n int
		if _, err := fmt.Sscanf(strings.TrimPrefix(name, Prefix+"n"), "%d-%d", &pid, &n); err != nil {
			continue
		}
		if pid == os.Getpid()%100000 || unix.Kill(pid, 0) == nil {
			continue
		}
		_ = exec.Command("ip", "netns", "del", name).Run()
	}
	return nil
}

func mustRun(t T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("lab: %s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
}

func stop(c *exec.Cmd) {
	if c.Process == nil {
		return
	}
	_ = unix.Kill(-c.Process.Pid, unix.SIGKILL)
	_ = c.Process.Kill()
	_ = c.Wait()
}

type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Dial opens a connection from inside the namespace.
func (n *Netns) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := n.Do(func() (err error) {
		var d net.Dialer
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// HTTPClient is a client whose connections start inside the namespace (net/http dials on
// goroutines of its own, so wrapping a request in Do is not enough).
func (n *Netns) HTTPClient(timeout time.Duration) *http.Client {
	return &http.Client{Timeout: timeout, Transport: &http.Transport{DialContext: n.Dial, DisableKeepAlives: true}}
}
