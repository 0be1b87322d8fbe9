package dhcp_test

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/distonet/distonet/internal/lab"
	"github.com/distonet/distonet/netboot/dhcp"
	"github.com/google/go-cmp/cmp"
)

// udhcpc (busybox) and dhclient (ISC) each get a lease with the options the
// configuration names; an enrolled client gets its fixed address and host name.
func TestRealClientsGetLeaseWithOptions(t *testing.T) {
	lab.Require(t, "udhcpc", "dhclient")
	tn := newTestNet(t)
	nodes := newFakeNodes()
	cliMAC := tn.cli.HardwareAddr(tn.cliIf)
	cfg := tn.config(t)
	srv := tn.start(t, cfg, nodes)

	t.Run("udhcpc", func(t *testing.T) {
		script, dir := envScript(t)
		tn.cli.MustExec("udhcpc", "-i", tn.cliIf, "-f", "-q", "-n", "-t", "5", "-T", "1", "-s", script,
			"-O", "hostname", "-O", "domain", "-O", "router", "-O", "dns")
		env := readEnv(t, dir, "bound")
		got := map[string]string{
			"subnet": env["subnet"], "router": env["router"], "dns": strings.TrimSpace(env["dns"]),
			"domain": env["domain"], "lease": env["lease"], "serverid": env["serverid"],
		}
		want := map[string]string{
			"subnet": "255.255.255.0", "router": tn.serverIP.String(), "dns": tn.serverIP.String(),
			"domain": "boot.test", "lease": "600", "serverid": tn.serverIP.String(),
		}
		if d := cmp.Diff(want, got); d != "" {
			t.Errorf("udhcpc options (-want +got):\n%s", d)
		}
		ip := net.ParseIP(env["ip"])
		if !inRange(ip, tn.rangeLo, tn.rngHi) {
			t.Errorf("udhcpc got %v, want an address in %v-%v", ip, tn.rangeLo, tn.rngHi)
		}
		l, ok := leaseOf(srv, cliMAC)
		if !ok || !l.IP.Equal(ip) || l.State != dhcp.StateBound {
			t.Errorf("server lease for %v = %+v (found %v), want bound %v", cliMAC, l, ok, ip)
		}
	})

	t.Run("dhclient", func(t *testing.T) {
		// Enrol the MAC with a fixed address outside the range: dhclient must get it and the name.
		fixed := net.ParseIP(tn.prefix + "50").To4()
		nodes.add(cliMAC, dhcp.Host{Name: "node-a", IP: fixed})
		script, dir := envScript(t)
		conf := filepath.Join(dir, "dhclient.conf")
		os.WriteFile(conf, []byte("timeout 20;\nretry 1;\nrequest subnet-mask, routers, domain-name-servers, domain-name, host-name, broadcast-address;\n"), 0o644)
		tn.cli.MustExec("ip", "addr", "flush", "dev", tn.cliIf)
		// Without -d, dhclient returns once bound (and leaves a daemon in the
		// namespace, killed with it); -1 makes it fail instead of retrying forever.
		tn.cli.MustExec("dhclient", "-4", "-1", "-v", "-cf", conf, "-sf", script,
			"-lf", filepath.Join(dir, "lease"), "-pf", filepath.Join(dir, "pid"), tn.cliIf)
		env := readEnv(t, dir, "BOUND")
		got := map[string]string{
			"ip": env["new_ip_address"], "mask": env["new_subnet_mask"], "routers": env["new_routers"],
			"dns": env["new_domain_name_servers"], "domain": env["new_domain_name"], "host": env["new_host_name"],
			"lease": env["new_dhcp_lease_time"], "server": env["new_dhcp_server_identifier"],
			"bcast": env["new_broadcast_address"],
		}
		want := map[string]string{
			"ip": fixed.String(), "mask": "255.255.255.0", "routers": tn.serverIP.String(),
			"dns": tn.serverIP.String(), "domain": "boot.test", "host": "node-a",
			"lease": "600", "server": tn.serverIP.String(), "bcast": tn.prefix + "255",
		}
		if d := cmp.Diff(want, got); d != "" {
			t.Errorf("dhclient options (-want +got):\n%s", d)
		}
		if l, ok := leaseOf(srv, cliMAC); !ok || !l.IP.Equal(fixed) || l.Hostname != "node-a" {
			t.Errorf("server lease for %v = %+v, want %v named node-a", cliMAC, l, fixed)
		}
		// The earlier dynamic lease of the same client is gone: one client, one address.
		n := 0
		for _, l := range srv.Leases() {
			if l.MAC.String() == cliMAC.String() && l.State == dhcp.StateBound {
				n++
			}
		}
		if n != 1 {
			t.Errorf("client holds %d bound leases, want 1", n)
		}
		if ci, ok := nodes.seenMACs()[cliMAC.String()]; !ok || !ci.Known {
			t.Errorf("Seen not reported as known for %v: %+v", cliMAC, ci)
		}
	})
}

func inRange(ip, lo, hi net.IP) bool {
	ip = ip.To4()
	if ip == nil {
		return false
	}
	return string(ip) >= string(lo.To4()) && string(ip) <= string(hi.To4())
}

func leaseOf(srv *dhcp.Server, mac net.HardwareAddr) (dhcp.Lease, bool) {
	for _, l := range srv.Leases() {
		if l.MAC.String() == mac.String() {
			return l, true
		}
	}
	return dhcp.Lease{}, false
}
