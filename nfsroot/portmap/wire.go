// Package portmap is a portmapper (RFC 1833: portmap v2, rpcbind v3 and v4) that answers
// for the programs of one server, over TCP and UDP; and a client that registers those
// programs with a host rpcbind when one already owns port 111.
package portmap

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/distonet/distonet/nfsroot/oncrpc"
)

// Program is the portmapper's RPC program number.
const Program = 100000

// Protocols of a v2 mapping.
const (
	TCP = 6
	UDP = 17
)

// Mapping is a portmap v2 mapping: a program version reachable on a protocol and port.
type Mapping struct {
	Prog, Vers, Prot, Port uint32
}

// MarshalBinary encodes a mapping.
func (m Mapping) MarshalBinary() ([]byte, error) { return m.appendTo(nil), nil }

func (m Mapping) appendTo(b []byte) []byte {
	for _, v := range [4]uint32{m.Prog, m.Vers, m.Prot, m.Port} {
		b = oncrpc.AppendUint32(b, v)
	}
	return b
}

// UnmarshalBinary decodes a mapping; trailing bytes are an error.
func (m *Mapping) UnmarshalBinary(b []byte) error {
	d := oncrpc.NewDecoder(b)
	m.decode(d)
	if d.Err == nil && len(d.B) != 0 {
		return fmt.Errorf("mapping: %d trailing bytes", len(d.B))
	}
	if d.Err != nil {
		return fmt.Errorf("mapping: %w", d.Err)
	}
	return nil
}

func (m *Mapping) decode(d *oncrpc.Decoder) {
	m.Prog = d.Uint32("prog")
	m.Vers = d.Uint32("vers")
	m.Prot = d.Uint32("prot")
	m.Port = d.Uint32("port")
}

// maxRPCBString bounds the strings of an rpcb (netids and addresses are short).
const maxRPCBString = 1024

// RPCB is an rpcbind v3/v4 registration: netid "tcp" or "udp", Addr a universal address.
type RPCB struct {
	Prog, Vers uint32
	Netid      string
	Addr       string
	Owner      string
}

// MarshalBinary encodes an rpcb.
func (r RPCB) MarshalBinary() ([]byte, error) { return r.appendTo(nil), nil }

func (r RPCB) appendTo(b []byte) []byte {
	b = oncrpc.AppendUint32(b, r.Prog)
	b = oncrpc.AppendUint32(b, r.Vers)
	b = oncrpc.AppendString(b, r.Netid)
	b = oncrpc.AppendString(b, r.Addr)
	return oncrpc.AppendString(b, r.Owner)
}

// UnmarshalBinary decodes an rpcb; trailing bytes are an error.
func (r *RPCB) UnmarshalBinary(b []byte) error {
	d := oncrpc.NewDecoder(b)
	r.decode(d)
	if d.Err == nil && len(d.B) != 0 {
		return fmt.Errorf("rpcb: %d trailing bytes", len(d.B))
	}
	if d.Err != nil {
		return fmt.Errorf("rpcb: %w", d.Err)
	}
	return nil
}

func (r *RPCB) decode(d *oncrpc.Decoder) {
	r.Prog = d.Uint32("r_prog")
	r.Vers = d.Uint32("r_vers")
	r.Netid = d.String("r_netid", maxRPCBString)
	r.Addr = d.String("r_addr", maxRPCBString)
	r.Owner = d.String("r_owner", maxRPCBString)
}

// UniversalAddr formats an IPv4 or IPv6 address and port as an rpcbind universal
// address ("10.0.0.1.8.1" for port 2049).
func UniversalAddr(ip netip.Addr, port uint16) string {
	return ip.Unmap().String() + "." + strconv.Itoa(int(port>>8)) + "." + strconv.Itoa(int(port&0xff))
}

// ParseUniversalAddr is the inverse of UniversalAddr.
func ParseUniversalAddr(s string) (netip.Addr, uint16, error) {
	i := strings.LastIndexByte(s, '.')
	if i < 0 {
		return netip.Addr{}, 0, fmt.Errorf("universal address %q: no port", s)
	}
	j := strings.LastIndexByte(s[:i], '.')
	if j < 0 {
		return netip.Addr{}, 0, fmt.Errorf("universal address %q: no port", s)
	}
	hi, err1 := strconv.ParseUint(s[j+1:i], 10, 8)
	lo, err2 := strconv.ParseUint(s[i+1:], 10, 8)
	if err1 != nil || err2 != nil {
		return netip.Addr{}, 0, fmt.Errorf("universal address %q: bad port", s)
	}
	ip, err := netip.ParseAddr(s[:j])
	if err != nil {
		return netip.Addr{}, 0, fmt.Errorf("universal address %q: %w", s, err)
	}
	return ip, uint16(hi<<8 | lo), nil
}
