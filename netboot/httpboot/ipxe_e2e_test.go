//go:build e2e

package httpboot

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/distonet/distonet/internal/lab"
)

// e2eScripts is the node script an iPXE client runs: it fetches the kernel and initramfs
// from /files/ and says so on the console.
type e2eScripts struct{ base string }

func (s e2eScripts) BootScript(mac net.HardwareAddr, r *http.Request) (string, error) {
	return "#!ipxe\n" +
		"echo DISTONET-HTTP-SCRIPT " + mac.String() + "\n" +
		"imgfetch " + s.base + "/files/debian/3/vmlinuz && imgfetch " + s.base + "/files/debian/3/initramfs && imgstat && echo DISTONET-HTTP-FILES-OK\n", nil
}

// TestIPXEBootsOverHTTP boots QEMU's iPXE ROM on a bridge where dnsmasq only hands out an
// address and the boot script URL: iPXE fetches /boot/<mac>.ipxe from the handler, then
// the files it names. Slow under TCG: e2e tag only.
func TestIPXEBootsOverHTTP(t *testing.T) {
	lab.Require(t, "qemu-system-x86_64", "dnsmasq")
	const (
		srvIP = "10.73.0.1"
		mac   = "52:54:00:73:00:10"
	)
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	files := map[string][]byte{"debian/3/vmlinuz": randomBytes(t, 5<<20+17), "debian/3/initramfs": randomBytes(t, 2<<20)}
	for name, content := range files {
		must(t, os.MkdirAll(filepath.Dir(filepath.Join(root, name)), 0o755))
		must(t, os.WriteFile(filepath.Join(root, name), content, 0o644))
	}
	ns := lab.NewNetns(t)
	br := ns.Bridge(srvIP + "/24")
	tap := ns.Tap(br)
	h, err := NewHandler(Config{Root: root}, e2eScripts{base: "http://" + srvIP}, nil)
	must(t, err)
	t.Cleanup(func() { h.Close() })
	mux := http.NewServeMux()
	mux.Handle(BootPrefix, h)
	mux.Handle(FilesPrefix, h)
	l, err := ns.Listen("tcp", ":80")
	must(t, err)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { srv.Close() })

	startProc(t, ns, "dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--port=0", "--user=root",
		"--pid-file="+filepath.Join(dir, "dnsmasq.pid"), "--dhcp-leasefile="+filepath.Join(dir, "leases"),
		"--interface="+br, "--bind-interfaces", "--no-ping", "--dhcp-range=10.73.0.100,10.73.0.150,255.255.255.0",
		"--dhcp-boot=http://"+srvIP+"/boot/"+mac+".ipxe")
	console := filepath.Join(dir, "console.log")
	startProc(t, ns, "qemu-system-x86_64", "-accel", "tcg", "-machine", "pc,graphics=off", "-m", "256",
		"-display", "none", "-serial", "file:"+console, "-no-reboot", "-boot", "n",
		"-netdev", "tap,id=n0,ifname="+tap+",script=no,downscript=no",
		"-device", "virtio-net-pci,netdev=n0,mac="+mac)

	want := []string{"DISTONET-HTTP-SCRIPT " + mac, "vmlinuz : 5242897 bytes", "initramfs : 2097152 bytes", "DISTONET-HTTP-FILES-OK"}
	deadline := time.Now().Add(5 * time.Minute)
	for {
		out, _ := os.ReadFile(console)
		missing := ""
		for _, w := range want {
			if !bytes.Contains(out, []byte(w)) {
				missing = w
				break
			}
		}
		if missing == "" {
			break
		}
		if time.Now().After(deadline) {
			if len(out) > 3000 {
				out = out[len(out)-3000:]
			}
			t.Fatalf("iPXE console never showed %q:\n%s", missing, out)
		}
		time.Sleep(time.Second)
	}
	if got := counter(t, h.metrics.requests.WithLabelValues(routeFile, "200")); got != 2 {
		t.Errorf("file requests answered 200: %v, want 2", got)
	}
}

// startProc runs a process in the namespace until the test ends (lab's Start sets a
// parent-death signal tied to the forking OS thread, which ns.Do threads can outlive).
func startProc(t *testing.T, ns *lab.Netns, name string, args ...string) {
	t.Helper()
	var out bytes.Buffer
	cmd := ns.Command(context.Background(), name, args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	must(t, cmd.Start())
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("%s output:\n%s", name, out.String())
		}
	})
}
