//go:build e2e

package tftp

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/distonet/distonet/internal/lab"
)

// TestIPXEFetchesOverTFTP boots QEMU's iPXE ROM (the PXE firmware QEMU ships) on a bridge
// where dnsmasq only hands out an address and "boot.ipxe": the ROM fetches that generated
// script from our server, then the script fetches a 3 MiB file from the lockstep server
// (one netpoller round per block) and from a send-ahead server (GSO windows). Slow under TCG:
// e2e tag only.
func TestIPXEFetchesOverTFTP(t *testing.T) {
	lab.Require(t, "qemu-system-x86_64", "dnsmasq")
	const (
		srvIP = "10.72.0.1"
		mac   = "52:54:00:72:00:10"
	)
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	must(t, os.MkdirAll(root, 0o755))
	must(t, os.WriteFile(filepath.Join(root, "big.bin"), randomBytes(t, 3<<20+123), 0o644))
	script := "#!ipxe\n" +
		"echo DISTONET-SCRIPT mac ${net0/mac}\n" +
		"imgfetch tftp://" + srvIP + "/big.bin && imgstat && echo DISTONET-LOCKSTEP-OK\n" +
		"imgfree\n" +
		"imgfetch tftp://" + srvIP + ":6969/big.bin && imgstat && echo DISTONET-SENDAHEAD-OK\n"
	gen := &fakeGenerated{files: map[string][]byte{"boot.ipxe": []byte(script)}}

	ns := lab.NewNetns(t)
	br := ns.Bridge(srvIP + "/24")
	tap := ns.Tap(br)
	for _, c := range []Config{{Addr: ":69", Root: root}, {Addr: ":6969", Root: root, Anticipate: 16}} {
		srv, err := NewServer(c, gen, nil)
		must(t, err)
		go func() { _ = ns.Do(func() error { return srv.Serve(context.Background()) }) }()
		t.Cleanup(func() { srv.Close() })
		if srv.Addr() == nil {
			t.Fatal("server did not start")
		}
	}
	startProc(t, ns, "dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--port=0", "--user=root",
		"--pid-file="+filepath.Join(dir, "dnsmasq.pid"), "--dhcp-leasefile="+filepath.Join(dir, "leases"),
		"--interface="+br, "--bind-interfaces", "--no-ping", "--dhcp-range=10.72.0.100,10.72.0.150,255.255.255.0",
		"--dhcp-boot=boot.ipxe,,"+srvIP)
	console := filepath.Join(dir, "console.log")
	startProc(t, ns, "qemu-system-x86_64", "-accel", "tcg", "-machine", "pc,graphics=off", "-m", "256",
		"-display", "none", "-serial", "file:"+console, "-no-reboot", "-boot", "n",
		"-netdev", "tap,id=n0,ifname="+tap+",script=no,downscript=no",
		"-device", "virtio-net-pci,netdev=n0,mac="+mac)

	want := []string{"DISTONET-SCRIPT mac " + mac, "big.bin : 3145851 bytes", "DISTONET-LOCKSTEP-OK", "DISTONET-SENDAHEAD-OK"}
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
			t.Fatalf("iPXE console never showed %q:\n%s", missing, tail(out, 3000))
		}
		time.Sleep(time.Second)
	}
	gen.mu.Lock()
	defer gen.mu.Unlock()
	if len(gen.asked) == 0 || !strings.HasPrefix(gen.asked[0], "10.72.0.1") {
		t.Errorf("Generated asked %v", gen.asked)
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

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}
