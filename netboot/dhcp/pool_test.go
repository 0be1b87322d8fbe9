package dhcp_test

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/distonet/distonet/internal/lab"
	"github.com/distonet/distonet/netboot/dhcp"
	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
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
