package dhcp_test

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/distonet/distonet/internal/lab"
	"github.com/distonet/distonet/netboot/dhcp"
	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
)

// startDnsmasq runs dnsmasq as the link's DHCP server (with its lease file and
// without ping checks, unless extra says otherwise) inside ns on ifname.
func startDnsmasq(t *testing.T, ns *lab.Netns, ifname, lo, hi string, extra ...string) {
	t.Helper()
	dir := t.TempDir()
	if extra == nil {
		extra = []string{"--no-ping"}
	}
	args := append([]string{"--no-daemon", "--conf-file=/dev/null", "--port=0", "--user=root",
		"--interface=" + ifname, "--bind-interfaces", "--log-dhcp",
		"--dhcp-range=" + lo + "," + hi + ",12h", "--dhcp-leasefile=" + filepath.Join(dir, "leases"),
		"--pid-file=" + filepath.Join(dir, "pid")}, extra...)
	startKept(t, ns, "dnsmasq", args...)
}

// Proxy mode beside dnsmasq: dnsmasq gives the address, DiStoNet gives the boot
// information, a PXE-style client sees both offers, and the PXE boot server on
// port 4011 answers the client's follow-up request.
func TestProxyBesideDnsmasq(t *testing.T) {
	lab.Require(t, "dnsmasq")
	// One L2 segment: a bridge in the client namespace, with the proxy and
	// dnsmasq namespaces each on a veth port of it.
	proxyNS, dnsNS, cli := lab.NewNetns(t), lab.NewNetns(t), lab.NewNetns(t)
	p := "10.67.200."
	br := cli.Bridge("")
	proxyIf, brP := lab.Veth(t, proxyNS, p+"1/24", cli, "")
	dnsIf, brD := lab.Veth(t, dnsNS, p+"2/24", cli, "")
	cli.MustExec("ip", "link", "set", brP, "master", br)
	cli.MustExec("ip", "link", "set", brD, "master", br)
	startDnsmasq(t, dnsNS, dnsIf, p+"100", p+"150")

	tn := &testNet{srv: proxyNS, cli: cli, srvIf: proxyIf, cliIf: br, prefix: p, serverIP: net.ParseIP(p + "1").To4()}
	_, tn.subnet, _ = net.ParseCIDR(p + "0/24")
	cfg := tn.config(t)
	cfg.Mode = dhcp.ModeProxy
	cfg.RangeStart, cfg.RangeEnd = nil, nil
	tn.start(t, cfg, nil)

	// The client's own MAC, so dnsmasq's unicast offer reaches the bridge.
	hw := cli.HardwareAddr(br)
	pxeOpts := []dhcpv4.Modifier{
		dhcpv4.WithOption(vendor("PXEClient:Arch:00000:UNDI:002001")), dhcpv4.WithOption(archOpt(dhcp.ArchBIOS)),
	}
	var addrOffer, bootOffer *dhcpv4.DHCPv4
	err := cli.Do(func() error {
		c, err := nclient4.New(br, nclient4.WithHWAddr(hw), nclient4.WithTimeout(3*time.Second), nclient4.WithRetry(3))
		if err != nil {
			return err
		}
		defer c.Close()
		disc, err := dhcpv4.NewDiscovery(hw, pxeOpts...)
		if err != nil {
			return err
		}
		// Collect offers until both kinds arrived, as a PXE ROM does.
		_, err = c.SendAndRead(context.Background(), nclient4.DefaultServers, disc, func(m *dhcpv4.DHCPv4) bool {
			if m.MessageType() != dhcpv4.MessageTypeOffer {
				return false
			}
			if m.YourIPAddr.IsUnspecified() {
				bootOffer = m
			} else {
				addrOffer = m
			}
			return addrOffer != nil && bootOffer != nil
		})
		return err
	})
	if err != nil {
		t.Fatalf("PXE client saw address offer %v and boot offer %v: %v", addrOffer != nil, bootOffer != nil, err)
	}
	if got := addrOffer.ServerIdentifier().String(); got != p+"2" {
		t.Errorf("address offer from %s, want dnsmasq at %s2", got, p)
	}
	if v := viewOf(addrOffer); v.File != "" {
		t.Errorf("dnsmasq offer carries boot file %q; test set-up wrong", v.File)
	}
	if got, want := viewOf(bootOffer), (bootView{File: "undionly.kpxe", NextServer: p + "1", VendorClass: "PXEClient", PXEControl: []byte{8}}); got.File != want.File || got.NextServer != want.NextServer || got.VendorClass != want.VendorClass || string(got.PXEControl) != string(want.PXEControl) {
		t.Errorf("proxy offer = %+v, want %+v", got, want)
	}
	if got := bootOffer.ServerIdentifier().String(); got != p+"1" {
		t.Errorf("proxy offer server id %s, want %s1", got, p)
	}

	// The client takes dnsmasq's address, then asks the PXE boot server (4011).
	clientIP := addrOffer.YourIPAddr
	cli.MustExec("ip", "addr", "add", clientIP.String()+"/24", "dev", br)
	var ack *dhcpv4.DHCPv4
	err = cli.Do(func() error {
		conn, err := net.DialUDP("udp4", &net.UDPAddr{IP: clientIP, Port: 68}, &net.UDPAddr{IP: net.ParseIP(p + "1"), Port: 4011})
		if err != nil {
			return err
		}
		defer conn.Close()
		req, err := dhcpv4.New(dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest), dhcpv4.WithHwAddr(hw),
			dhcpv4.WithClientIP(clientIP), pxeOpts[0], pxeOpts[1])
		if err != nil {
			return err
		}
		buf := make([]byte, 1500)
		for try := 0; try < 3; try++ {
			if _, err := conn.Write(req.ToBytes()); err != nil {
				return err
			}
			conn.SetReadDeadline(time.Now().Add(2 * time.Second))
			n, err := conn.Read(buf)
			if err != nil {
				continue
			}
			ack, err = dhcpv4.FromBytes(buf[:n])
			return err
		}
		return errors.New("no answer on port 4011")
	})
	if err != nil {
		t.Fatal(err)
	}
	if ack.MessageType() != dhcpv4.MessageTypeAck || viewOf(ack).File != "undionly.kpxe" || !ack.YourIPAddr.IsUnspecified() {
		t.Errorf("4011 answer: %v file %q yiaddr %v; want ACK undionly.kpxe without address", ack.MessageType(), viewOf(ack).File, ack.YourIPAddr)
	}

	// A plain OS client gets only dnsmasq's offer: the proxy stays silent.
	err = cli.Do(func() error {
		c, err := nclient4.New(br, nclient4.WithHWAddr(net.HardwareAddr{2, 0x67, 0xc8, 0, 0, 2}), nclient4.WithTimeout(1500*time.Millisecond), nclient4.WithRetry(1))
		if err != nil {
			return err
		}
		defer c.Close()
		disc, _ := dhcpv4.NewDiscovery(net.HardwareAddr{2, 0x67, 0xc8, 0, 0, 2})
		_, err = c.SendAndRead(context.Background(), nclient4.DefaultServers, disc, func(m *dhcpv4.DHCPv4) bool {
			if m.MessageType() == dhcpv4.MessageTypeOffer && m.YourIPAddr.IsUnspecified() {
				t.Errorf("proxy answered a non-PXE client: %s", m.Summary())
			}
			return false // keep listening until the timeout
		})
		if errors.Is(err, nclient4.ErrNoResponse) {
			return nil
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

// In server mode the probe finds dnsmasq on the link and Serve refuses to
// start, suggesting proxy mode; with IgnoreOtherServers it starts. A stock
// dnsmasq pings an address before offering it (~3 s late): the default probe
// timeout still sees it.
func TestProbeRefusesBesideDnsmasq(t *testing.T) {
	lab.Require(t, "dnsmasq")
	for _, tc := range []struct {
		name  string
		extra []string
	}{{"no-ping", nil}, {"stock (ping before offer)", []string{"--log-facility=-"}}} {
		t.Run(tc.name, func(t *testing.T) {
			tn := newTestNet(t)
			tn.cli.MustExec("ip", "addr", "add", tn.prefix+"2/24", "dev", tn.cliIf)
			startDnsmasq(t, tn.cli, tn.cliIf, tn.prefix+"20", tn.prefix+"40", tc.extra...)
			time.Sleep(300 * time.Millisecond) // let dnsmasq bind

			cfg := tn.config(t)
			cfg.ProbeTimeout = dhcp.DefaultConfig().ProbeTimeout
			srv, err := dhcp.New(cfg, nil)
			if err != nil {
				t.Fatal(err)
			}
			err = tn.srv.Do(func() error { return srv.Serve(context.Background()) })
			if !errors.Is(err, dhcp.ErrOtherServer) || !strings.Contains(err.Error(), "proxy") || !strings.Contains(err.Error(), tn.prefix+"2") {
				t.Fatalf("Serve beside dnsmasq = %v, want ErrOtherServer naming %s2 and suggesting proxy", err, tn.prefix)
			}
			select {
			case <-srv.Ready():
				t.Fatal("server became ready despite the other server")
			default:
			}
			cfg = tn.config(t)
			cfg.IgnoreOtherServers = true
			tn.start(t, cfg, nil)
		})
	}
}

// A proxy alone on the link says, once, that nodes will get no address.
func TestProxyWarnsWithoutDHCPServer(t *testing.T) {
	tn := newTestNet(t)
	cfg := tn.config(t)
	cfg.Mode, cfg.RangeStart, cfg.RangeEnd = dhcp.ModeProxy, nil, nil
	var logs syncBuffer
	cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	tn.start(t, cfg, nil)
	deadline := time.Now().Add(3*cfg.ProbeTimeout + 5*time.Second)
	for !strings.Contains(logs.String(), "no DHCP server answered") {
		if time.Now().After(deadline) {
			t.Fatalf("no warning about the missing DHCP server; log:\n%s", logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if n := strings.Count(logs.String(), "no DHCP server answered"); n != 1 {
		t.Errorf("%d warnings, want 1", n)
	}
}
