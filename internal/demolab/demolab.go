// Package demolab is a boot network in a namespace of its own: a bridge carrying the
// appliance's address, `distonet serve` running inside, and QEMU nodes on tap devices that
// PXE-boot from it. The demo command, the end-to-end tests and the boot benchmark share it.
package demolab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/distonet/distonet/images/debian"
	"github.com/distonet/distonet/images/qemu"
	"github.com/distonet/distonet/internal/lab"
)

// Lab is one boot network with the appliance running in it.
type Lab struct {
	t        lab.T
	bin      string // the distonet binary
	NS       *lab.Netns
	Bridge   string
	dir      string // config and state
	CfgPath  string
	StateDir string
	out      io.Writer
	serve    *exec.Cmd
	ServeLog *os.File
	donate   []string // extra keys of the donate section
}

// The lab's boot network.
const (
	Address = "10.202.0.1/24"
	Server  = "10.202.0.1"
	// PoolHeadMAC is the one MAC donors let read and write their disks: the pool-head node's.
	PoolHeadMAC = "52:54:00:d5:0f:01"
)

// Packages go into the demo image beside the kernel and busybox: what a node enrolled with
// the pool-head role runs (mdadm, mke2fs/e2fsck, util-linux's blkid, aoetools, and the kernel
// NFS server's rpc.nfsd, rpc.mountd and exportfs) and the libraries those link against, since
// packages are unpacked without their dependencies.
var Packages = []string{"libc6", "libudev1", "mdadm", "e2fsprogs", "libext2fs2", "libcom-err2",
	"libblkid1", "libuuid1", "util-linux", "aoetools", "bash", "libtinfo6", // aoetools are bash scripts
	"netbase", // /etc/services, /etc/rpc: nfs-utils looks them up
	"nfs-kernel-server", "nfs-common", "libtirpc3", "libtirpc-common", "libwrap0", "libnsl2",
	"libgssapi-krb5-2", "libkrb5-3", "libk5crypto3", "libkrb5support0", "libkeyutils1"}

// New creates the namespace, the bridge and the appliance's configuration. bin is the
// distonet binary (static: it also goes into the nodes' initramfs).
func New(t lab.T, bin, dir string, out io.Writer) *Lab {
	t.Helper()
	d := &Lab{t: t, bin: bin, dir: dir, out: out, StateDir: filepath.Join(dir, "state")}
	d.NS = lab.NewNetns(t)
	d.Bridge = d.NS.Bridge(Address)
	d.CfgPath = filepath.Join(dir, "distonet.yaml")
	d.writeConfig()
	return d
}

func (d *Lab) writeConfig() {
	cfg := fmt.Sprintf(`# DiStoNet demo lab: the boot network is a bridge in network namespace %s.
interface: %s
address: %s
state_dir: %s
log_level: info
dhcp:
  mode: server
  range: 10.202.0.100-10.202.0.199
  dns: [%s]
  domain: demo.lab
http:
  listen: ":80"
volumes:
  size: 2GiB
donate:
  pool_head_macs: [%q]
`, d.NS.Name(), d.Bridge, Address, d.StateDir, Server, PoolHeadMAC)
	for _, l := range d.donate {
		cfg += "  " + l + "\n"
	}
	if err := os.WriteFile(d.CfgPath, []byte(cfg), 0o600); err != nil {
		d.t.Fatalf("demo config: %v", err)
	}
}

// SetDonate adds keys to the configuration's donate section (e.g. "pool_stop_before: 1m");
// call it before Start.
func (d *Lab) SetDonate(lines ...string) {
	d.t.Helper()
	d.donate = append(d.donate, lines...)
	d.writeConfig()
}

// CLI runs a distonet subcommand against the lab's config (outside the namespace: it only
// touches state_dir, or the daemon's API through the namespace below).
func (d *Lab) CLI(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	args = append(args, "--config", d.CfgPath)
	cmd := d.NS.Command(ctx, d.bin, args...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("distonet %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// Rootfs builds the demo image's rootfs once and caches it by what goes into it (package
// lists and skeleton files, init script included).
func Rootfs(ctx context.Context, out io.Writer) (string, error) {
	cache := debian.CacheDirForTests()
	dir := filepath.Join(filepath.Dir(cache), "rootfs-"+debian.Fingerprint(Packages, "")[:12])
	if _, err := os.Stat(filepath.Join(dir, ".complete")); err == nil {
		fmt.Fprintf(out, "demo image: using cached rootfs %s\n", dir)
		return dir, nil
	}
	os.RemoveAll(dir)
	if err := debian.Build(ctx, debian.Options{Dir: dir, CacheDir: cache, Packages: Packages, Progress: out}); err != nil {
		return "", err
	}
	return dir, os.WriteFile(filepath.Join(dir, ".complete"), nil, 0o644)
}

// ImportImage imports the rootfs as image name.
func (d *Lab) ImportImage(name, rootfs string) error {
	out, err := d.CLI("image", "import", name, "--rootfs", rootfs)
	fmt.Fprint(d.out, out)
	return err
}

// Start runs `distonet serve` in the namespace and waits until it answers.
func (d *Lab) Start() error {
	logf, err := os.OpenFile(filepath.Join(d.dir, "serve.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	d.ServeLog = logf
	d.serve = d.NS.Command(context.Background(), d.bin, "serve", "--config", d.CfgPath)
	d.serve.Stdout, d.serve.Stderr = logf, logf
	if err := d.serve.Start(); err != nil {
		return fmt.Errorf("start serve: %w", err)
	}
	d.t.Cleanup(func() { d.Stop() })
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := d.Get("/healthz"); err == nil {
			return nil
		}
		if d.serve.ProcessState != nil {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	raw, _ := os.ReadFile(logf.Name())
	return fmt.Errorf("distonet serve did not come up:\n%s", raw)
}

// Stop ends the daemon with SIGTERM (a clean shutdown) and waits for it.
func (d *Lab) Stop() {
	if d.serve == nil || d.serve.Process == nil {
		return
	}
	_ = d.serve.Process.Signal(os.Interrupt)
	done := make(chan struct{})
	go func() { d.serve.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		d.serve.Process.Kill()
		<-done
	}
	d.serve = nil
}

// Get fetches a URL path from the appliance, from inside the namespace.
func (d *Lab) Get(path string) (string, error) {
	resp, err := d.NS.HTTPClient(5 * time.Second).Get("http://" + Server + path)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != 200 {
		return "", fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	return string(raw), nil
}

// BootNode starts a QEMU guest that PXE-boots from the lab on a new tap. o may set the NIC,
// disks, firmware (Extra) and console; the lab fills in the namespace, tap, MAC and NetBoot.
func (d *Lab) BootNode(ctx context.Context, name, mac string, o qemu.Options) (*qemu.VM, error) {
	o.Netns, o.Tap, o.MAC, o.NetBoot = d.NS.Name(), d.NS.Tap(d.Bridge), mac, true
	if o.MemoryMB == 0 {
		o.MemoryMB = 768
	}
	// TCG's default CPU lacks RDRAND; without it (or a virtio-rng) the guest kernel's
	// entropy pool is not ready when the node init's DHCP client asks for a random xid.
	o.Extra = append([]string{"-cpu", "max"}, o.Extra...)
	vm, err := qemu.Start(ctx, o)
	if err != nil {
		return nil, fmt.Errorf("node %s: %w", name, err)
	}
	d.t.Cleanup(func() { vm.Close() })
	return vm, nil
}

// Proxy forwards a loopback port of the host into the lab's web UI, so a browser on this
// machine reaches it without routing into the namespace. It runs until ctx ends.
func (d *Lab) Proxy(ctx context.Context, listen string) (net.Listener, error) {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, err
	}
	go func() { <-ctx.Done(); ln.Close() }()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				up, err := d.NS.Dial(ctx, "tcp", Server+":80")
				if err != nil {
					return
				}
				defer up.Close()
				var wg sync.WaitGroup
				wg.Add(2)
				go func() { defer wg.Done(); io.Copy(up, c); up.(*net.TCPConn).CloseWrite() }()
				go func() { defer wg.Done(); io.Copy(c, up); c.(*net.TCPConn).CloseWrite() }()
				wg.Wait()
			}()
		}
	}()
	return ln, nil
}

// T lets the lab run outside a test: cleanups run in reverse at Done.
type T struct {
	mu       sync.Mutex
	cleanups []func()
	failed   bool
	Out      io.Writer
}

func (t *T) Helper() {}
func (t *T) Fatalf(format string, args ...any) {
	t.failed = true
	panic(Fatal{Err: fmt.Errorf(format, args...)})
}
func (t *T) Fatal(args ...any) {
	t.failed = true
	panic(Fatal{Err: errors.New(fmt.Sprint(args...))})
}
func (t *T) Errorf(format string, args ...any) {
	t.failed = true
	fmt.Fprintf(t.Out, "demo: "+format+"\n", args...)
}
func (t *T) Logf(format string, args ...any) { fmt.Fprintf(t.Out, format+"\n", args...) }
func (t *T) Cleanup(f func()) {
	t.mu.Lock()
	t.cleanups = append(t.cleanups, f)
	t.mu.Unlock()
}
func (t *T) Failed() bool { return t.failed }

// Done runs the cleanups, newest first.
func (t *T) Done() {
	t.mu.Lock()
	cs := t.cleanups
	t.cleanups = nil
	t.mu.Unlock()
	for i := len(cs) - 1; i >= 0; i-- {
		cs[i]()
	}
}

// Fatal is what T.Fatal panics with; the demo recovers it into an error.
type Fatal struct{ Err error }
