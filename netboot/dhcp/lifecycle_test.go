package dhcp_test

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/distonet/distonet/internal/lab"
	"github.com/distonet/distonet/netboot/dhcp"
	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
)

// udhcpc renews at T1 (unicast to the server, answered to its address) and
// releases on exit (-R); the server extends, then frees the lease.
func TestRenewAndRelease(t *testing.T) {
	lab.Require(t, "udhcpc")
	tn := newTestNet(t)
	cfg := tn.config(t)
	cfg.LeaseTime = 10 * time.Second // T1 = 5 s
	srv := tn.start(t, cfg, nil)
	mac := tn.cli.HardwareAddr(tn.cliIf)

	script, dir := envScript(t)
	// The hook also configures the address, as the stock script does, so the
	// renewal can be sent from it.
	body := "#!/bin/sh\nenv > \"" + dir + "/env.$$.$1\"\n[ \"$1\" = bound ] && ip addr add $ip/$mask dev $interface\nexit 0\n"
	if err := os.WriteFile(script, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := startKept(t, tn.cli, "udhcpc", "-i", tn.cliIf, "-f", "-R", "-t", "5", "-T", "1", "-s", script)
	var bound dhcp.Lease
	deadline := time.Now().Add(30 * time.Second)
	for {
		renewals, _ := filepath.Glob(filepath.Join(dir, "env.*.renew"))
		if len(renewals) > 0 {
			// The hook may still be writing it.
			if b, _ := os.ReadFile(renewals[0]); strings.Contains(string(b), "\nip=") {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("udhcpc did not renew within 30s of a 10s lease")
		}
		if l, ok := leaseOf(srv, mac); ok && bound.IP == nil {
			bound = l
		}
		time.Sleep(200 * time.Millisecond)
	}
	renewed, ok := leaseOf(srv, mac)
	if !ok || !renewed.IP.Equal(bound.IP) || !renewed.Expiry.After(bound.Expiry) {
		t.Fatalf("after renewal: lease %+v (before %+v); want same address, later expiry", renewed, bound)
	}
	env := readEnv(t, dir, "renew")
	if env["ip"] != bound.IP.String() {
		t.Errorf("udhcpc renewed %s, server leased %v", env["ip"], bound.IP)
	}
	// With -R, udhcpc sends DHCPRELEASE when terminated.
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	deadline = time.Now().Add(10 * time.Second)
	for {
		l, _ := leaseOf(srv, mac)
		if l.State == dhcp.StateReleased {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("lease after udhcpc -R exit: %+v, want released", l)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// DHCPDECLINE takes the address out of the pool; DHCPINFORM gets the
// configuration without a lease.
func TestDeclineAndInform(t *testing.T) {
	tn := newTestNet(t)
	srv := tn.start(t, tn.config(t), nil)
	hw := net.HardwareAddr{2, 0x67, 0xdd, 0, 0, 1}
	_, ack := exchange(t, tn.cli, tn.cliIf, hw)
	ip := ack.YourIPAddr

	err := tn.cli.Do(func() error {
		c, err := nclient4.New(tn.cliIf, nclient4.WithHWAddr(hw), nclient4.WithTimeout(time.Second), nclient4.WithRetry(1))
		if err != nil {
			return err
		}
		defer c.Close()
		decline, err := dhcpv4.New(dhcpv4.WithMessageType(dhcpv4.MessageTypeDecline), dhcpv4.WithHwAddr(hw),
			dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(ip)), dhcpv4.WithOption(dhcpv4.OptServerIdentifier(tn.serverIP)))
		if err != nil {
			return err
		}
		// DECLINE has no answer: wait for the timeout.
		_, err = c.SendAndRead(context.Background(), nclient4.DefaultServers, decline, func(*dhcpv4.DHCPv4) bool { return false })
		if err != nil && !strings.Contains(err.Error(), "no matching response") {
			return err
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var l dhcp.Lease
	for _, x := range srv.Leases() {
		if x.IP.Equal(ip) {
			l = x
		}
	}
	if l.State != dhcp.StateDeclined {
		t.Fatalf("lease of %v after DECLINE: %+v, want declined", ip, l)
	}
	// The same client asking again gets another address.
	_, ack2 := exchange(t, tn.cli, tn.cliIf, hw)
	if ack2.YourIPAddr.Equal(ip) {
		t.Errorf("declined address %v handed out again", ip)
	}

	// INFORM from a client that configured its address itself.
	tn.cli.MustExec("ip", "addr", "add", tn.prefix+"77/24", "dev", tn.cliIf)
	var reply *dhcpv4.DHCPv4
	err = tn.cli.Do(func() error {
		conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP(tn.prefix + "77"), Port: 68})
		if err != nil {
			return err
		}
		defer conn.Close()
		inform, err := dhcpv4.NewInform(hw, net.ParseIP(tn.prefix+"77"))
		if err != nil {
			return err
		}
		buf := make([]byte, 1500)
		for try := 0; try < 3; try++ {
			conn.WriteToUDP(inform.ToBytes(), &net.UDPAddr{IP: tn.serverIP, Port: 67})
			conn.SetReadDeadline(time.Now().Add(time.Second))
			n, _, err := conn.ReadFromUDP(buf)
			if err != nil {
				continue
			}
			reply, err = dhcpv4.FromBytes(buf[:n])
			return err
		}
		return os.ErrDeadlineExceeded
	})
	if err != nil {
		t.Fatalf("INFORM: %v", err)
	}
	if reply.MessageType() != dhcpv4.MessageTypeAck || reply.Options.Has(dhcpv4.OptionIPAddressLeaseTime) ||
		!reply.YourIPAddr.IsUnspecified() || reply.DomainName() != "boot.test" {
		t.Errorf("INFORM answer: %s", reply.Summary())
	}
}

// The server answers only on its interface: a client on another link of the
// same namespace gets nothing.
func TestBoundToInterface(t *testing.T) {
	lab.Require(t, "udhcpc")
	tn := newTestNet(t)
	other := lab.NewNetns(t)
	_, otherIf := lab.Veth(t, tn.srv, "10.67.201.1/24", other, "")
	srv := tn.start(t, tn.config(t), nil)
	if _, err := udhcpcLease(t, other, otherIf, "-t", "2"); err == nil {
		t.Error("client on another interface got a lease")
	}
	if n := len(srv.Leases()); n != 0 {
		t.Errorf("server recorded %d leases from the other link", n)
	}
	if _, err := udhcpcLease(t, tn.cli, tn.cliIf); err != nil {
		t.Errorf("client on the boot interface: %v", err)
	}
}
