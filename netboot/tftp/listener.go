package tftp

import (
	"context"
	"fmt"
	"net"
	"syscall"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"
)

// listener is the well-known port. It reports, per request, the address the client sent
// to and the interface it came in on: replies leave from that address, and blksize is
// capped by that interface's MTU so blocks are never IP-fragmented.
type listener struct {
	conn *net.UDPConn
	p4   *ipv4.PacketConn
	p6   *ipv6.PacketConn
}

// listen opens the well-known port, bound to one interface when ifname is set so the
// boot files are not offered to every network the host is on.
func listen(addr, ifname string) (*listener, error) {
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("tftp listen %s: %w", addr, err)
	}
	network := "udp"
	if ua.IP == nil || ua.IP.To4() != nil {
		// PXE is IPv4: an unspecified address serves IPv4, so the v4 control messages apply.
		network = "udp4"
	}
	lc := net.ListenConfig{}
	if ifname != "" {
		lc.Control = func(_, _ string, c syscall.RawConn) error {
			var serr error
			if err := c.Control(func(fd uintptr) {
				serr = unix.SetsockoptString(int(fd), unix.SOL_SOCKET, unix.SO_BINDTODEVICE, ifname)
			}); err != nil {
				return err
			}
			return serr
		}
	}
	pc, err := lc.ListenPacket(context.Background(), network, ua.String())
	if err != nil {
		return nil, fmt.Errorf("tftp listen %s on %q: %w", addr, ifname, err)
	}
	conn := pc.(*net.UDPConn)
	l := &listener{conn: conn}
	if network == "udp4" {
		p := ipv4.NewPacketConn(conn)
		if p.SetControlMessage(ipv4.FlagDst|ipv4.FlagInterface, true) == nil {
			l.p4 = p
		}
	} else {
		p := ipv6.NewPacketConn(conn)
		if p.SetControlMessage(ipv6.FlagDst|ipv6.FlagInterface, true) == nil {
			l.p6 = p
		}
	}
	return l, nil
}

// read returns one datagram with its destination address and interface (nil, 0 when the
// OS does not tell).
func (l *listener) read(b []byte) (n int, peer *net.UDPAddr, dst net.IP, ifIndex int, err error) {
	var src net.Addr
	switch {
	case l.p4 != nil:
		var cm *ipv4.ControlMessage
		n, cm, src, err = l.p4.ReadFrom(b)
		if cm != nil {
			dst, ifIndex = cm.Dst, cm.IfIndex
		}
	case l.p6 != nil:
		var cm *ipv6.ControlMessage
		n, cm, src, err = l.p6.ReadFrom(b)
		if cm != nil {
			dst, ifIndex = cm.Dst, cm.IfIndex
		}
	default:
		n, src, err = l.conn.ReadFrom(b)
	}
	if err != nil {
		return 0, nil, nil, 0, err
	}
	peer, _ = src.(*net.UDPAddr)
	if peer == nil {
		return 0, nil, nil, 0, fmt.Errorf("tftp: unexpected source address %v", src)
	}
	return n, peer, dst, ifIndex, nil
}

// replyAddr is the address replies to a request sent to dst leave from: dst itself, unless
// it cannot be a source (broadcast, multicast, unknown) and routing must choose.
func replyAddr(dst net.IP) net.IP {
	if dst == nil || dst.IsMulticast() || dst.Equal(net.IPv4bcast) || dst.IsUnspecified() {
		return nil
	}
	return dst
}

// writeFrom sends b to peer from the address src (nil: let routing choose).
func (l *listener) writeFrom(b []byte, peer *net.UDPAddr, src net.IP) error {
	var err error
	switch {
	case l.p4 != nil && src != nil:
		_, err = l.p4.WriteTo(b, &ipv4.ControlMessage{Src: src}, peer)
	case l.p6 != nil && src != nil:
		_, err = l.p6.WriteTo(b, &ipv6.ControlMessage{Src: src}, peer)
	default:
		_, err = l.conn.WriteToUDP(b, peer)
	}
	return err
}

// maxPayload is the largest UDP payload that leaves interface ifIndex unfragmented.
func maxPayload(ifIndex int, v6 bool) int {
	if ifIndex <= 0 {
		return maxBlockSize + 4
	}
	ifi, err := net.InterfaceByIndex(ifIndex)
	if err != nil || ifi.MTU <= 0 {
		return maxBlockSize + 4
	}
	if v6 {
		return ifi.MTU - 48 // IPv6 + UDP headers
	}
	return ifi.MTU - 28 // IPv4 + UDP headers
}
