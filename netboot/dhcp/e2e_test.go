package dhcp_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/distonet/distonet/internal/lab"
	"github.com/distonet/distonet/netboot/dhcp"
	"github.com/distonet/distonet/netboot/ra"
)

// bootTimeline is what one QEMU iPXE boot showed.
type bootTimeline struct {
	firstDHCP time.Duration // power-on to the first DHCP packet from the guest
	script    time.Duration // power-on to the GET of its boot script
}

// TestE2EFirmwareWaits boots QEMU's own iPXE ROM (Debian ipxe-qemu) from three
// set-ups and times power-on to the moment it fetches its boot script:
//
//   - dnsmasq configured the usual way (iPXE user class -> script URL), no RA;
//   - DiStoNet with the wait cuts switched off (stock-like offer, no RA);
//   - DiStoNet with one cut at a time, to show what each wait costs;
//   - DiStoNet defaults: offer with the no-ProxyDHCP flag, and netboot/ra.
//
// Slow (QEMU under TCG): runs only with DISTONET_E2E=1 (make e2e).
func TestE2EFirmwareWaits(t *testing.T) {
	if os.Getenv("DISTONET_E2E") != "1" {
		t.Skip("end-to-end QEMU boot: set DISTONET_E2E=1 (make e2e)")
	}
	lab.Require(t, "qemu-system-x86_64", "dnsmasq")
	setups := []struct {
		name string
		run  func(t *testing.T, ns *lab.Netns, br string, mac net.HardwareAddr)
	}{
		{"dnsmasq, no RA", func(t *testing.T, ns *lab.Netns, br string, mac net.HardwareAddr) {
			dir := t.TempDir()
			startKept(t, ns, "dnsmasq", "--no-daemon", "--conf-file=/dev/null", "--port=0", "--user=root",
				"--interface="+br, "--bind-interfaces", "--no-ping",
				"--dhcp-range=10.67.250.100,10.67.250.150,1h", "--dhcp-leasefile="+filepath.Join(dir, "leases"),
				"--dhcp-userclass=set:ipxe,iPXE", "--dhcp-boot=tag:ipxe,http://10.67.250.1/boot/"+mac.String()+".ipxe",
				"--pid-file="+filepath.Join(dir, "pid"))
		}},
		{"distonet, cuts off", func(t *testing.T, ns *lab.Netns, br string, mac net.HardwareAddr) {
			startE2EServer(t, ns, br, false, false)
		}},
		{"distonet, DHCP cuts, no RA", func(t *testing.T, ns *lab.Netns, br string, mac net.HardwareAddr) {
			startE2EServer(t, ns, br, true, false)
		}},
		{"distonet, RA, no DHCP cuts", func(t *testing.T, ns *lab.Netns, br string, mac net.HardwareAddr) {
			startE2EServer(t, ns, br, false, true)
		}},
		{"dnsmasq + distonet proxy + RA", func(t *testing.T, ns *lab.Netns, br string, mac net.HardwareAddr) {
			// dnsmasq owns the addresses (no boot options at all); the proxy
			// answers on a second address of the same bridge.
			dir := t.TempDir()
			ns.MustExec("ip", "addr", "add", "10.67.250.2/24", "dev", br)
			startKept(t, ns, "dnsmasq", "--no-daemon", "--conf-file=/dev/null", "--port=0", "--user=root",
				"--interface="+br, "--bind-interfaces", "--listen-address=10.67.250.2", "--no-ping",
				"--dhcp-range=10.67.250.100,10.67.250.150,1h", "--dhcp-leasefile="+filepath.Join(dir, "leases"),
				"--pid-file="+filepath.Join(dir, "pid"))
			startE2EProxy(t, ns, br)
		}},
		{"distonet defaults (cuts + RA)", func(t *testing.T, ns *lab.Netns, br string, mac net.HardwareAddr) {
			startE2EServer(t, ns, br, true, true)
		}},
	}
	var report strings.Builder
	results := map[string]bootTimeline{}
	for _, s := range setups {
		t.Run(s.name, func(t *testing.T) {
			tl := bootOnce(t, s.run)
			results[s.name] = tl
			fmt.Fprintf(&report, "%-32s first DHCP %5.1fs  script fetched %5.1fs  (DHCP->script %5.1fs)\n",
				s.name, tl.firstDHCP.Seconds(), tl.script.Seconds(), (tl.script - tl.firstDHCP).Seconds())
		})
	}
	fmt.Printf("\nQEMU iPXE ROM, power-on to boot-script fetch:\n%s", report.String())
	base, ours := results[setups[0].name], results[setups[len(setups)-1].name]
	if base.script > 0 && ours.script > 0 {
		fmt.Printf("DHCP->script: %.1fs with dnsmasq, %.1fs with DiStoNet defaults (%.1fx shorter)\n",
			(base.script - base.firstDHCP).Seconds(), (ours.script - ours.firstDHCP).Seconds(),
			(base.script-base.firstDHCP).Seconds()/(ours.script-ours.firstDHCP).Seconds())
		if ours.script-ours.firstDHCP >= base.script-base.firstDHCP {
			t.Errorf("the wait cuts did not shorten the boot")
		}
	}
}

func startE2EServer(t *testing.T, ns *lab.Netns, br string, cuts, sendRA bool) {
	cfg := dhcp.DefaultConfig()
	cfg.Interface = br
	cfg.ServerIP = net.ParseIP("10.67.250.1")
	_, cfg.Subnet, _ = net.ParseCIDR("10.67.250.0/24")
	cfg.RangeStart, cfg.RangeEnd = net.ParseIP("10.67.250.100"), net.ParseIP("10.67.250.150")
	cfg.BootHTTPBase = "http://10.67.250.1"
	cfg.LeaseFile = filepath.Join(t.TempDir(), "leases.log")
	cfg.SkipProxyDHCPWait = cuts
	cfg.IgnoreOtherServers = true
	tn := &testNet{srv: ns}
	tn.start(t, cfg, nil)
	if sendRA {
		s, err := ra.New(ra.Config{Interface: br})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		go ns.Do(func() error { return s.Serve(ctx) })
		t.Cleanup(func() { cancel(); s.Close() })
		<-s.Ready()
	}
}

func startE2EProxy(t *testing.T, ns *lab.Netns, br string) {
	cfg := dhcp.DefaultConfig()
	cfg.Mode = dhcp.ModeProxy
	cfg.Interface = br
	cfg.ServerIP = net.ParseIP("10.67.250.1")
	_, cfg.Subnet, _ = net.ParseCIDR("10.67.250.0/24")
	cfg.BootHTTPBase = "http://10.67.250.1"
	tn := &testNet{srv: ns}
	tn.start(t, cfg, nil)
	s, err := ra.New(ra.Config{Interface: br})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go ns.Do(func() error { return s.Serve(ctx) })
	t.Cleanup(func() { cancel(); s.Close() })
	<-s.Ready()
}

// bootOnce powers on a QEMU guest on a bridge where setup runs the DHCP side
// and an HTTP server serves the boot script, and returns the timeline.
func bootOnce(t *testing.T, setup func(t *testing.T, ns *lab.Netns, br string, mac net.HardwareAddr)) bootTimeline {
	ns := lab.NewNetns(t)
	br := ns.Bridge("10.67.250.1/24")
	tap := ns.Tap(br)
	mac := net.HardwareAddr{0x52, 0x54, 0x00, 0x67, 0x00, 0x01}

	var mu sync.Mutex
	var fetched time.Time
	got := make(chan struct{})
	l, err := ns.Listen("tcp", "10.67.250.1:80")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/boot/"+mac.String()+".ipxe" {
			mu.Lock()
			if fetched.IsZero() {
				fetched = time.Now()
				close(got)
			}
			mu.Unlock()
		}
		fmt.Fprint(w, "#!ipxe\necho distonet-e2e-script\nsleep 30\n")
	})}
	go hs.Serve(l)
	t.Cleanup(func() { hs.Close() })

	// iPXE prints "Configuring (net0 …)" when it starts DHCP.
	firstDHCP := make(chan time.Time, 1)
	setup(t, ns, br, mac)
	serial := filepath.Join(t.TempDir(), "serial.log")
	start := time.Now()
	startKept(t, ns, "qemu-system-x86_64", "-accel", "tcg", "-machine", "pc,graphics=off", "-m", "256", "-display", "none",
		"-serial", "file:"+serial, "-netdev", "tap,id=n0,ifname="+tap+",script=no,downscript=no",
		"-device", "virtio-net-pci,netdev=n0,mac="+mac.String(), "-boot", "n", "-no-reboot")
	go func() {
		for time.Since(start) < 3*time.Minute {
			b, _ := os.ReadFile(serial)
			if strings.Contains(string(b), "Configuring") {
				firstDHCP <- time.Now()
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
	select {
	case <-got:
	case <-time.After(3 * time.Minute):
		b, _ := os.ReadFile(serial)
		t.Fatalf("guest never fetched its script; serial:\n%s", b)
	}
	var tl bootTimeline
	mu.Lock()
	tl.script = fetched.Sub(start)
	mu.Unlock()
	select {
	case d := <-firstDHCP:
		tl.firstDHCP = d.Sub(start)
	default:
	}
	b, _ := os.ReadFile(serial)
	t.Logf("serial:\n%s", b)
	return tl
}

// TestE2EUEFIChainload boots a UEFI guest (OVMF) whose firmware network boot
// is EDK2's, not iPXE, two ways:
//
//   - PXE: DHCP gives it snponly.efi by TFTP (tftpd-hpa serves Debian's
//     binaries), then gives the iPXE it loads the script URL, so the chain
//     ends at the script instead of looping;
//   - UEFI HTTP boot: with no TFTP server, EDK2 falls through to HTTP boot,
//     gets the binary's URL from DHCP (option 60 "HTTPClient"), fetches it
//     over HTTP, and iPXE goes on to the script.
//
// Runs with DISTONET_E2E=1.
func TestE2EUEFIChainload(t *testing.T) {
	if os.Getenv("DISTONET_E2E") != "1" {
		t.Skip("end-to-end QEMU boot: set DISTONET_E2E=1 (make e2e)")
	}
	const ovmf = "/usr/share/ovmf/OVMF.fd"
	lab.Require(t, "qemu-system-x86_64", "in.tftpd")
	if _, err := os.Stat(ovmf); err != nil {
		t.Fatalf("UEFI firmware: %v (Debian package ovmf; run .ci/install-deps)", err)
	}
	// Debian's binaries as regular files: tftpd-hpa's --secure chroot cannot
	// follow /usr/lib/ipxe's symlinks to /boot.
	root := t.TempDir()
	for _, f := range []string{"undionly.kpxe", "snponly.efi", "ipxe.efi"} {
		b, err := os.ReadFile(filepath.Join("/usr/lib/ipxe", f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name     string
		tftp     bool
		firmware string // vendor class prefix of the firmware's own DHCP client
		arch     dhcp.Arch
	}{
		{"pxe-tftp", true, "PXEClient", dhcp.ArchX64},
		{"http-boot", false, "HTTPClient", dhcp.ArchX64HTTP},
	} {
		t.Run(tc.name, func(t *testing.T) {
			uefiBoot(t, ovmf, root, tc.tftp, tc.firmware, tc.arch)
		})
	}
}

func uefiBoot(t *testing.T, ovmf, root string, tftp bool, firmwareClass string, firmwareArch dhcp.Arch) {
	ns := lab.NewNetns(t)
	br := ns.Bridge("10.67.251.1/24")
	tap := ns.Tap(br)
	mac := net.HardwareAddr{0x52, 0x54, 0x00, 0x67, 0x00, 0x02}
	if tftp {
		startKept(t, ns, "in.tftpd", "--foreground", "--listen", "--address", "10.67.251.1:69", "--secure", root)
	}

	cfg := dhcp.DefaultConfig()
	cfg.Interface = br
	cfg.ServerIP = net.ParseIP("10.67.251.1")
	_, cfg.Subnet, _ = net.ParseCIDR("10.67.251.0/24")
	cfg.RangeStart, cfg.RangeEnd = net.ParseIP("10.67.251.100"), net.ParseIP("10.67.251.150")
	cfg.BootHTTPBase = "http://10.67.251.1"
	cfg.LeaseFile = filepath.Join(t.TempDir(), "leases.log")
	cfg.IgnoreOtherServers = true
	nodes := newFakeNodes()
	(&testNet{srv: ns}).start(t, cfg, nodes)
	s, err := ra.New(ra.Config{Interface: br})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go ns.Do(func() error { return s.Serve(ctx) })
	t.Cleanup(func() { cancel(); s.Close() })

	got := make(chan time.Time, 1)
	l, err := ns.Listen("tcp", "10.67.251.1:80")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/boot/" + mac.String() + ".ipxe":
			select {
			case got <- time.Now():
			default:
			}
			fmt.Fprint(w, "#!ipxe\necho distonet-e2e-script\nsleep 30\n")
		case "/boot/snponly.efi": // what UEFI HTTP boot is sent to (HTTPBootPrefix)
			http.ServeFile(w, r, filepath.Join(root, "snponly.efi"))
		default:
			http.NotFound(w, r)
		}
	})}
	go hs.Serve(l)
	t.Cleanup(func() { hs.Close() })

	serial := filepath.Join(t.TempDir(), "serial.log")
	start := time.Now()
	startKept(t, ns, "qemu-system-x86_64", "-accel", "tcg", "-machine", "q35", "-m", "512", "-bios", ovmf,
		"-display", "none", "-serial", "file:"+serial,
		"-netdev", "tap,id=n0,ifname="+tap+",script=no,downscript=no",
		// No option ROM: OVMF's own virtio-net driver and network boot, not iPXE's.
		"-device", "virtio-net-pci,netdev=n0,romfile=,mac="+mac.String(), "-boot", "n", "-no-reboot")
	select {
	case at := <-got:
		fmt.Printf("\nUEFI (OVMF, %s) power-on to boot-script fetch through snponly.efi: %.1fs\n", firmwareClass, at.Sub(start).Seconds())
	case <-time.After(6 * time.Minute):
		b, _ := os.ReadFile(serial)
		t.Fatalf("UEFI guest never fetched its script; serial:\n%s", b)
	}
	// The registry saw the firmware's own client, then iPXE, both x64 UEFI.
	nodes.mu.Lock()
	defer nodes.mu.Unlock()
	var firmware, ipxe bool
	for _, ci := range nodes.seen {
		if ci.MAC.String() != mac.String() || !ci.HasArch {
			continue
		}
		switch {
		case ci.IPXE && ci.Arch == dhcp.ArchX64:
			ipxe = true
		case !ci.IPXE && ci.Arch == firmwareArch && strings.HasPrefix(ci.VendorClass, firmwareClass):
			firmware = true
		}
	}
	if !firmware || !ipxe {
		t.Errorf("seen: firmware %s/%v %v, iPXE %v (%+v)", firmwareClass, firmwareArch, firmware, ipxe, nodes.seen)
	}
}
