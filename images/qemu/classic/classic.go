// Package classic runs the "classic stack" a diskless node boots against before DiStoNet:
// dnsmasq for DHCP, nfs-ganesha (with rpcbind) exporting the image read-only, tgtd with a
// CHAP-protected file-backed LUN for the node's overlay volume, and a small HTTP server
// handing out the node's boot config — each a real Debian daemon, run by hand inside a lab
// network namespace. End-to-end tests and the boot benchmark use it as the reference peer.
package classic

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/distonet/distonet/internal/bootconfig"
	"github.com/distonet/distonet/internal/lab"
)

// Options describe the stack.
type Options struct {
	Subnet     string // first three octets, e.g. "10.206.0"; the server is .1
	Rootfs     string // directory exported over NFS as /images/<Image>
	Image      string // default "demo"
	Node       string // default "node1"
	Volume     string // file backing the node's LUN (formatted by the caller)
	CHAPUser   string
	CHAPSecret string
	// ServeSecret is the secret the boot config hands the node (default CHAPSecret; set it
	// differently to test a refused login).
	ServeSecret string
	Token       string // the boot token the HTTP server accepts
	// Files are served by the HTTP server without a token (URL path -> local file), e.g. the
	// kernel, initramfs and an iPXE script for a network boot.
	Files map[string]string
	// IPXEBoot, when set, is the boot file URL dnsmasq gives clients that are iPXE already
	// (user class "iPXE"), e.g. http://10.206.0.1:8080/boot.ipxe.
	IPXEBoot string
	// LeaseTime is dnsmasq's lease time (default 12h; dnsmasq's minimum is 2m).
	LeaseTime string
}

// Stack is a running classic stack.
type Stack struct {
	NS       *lab.Netns
	Bridge   string
	ServerIP string
	URL      string // http://<server>:8080
	Config   bootconfig.Config

	mu     sync.Mutex
	events []bootconfig.Event
	hits   int

	opts   Options
	target string
	tgtd   *exec.Cmd
}

// Tools the stack needs on PATH.
var Tools = []string{"dnsmasq", "ganesha.nfsd", "rpcbind", "tgtd", "tgtadm", "unshare"}

// Start brings the stack up; everything stops when the test ends.
func Start(t testing.TB, o Options) *Stack {
	t.Helper()
	lab.Require(t, Tools...)
	if o.Image == "" {
		o.Image = "demo"
	}
	if o.Node == "" {
		o.Node = "node1"
	}
	if o.LeaseTime == "" {
		o.LeaseTime = "12h"
	}
	if o.ServeSecret == "" {
		o.ServeSecret = o.CHAPSecret
	}
	ns := lab.NewNetns(t)
	s := &Stack{NS: ns, ServerIP: o.Subnet + ".1", URL: "http://" + o.Subnet + ".1:8080"}
	s.Bridge = ns.Bridge(s.ServerIP + "/24")
	dir := t.TempDir()
	// Open the HTTP listener before starting any daemon: lab.Netns.Do ends its OS thread,
	// and a daemon forked from that thread would get its parent-death signal.
	l, err := ns.Listen("tcp", s.ServerIP+":8080")
	if err != nil {
		t.Fatal(err)
	}

	// DHCP only (port=0 turns DNS off); --no-ping answers at once.
	dnsmasq := []string{"-d", "-u", "root", "--port=0", "--conf-file=/dev/null", "--interface=" + s.Bridge,
		"--bind-interfaces", "--no-ping", "--dhcp-authoritative",
		"--dhcp-range=" + o.Subnet + ".100," + o.Subnet + ".199,255.255.255.0," + o.LeaseTime,
		"--dhcp-leasefile=" + filepath.Join(dir, "leases"), "--pid-file=" + filepath.Join(dir, "dnsmasq.pid")}
	if o.IPXEBoot != "" {
		dnsmasq = append(dnsmasq, "--dhcp-userclass=set:ipxe,iPXE", "--dhcp-boot=tag:ipxe,"+o.IPXEBoot)
	}
	ns.Start("dnsmasq", dnsmasq...)

	s.startNFS(t, dir, o)
	target := "iqn.2026-01.net.distonet.classic:" + o.Node
	s.opts, s.target = o, target
	s.startTgt(t, target, o)

	s.Config = bootconfig.Config{
		Node: o.Node, Hostname: o.Node, Server: s.URL,
		NFS: bootconfig.NFS{Server: s.ServerIP, Path: "/images/" + o.Image,
			Options: "vers=3,proto=tcp,mountproto=tcp,nolock,ro,port=2049,mountport=20048"},
		ISCSI: bootconfig.ISCSI{Portal: s.ServerIP + ":3260", Target: target, LUN: 1,
			Initiator: "iqn.2026-01.net.distonet.node:" + o.Node, CHAPUser: o.CHAPUser, CHAPSecret: o.ServeSecret},
		Donate: bootconfig.Donate{Mode: "none"},
	}
	s.serveHTTP(t, l, o.Token, o.Files)
	return s
}

func (s *Stack) startNFS(t testing.TB, dir string, o Options) {
	t.Helper()
	conf := fmt.Sprintf(`NFS_CORE_PARAM {
	Protocols = 3;
	Bind_addr = %s;
	NFS_Port = 2049;
	MNT_Port = 20048;
	Mount_Path_Pseudo = true;
	Enable_NLM = false;
	Enable_RQUOTA = false;
}
EXPORT {
	Export_Id = 1;
	Path = %s;
	Pseudo = /images/%s;
	Access_Type = RO;
	Squash = No_Root_Squash;
	Protocols = 3;
	Transports = TCP;
	SecType = sys;
	FSAL { Name = VFS; }
}
LOG { Default_Log_Level = EVENT; }
`, s.ServerIP, o.Rootfs, o.Image)
	cf := filepath.Join(dir, "ganesha.conf")
	if err := os.WriteFile(cf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	// rpcbind's socket and lock live at fixed paths under /run; a private mount namespace
	// with its own /run keeps this rpcbind and ganesha apart from any other on the host.
	script := fmt.Sprintf(`set -e
mount -t tmpfs tmpfs /run
mkdir -p /run/ganesha /run/rpcbind
rpcbind -f -w &
for i in $(seq 50); do [ -S /run/rpcbind.sock ] && break; sleep 0.1; done
exec ganesha.nfsd -F -L /dev/stderr -f %s -p /run/ganesha/ganesha.pid -N NIV_EVENT`, cf)
	s.NS.Start("unshare", "--mount", "--propagation", "private", "sh", "-c", script)
	waitTCP(t, s.NS, "2049", 60*time.Second)
	waitTCP(t, s.NS, "20048", 30*time.Second)
}

func (s *Stack) startTgt(t testing.TB, target string, o Options) {
	t.Helper()
	ctl := fmt.Sprint(os.Getpid()%1000 + 2000)
	s.tgtd = s.NS.Start("tgtd", "-f", "-C", ctl, "--iscsi", "portal="+s.ServerIP+":3260")
	adm := func(args ...string) error {
		_, err := s.NS.Exec("tgtadm", append([]string{"-C", ctl, "--lld", "iscsi"}, args...)...)
		return err
	}
	deadline := time.Now().Add(20 * time.Second)
	for adm("--op", "show", "--mode", "target") != nil {
		if time.Now().After(deadline) {
			t.Fatal("classic: tgtd did not come up")
		}
		time.Sleep(100 * time.Millisecond)
	}
	steps := [][]string{
		{"--op", "new", "--mode", "target", "--tid", "1", "-T", target},
		{"--op", "new", "--mode", "logicalunit", "--tid", "1", "--lun", "1", "-b", o.Volume},
		{"--op", "bind", "--mode", "target", "--tid", "1", "-I", "ALL"},
	}
	if o.CHAPUser != "" {
		steps = append(steps,
			[]string{"--op", "new", "--mode", "account", "--user", o.CHAPUser, "--password", o.CHAPSecret},
			[]string{"--op", "bind", "--mode", "account", "--tid", "1", "--user", o.CHAPUser})
	}
	for _, st := range steps {
		if err := adm(st...); err != nil {
			t.Fatalf("classic: tgtadm: %v", err)
		}
	}
}

func (s *Stack) serveHTTP(t testing.TB, l net.Listener, token string, files map[string]string) {
	t.Helper()
	mux := http.NewServeMux()
	for path, file := range files {
		mux.HandleFunc("GET "+path, func(w http.ResponseWriter, r *http.Request) { http.ServeFile(w, r, file) })
	}
	auth := func(r *http.Request) bool { return r.Header.Get("Authorization") == "Bearer "+token }
	mux.HandleFunc("GET "+bootconfig.ConfigPath, func(w http.ResponseWriter, r *http.Request) {
		if !auth(r) {
			http.Error(w, "bad token", http.StatusUnauthorized)
			return
		}
		s.mu.Lock()
		s.hits++
		cfg := s.Config
		s.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(cfg)
	})
	mux.HandleFunc("POST "+bootconfig.EventPath, func(w http.ResponseWriter, r *http.Request) {
		if !auth(r) {
			http.Error(w, "bad token", http.StatusUnauthorized)
			return
		}
		var ev bootconfig.Event
		if err := json.NewDecoder(r.Body).Decode(&ev); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		s.mu.Lock()
		s.events = append(s.events, ev)
		s.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	})
}

// StopTgt kills tgtd (SIGKILL: tgtd ignores SIGTERM while it has targets), as an appliance
// crash would; connected initiators see their connection close.
func (s *Stack) StopTgt(t testing.TB) {
	t.Helper()
	if s.tgtd != nil && s.tgtd.Process != nil {
		_ = s.tgtd.Process.Kill()
		_ = s.tgtd.Wait()
	}
}

// StartTgt starts tgtd again with the same target, LUN and account.
func (s *Stack) StartTgt(t testing.TB) {
	t.Helper()
	s.startTgt(t, s.target, s.opts)
}

// Tap adds a tap device for a guest on the stack's bridge.
func (s *Stack) Tap() string { return s.NS.Tap(s.Bridge) }

// Events returns the boot events nodes have posted.
func (s *Stack) Events() []bootconfig.Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]bootconfig.Event(nil), s.events...)
}

// ConfigFetches counts successful boot config requests.
func (s *Stack) ConfigFetches() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.hits
}

// waitTCP waits for a listener on port inside the namespace. It asks ss rather than
// dialing from Go: lab.Netns.Do would end an OS thread the daemons may have been forked from.
func waitTCP(t testing.TB, ns *lab.Netns, port string, max time.Duration) {
	t.Helper()
	deadline := time.Now().Add(max)
	for {
		out, err := ns.Exec("ss", "-Hltn", "sport = :"+port)
		if err == nil && strings.Contains(out, ":"+port) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("classic: nothing listens on port %s after %s", port, max)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// FormatVolume creates a sparse file of size bytes formatted ext4, as the appliance does at
// enrollment (e2fsprogs by full path: a busybox mke2fs would make ext2).
func FormatVolume(t testing.TB, file string, size int64) {
	t.Helper()
	f, err := os.Create(file)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	f.Close()
	mkfs := "/sbin/mkfs.ext4"
	if _, err := os.Stat(mkfs); err != nil {
		mkfs = "/usr/sbin/mkfs.ext4"
	}
	if out, err := exec.Command(mkfs, "-q", "-F", "-L", "distonet-upper", file).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v: %s", err, strings.TrimSpace(string(out)))
	}
}
