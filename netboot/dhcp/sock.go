package dhcp

import (
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/mdlayher/packet"
	"golang.org/x/sys/unix"
)

// listenUDP opens a UDP socket on 0.0.0.0:port bound to one interface. Unlike
// the library's helper it does not set SO_REUSEPORT: a second DHCP server on
// the same port must fail loudly, not share the traffic.
func listenUDP(ifname string, port int) (*net.UDPConn, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.IPPROTO_UDP)
	if err != nil {
		return nil, fmt.Errorf("udp socket: %w", err)
	}
	f := os.NewFile(uintptr(fd), "dhcp")
	defer f.Close()
	for _, o := range []struct {
		name string
		opt  int
	}{{"SO_BROADCAST", unix.SO_BROADCAST}, {"SO_REUSEADDR", unix.SO_REUSEADDR}} {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, o.opt, 1); err != nil {
			return nil, fmt.Errorf("udp socket %s: %w", o.name, err)
		}
	}
	// A boot storm arrives in bursts: the queue holds ~1500 requests (a few
	// hundred nodes powering on together, with retransmissions), but not so
	// many that an overload turns into seconds of backlog.
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, rcvBuf); err != nil {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, rcvBuf)
	}
	// Arrival times let the server skip requests that queued too long (see staleAfter).
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1)
	if err := unix.SetsockoptString(fd, unix.SOL_SOCKET, unix.SO_BINDTODEVICE, ifname); err != nil {
		return nil, fmt.Errorf("bind udp socket to %s: %w", ifname, err)
	}
	if err := unix.Bind(fd, &unix.SockaddrInet4{Port: port}); err != nil {
		return nil, fmt.Errorf("bind udp port %d on %s: %w", port, ifname, err)
	}
	c, err := net.FilePacketConn(f)
	if err != nil {
		return nil, fmt.Errorf("udp socket: %w", err)
	}
	return c.(*net.UDPConn), nil
}

// rawSender sends a reply to a client that has no address yet and did not ask
// for broadcast (RFC 2131 §4.1): an IPv4/UDP datagram to yiaddr inside an
// Ethernet frame to chaddr, so no ARP is needed and the kernel neighbour table
// is not filled with boot-storm entries.
type rawSender struct {
	conn *packet.Conn
	ifi  *net.Interface
	src  net.IP
}

func newRawSender(ifi *net.Interface, src net.IP) (*rawSender, error) {
	// Protocol 0: the socket only sends; it receives nothing.
	c, err := packet.Listen(ifi, packet.Raw, 0, nil)
	if err != nil {
		return nil, fmt.Errorf("packet socket on %s: %w", ifi.Name, err)
	}
	return &rawSender{conn: c, ifi: ifi, src: src.To4()}, nil
}

func (r *rawSender) send(payload []byte, dstMAC net.HardwareAddr, dstIP net.IP, srcPort, dstPort int) error {
	frame := udpFrame(r.ifi.HardwareAddr, dstMAC, r.src, dstIP.To4(), srcPort, dstPort, payload)
	_, err := r.conn.WriteTo(frame, &packet.Addr{HardwareAddr: dstMAC})
	return err
}

func (r *rawSender) close() error { return r.conn.Close() }

// udpFrame builds Ethernet II + IPv4 + UDP around payload.
func udpFrame(srcMAC, dstMAC net.HardwareAddr, srcIP, dstIP net.IP, srcPort, dstPort int, payload []byte) []byte {
	const ethLen, ipLen, udpLen = 14, 20, 8
	b := make([]byte, ethLen+ipLen+udpLen+len(payload))
	copy(b[0:6], dstMAC)
	copy(b[6:12], srcMAC)
	binary.BigEndian.PutUint16(b[12:14], 0x0800)
	ip := b[ethLen : ethLen+ipLen]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:4], uint16(ipLen+udpLen+len(payload)))
	ip[8] = 64 // TTL
	ip[9] = unix.IPPROTO_UDP
	copy(ip[12:16], srcIP)
	copy(ip[16:20], dstIP)
	binary.BigEndian.PutUint16(ip[10:12], checksum(ip, 0))
	udp := b[ethLen+ipLen:]
	binary.BigEndian.PutUint16(udp[0:2], uint16(srcPort))
	binary.BigEndian.PutUint16(udp[2:4], uint16(dstPort))
	binary.BigEndian.PutUint16(udp[4:6], uint16(udpLen+len(payload)))
	copy(udp[udpLen:], payload)
	// Pseudo-header sum, then the datagram itself.
	var ph uint32
	ph += uint32(binary.BigEndian.Uint16(srcIP[0:2])) + uint32(binary.BigEndian.Uint16(srcIP[2:4]))
	ph += uint32(binary.BigEndian.Uint16(dstIP[0:2])) + uint32(binary.BigEndian.Uint16(dstIP[2:4]))
	ph += unix.IPPROTO_UDP + uint32(udpLen+len(payload))
	sum := checksum(udp, ph)
	if sum == 0 {
		sum = 0xffff
	}
	binary.BigEndian.PutUint16(udp[6:8], sum)
	return b
}

// checksum is the Internet checksum (RFC 1071) of b, starting from initial.
func checksum(b []byte, initial uint32) uint16 {
	sum := initial
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

// staleAfter is the age past which a queued request is skipped unanswered.
// Under overload the receive queue holds seconds of requests; answering ones
// whose client has already retransmitted (iPXE after 1 s; its next request is
// queued behind) only delays the fresh ones, so a storm beyond capacity would
// otherwise collapse into late answers for everyone.
const staleAfter = time.Second

// rcvBuf is the receive buffer of the DHCP sockets.
const rcvBuf = 2 << 20

// rxTime returns the kernel's arrival time from SCM_TIMESTAMPNS control data.
func rxTime(oob []byte) (time.Time, bool) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return time.Time{}, false
	}
	for _, m := range msgs {
		if m.Header.Level == unix.SOL_SOCKET && m.Header.Type == unix.SCM_TIMESTAMPNS && len(m.Data) >= 16 {
			sec := int64(binary.NativeEndian.Uint64(m.Data[0:8]))
			nsec := int64(binary.NativeEndian.Uint64(m.Data[8:16]))
			return time.Unix(sec, nsec), true
		}
	}
	return time.Time{}, false
}
