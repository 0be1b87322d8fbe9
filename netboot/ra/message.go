package ra

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"time"
)

// ICMPv6 types of router discovery (RFC 4861 §4.1, §4.2).
const (
	typeRouterSolicitation  = 133
	typeRouterAdvertisement = 134
)

// NDP option types used here.
const (
	optSourceLinkAddr = 1
	optMTU            = 5
)

// RouterAdvertisement is an ICMPv6 Router Advertisement (RFC 4861 §4.2). Only
// the fields and options the appliance sends are modelled; other options are
// skipped when parsing.
type RouterAdvertisement struct {
	CurHopLimit    uint8
	Managed        bool          // M: addresses from DHCPv6
	Other          bool          // O: other configuration from DHCPv6
	RouterLifetime time.Duration // 0: not a default router; whole seconds up to 65535
	ReachableTime  time.Duration // milliseconds; 0 unspecified
	RetransTimer   time.Duration // milliseconds; 0 unspecified
	SourceLinkAddr net.HardwareAddr
	MTU            uint32 // 0: option omitted
}

// MarshalBinary encodes the message from the ICMPv6 type on. The checksum is
// left zero: the kernel fills it in for raw ICMPv6 sockets (RFC 3542 §3.1).
func (r *RouterAdvertisement) MarshalBinary() ([]byte, error) {
	if r.RouterLifetime < 0 || r.RouterLifetime > 65535*time.Second {
		return nil, fmt.Errorf("router advertisement: router lifetime %v outside 0..65535s", r.RouterLifetime)
	}
	if len(r.SourceLinkAddr) > 0 && len(r.SourceLinkAddr) != 6 {
		return nil, fmt.Errorf("router advertisement: source link-layer address %v is not 6 bytes", r.SourceLinkAddr)
	}
	b := make([]byte, 16, 32)
	b[0] = typeRouterAdvertisement
	b[4] = r.CurHopLimit
	if r.Managed {
		b[5] |= 0x80
	}
	if r.Other {
		b[5] |= 0x40
	}
	binary.BigEndian.PutUint16(b[6:8], uint16(r.RouterLifetime/time.Second))
	binary.BigEndian.PutUint32(b[8:12], uint32(r.ReachableTime/time.Millisecond))
	binary.BigEndian.PutUint32(b[12:16], uint32(r.RetransTimer/time.Millisecond))
	if len(r.SourceLinkAddr) == 6 {
		b = append(b, optSourceLinkAddr, 1)
		b = append(b, r.SourceLinkAddr...)
	}
	if r.MTU != 0 {
		b = append(b, optMTU, 1, 0, 0)
		b = binary.BigEndian.AppendUint32(b, r.MTU)
	}
	return b, nil
}

var errShort = errors.New("too short")

// UnmarshalBinary decodes a Router Advertisement from its ICMPv6 type on.
func (r *RouterAdvertisement) UnmarshalBinary(b []byte) error {
	if len(b) < 16 {
		return fmt.Errorf("router advertisement: %d bytes: %w", len(b), errShort)
	}
	if b[0] != typeRouterAdvertisement || b[1] != 0 {
		return fmt.Errorf("router advertisement: type %d code %d, want 134/0", b[0], b[1])
	}
	out := RouterAdvertisement{
		CurHopLimit:    b[4],
		Managed:        b[5]&0x80 != 0,
		Other:          b[5]&0x40 != 0,
		RouterLifetime: time.Duration(binary.BigEndian.Uint16(b[6:8])) * time.Second,
		ReachableTime:  time.Duration(binary.BigEndian.Uint32(b[8:12])) * time.Millisecond,
		RetransTimer:   time.Duration(binary.BigEndian.Uint32(b[12:16])) * time.Millisecond,
	}
	opts := b[16:]
	for len(opts) > 0 {
		if len(opts) < 2 {
			return fmt.Errorf("router advertisement: option header: %w", errShort)
		}
		n := int(opts[1]) * 8
		if n == 0 {
			return fmt.Errorf("router advertisement: option %d has length 0", opts[0])
		}
		if n > len(opts) {
			return fmt.Errorf("router advertisement: option %d: %d bytes declared, %d left: %w", opts[0], n, len(opts), errShort)
		}
		switch opts[0] {
		case optSourceLinkAddr:
			if n == 8 {
				out.SourceLinkAddr = append(net.HardwareAddr(nil), opts[2:8]...)
			}
		case optMTU:
			out.MTU = binary.BigEndian.Uint32(opts[4:8])
		}
		opts = opts[n:]
	}
	*r = out
	return nil
}

// isRouterSolicitation reports whether an ICMPv6 message is a well-formed
// Router Solicitation (RFC 4861 §6.1.1: code 0, at least 8 bytes).
func isRouterSolicitation(b []byte) bool {
	return len(b) >= 8 && b[0] == typeRouterSolicitation && b[1] == 0
}
