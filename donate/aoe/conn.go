package aoe

import (
	"fmt"
	"net"

	"github.com/mdlayher/packet"
	"golang.org/x/sys/unix"
)

// socketBuffer is the kernel buffer asked for each AoE socket: enough for a full window of
// jumbo frames in both directions, so bursts from several tags are not dropped.
const socketBuffer = 4 << 20

// listen opens a raw AF_PACKET socket for AoE frames on the interface. PACKET_IGNORE_OUTGOING
// keeps the socket from reading back the frames it sends (both sides would otherwise see
// their own traffic on the same interface).
func listen(ifname string) (*packet.Conn, *net.Interface, error) {
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return nil, nil, fmt.Errorf("aoe interface %s: %w", ifname, err)
	}
	if len(ifi.HardwareAddr) != 6 {
		return nil, nil, fmt.Errorf("aoe interface %s: no Ethernet address", ifname)
	}
	c, err := packet.Listen(ifi, packet.Raw, EtherType, nil)
	if err != nil {
		return nil, nil, fmt.Errorf("aoe listen on %s: %w", ifname, err)
	}
	rc, err := c.SyscallConn()
	if err != nil {
		c.Close()
		return nil, nil, fmt.Errorf("aoe socket on %s: %w", ifname, err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		if e := unix.SetsockoptInt(int(fd), unix.SOL_PACKET, unix.PACKET_IGNORE_OUTGOING, 1); e != nil {
			serr = fmt.Errorf("PACKET_IGNORE_OUTGOING: %w", e)
			return
		}
		// Frames go straight to the driver: AoE has its own flow control (tags, bufcnt), a
		// qdisc only adds work per frame. Best effort: old kernels lack the option.
		_ = unix.SetsockoptInt(int(fd), unix.SOL_PACKET, unix.PACKET_QDISC_BYPASS, 1)
		// The *FORCE variants pass rmem_max/wmem_max as root; fall back quietly otherwise.
		if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, socketBuffer) != nil {
			_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, socketBuffer)
		}
		if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, socketBuffer) != nil {
			_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUF, socketBuffer)
		}
	}); err != nil {
		serr = err
	}
	if serr != nil {
		c.Close()
		return nil, nil, fmt.Errorf("aoe socket on %s: %w", ifname, serr)
	}
	return c, ifi, nil
}

// SectorsPerFrame is how many sectors one ATA frame carries at the given MTU, computed as
// vblade and the Linux driver do (MTU minus Ethernet, AoE and ATA headers): 2 at 1500, 17 at 9000.
func SectorsPerFrame(mtu int) int {
	n := (mtu - (HeaderLen + ATAArgLen)) / SectorSize
	switch {
	case n < 0:
		return 0
	case n > 255:
		return 255
	}
	return n
}
