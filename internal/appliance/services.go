package appliance

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/distonet/distonet/internal/bootconfig"
	"github.com/distonet/distonet/internal/config"
	"github.com/distonet/distonet/internal/registry"
	"github.com/distonet/distonet/netboot/dhcp"
	"github.com/distonet/distonet/netboot/ra"
	"github.com/distonet/distonet/netboot/tftp"
	"github.com/distonet/distonet/nfsroot"
	"github.com/distonet/distonet/overlay/iscsit"
	"github.com/distonet/distonet/overlay/volume"
)

// service is what every protocol server offers the appliance.
type service interface {
	Serve(ctx context.Context) error
	Close() error
}

// namedService pairs a server with the name used in logs.
type namedService struct {
	name string
	svc  service
}

// dhcpNodes is the registry as the DHCP server sees it.
type dhcpNodes struct {
	store *registry.Store
	log   *slog.Logger
}

func (d dhcpNodes) Host(mac net.HardwareAddr) (dhcp.Host, bool) {
	n, ok := d.store.NodeByMAC(mac.String())
	if !ok {
		return dhcp.Host{}, false
	}
	return dhcp.Host{Name: n.Name, IP: net.ParseIP(n.IP).To4()}, true
}

// ReservedFor keeps a node's fixed address from going to anyone else before it first boots.
func (d dhcpNodes) ReservedFor(ip net.IP) (net.HardwareAddr, bool) {
	nodes, err := d.store.Nodes()
	if err != nil {
		return nil, false
	}
	for _, n := range nodes {
		if n.IP != "" && net.ParseIP(n.IP).Equal(ip) {
			return n.HardwareAddr(), true
		}
	}
	return nil, false
}

func (d dhcpNodes) Seen(ci dhcp.ClientInfo) {
	if n, ok := d.store.NodeByMAC(ci.MAC.String()); ok {
		// Only the firmware's DHCP starts a boot; the node init's and the OS's own DHCP
		// happen inside one (the node init reports its stages itself).
		var msg string
		switch {
		case ci.IPXE:
			msg = "iPXE"
		case strings.HasPrefix(ci.VendorClass, "PXEClient"):
			msg = "PXE ROM"
		default:
			return
		}
		if err := d.store.RecordStage(n.Name, registry.Stage{Stage: bootconfig.StageDHCP, OK: true, Message: msg, Time: ci.Time}, ""); err != nil {
			d.log.Warn("record dhcp stage", "node", n.Name, "err", err)
		}
		return
	}
	arch := ""
	if ci.HasArch {
		arch = ci.Arch.String()
	}
	if err := d.store.SeeMAC(registry.Discovered{MAC: ci.MAC.String(), Arch: arch, VendorClass: ci.VendorClass, IPXE: ci.IPXE}); err != nil {
		d.log.Warn("record discovered mac", "mac", ci.MAC, "err", err)
	}
}

// bootFiles maps the config's architecture names to the DHCP server's.
func (a *Appliance) bootFiles() map[dhcp.Arch]string {
	files := dhcp.DefaultBootFiles()
	for name, file := range a.cfg.TFTP.BootFiles {
		switch name {
		case "bios":
			files[dhcp.ArchBIOS] = file
		case "efi-x86_64":
			files[dhcp.ArchX64], files[dhcp.ArchEFIBC], files[dhcp.ArchX64HTTP] = file, file, file
		case "efi-arm64":
			files[dhcp.ArchARM64], files[dhcp.ArchARM64HTTP] = file, file
		}
	}
	return files
}

func (a *Appliance) newDHCP() (service, error) {
	c := dhcp.DefaultConfig()
	c.Interface, c.ServerIP, c.Subnet = a.cfg.Interface, a.cfg.ServerIP(), a.cfg.Subnet()
	c.Mode = a.cfg.DHCP.Mode
	if c.Mode == dhcp.ModeServer {
		first, last, err := config.ParseRange(a.cfg.DHCP.Range)
		if err != nil {
			return nil, fmt.Errorf("dhcp.range: %w", err)
		}
		c.RangeStart, c.RangeEnd = first, last
	}
	c.LeaseTime = a.cfg.DHCP.LeaseTime
	c.ARPProbe = a.cfg.DHCP.ARPProbe
	c.LeaseFile = filepath.Join(a.cfg.StateDir, "leases.log")
	if a.cfg.DHCP.Router != "" {
		c.Router = net.ParseIP(a.cfg.DHCP.Router).To4()
	}
	for _, d := range a.cfg.DHCP.DNS {
		c.DNS = append(c.DNS, net.ParseIP(d).To4())
	}
	c.Domain = a.cfg.DHCP.Domain
	c.BootHTTPBase = a.cfg.BaseURL()
	c.HTTPBootPrefix = IPXEPrefix
	c.BootFiles = a.bootFiles()
	c.IgnoreOtherServers = a.cfg.DHCP.IgnoreOtherServers
	c.Metrics = a.metrics
	c.Logger = a.log.With("svc", "dhcp")
	return dhcp.New(c, dhcpNodes{store: a.store, log: a.log})
}

func (a *Appliance) newRA() (service, error) {
	return ra.New(ra.Config{Interface: a.cfg.Interface, Logger: a.log.With("svc", "ra")})
}

func (a *Appliance) newTFTP(gen tftp.Generated) (service, error) {
	return tftp.NewServer(tftp.Config{
		Addr: a.cfg.TFTP.Listen, Root: a.cfg.TFTP.Root, Anticipate: a.cfg.TFTP.Anticipate, Metrics: a.metrics,
	}, gen, a.log.With("svc", "tftp"))
}

func (a *Appliance) newNFS(exports nfsroot.Exports) (service, error) {
	var allowed []*net.IPNet
	for _, c := range a.cfg.NFS.Allowed {
		_, n, _ := net.ParseCIDR(c)
		allowed = append(allowed, n)
	}
	if len(allowed) == 0 {
		allowed = []*net.IPNet{a.cfg.Subnet()}
	}
	return nfsroot.NewServer(nfsroot.Config{
		Addr: a.cfg.NFS.Listen, Portmap: a.cfg.NFS.Portmap, AllowedNets: allowed, Metrics: a.metrics,
	}, exports, a.log.With("svc", "nfs"))
}

func (a *Appliance) newISCSI() (*iscsit.Server, error) {
	return iscsit.NewServer(iscsit.Config{Addr: a.cfg.ISCSIAddr(), Metrics: a.metrics}, a.log.With("svc", "iscsi"))
}

// VolumeMaker creates a node's volume file (sparse, formatted ext4) when it does not exist.
type VolumeMaker func(path string, size int64) error

// volumeTargets keeps one iSCSI target per enrolled node, creating each node's volume the
// first time it is needed, and drops the targets of removed nodes. Enrollment changes reach
// it through the registry's watch, so no restart is needed.
type volumeTargets struct {
	a      *Appliance
	target *iscsit.Server
	make   VolumeMaker

	mu      sync.Mutex
	current map[string]string // IQN -> CHAP secret it was added with
}

func (v *volumeTargets) run(ctx context.Context) {
	changes, stop := v.a.store.Watch()
	defer stop()
	tick := time.NewTicker(time.Minute) // also retries volumes whose creation failed
	defer tick.Stop()
	for {
		v.reconcile()
		select {
		case <-ctx.Done():
			return
		case <-changes:
		case <-tick.C:
		}
	}
}

func (v *volumeTargets) reconcile() {
	v.mu.Lock()
	defer v.mu.Unlock()
	nodes, err := v.a.store.Nodes()
	if err != nil {
		v.a.log.Error("volume targets: list nodes", "err", err)
		return
	}
	want := map[string]registry.Node{}
	for _, n := range nodes {
		want[n.TargetIQN()] = n
	}
	for iqn := range v.current {
		if n, ok := want[iqn]; !ok || n.Secrets.CHAPSecret != v.current[iqn] {
			if err := v.target.RemoveTarget(iqn); err != nil {
				v.a.log.Warn("remove iscsi target", "target", iqn, "err", err)
			}
			delete(v.current, iqn)
		}
	}
	for iqn, n := range want {
		if _, ok := v.current[iqn]; ok {
			continue
		}
		path := VolumePath(v.a.cfg.StateDir, n.Name)
		if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
			size := n.VolumeSize
			if size == 0 {
				size = v.a.cfg.VolumeSize(n.Group)
			}
			start := time.Now()
			if err := v.make(path, size); err != nil {
				v.a.log.Error("create volume", "node", n.Name, "path", path, "err", err)
				continue
			}
			v.a.log.Info("volume created", "node", n.Name, "path", path, "size", size, "took", time.Since(start).Round(time.Millisecond))
		}
		err := v.target.AddTarget(iscsit.TargetSpec{
			IQN: iqn, LUNs: []string{path}, CHAPUser: n.Name, CHAPSecret: n.Secrets.CHAPSecret,
			AllowedInitiators: []string{n.InitiatorIQN()},
		})
		if err != nil {
			v.a.log.Error("add iscsi target", "node", n.Name, "target", iqn, "err", err)
			continue
		}
		v.current[iqn] = n.Secrets.CHAPSecret
		v.a.log.Info("iscsi target ready", "node", n.Name, "target", iqn)
	}
}

// changeVolume resets or grows a node's volume: its target is removed first (a volume must
// not change under a served target), and the next reconcile serves it again.
func (v *volumeTargets) changeVolume(name, action string, size int64) error {
	n, err := v.a.store.Node(name)
	if err != nil {
		return err
	}
	v.mu.Lock()
	if _, ok := v.current[n.TargetIQN()]; ok {
		if err := v.target.RemoveTarget(n.TargetIQN()); err != nil {
			v.mu.Unlock()
			return fmt.Errorf("node %s: stop serving its volume: %w", name, err)
		}
		delete(v.current, n.TargetIQN())
	}
	err = ChangeVolume(v.a.cfg.StateDir, name, action, size)
	v.mu.Unlock()
	v.reconcile()
	return err
}

// ChangeVolume resets (empties) or grows a node's volume file; the daemon must not be serving
// it (the CLI uses it directly only when the daemon is stopped).
func ChangeVolume(stateDir, name, action string, size int64) error {
	path := VolumePath(stateDir, name)
	switch action {
	case "reset":
		return volume.Reset(path)
	case "resize":
		return volume.Resize(path, size)
	}
	return fmt.Errorf("volume action %q: want reset or resize", action)
}
