package dhcp

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Modes of the DHCP service.
const (
	ModeServer = "server" // hand out addresses from the range, plus boot information
	ModeProxy  = "proxy"  // another server hands out addresses; answer PXE clients with boot information only
)

// Config configures a Server. DefaultConfig fills every field that has a
// default; Interface, ServerIP, Subnet and (in server mode) the range are the
// caller's.
type Config struct {
	// Interface is the boot network interface. Sockets are bound to it
	// (SO_BINDTODEVICE): nothing is answered on any other link.
	Interface string
	// ServerIP is the appliance's address on Interface: the server identifier
	// (option 54) and the default TFTP server.
	ServerIP net.IP
	// Subnet is the boot network (e.g. 10.202.0.0/24). Fixed addresses must
	// lie inside it; relayed requests from other subnets are ignored.
	Subnet *net.IPNet
	// RangeStart and RangeEnd bound the dynamic pool, inclusive (server mode).
	RangeStart, RangeEnd net.IP
	// Mode is ModeServer or ModeProxy. Default: server.
	Mode string

	// Router, DNS and Domain are sent as options 3, 6 and 15 when set.
	Router net.IP
	DNS    []net.IP
	Domain string
	// LeaseTime is the lease duration (option 51); T1 and T2 are 1/2 and 7/8
	// of it. Default: 1h.
	LeaseTime time.Duration
	// LeaseFile is the append-only lease log. Empty keeps leases in memory
	// only (tests; never the daemon).
	LeaseFile string

	// BootHTTPBase is the appliance's HTTP root as clients reach it, e.g.
	// "http://10.202.0.1". iPXE clients get <BootHTTPBase>/boot/<mac>.ipxe;
	// UEFI HTTP boot clients get <BootHTTPBase><HTTPBootPrefix><BootFiles[arch]>.
	BootHTTPBase string
	// HTTPBootPrefix is the URL path under which the HTTP server serves the
	// iPXE binaries to UEFI HTTP boot clients. Default: "/boot/".
	HTTPBootPrefix string
	// TFTPServer is sent as next-server (siaddr) to PXE ROMs. Default: ServerIP.
	TFTPServer net.IP
	// BootFiles maps a client architecture to the iPXE binary it loads (a
	// TFTP path, or for HTTP boot a path under <BootHTTPBase><HTTPBootPrefix>).
	// Default: DefaultBootFiles().
	BootFiles map[Arch]string

	// IgnoreOtherServers skips the start-up probe for another DHCP server in
	// server mode. Default false: a second DHCP server on a LAN is an outage.
	IgnoreOtherServers bool
	// ProbeTimeout is how long the probe waits for another server's offer.
	// Default: 5s (a stock dnsmasq answers ~3.5 s late: it pings first).
	ProbeTimeout time.Duration

	// SkipProxyDHCPWait adds to each offer for a PXE/iPXE client the options
	// that end the firmware's wait for ProxyDHCP offers (see firmware.go).
	// Default: true.
	SkipProxyDHCPWait bool

	// OfferHold is how long an offered address stays reserved for the client
	// it was offered to. Default: 30s.
	OfferHold time.Duration
	// DeclineHold keeps an address a client declined (found in use) out of the
	// pool. Default: 10m.
	DeclineHold time.Duration
	// ARPProbe checks, in server mode, that an address new to a client is
	// not already used on the link before offering it: an RFC 5227 ARP probe
	// (sender 0.0.0.0) on Interface, where any answer means in use. A static
	// host squatting in the range is then held like a DECLINE (DeclineHold)
	// and logged once, never offered. Addresses are checked ahead of demand
	// in the background (ARPProbeAhead, sized up under load), so an offer does
	// not wait for ARP unless that set ran dry. A client's own lease and an
	// enrolled node's fixed address are never probed. DefaultConfig: true.
	ARPProbe bool
	// ARPProbeTimeout is how long a probe waits for an answer. An offer waits
	// this long at most when no address was verified in advance (that probe
	// is sent twice, at the start and half-way). Default: 300ms; 10ms..5s.
	ARPProbeTimeout time.Duration
	// ARPProbeAhead is the least number of addresses kept verified free: a
	// boot storm of that many clients takes no ARP wait at all. Default: 64. Negative: nothing is checked in advance, every new
	// address is probed while its client waits (as ISC dhcpd and dnsmasq
	// ping), which costs each new client ARPProbeTimeout.
	ARPProbeAhead int
	// ARPProbeValid is how long an address verified free may be offered
	// without a new probe. Default: 30s.
	ARPProbeValid time.Duration
	// Workers is the number of goroutines reading requests. Default: 16.
	Workers int
	// Port and PXEPort are the server ports. Default: 67 and 4011.
	Port, PXEPort int

	// Metrics registers the Prometheus collectors when set.
	Metrics prometheus.Registerer
	// Logger receives structured logs. Default: slog.Default().
	Logger *slog.Logger
}

// DefaultBootFiles are the iPXE binaries per architecture, named as Debian's
// ipxe package ships them (/usr/lib/ipxe). For x64 UEFI it is snponly.efi
// (iPXE over the firmware's own network driver, which every UEFI NIC has):
// Debian's ipxe.efi there is a symlink to /boot/ipxe.efi, outside a confined
// TFTP root. arm64 has no Debian binary; the name is iPXE's build target.
func DefaultBootFiles() map[Arch]string {
	return map[Arch]string{
		ArchBIOS:      "undionly.kpxe",
		ArchX64:       "snponly.efi",
		ArchEFIBC:     "snponly.efi",
		ArchARM64:     "snp-arm64.efi",
		ArchX64HTTP:   "snponly.efi",
		ArchARM64HTTP: "snp-arm64.efi",
	}
}

// DefaultConfig returns the defaults; the caller sets the addresses.
func DefaultConfig() Config {
	return Config{
		Mode:              ModeServer,
		LeaseTime:         time.Hour,
		BootFiles:         DefaultBootFiles(),
		ProbeTimeout:      5 * time.Second,
		SkipProxyDHCPWait: true,
		OfferHold:         30 * time.Second,
		DeclineHold:       10 * time.Minute,
		ARPProbe:          true,
		ARPProbeTimeout:   300 * time.Millisecond,
		ARPProbeAhead:     64,
		ARPProbeValid:     30 * time.Second,
		Workers:           16,
		Port:              67,
		PXEPort:           4011,
		HTTPBootPrefix:    "/boot/",
	}
}

// validate fills zero fields that have an unambiguous default and returns every
// problem found, each naming its field.
func (c *Config) validate() error {
	var errs []error
	bad := func(field, format string, a ...any) {
		errs = append(errs, fmt.Errorf("dhcp.%s: %s", field, fmt.Sprintf(format, a...)))
	}
	if c.Mode == "" {
		c.Mode = ModeServer
	}
	if c.Mode != ModeServer && c.Mode != ModeProxy {
		bad("mode", "%q is not %q or %q", c.Mode, ModeServer, ModeProxy)
	}
	if c.Interface == "" {
		bad("interface", "required")
	}
	if c.ServerIP.To4() == nil {
		bad("server_ip", "%v is not an IPv4 address", c.ServerIP)
	} else {
		c.ServerIP = c.ServerIP.To4()
	}
	if c.Subnet == nil || c.Subnet.IP.To4() == nil {
		bad("subnet", "an IPv4 subnet is required")
	} else if c.ServerIP.To4() != nil && !c.Subnet.Contains(c.ServerIP) {
		bad("server_ip", "%v is outside subnet %v", c.ServerIP, c.Subnet)
	}
	if c.Mode == ModeServer {
		s, e := c.RangeStart.To4(), c.RangeEnd.To4()
		switch {
		case s == nil || e == nil:
			bad("range", "start and end IPv4 addresses are required in server mode")
		case ipToU32(s) > ipToU32(e):
			bad("range", "start %v is after end %v", s, e)
		case c.Subnet != nil && (!c.Subnet.Contains(s) || !c.Subnet.Contains(e)):
			bad("range", "%v-%v is not inside subnet %v", s, e, c.Subnet)
		}
		c.RangeStart, c.RangeEnd = s, e
	}
	if c.Router != nil && c.Router.To4() == nil {
		bad("router", "%v is not IPv4", c.Router)
	}
	for _, d := range c.DNS {
		if d.To4() == nil {
			bad("dns", "%v is not IPv4", d)
		}
	}
	if c.LeaseTime == 0 {
		c.LeaseTime = time.Hour
	}
	if c.LeaseTime < 10*time.Second || c.LeaseTime > 365*24*time.Hour {
		bad("lease_time", "%v is outside 10s..1y", c.LeaseTime)
	}
	if c.BootHTTPBase != "" {
		if !strings.HasPrefix(c.BootHTTPBase, "http://") && !strings.HasPrefix(c.BootHTTPBase, "https://") {
			bad("boot_http_base", "%q is not an http(s) URL", c.BootHTTPBase)
		}
		c.BootHTTPBase = strings.TrimRight(c.BootHTTPBase, "/")
	}
	if c.HTTPBootPrefix == "" {
		c.HTTPBootPrefix = "/boot/"
	}
	if !strings.HasPrefix(c.HTTPBootPrefix, "/") || !strings.HasSuffix(c.HTTPBootPrefix, "/") {
		bad("http_boot_prefix", "%q must start and end with /", c.HTTPBootPrefix)
	}
	if c.TFTPServer == nil {
		c.TFTPServer = c.ServerIP
	} else if c.TFTPServer.To4() == nil {
		bad("tftp_server", "%v is not IPv4", c.TFTPServer)
	}
	if c.BootFiles == nil {
		c.BootFiles = DefaultBootFiles()
	}
	for a, f := range c.BootFiles {
		if len(f) > 127 && !a.HTTPBoot() {
			bad("boot_files", "%s: %q is longer than the 127-byte file field", a, f)
		}
	}
	if c.ProbeTimeout <= 0 {
		c.ProbeTimeout = 5 * time.Second
	}
	if c.OfferHold <= 0 {
		c.OfferHold = 30 * time.Second
	}
	if c.DeclineHold <= 0 {
		c.DeclineHold = 10 * time.Minute
	}
	if c.ARPProbeTimeout == 0 {
		c.ARPProbeTimeout = 300 * time.Millisecond
	}
	if c.ARPProbeTimeout < 10*time.Millisecond || c.ARPProbeTimeout > 5*time.Second {
		bad("arp_probe_timeout", "%v is outside 10ms..5s", c.ARPProbeTimeout)
	}
	if c.ARPProbeAhead == 0 {
		c.ARPProbeAhead = 64
	}
	if c.ARPProbeValid <= 0 {
		c.ARPProbeValid = 30 * time.Second
	}
	if c.Workers <= 0 {
		c.Workers = 16
	}
	if c.Port == 0 {
		c.Port = 67
	}
	if c.PXEPort == 0 {
		c.PXEPort = 4011
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return errors.Join(errs...)
}

func ipToU32(ip net.IP) uint32 {
	ip = ip.To4()
	return uint32(ip[0])<<24 | uint32(ip[1])<<16 | uint32(ip[2])<<8 | uint32(ip[3])
}

func u32ToIP(v uint32) net.IP {
	return net.IPv4(byte(v>>24), byte(v>>16), byte(v>>8), byte(v)).To4()
}
