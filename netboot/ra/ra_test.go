package ra_test

import (
	"context"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/distonet/distonet/internal/lab"
	"github.com/distonet/distonet/netboot/ra"
	"github.com/google/go-cmp/cmp"
)

func TestMain(m *testing.M) {
	_ = lab.Sweep()
	os.Exit(m.Run())
}

func TestRouterAdvertisementWire(t *testing.T) {
	tests := []struct {
		name string
		ra   ra.RouterAdvertisement
		wire []byte
	}{
		{"boot default", ra.RouterAdvertisement{SourceLinkAddr: net.HardwareAddr{2, 0, 0, 0, 0, 1}},
			[]byte{134, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 2, 0, 0, 0, 0, 1}},
		{"flags lifetime mtu", ra.RouterAdvertisement{CurHopLimit: 64, Managed: true, Other: true, RouterLifetime: 1800 * time.Second, ReachableTime: 30 * time.Second, RetransTimer: time.Second, MTU: 1500},
			[]byte{134, 0, 0, 0, 64, 0xc0, 0x07, 0x08, 0, 0, 0x75, 0x30, 0, 0, 0x03, 0xe8, 5, 1, 0, 0, 0, 0, 0x05, 0xdc}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b, err := tc.ra.MarshalBinary()
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(tc.wire, b); d != "" {
				t.Errorf("wire (-want +got):\n%s", d)
			}
			var got ra.RouterAdvertisement
			if err := got.UnmarshalBinary(b); err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(tc.ra, got); d != "" {
				t.Errorf("round trip (-want +got):\n%s", d)
			}
		})
	}
	for _, bad := range [][]byte{nil, {134, 0, 0}, {133, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
		{134, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0}, {134, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 0}} {
		var r ra.RouterAdvertisement
		if err := r.UnmarshalBinary(bad); err == nil {
			t.Errorf("UnmarshalBinary(%v) accepted", bad)
		}
	}
}

func FuzzRouterAdvertisement(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		var r ra.RouterAdvertisement
		if err := r.UnmarshalBinary(b); err != nil {
			return
		}
		out, err := r.MarshalBinary()
		if err != nil {
			if len(r.SourceLinkAddr) != 0 && len(r.SourceLinkAddr) != 6 {
				return
			}
			t.Fatalf("parsed advertisement does not marshal: %+v: %v", r, err)
		}
		var r2 ra.RouterAdvertisement
		if err := r2.UnmarshalBinary(out); err != nil {
			t.Fatalf("re-parse: %v", err)
		}
		if d := cmp.Diff(r, r2); d != "" {
			t.Fatalf("round trip: %s", d)
		}
	})
}

// start runs an advertiser in ns on ifname until the test ends.
func start(t *testing.T, ns *lab.Netns, cfg ra.Config) *ra.Server {
	t.Helper()
	s, err := ra.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- ns.Do(func() error { return s.Serve(ctx) }) }()
	t.Cleanup(func() {
		cancel()
		s.Close()
		if err := <-errc; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	select {
	case <-s.Ready():
	case err := <-errc:
		t.Fatalf("ra server: %v", err)
	}
	return s
}

// snmp6 reads one counter of the namespace's IPv6 stack.
func snmp6(t *testing.T, ns *lab.Netns, name string) int {
	out := ns.MustExec("cat", "/proc/net/snmp6")
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 2 && f[0] == name {
			n, _ := strconv.Atoi(f[1])
			return n
		}
	}
	t.Fatalf("no %s in /proc/net/snmp6", name)
	return 0
}

// The Linux kernel of a client namespace is the real peer: it validates the
// advertisement (hop limit 255, link-local source, checksum) before acting on
// it. With a router lifetime it installs a default route through the
// appliance; with the boot default (lifetime 0) it counts the advertisement
// and changes nothing.
func TestKernelAcceptsAdvertisements(t *testing.T) {
	lab.Require(t)
	for _, tc := range []struct {
		name         string
		lifetime     time.Duration
		defaultRoute bool
	}{
		{"boot default lifetime 0", 0, false},
		{"default router", 30 * time.Minute, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, cli := lab.NewNetns(t), lab.NewNetns(t)
			srvIf, cliIf := lab.Veth(t, srv, "", cli, "")
			cli.MustExec("sysctl", "-q", "-w", "net.ipv6.conf."+cliIf+".accept_ra=2")
			s := start(t, srv, ra.Config{Interface: srvIf, Interval: 500 * time.Millisecond, RouterLifetime: tc.lifetime})
			srvLL := linkLocal(t, srv, srvIf)

			deadline := time.Now().Add(20 * time.Second)
			for {
				route := cli.MustExec("ip", "-6", "route", "show", "default", "dev", cliIf)
				got := snmp6(t, cli, "Icmp6InRouterAdvertisements")
				if tc.defaultRoute && strings.Contains(route, "via "+srvLL) && strings.Contains(route, "proto ra") {
					break
				}
				if !tc.defaultRoute && got >= 2 {
					if route != "" {
						t.Errorf("lifetime 0 advertisement installed a route: %q", route)
					}
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("after %d advertisements sent: kernel counted %d, default route %q", s.Sent(), got, route)
				}
				time.Sleep(200 * time.Millisecond)
			}
			if n := snmp6(t, cli, "Icmp6InErrors"); n != 0 {
				t.Errorf("kernel counted %d ICMPv6 input errors", n)
			}
		})
	}
}

func linkLocal(t *testing.T, ns *lab.Netns, ifname string) string {
	t.Helper()
	for i := 0; i < 50; i++ {
		out := ns.MustExec("ip", "-6", "-o", "addr", "show", "dev", ifname, "scope", "link")
		if f := strings.Fields(out); len(f) >= 4 && !strings.Contains(out, "tentative") {
			addr, _, _ := strings.Cut(f[3], "/")
			return addr
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("no link-local address on %s", ifname)
	return ""
}

// A Router Solicitation is answered at once, not at the next periodic
// advertisement: the kernel solicits when its link comes up, and gets its
// default route back long before the 10-minute interval.
func TestSolicitationAnswered(t *testing.T) {
	lab.Require(t)
	srv, cli := lab.NewNetns(t), lab.NewNetns(t)
	srvIf, cliIf := lab.Veth(t, srv, "", cli, "")
	cli.MustExec("sysctl", "-q", "-w", "net.ipv6.conf."+cliIf+".accept_ra=2")
	s := start(t, srv, ra.Config{Interface: srvIf, Interval: 10 * time.Minute, RouterLifetime: 30 * time.Minute})
	linkLocal(t, srv, srvIf)
	waitRoute := func(what string) {
		deadline := time.Now().Add(30 * time.Second)
		for {
			if strings.Contains(cli.MustExec("ip", "-6", "route", "show", "default", "dev", cliIf), "proto ra") {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: no default route (advertisements sent: %d)", what, s.Sent())
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	// The start-up advertisement may go out before the client's link-local
	// address exists; the client's own solicitation gets the answer then.
	waitRoute("first")
	before := s.Sent()
	cli.MustExec("ip", "link", "set", cliIf, "down")
	if out := cli.MustExec("ip", "-6", "route", "show", "default", "dev", cliIf); out != "" {
		t.Fatalf("route survived link down: %q", out)
	}
	cli.MustExec("ip", "link", "set", cliIf, "up")
	waitRoute("after link flap")
	if s.Sent() <= before {
		t.Errorf("no advertisement sent in answer to the solicitation (%d before, %d after)", before, s.Sent())
	}
}
