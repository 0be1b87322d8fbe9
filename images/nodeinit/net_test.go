package nodeinit

import (
	"context"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/distonet/distonet/internal/lab"
)

// nsThread runs functions on one OS thread kept inside a namespace for the whole test.
// lab.Netns.Do ends its thread when fn returns, and a daemon forked from that thread would
// get its parent-death signal; this thread ends only at cleanup.
func nsThread(t *testing.T, ns *lab.Netns) func(func() error) error {
	reqs := make(chan func() error)
	errs := make(chan error)
	done := make(chan struct{})
	started := make(chan struct{})
	go func() {
		_ = ns.Do(func() error {
			close(started)
			for {
				select {
				case fn := <-reqs:
					errs <- fn()
				case <-done:
					return nil
				}
			}
		})
	}()
	<-started
	t.Cleanup(func() { close(done) })
	return func(fn func() error) error { reqs <- fn; return <-errs }
}

// TestNetworkAgainstDnsmasq runs the node init's DHCP client and address configuration
// against dnsmasq across a veth pair, then renews asking for the same address.
func TestNetworkAgainstDnsmasq(t *testing.T) {
	lab.Require(t, "dnsmasq")
	srv, cli := lab.NewNetns(t), lab.NewNetns(t)
	in := nsThread(t, cli)
	sIf, cIf := lab.Veth(t, srv, "10.209.0.1/24", cli, "")
	dir := t.TempDir()
	srv.Start("dnsmasq", "-d", "-u", "root", "--port=0", "--conf-file=/dev/null", "--interface="+sIf,
		"--bind-interfaces", "--no-ping", "--dhcp-range=10.209.0.50,10.209.0.60,255.255.255.0,2m",
		"--dhcp-leasefile="+filepath.Join(dir, "leases"), "--pid-file="+filepath.Join(dir, "pid"))
	var lease, again Lease
	err := in(func() error {
		if err := linkUp(cIf); err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		// dnsmasq may still be starting: the client retries like the init does.
		var err error
		for try := 0; try < 5; try++ {
			if lease, err = dhcp(ctx, cIf, nil); err == nil {
				break
			}
			time.Sleep(time.Second)
		}
		if err != nil {
			return err
		}
		ifi, err := net.InterfaceByName(cIf)
		if err != nil {
			return err
		}
		if err := configure(ifi, lease); err != nil {
			return err
		}
		again, err = dhcp(ctx, cIf, lease.IP)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(lease.IP.String(), "10.209.0.") || lease.Time != 2*time.Minute || !lease.Server.Equal(net.IPv4(10, 209, 0, 1)) {
		t.Errorf("lease = %+v", lease)
	}
	if !again.IP.Equal(lease.IP) {
		t.Errorf("renewal gave %s, want %s", again.IP, lease.IP)
	}
	ones, _ := lease.Mask.Size()
	addr := cli.MustExec("ip", "-4", "addr", "show", "dev", cIf)
	if !strings.Contains(addr, lease.IP.String()+"/24") || ones != 24 {
		t.Errorf("address not configured:\n%s", addr)
	}
	// dnsmasq names itself as the router by default.
	if route := cli.MustExec("ip", "route", "show", "default"); !strings.Contains(route, "via 10.209.0.1 dev "+cIf) {
		t.Errorf("default route not configured (router %v):\n%s", lease.Router, route)
	}
	// The address works: the server answers a ping from the client's new address.
	cli.MustExec("ping", "-c", "1", "-W", "2", "10.209.0.1")
}
