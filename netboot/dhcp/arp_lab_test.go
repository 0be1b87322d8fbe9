package dhcp_test

import (
	"context"
	"fmt"
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
	"github.com/prometheus/client_golang/prometheus"
)

// squatter is a host on the boot link that holds an address statically: a
// macvlan port of the client link moved into a namespace of its own, so it
// answers ARP with its own MAC, like a separate machine.
func squatter(t *testing.T, tn *testNet, ip string, name string) (*lab.Netns, net.HardwareAddr) {
	t.Helper()
	sq := lab.NewNetns(t)
	tn.cli.MustExec("ip", "link", "add", "link", tn.cliIf, "name", name, "type", "macvlan", "mode", "bridge")
	tn.cli.MustExec("ip", "link", "set", name, "netns", sq.Name())
	sq.MustExec("ip", "link", "set", name, "up")
	if ip != "" {
		sq.MustExec("ip", "addr", "add", ip+"/24", "dev", name)
	}
	return sq, sq.HardwareAddr(name)
}

// inUseLines returns the server's "address in use" log lines.
func inUseLines(logs *syncBuffer) []string {
	var out []string
	for _, l := range strings.Split(logs.String(), "\n") {
		if strings.Contains(l, "address in use on the link") {
			out = append(out, l)
		}
	}
	return out
}

// heldFor reports whether the server holds ip as in use by mac.
func heldFor(srv *dhcp.Server, ip net.IP, mac net.HardwareAddr) bool {
	for _, l := range srv.Leases() {
		if l.IP.Equal(ip) && l.State == dhcp.StateInUse && l.MAC.String() == mac.String() {
			return true
		}
	}
	return false
}

// A static host squatting on the address that would be offered next is found
// by ARP before any offer: udhcpc gets another address, the server logs the
// address and the squatter's MAC once and holds the address, also against a
// client that asks for it. Both ways of checking are shown: in advance (the
// default) and while the client waits (ARPProbeAhead < 0).
func TestARPProbeNeverOffersSquattedAddress(t *testing.T) {
	lab.Require(t, "udhcpc")
	for _, tc := range []struct {
		name  string
		ahead int
		how   string
	}{
		{"checked ahead", 0, "answered the ARP probe"},
		{"checked inline", -1, "answered the ARP probe"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tn := newTestNet(t)
			cfg := tn.config(t)
			// The squatted .100 is the first address of a three-address range.
			squatted := net.ParseIP(tn.prefix + "100").To4()
			cfg.RangeStart, cfg.RangeEnd = squatted, net.ParseIP(tn.prefix+"102")
			cfg.ARPProbeAhead = tc.ahead
			var logs syncBuffer
			cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil))
			_, sqMAC := squatter(t, tn, squatted.String(), "sq0")
			srv := tn.start(t, cfg, nil)
			ports := macvlans(t, tn.cli, tn.cliIf, 2)

			ip, err := udhcpcLease(t, tn.cli, ports[0])
			if err != nil {
				t.Fatal(err)
			}
			if ip.Equal(squatted) || !inRange(ip, cfg.RangeStart, cfg.RangeEnd) {
				t.Errorf("udhcpc got %v; want an address of the range other than the squatted %v", ip, squatted)
			}
			// A client asking for the squatted address by name does not get it either.
			ip2, err := udhcpcLease(t, tn.cli, ports[1], "-r", squatted.String())
			if err != nil {
				t.Fatal(err)
			}
			if ip2.Equal(squatted) || ip2.Equal(ip) {
				t.Errorf("second client got %v (first %v, squatted %v)", ip2, ip, squatted)
			}
			if !heldFor(srv, squatted, sqMAC) {
				t.Errorf("%v not held for %v; leases: %+v", squatted, sqMAC, srv.Leases())
			}
			lines := inUseLines(&logs)
			if len(lines) != 1 {
				t.Fatalf("%d in-use log lines, want 1:\n%s", len(lines), logs.String())
			}
			for _, want := range []string{"ip=" + squatted.String(), "mac=" + sqMAC.String(), tc.how} {
				if !strings.Contains(lines[0], want) {
					t.Errorf("log line %q lacks %q", lines[0], want)
				}
			}
		})
	}
}

// An address already verified free is dropped as soon as a host is seen
// claiming it in ARP traffic, before any client asks: here a host configured
// by hand after the server checked the range sends one ping.
func TestARPClaimDropsVerifiedAddress(t *testing.T) {
	lab.Require(t, "udhcpc", "ping")
	tn := newTestNet(t)
	cfg := tn.config(t)
	squatted := net.ParseIP(tn.prefix + "100").To4()
	cfg.RangeStart, cfg.RangeEnd = squatted, net.ParseIP(tn.prefix+"102")
	var logs syncBuffer
	cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	sq, sqMAC := squatter(t, tn, "", "sq0")
	srv := tn.start(t, cfg, nil) // Ready: the whole range was checked, and was free.
	sq.MustExec("ip", "addr", "add", squatted.String()+"/24", "dev", "sq0")
	// Its ARP request for the server carries the squatted address as sender.
	if out, err := sq.Exec("ping", "-c", "1", "-W", "2", tn.serverIP.String()); err != nil {
		t.Fatalf("ping from the squatter: %v\n%s", err, out)
	}
	held := false
	for i := 0; i < 50 && !held; i++ {
		if held = heldFor(srv, squatted, sqMAC); !held {
			time.Sleep(20 * time.Millisecond)
		}
	}
	if !held {
		t.Fatalf("%v not held after the squatter's ARP; log:\n%s", squatted, logs.String())
	}
	ports := macvlans(t, tn.cli, tn.cliIf, 1)
	ip, err := udhcpcLease(t, tn.cli, ports[0])
	if err != nil {
		t.Fatal(err)
	}
	if ip.Equal(squatted) {
		t.Errorf("udhcpc got the squatted %v", squatted)
	}
	lines := inUseLines(&logs)
	if len(lines) != 1 || !strings.Contains(lines[0], "seen in ARP traffic") || !strings.Contains(lines[0], "mac="+sqMAC.String()) {
		t.Errorf("in-use log lines %q, want one naming %v as seen in ARP traffic", lines, sqMAC)
	}
}

// A client that is itself using the address it asks for (its lease was lost
// with the server's lease file) answers the probe for it: that is no
// conflict, it gets its address back.
func TestARPProbeClientOwnAnswerIsNoConflict(t *testing.T) {
	lab.Require(t, "udhcpc")
	tn := newTestNet(t)
	cfg := tn.config(t)
	cfg.ARPProbeAhead = -1 // checked while the client waits, so its own answer is seen
	var logs syncBuffer
	cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	srv := tn.start(t, cfg, nil)
	// The client is a host of its own (in the shared client namespace, the
	// veth would answer ARP for the macvlan's address too, with its own MAC).
	mine := net.ParseIP(tn.prefix + "150").To4()
	host, hostMAC := squatter(t, tn, mine.String(), "cl0")
	ip, err := udhcpcLease(t, host, "cl0", "-r", mine.String())
	if err != nil {
		t.Fatal(err)
	}
	if !ip.Equal(mine) {
		t.Errorf("client using %v and asking for it got %v", mine, ip)
	}
	if lines := inUseLines(&logs); len(lines) != 0 {
		t.Errorf("client's own answer logged as a conflict: %q", lines)
	}
	if l, ok := leaseOf(srv, hostMAC); !ok || !l.IP.Equal(mine) || l.State != dhcp.StateBound {
		t.Errorf("lease %+v, want %v bound", l, mine)
	}
}

// One host answering for many addresses of the range (proxy ARP, or a host
// with many aliases) gets each held, and the server says once that it may be
// proxy ARP; clients still get the addresses nobody answers for.
func TestARPOneHostManyAddressesWarnedOnce(t *testing.T) {
	lab.Require(t, "udhcpc")
	tn := newTestNet(t)
	cfg := tn.config(t)
	cfg.RangeStart, cfg.RangeEnd = net.ParseIP(tn.prefix+"100"), net.ParseIP(tn.prefix+"109")
	var logs syncBuffer
	cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	sq, sqMAC := squatter(t, tn, "", "sq0")
	for i := 100; i < 108; i++ {
		sq.MustExec("ip", "addr", "add", fmt.Sprintf("%s%d/24", tn.prefix, i), "dev", "sq0")
	}
	srv := tn.start(t, cfg, nil)
	ports := macvlans(t, tn.cli, tn.cliIf, 1)
	ip, err := udhcpcLease(t, tn.cli, ports[0])
	if err != nil {
		t.Fatal(err)
	}
	if !inRange(ip, net.ParseIP(tn.prefix+"108"), net.ParseIP(tn.prefix+"109")) {
		t.Errorf("udhcpc got %v, want .108 or .109 (the others answer ARP)", ip)
	}
	held := 0
	for i := 100; i < 108; i++ {
		if heldFor(srv, net.ParseIP(fmt.Sprintf("%s%d", tn.prefix, i)), sqMAC) {
			held++
		}
	}
	if held != 8 {
		t.Errorf("%d of 8 answering addresses held", held)
	}
	if n := len(inUseLines(&logs)); n != 8 {
		t.Errorf("%d in-use lines, want 8", n)
	}
	if n := strings.Count(logs.String(), "proxy ARP?"); n != 1 {
		t.Errorf("%d proxy ARP warnings, want 1:\n%s", n, logs.String())
	}
}

// A running node whose lease the server lost (say, with its lease file) is
// seen using its address by the background check: the address is held for
// that node only, and its RENEW is acknowledged, so a diskless node keeps the
// address its NFS root is mounted over.
func TestARPHoldKeepsTheHolder(t *testing.T) {
	tn := newTestNet(t)
	cfg := tn.config(t)
	var logs syncBuffer
	cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	mine := net.ParseIP(tn.prefix + "110").To4()
	host, hostMAC := squatter(t, tn, mine.String(), "nd0")
	srv := tn.start(t, cfg, nil) // Ready once the first addresses, .110 among them, were checked
	if !heldFor(srv, mine, hostMAC) {
		t.Fatalf("%v not held for %v after the first check; log:\n%s", mine, hostMAC, logs.String())
	}
	var reply *dhcpv4.DHCPv4
	err := host.Do(func() error {
		c, err := nclient4.New("nd0", nclient4.WithHWAddr(hostMAC), nclient4.WithTimeout(2*time.Second), nclient4.WithRetry(2))
		if err != nil {
			return err
		}
		defer c.Close()
		// RENEWING: ciaddr set, no server identifier, no requested address.
		req, err := dhcpv4.New(dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest), dhcpv4.WithHwAddr(hostMAC),
			dhcpv4.WithClientIP(mine), dhcpv4.WithBroadcast(true))
		if err != nil {
			return err
		}
		reply, err = c.SendAndRead(context.Background(), nclient4.DefaultServers, req,
			nclient4.IsMessageType(dhcpv4.MessageTypeAck, dhcpv4.MessageTypeNak))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if reply.MessageType() != dhcpv4.MessageTypeAck || !reply.YourIPAddr.Equal(mine) {
		t.Fatalf("renew of %v by the node using it: %v for %v, want ACK", mine, reply.MessageType(), reply.YourIPAddr)
	}
	if l, ok := leaseOf(srv, hostMAC); !ok || !l.IP.Equal(mine) || l.State != dhcp.StateBound {
		t.Errorf("lease %+v, want %v bound to %v", l, mine, hostMAC)
	}
}

// The normal path with real clients on a quiet link: checked ahead (the
// default), udhcpc's offer takes an address verified in advance and no probe
// runs while it waits; checked inline, dhclient's offer waits for its probe.
// The server's ARP counters show which path ran.
func TestARPCheckPathsWithRealClients(t *testing.T) {
	lab.Require(t, "udhcpc", "dhclient")
	for _, tc := range []struct {
		name       string
		ahead      int
		client     string
		wantInline bool
	}{
		{"ahead, udhcpc", 0, "udhcpc", false},
		{"inline, dhclient", -1, "dhclient", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tn := newTestNet(t)
			cfg := tn.config(t)
			cfg.ARPProbeAhead = tc.ahead
			reg := prometheus.NewRegistry()
			cfg.Metrics = reg
			srv := tn.start(t, cfg, nil)
			var ip net.IP
			switch tc.client {
			case "udhcpc":
				var err error
				if ip, err = udhcpcLease(t, tn.cli, tn.cliIf); err != nil {
					t.Fatal(err)
				}
			case "dhclient":
				script, dir := envScript(t)
				tn.cli.MustExec("dhclient", "-4", "-1", "-cf", "/dev/null", "-sf", script,
					"-lf", filepath.Join(dir, "lease"), "-pf", filepath.Join(dir, "pid"), tn.cliIf)
				ip = net.ParseIP(readEnv(t, dir, "BOUND")["new_ip_address"])
			}
			if l, ok := leaseOf(srv, tn.cli.HardwareAddr(tn.cliIf)); !ok || !l.IP.Equal(ip) || !inRange(ip, tn.rangeLo, tn.rngHi) {
				t.Errorf("%s bound %v; server lease %+v", tc.client, ip, l)
			}
			checks := arpCounters(t, reg)
			if inline := checks["inline/free"] > 0; inline != tc.wantInline {
				t.Errorf("ARP checks %v: inline probe ran = %v, want %v", checks, inline, tc.wantInline)
			}
			if ahead := checks["ahead/free"] > 0; ahead == tc.wantInline {
				t.Errorf("ARP checks %v: background probes ran = %v, want %v", checks, ahead, !tc.wantInline)
			}
		})
	}
}

// arpCounters reads distonet_dhcp_arp_checks_total as "kind/result" -> count.
func arpCounters(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	mf, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, f := range mf {
		if f.GetName() != "distonet_dhcp_arp_checks_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			var l []string
			for _, p := range m.GetLabel() {
				l = append(l, p.GetValue())
			}
			out[strings.Join(l, "/")] = m.GetCounter().GetValue()
		}
	}
	return out
}
