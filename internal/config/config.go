// Package config holds the appliance's configuration: one struct with YAML tags, the defaults
// in one place (Default), and a validation that reports every problem with its key.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// DefaultPath is where every subcommand looks for the configuration unless --config says otherwise.
const DefaultPath = "/etc/distonet/distonet.yaml"

// Config is the whole appliance configuration. Keys in CONTRACT.md are stable.
type Config struct {
	Interface string `yaml:"interface"` // boot network interface: DHCP, RA and AoE discovery bind here
	Address   string `yaml:"address"`   // the appliance's address on it, CIDR
	StateDir  string `yaml:"state_dir"` // registry, leases, images, per-node volumes
	TimeZone  string `yaml:"time_zone"` // donation windows are read in this zone; "Local" = the host's
	LogLevel  string `yaml:"log_level"` // debug | info | warn | error

	DHCP    DHCP    `yaml:"dhcp"`
	TFTP    TFTP    `yaml:"tftp"`
	HTTP    HTTP    `yaml:"http"`
	NFS     NFS     `yaml:"nfs"`
	ISCSI   ISCSI   `yaml:"iscsi"`
	Volumes Volumes `yaml:"volumes"`
	Donate  Donate  `yaml:"donate"`
	Boot    Boot    `yaml:"boot"`
}

// Boot configures what the iPXE node script passes to the kernel.
type Boot struct {
	// CmdlineExtra is prepended to every node's kernel command line.
	CmdlineExtra string `yaml:"cmdline_extra"`
}

// DHCP configures address hand-out and PXE answers.
type DHCP struct {
	Mode                string        `yaml:"mode"`                 // server | proxy | off
	Range               string        `yaml:"range"`                // first-last, inside address's subnet
	LeaseTime           time.Duration `yaml:"lease_time"`           // default 1h
	Router              string        `yaml:"router"`               // option 3; empty = none
	DNS                 []string      `yaml:"dns"`                  // option 6
	Domain              string        `yaml:"domain"`               // option 15
	IgnoreOtherServers  bool          `yaml:"ignore_other_servers"` // start in server mode even if another server answers
	RouterAdvertisement bool          `yaml:"router_advertisement"` // send IPv6 RAs so iPXE does not wait ~13 s
	// ARPProbe checks with ARP that no other host uses an address before it is offered to a
	// new client (server mode); addresses are checked ahead so offers do not wait.
	ARPProbe bool `yaml:"arp_probe"`
}

// TFTP configures the server that carries only the iPXE binary.
type TFTP struct {
	Listen     string            `yaml:"listen"`     // default ":69"
	Root       string            `yaml:"root"`       // iPXE binaries; default /usr/lib/ipxe
	Anticipate uint              `yaml:"anticipate"` // send-ahead window in blocks; 0 = off
	BootFiles  map[string]string `yaml:"boot_files"` // arch (bios, efi-x86_64, efi-arm64) -> file under root
}

// HTTP configures the listener for HTTP boot, web UI, API and /metrics.
type HTTP struct {
	Listen    string `yaml:"listen"`     // default ":80"
	PublicURL string `yaml:"public_url"` // base URL nodes use; default http://<address>[:port]
}

// NFS configures the read-only root server.
type NFS struct {
	Listen  string   `yaml:"listen"`  // default ":2049" (MOUNT on the same port)
	Portmap string   `yaml:"portmap"` // default ":111"; "" turns the portmapper off
	Allowed []string `yaml:"allowed"` // CIDRs that may mount; default: address's subnet
}

// ISCSI configures the target that serves per-node volumes.
type ISCSI struct {
	Listen string `yaml:"listen"` // default <address>:3260
}

// Volumes configures per-node overlay volumes.
type Volumes struct {
	Size   ByteSize            `yaml:"size"`   // default 8GiB
	Groups map[string]ByteSize `yaml:"groups"` // per-group size overrides
}

// Donate configures the appliance side of disk donation.
type Donate struct {
	PoolHeadMACs []string `yaml:"pool_head_macs"` // AoE allow-list handed to every donor
	PoolHeadIQN  string   `yaml:"pool_head_iqn"`  // the only initiator allowed on iSCSI donations
	WakeOnLAN    bool     `yaml:"wake_on_lan"`    // wake window members when their window opens
	// PoolStopBefore is how long before an overnight window closes the pool head stops that
	// window's array, so members leave a cleanly stopped array (default 10m).
	PoolStopBefore time.Duration `yaml:"pool_stop_before"`
	// PoolAssembleGrace is how long the pool head waits for late members after a window opens
	// before assembling degraded (default 5m): each late member would cost a resync.
	PoolAssembleGrace time.Duration `yaml:"pool_assemble_grace"`
	// PoolExport is how the pool head serves each array's filesystem to the cluster: nfs (the
	// head's kernel NFS server, NFSv4, to the boot network) or none (mounted on the head only).
	PoolExport string `yaml:"pool_export"`
}

// ByteSize is a size in bytes that YAML may write as 8GiB, 500MB or a plain number.
type ByteSize int64

// UnmarshalYAML accepts plain numbers and numbers with a unit.
func (b *ByteSize) UnmarshalYAML(n *yaml.Node) error {
	v, err := ParseByteSize(n.Value)
	if err != nil {
		return err
	}
	*b = ByteSize(v)
	return nil
}

// ParseByteSize reads "8GiB", "512M", "1T", "4096".
func ParseByteSize(s string) (int64, error) {
	s = strings.TrimSpace(s)
	units := []struct {
		suffix string
		mult   int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10},
		{"TB", 1e12}, {"GB", 1e9}, {"MB", 1e6}, {"KB", 1e3},
		{"T", 1 << 40}, {"G", 1 << 30}, {"M", 1 << 20}, {"K", 1 << 10}, {"B", 1}}
	mult := int64(1)
	for _, u := range units {
		if strings.HasSuffix(s, u.suffix) {
			s, mult = strings.TrimSpace(strings.TrimSuffix(s, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%q is not a size (examples: 8GiB, 512MiB, 4096)", s)
	}
	return n * mult, nil
}

// Default returns the configuration that works on a fresh machine.
func Default() Config {
	return Config{
		Interface: "eth0",
		Address:   "10.202.0.1/24",
		StateDir:  "/var/lib/distonet",
		TimeZone:  "Local",
		LogLevel:  "info",
		DHCP: DHCP{
			Mode:                "server",
			Range:               "10.202.0.100-10.202.0.200",
			LeaseTime:           time.Hour,
			RouterAdvertisement: true,
			ARPProbe:            true,
		},
		TFTP: TFTP{
			Listen: ":69",
			Root:   "/usr/lib/ipxe",
			BootFiles: map[string]string{
				"bios":       "undionly.kpxe",
				"efi-x86_64": "snponly.efi", // a regular file; Debian's ipxe.efi is a symlink out of the TFTP root
				"efi-arm64":  "ipxe-arm64.efi",
			},
		},
		HTTP:    HTTP{Listen: ":80"},
		NFS:     NFS{Listen: ":2049", Portmap: ":111"},
		Volumes: Volumes{Size: 8 << 30},
		Donate:  Donate{WakeOnLAN: true, PoolStopBefore: 10 * time.Minute, PoolAssembleGrace: 5 * time.Minute, PoolExport: "nfs"},
		Boot:    Boot{CmdlineExtra: "console=tty0 console=ttyS0,115200n8 no_timer_check"},
	}
}

// Load reads a YAML file over the defaults and validates the result. Unknown keys are errors:
// a typo must not silently fall back to a default.
func Load(path string) (Config, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("config %s: %w", path, err)
	}
	return Parse(raw, path)
}

// Parse reads YAML (named source in messages) over the defaults and validates it.
func Parse(raw []byte, source string) (Config, error) {
	cfg := Default()
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) { // empty file: all defaults
		return Config{}, fmt.Errorf("config %s: %w", source, err)
	}
	if err := cfg.Validate(); err != nil {
		return Config{}, fmt.Errorf("config %s: %w", source, err)
	}
	return cfg, nil
}

// Problem is one invalid key.
type Problem struct {
	Key, Value, Want string
}

func (p Problem) Error() string {
	return fmt.Sprintf("%s: %q is invalid: %s", p.Key, p.Value, p.Want)
}

// Problems is every invalid key of a configuration.
type Problems []Problem

func (ps Problems) Error() string {
	lines := make([]string, len(ps))
	for i, p := range ps {
		lines[i] = p.Error()
	}
	return strings.Join(lines, "; ")
}

// Validate checks every key and returns all problems at once.
func (c *Config) Validate() error {
	var ps Problems
	bad := func(key, value, want string) { ps = append(ps, Problem{key, value, want}) }

	if c.Interface == "" || len(c.Interface) > 15 || strings.ContainsAny(c.Interface, "/ ") {
		bad("interface", c.Interface, "want a network interface name such as eth0 (at most 15 characters)")
	}
	ip, subnet, err := net.ParseCIDR(c.Address)
	if err != nil || ip.To4() == nil {
		bad("address", c.Address, "want an IPv4 address with prefix length, e.g. 10.202.0.1/24")
	}
	if c.StateDir == "" || !filepath.IsAbs(c.StateDir) {
		bad("state_dir", c.StateDir, "want an absolute directory path")
	}
	if _, err := c.Location(); err != nil {
		bad("time_zone", c.TimeZone, "want Local, UTC or an IANA zone such as Europe/Paris")
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		bad("log_level", c.LogLevel, "want debug, info, warn or error")
	}
	switch c.DHCP.Mode {
	case "server":
		first, last, err := ParseRange(c.DHCP.Range)
		switch {
		case err != nil:
			bad("dhcp.range", c.DHCP.Range, "want first-last IPv4 addresses, e.g. 10.202.0.100-10.202.0.200")
		case subnet != nil && (!subnet.Contains(first) || !subnet.Contains(last)):
			bad("dhcp.range", c.DHCP.Range, "want addresses inside address's subnet "+subnet.String())
		case ip != nil && inRange(ip, first, last):
			bad("dhcp.range", c.DHCP.Range, "must not contain the appliance's own address "+ip.String())
		}
	case "proxy", "off":
	default:
		bad("dhcp.mode", c.DHCP.Mode, "want server, proxy or off")
	}
	if c.DHCP.LeaseTime < time.Minute {
		bad("dhcp.lease_time", c.DHCP.LeaseTime.String(), "want at least 1m")
	}
	if c.DHCP.Router != "" && net.ParseIP(c.DHCP.Router).To4() == nil {
		bad("dhcp.router", c.DHCP.Router, "want an IPv4 address")
	}
	for i, d := range c.DHCP.DNS {
		if net.ParseIP(d).To4() == nil {
			bad(fmt.Sprintf("dhcp.dns[%d]", i), d, "want an IPv4 address")
		}
	}
	for _, l := range []struct {
		key, value string
		optional   bool // "" means off, or derived from address
	}{
		{"tftp.listen", c.TFTP.Listen, true}, {"http.listen", c.HTTP.Listen, false},
		{"nfs.listen", c.NFS.Listen, false}, {"nfs.portmap", c.NFS.Portmap, true}, {"iscsi.listen", c.ISCSI.Listen, true},
	} {
		if l.value == "" && l.optional {
			continue
		}
		if _, _, err := net.SplitHostPort(l.value); err != nil {
			bad(l.key, l.value, "want host:port or :port")
		}
	}
	if c.HTTP.PublicURL != "" && !strings.HasPrefix(c.HTTP.PublicURL, "http://") && !strings.HasPrefix(c.HTTP.PublicURL, "https://") {
		bad("http.public_url", c.HTTP.PublicURL, "want an http:// or https:// URL")
	}
	for i, n := range c.NFS.Allowed {
		if _, _, err := net.ParseCIDR(n); err != nil {
			bad(fmt.Sprintf("nfs.allowed[%d]", i), n, "want a CIDR such as 10.202.0.0/24")
		}
	}
	if c.Volumes.Size < 64<<20 {
		bad("volumes.size", fmt.Sprint(int64(c.Volumes.Size)), "want at least 64MiB")
	}
	for g, s := range c.Volumes.Groups {
		if s < 64<<20 {
			bad("volumes.groups."+g, fmt.Sprint(int64(s)), "want at least 64MiB")
		}
	}
	for i, m := range c.Donate.PoolHeadMACs {
		if _, err := net.ParseMAC(m); err != nil {
			bad(fmt.Sprintf("donate.pool_head_macs[%d]", i), m, "want a MAC address such as 52:54:00:12:34:56")
		}
	}
	if c.Donate.PoolStopBefore <= 0 || c.Donate.PoolStopBefore > 12*time.Hour {
		bad("donate.pool_stop_before", c.Donate.PoolStopBefore.String(), "want a duration between 1s and 12h, e.g. 10m")
	}
	if c.Donate.PoolExport != "nfs" && c.Donate.PoolExport != "none" {
		bad("donate.pool_export", c.Donate.PoolExport, "want nfs or none")
	}
	if c.Donate.PoolAssembleGrace <= 0 || c.Donate.PoolAssembleGrace > 12*time.Hour {
		bad("donate.pool_assemble_grace", c.Donate.PoolAssembleGrace.String(), "want a duration between 1s and 12h, e.g. 5m")
	}
	if len(ps) > 0 {
		return ps
	}
	return nil
}

// Location is the time zone donation windows are read in.
func (c *Config) Location() (*time.Location, error) {
	if c.TimeZone == "" || c.TimeZone == "Local" {
		return time.Local, nil
	}
	return time.LoadLocation(c.TimeZone)
}

// ServerIP is the appliance's address on the boot network.
func (c *Config) ServerIP() net.IP {
	ip, _, _ := net.ParseCIDR(c.Address)
	return ip.To4()
}

// Subnet is the boot network.
func (c *Config) Subnet() *net.IPNet {
	_, n, _ := net.ParseCIDR(c.Address)
	return n
}

// BaseURL is the URL nodes use to reach the appliance's HTTP listener.
func (c *Config) BaseURL() string {
	if c.HTTP.PublicURL != "" {
		return strings.TrimRight(c.HTTP.PublicURL, "/")
	}
	_, port, _ := net.SplitHostPort(c.HTTP.Listen)
	if port == "80" || port == "" {
		return "http://" + c.ServerIP().String()
	}
	return "http://" + net.JoinHostPort(c.ServerIP().String(), port)
}

// LocalURL is the URL local tools (the CLI) use to reach a running daemon.
func (c *Config) LocalURL() string {
	host, port, _ := net.SplitHostPort(c.HTTP.Listen)
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port)
}

// ISCSIAddr is where the iSCSI target listens.
func (c *Config) ISCSIAddr() string {
	if c.ISCSI.Listen != "" {
		return c.ISCSI.Listen
	}
	return net.JoinHostPort(c.ServerIP().String(), "3260")
}

// VolumeSize is the overlay volume size for a node of the group.
func (c *Config) VolumeSize(group string) int64 {
	if s, ok := c.Volumes.Groups[group]; ok {
		return int64(s)
	}
	return int64(c.Volumes.Size)
}

// ParseRange reads "first-last".
func ParseRange(s string) (first, last net.IP, err error) {
	a, b, ok := strings.Cut(s, "-")
	first, last = net.ParseIP(strings.TrimSpace(a)).To4(), net.ParseIP(strings.TrimSpace(b)).To4()
	if !ok || first == nil || last == nil || bytes.Compare(first, last) > 0 {
		return nil, nil, fmt.Errorf("range %q: want first-last IPv4 addresses in order", s)
	}
	return first, last, nil
}

func inRange(ip, first, last net.IP) bool {
	ip = ip.To4()
	return bytes.Compare(ip, first) >= 0 && bytes.Compare(ip, last) <= 0
}
