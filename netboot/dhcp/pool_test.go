package dhcp_test

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/distonet/distonet/internal/lab"
	"github.com/distonet/distonet/netboot/dhcp"
	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"github.com/prometheus/client_golang/prometheus"
)

// 50 udhcpc clients starting together, each on its own macvlan port (its own
// MAC), get 50 distinct addresses from the range.
func TestFiftyClientsGetDistinctAddresses(t *testing.T) {
	lab.Require(t, "udhcpc")
	tn := newTestNet(t)
	srv := tn.start(t, tn.config(t), nil)
	ports := macvlans(t, tn.cli, tn.cliIf, 50)

	var mu sync.Mutex
	got := map[string]string{} // ip -> port
	var wg sync.WaitGroup
	for _, p := range ports {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ip, err := udhcpcLease(t, tn.cli, p)
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			if other, dup := got[ip.String()]; dup {
				t.Errorf("%v given to both %s and %s", ip, other, p)
			}
			got[ip.String()] = p
			if !inRange(ip, tn.rangeLo, tn.rngHi) {
				t.Errorf("%s got %v outside the range", p, ip)
			}
		}()
	}
	wg.Wait()
	if len(got) != 50 {
		t.Errorf("%d distinct addresses for 50 clients", len(got))
	}
	bound := 0
	for _, l := range srv.Leases() {
		if l.State == dhcp.StateBound {
			bound++
		}
	}
	if bound != 50 {
		t.Errorf("server holds %d bound leases, want 50", bound)
	}
}

// With 3 addresses and 5 clients, 3 are served, 2 get nothing, nobody gets a
// duplicate, and the server says so in one log line. A client asking for an
// address another client holds is NAKed.
func TestExhaustionNoDuplicateOneLogLine(t *testing.T) {
	lab.Require(t, "udhcpc")
	tn := newTestNet(t)
	cfg := tn.config(t)
	cfg.RangeStart, cfg.RangeEnd = net.ParseIP(tn.prefix+"100"), net.ParseIP(tn.prefix+"102")
	var logs syncBuffer
	cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	srv := tn.start(t, cfg, nil)
	ports := macvlans(t, tn.cli, tn.cliIf, 5)

	seen := map[string]bool{}
	served, refused := 0, 0
	for _, p := range ports {
		ip, err := udhcpcLease(t, tn.cli, p, "-t", "2")
		if err != nil {
			refused++
			continue
		}
		if seen[ip.String()] {
			t.Errorf("duplicate address %v", ip)
		}
		seen[ip.String()] = true
		served++
	}
	if served != 3 || refused != 2 {
		t.Errorf("served %d, refused %d; want 3 and 2", served, refused)
	}
	if n := strings.Count(logs.String(), "address range exhausted"); n != 1 {
		t.Errorf("%d exhaustion log lines, want 1:\n%s", n, logs.String())
	}

	// A client claiming (INIT-REBOOT) an address held by another gets a NAK.
	held := srv.Leases()[0].IP
	var reply *dhcpv4.DHCPv4
	err := tn.cli.Do(func() error {
		c, err := nclient4.New(tn.cliIf, nclient4.WithTimeout(2*time.Second), nclient4.WithRetry(2),
			nclient4.WithHWAddr(net.HardwareAddr{0x02, 0, 0, 0, 0, 0x99}))
		if err != nil {
			return err
		}
		defer c.Close()
		req, err := dhcpv4.New(dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest),
			dhcpv4.WithHwAddr(net.HardwareAddr{0x02, 0, 0, 0, 0, 0x99}), dhcpv4.WithBroadcast(true),
			dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(held)))
		if err != nil {
			return err
		}
		reply, err = c.SendAndRead(context.Background(), nclient4.DefaultServers, req,
			nclient4.IsMessageType(dhcpv4.MessageTypeNak, dhcpv4.MessageTypeAck))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if reply.MessageType() != dhcpv4.MessageTypeNak {
		t.Errorf("claim of %v held by another client: %v, want NAK", held, reply.MessageType())
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// A fixed address inside the range, reserved for an enrolled node that has not
// booted yet, is never offered to anyone else, even when asked for; the node
// gets it when it comes.
func TestReservedAddressNeverHandedToAnother(t *testing.T) {
	tn := newTestNet(t)
	cfg := tn.config(t)
	cfg.RangeStart, cfg.RangeEnd = net.ParseIP(tn.prefix+"100"), net.ParseIP(tn.prefix+"102")
	nodes := newFakeNodes()
	reserved := net.ParseIP(tn.prefix + "101").To4()
	owner := net.HardwareAddr{2, 0x67, 0xee, 0, 0, 9}
	nodes.add(owner, dhcp.Host{Name: "node-r", IP: reserved})
	tn.start(t, cfg, nodes)

	for i := byte(1); i <= 2; i++ {
		hw := net.HardwareAddr{2, 0x67, 0xee, 0, 0, i}
		err := tn.cli.Do(func() error {
			c, err := nclient4.New(tn.cliIf, nclient4.WithHWAddr(hw), nclient4.WithTimeout(2*time.Second), nclient4.WithRetry(2))
			if err != nil {
				return err
			}
			defer c.Close()
			offer, err := c.DiscoverOffer(context.Background(), dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(reserved)))
			if err != nil {
				return err
			}
			if offer.YourIPAddr.Equal(reserved) {
				t.Errorf("client %v offered %v, reserved for %v", hw, reserved, owner)
			}
			_, err = c.RequestFromOffer(context.Background(), offer)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	// The range is now full for strangers: a third gets no offer at all.
	err := tn.cli.Do(func() error {
		c, err := nclient4.New(tn.cliIf, nclient4.WithHWAddr(net.HardwareAddr{2, 0x67, 0xee, 0, 0, 3}),
			nclient4.WithTimeout(time.Second), nclient4.WithRetry(1))
		if err != nil {
			return err
		}
		defer c.Close()
		offer, err := c.DiscoverOffer(context.Background())
		if err == nil {
			t.Errorf("third stranger offered %v", offer.YourIPAddr)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	_, ack := exchange(t, tn.cli, tn.cliIf, owner)
	if !ack.YourIPAddr.Equal(reserved) || ack.HostName() != "node-r" {
		t.Errorf("owner got %v named %q, want %v named node-r", ack.YourIPAddr, ack.HostName(), reserved)
	}
}

// The Prometheus collectors count requests by type and leases in use.
func TestMetrics(t *testing.T) {
	tn := newTestNet(t)
	cfg := tn.config(t)
	reg := prometheus.NewRegistry()
	cfg.Metrics = reg
	tn.start(t, cfg, nil)
	for i := byte(1); i <= 3; i++ {
		exchange(t, tn.cli, tn.cliIf, net.HardwareAddr{2, 0x67, 0xab, 0, 0, i})
	}
	mf, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, f := range mf {
		for _, m := range f.GetMetric() {
			name := f.GetName()
			for _, l := range m.GetLabel() {
				name += "/" + l.GetValue()
			}
			switch {
			case m.GetCounter() != nil:
				got[name] = m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				got[name] = m.GetGauge().GetValue()
			}
		}
	}
	for name, min := range map[string]float64{
		"distonet_dhcp_requests_total/DISCOVER": 3, "distonet_dhcp_requests_total/REQUEST": 3,
		"distonet_dhcp_replies_total/OFFER": 3, "distonet_dhcp_replies_total/ACK": 3,
	} {
		if got[name] < min {
			t.Errorf("%s = %v, want >= %v (all: %v)", name, got[name], min, got)
		}
	}
	if got["distonet_dhcp_leases_in_use"] != 3 {
		t.Errorf("leases_in_use = %v, want 3", got["distonet_dhcp_leases_in_use"])
	}
}

// perfdhcp drives 2000 simulated clients through DORA concurrently: it reports
// no address given twice and no lease rejected, and every lease the server
// acknowledged is in its table once.
func TestPerfdhcpNoDuplicatesUnderLoad(t *testing.T) {
	lab.Require(t, "perfdhcp")
	srv, cli := lab.NewNetns(t), lab.NewNetns(t)
	srvIf, cliIf := lab.Veth(t, srv, "10.67.208.1/20", cli, "10.67.208.2/20")
	tn := &testNet{srv: srv, cli: cli, srvIf: srvIf, cliIf: cliIf, prefix: "10.67.208.", serverIP: net.ParseIP("10.67.208.1").To4()}
	_, tn.subnet, _ = net.ParseCIDR("10.67.208.0/20")
	cfg := tn.config(t)
	cfg.RangeStart, cfg.RangeEnd = net.ParseIP("10.67.209.0"), net.ParseIP("10.67.223.250") // ~3800
	s := tn.start(t, cfg, nil)
	out, err := cli.Exec("perfdhcp", "-4", "-l", cliIf, "-r", "500", "-n", "2000", "-R", "2000", "-d", "3", "-W", "2000000", "10.67.208.1")
	if err != nil && !strings.Contains(out, "REQUEST-ACK") {
		t.Fatalf("perfdhcp: %v\n%s", err, out)
	}
	field := func(stage, name string) string {
		i := strings.Index(out, "Statistics for: "+stage)
		if i < 0 {
			t.Fatalf("no %s statistics:\n%s", stage, out)
		}
		rest := out[i:]
		j := strings.Index(rest, name+": ")
		if j < 0 {
			t.Fatalf("no %q in %s statistics", name, stage)
		}
		v, _, _ := strings.Cut(rest[j+len(name)+2:], "\n")
		return strings.TrimSpace(v)
	}
	for _, stage := range []string{"DISCOVER-OFFER", "REQUEST-ACK"} {
		for _, name := range []string{"non unique addresses", "rejected leases"} {
			if v := field(stage, name); v != "0" {
				t.Errorf("%s %s = %s, want 0", stage, name, v)
			}
		}
	}
	acks, _ := strconv.Atoi(field("REQUEST-ACK", "received packets"))
	if acks < 1000 {
		t.Errorf("only %d of 2000 exchanges completed:\n%s", acks, out)
	}
	seen := map[string]string{}
	bound := 0
	for _, l := range s.Leases() {
		if l.State != dhcp.StateBound {
			continue
		}
		bound++
		if other, dup := seen[l.MAC.String()]; dup {
			t.Errorf("%v holds %v and %s", l.MAC, l.IP, other)
		}
		seen[l.MAC.String()] = l.IP.String()
	}
	// perfdhcp sends a few more exchanges than -R clients; those reuse MACs
	// and renew a lease instead of making one.
	sent, _ := strconv.Atoi(field("DISCOVER-OFFER", "sent packets"))
	if reused := max(0, sent-2000); bound < acks-reused {
		t.Errorf("server table holds %d bound leases, perfdhcp received %d ACKs", bound, acks)
	}
}
