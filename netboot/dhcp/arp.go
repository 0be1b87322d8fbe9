package dhcp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
)

// ARP operations (RFC 826).
const (
	arpRequest = 1
	arpReply   = 2
)

// arpLen is the size of an ARP message for Ethernet and IPv4.
const arpLen = 28

// arpPacket is an ARP message for Ethernet and IPv4, the only kind the
// address probe sends or reads.
type arpPacket struct {
	Op       uint16
	SenderHW net.HardwareAddr
	SenderIP netip.Addr
	TargetHW net.HardwareAddr
	TargetIP netip.Addr
}

var errARPShort = errors.New("arp: short packet")

// MarshalBinary encodes p. Missing hardware addresses are sent as zeros (a
// request's target); the addresses must be IPv4.
func (p *arpPacket) MarshalBinary() ([]byte, error) {
	b := make([]byte, arpLen)
	binary.BigEndian.PutUint16(b[0:2], 1) // Ethernet
	binary.BigEndian.PutUint16(b[2:4], 0x0800)
	b[4], b[5] = 6, 4
	binary.BigEndian.PutUint16(b[6:8], p.Op)
	for _, f := range []struct {
		name string
		hw   net.HardwareAddr
		off  int
	}{{"sender hardware address", p.SenderHW, 8}, {"target hardware address", p.TargetHW, 18}} {
		if len(f.hw) != 0 && len(f.hw) != 6 {
			return nil, fmt.Errorf("arp: %s %v is not 6 bytes", f.name, f.hw)
		}
		copy(b[f.off:f.off+6], f.hw)
	}
	for _, f := range []struct {
		name string
		ip   netip.Addr
		off  int
	}{{"sender protocol address", p.SenderIP, 14}, {"target protocol address", p.TargetIP, 24}} {
		if !f.ip.Is4() {
			return nil, fmt.Errorf("arp: %s %v is not IPv4", f.name, f.ip)
		}
		a := f.ip.As4()
		copy(b[f.off:f.off+4], a[:])
	}
	return b, nil
}

// UnmarshalBinary decodes an Ethernet/IPv4 ARP message. Bytes after the 28
// of the message (Ethernet padding) are ignored.
func (p *arpPacket) UnmarshalBinary(b []byte) error {
	if len(b) < arpLen {
		return fmt.Errorf("%w: %d bytes, want %d", errARPShort, len(b), arpLen)
	}
	if h := binary.BigEndian.Uint16(b[0:2]); h != 1 {
		return fmt.Errorf("arp: hardware type %d is not Ethernet", h)
	}
	if pt := binary.BigEndian.Uint16(b[2:4]); pt != 0x0800 {
		return fmt.Errorf("arp: protocol type %#04x is not IPv4", pt)
	}
	if b[4] != 6 {
		return fmt.Errorf("arp: hardware address length %d, want 6", b[4])
	}
	if b[5] != 4 {
		return fmt.Errorf("arp: protocol address length %d, want 4", b[5])
	}
	p.Op = binary.BigEndian.Uint16(b[6:8])
	p.SenderHW = net.HardwareAddr(append([]byte(nil), b[8:14]...))
	p.SenderIP = netip.AddrFrom4([4]byte(b[14:18]))
	p.TargetHW = net.HardwareAddr(append([]byte(nil), b[18:24]...))
	p.TargetIP = netip.AddrFrom4([4]byte(b[24:28]))
	return nil
}

// probeRequest is an RFC 5227 ARP probe for ip: a request from hw with sender
// address 0.0.0.0, so that asking does not poison anyone's ARP cache.
func probeRequest(hw net.HardwareAddr, ip netip.Addr) arpPacket {
	return arpPacket{Op: arpRequest, SenderHW: hw, SenderIP: netip.IPv4Unspecified(), TargetIP: ip}
}

// claimant returns the address a message shows its sender using or about to
// use, if any: the sender address of any message (a reply, an announcement,
// an ordinary request), or the target of another host's probe (RFC 5227
// §2.1.1: two hosts probing the same address are in conflict).
func (p *arpPacket) claimant() (netip.Addr, bool) {
	if p.SenderIP.Is4() && !p.SenderIP.IsUnspecified() {
		return p.SenderIP, true
	}
	if p.Op == arpRequest && p.SenderIP.IsUnspecified() && p.TargetIP.Is4() && !p.TargetIP.IsUnspecified() {
		return p.TargetIP, true
	}
	return netip.Addr{}, false
}
