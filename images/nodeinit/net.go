package nodeinit

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"golang.org/x/sys/unix"
)

// findNIC waits for the interface with the boot MAC (or, without one, the first Ethernet
// interface whose carrier is up) to appear: drivers probe asynchronously after loading.
func findNIC(ctx context.Context, mac net.HardwareAddr) (*net.Interface, error) {
	for {
		ifs, err := net.Interfaces()
		if err != nil {
			return nil, err
		}
		for i := range ifs {
			ifi := ifs[i]
			if ifi.Flags&net.FlagLoopback != 0 || len(ifi.HardwareAddr) != 6 {
				continue
			}
			if mac != nil {
				if bytes.Equal(ifi.HardwareAddr, mac) {
					return &ifi, nil
				}
				continue
			}
			if err := linkUp(ifi.Name); err == nil && carrier(ifi.Name) {
				return &ifi, nil
			}
		}
		select {
		case <-ctx.Done():
			if mac != nil {
				return nil, fmt.Errorf("no network interface with MAC %s (driver missing?)", mac)
			}
			return nil, fmt.Errorf("no network interface with a link")
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func carrier(name string) bool {
	b, err := os.ReadFile("/sys/class/net/" + name + "/carrier")
	return err == nil && strings.TrimSpace(string(b)) == "1"
}

// linkUp sets IFF_UP on an interface.
func linkUp(name string) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("get flags of %s: %w", name, err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("bring %s up: %w", name, err)
	}
	return nil
}

// Lease is the address configuration a node got by DHCP.
type Lease struct {
	Ifname string        `json:"ifname"`
	IP     net.IP        `json:"ip"`
	Mask   net.IPMask    `json:"mask"`
	Router net.IP        `json:"router,omitempty"`
	Server net.IP        `json:"server"` // DHCP server identifier
	Time   time.Duration `json:"time"`   // lease time (0: the server gave none)
}

// dhcp runs DISCOVER/OFFER/REQUEST/ACK on the interface.
func dhcp(ctx context.Context, ifname string, want net.IP) (Lease, error) {
	c, err := nclient4.New(ifname, nclient4.WithTimeout(4*time.Second), nclient4.WithRetry(3))
	if err != nil {
		return Lease{}, fmt.Errorf("DHCP client on %s: %w", ifname, err)
	}
	defer c.Close()
	mods := []dhcpv4.Modifier{dhcpv4.WithOption(dhcpv4.OptClassIdentifier("DiStoNet-node"))}
	if want != nil {
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(want)))
	}
	l, err := c.Request(ctx, mods...)
	if err != nil {
		return Lease{}, fmt.Errorf("DHCP on %s: %w", ifname, err)
	}
	ack := l.ACK
	lease := Lease{Ifname: ifname, IP: ack.YourIPAddr.To4(), Mask: ack.SubnetMask(), Server: ack.ServerIdentifier(),
		Time: ack.IPAddressLeaseTime(0)}
	if lease.Mask == nil {
		lease.Mask = lease.IP.DefaultMask()
	}
	if r := ack.Router(); len(r) > 0 {
		lease.Router = r[0]
	}
	if lease.IP == nil || lease.IP.IsUnspecified() {
		return Lease{}, fmt.Errorf("DHCP on %s: ACK without an address", ifname)
	}
	return lease, nil
}

// configure gives the interface its address and default route through rtnetlink.
func configure(ifi *net.Interface, l Lease) error {
	ones, _ := l.Mask.Size()
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("rtnetlink: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("rtnetlink: %w", err)
	}
	// struct ifaddrmsg: family, prefixlen, flags, scope, index.
	am := make([]byte, 8)
	am[0], am[1] = unix.AF_INET, byte(ones)
	binary.NativeEndian.PutUint32(am[4:], uint32(ifi.Index))
	bcast := make(net.IP, 4)
	for i := range bcast {
		bcast[i] = l.IP[i] | ^l.Mask[len(l.Mask)-4+i]
	}
	am = append(am, rtattr(unix.IFA_LOCAL, l.IP.To4())...)
	am = append(am, rtattr(unix.IFA_ADDRESS, l.IP.To4())...)
	am = append(am, rtattr(unix.IFA_BROADCAST, bcast)...)
	if err := rtnlDo(fd, unix.RTM_NEWADDR, unix.NLM_F_CREATE|unix.NLM_F_REPLACE, am); err != nil {
		return fmt.Errorf("add address %s/%d to %s: %w", l.IP, ones, ifi.Name, err)
	}
	if l.Router == nil {
		return nil
	}
	// struct rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags.
	rm := make([]byte, 12)
	rm[0], rm[4], rm[5], rm[6], rm[7] = unix.AF_INET, unix.RT_TABLE_MAIN, unix.RTPROT_BOOT, unix.RT_SCOPE_UNIVERSE, unix.RTN_UNICAST
	oif := make([]byte, 4)
	binary.NativeEndian.PutUint32(oif, uint32(ifi.Index))
	rm = append(rm, rtattr(unix.RTA_GATEWAY, l.Router.To4())...)
	rm = append(rm, rtattr(unix.RTA_OIF, oif)...)
	if err := rtnlDo(fd, unix.RTM_NEWROUTE, unix.NLM_F_CREATE|unix.NLM_F_REPLACE, rm); err != nil {
		return fmt.Errorf("add default route via %s: %w", l.Router, err)
	}
	return nil
}

func rtattr(typ uint16, data []byte) []byte {
	n := 4 + len(data)
	b := make([]byte, (n+3)&^3)
	binary.NativeEndian.PutUint16(b[0:], uint16(n))
	binary.NativeEndian.PutUint16(b[2:], typ)
	copy(b[4:], data)
	return b
}

func rtnlDo(fd int, typ uint16, flags uint16, body []byte) error {
	msg := make([]byte, 16+len(body))
	binary.NativeEndian.PutUint32(msg[0:], uint32(len(msg)))
	binary.NativeEndian.PutUint16(msg[4:], typ)
	binary.NativeEndian.PutUint16(msg[6:], unix.NLM_F_REQUEST|unix.NLM_F_ACK|flags)
	binary.NativeEndian.PutUint32(msg[8:], 1)
	copy(msg[16:], body)
	if err := unix.Sendto(fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return err
	}
	buf := make([]byte, 4096)
	n, _, err := unix.Recvfrom(fd, buf, 0)
	if err != nil {
		return err
	}
	if n >= 20 && binary.NativeEndian.Uint16(buf[4:]) == unix.NLMSG_ERROR {
		if e := int32(binary.NativeEndian.Uint32(buf[16:])); e != 0 {
			return unix.Errno(-e)
		}
	}
	return nil
}

// keepLease renews the node's address at half its lease time for as long as the node runs:
// the root is on NFS and iSCSI over this address, so it must never lapse. The renewal asks
// for the same address; the node cannot change address under its mounts, so a server that
// offers another one only gets a warning.
func keepLease(ctx context.Context, l Lease, say func(string, ...any)) {
	for {
		wait := l.Time / 2
		if wait < 30*time.Second {
			wait = 30 * time.Second
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		if l.Time == 0 {
			return // an infinite lease needs no renewal
		}
		nl, err := dhcp(ctx, l.Ifname, l.IP)
		switch {
		case err != nil:
			say("dhcp: renewing %s failed, retrying: %v", l.IP, err)
			l.Time = time.Minute // retry soon; wait is half of this, floored at 30s
		case !nl.IP.Equal(l.IP):
			say("dhcp: WARNING: server %s offered %s instead of %s; keeping %s (the root is mounted over it)", nl.Server, nl.IP, l.IP, l.IP)
			l.Time = time.Minute
		default:
			l.Time = nl.Time
			say("dhcp: renewed %s on %s for %s", l.IP, l.Ifname, l.Time)
		}
	}
}
