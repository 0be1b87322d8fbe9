package dhcp

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"hash/crc32"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// LeaseState is the persisted state of an address.
type LeaseState byte

const (
	// StateBound: the address is leased to the client until Expiry.
	StateBound LeaseState = 'b'
	// StateReleased: the client gave the address back; it is kept as a
	// preference for that client and is free for others.
	StateReleased LeaseState = 'r'
	// StateDeclined: a client saw the address in use (DHCPDECLINE); nobody
	// gets it until Expiry (the probation period).
	StateDeclined LeaseState = 'd'
	// StateInUse: another host answered ARP for the address (it uses it
	// without a lease from us); only that host (MAC) gets it until Expiry.
	StateInUse LeaseState = 'u'
)

func (s LeaseState) String() string {
	switch s {
	case StateBound:
		return "bound"
	case StateReleased:
		return "released"
	case StateDeclined:
		return "declined"
	case StateInUse:
		return "in_use"
	}
	return fmt.Sprintf("state(%q)", byte(s))
}

// leaseRecord is one line of the lease log: the whole state of one address at
// one moment. Replaying the lines in order rebuilds the table; the last line
// for an address wins.
//
// Format (space separated, then a CRC-32C of everything before it):
//
//	<ip> <state> <expiry-unix> <hwaddr|-> <client-id-hex|-> <hostname|-> <crc32c-hex>\n
//
// hwaddr is colon-separated for 6, 8 and 20 bytes, else 'x' and hex.
type leaseRecord struct {
	IP       netip.Addr
	State    LeaseState
	Expiry   time.Time // second precision
	HW       net.HardwareAddr
	ClientID []byte
	Hostname string
}

var crcTable = crc32.MakeTable(crc32.Castagnoli)

const leaseLogHeader = "# distonet dhcp lease log v1\n"

// appendText appends the record as one line, newline included.
func (r *leaseRecord) appendText(b []byte) []byte {
	start := len(b)
	b = r.IP.AppendTo(b)
	b = append(b, ' ', byte(r.State), ' ')
	b = strconv.AppendInt(b, r.Expiry.Unix(), 10)
	b = append(b, ' ')
	switch len(r.HW) {
	case 0:
		b = append(b, '-')
	case 6, 8, 20: // the lengths net.ParseMAC reads back
		b = append(b, r.HW.String()...)
	default:
		b = append(b, 'x')
		b = hex.AppendEncode(b, r.HW)
	}
	b = append(b, ' ')
	if len(r.ClientID) == 0 {
		b = append(b, '-')
	} else {
		b = hex.AppendEncode(b, r.ClientID)
	}
	b = append(b, ' ')
	if r.Hostname == "" {
		b = append(b, '-')
	} else {
		b = append(b, r.Hostname...)
	}
	sum := crc32.Checksum(b[start:], crcTable)
	b = append(b, ' ')
	b = fmt.Appendf(b, "%08x", sum)
	return append(b, '\n')
}

// MarshalText encodes the record as one log line without its newline.
func (r *leaseRecord) MarshalText() ([]byte, error) {
	if !r.IP.Is4() {
		return nil, fmt.Errorf("lease record: ip %v is not IPv4", r.IP)
	}
	if !validHostname(r.Hostname) {
		return nil, fmt.Errorf("lease record %s: hostname %q is not a plain DNS label", r.IP, r.Hostname)
	}
	switch r.State {
	case StateBound, StateReleased, StateDeclined, StateInUse:
	default:
		return nil, fmt.Errorf("lease record %s: unknown state %q", r.IP, byte(r.State))
	}
	b := r.appendText(nil)
	return b[:len(b)-1], nil
}

// UnmarshalText decodes one log line (without its newline) and checks its CRC.
func (r *leaseRecord) UnmarshalText(line []byte) error {
	i := bytes.LastIndexByte(line, ' ')
	if i < 0 {
		return fmt.Errorf("lease record: no checksum field")
	}
	body, sumField := line[:i], line[i+1:]
	want, err := strconv.ParseUint(string(sumField), 16, 32)
	if err != nil || len(sumField) != 8 {
		return fmt.Errorf("lease record: checksum field %q: not 8 hex digits", sumField)
	}
	if got := crc32.Checksum(body, crcTable); uint32(want) != got {
		return fmt.Errorf("lease record: checksum %08x, computed %08x (torn or corrupt line)", want, got)
	}
	f := strings.Split(string(body), " ")
	if len(f) != 6 {
		return fmt.Errorf("lease record: %d fields, want 6", len(f))
	}
	var out leaseRecord
	if out.IP, err = netip.ParseAddr(f[0]); err != nil || !out.IP.Is4() {
		return fmt.Errorf("lease record: ip %q: not an IPv4 address", f[0])
	}
	if len(f[1]) != 1 {
		return fmt.Errorf("lease record %s: state %q: want one letter", f[0], f[1])
	}
	out.State = LeaseState(f[1][0])
	switch out.State {
	case StateBound, StateReleased, StateDeclined, StateInUse:
	default:
		return fmt.Errorf("lease record %s: unknown state %q", f[0], f[1])
	}
	sec, err := strconv.ParseInt(f[2], 10, 64)
	if err != nil {
		return fmt.Errorf("lease record %s: expiry %q: %w", f[0], f[2], err)
	}
	out.Expiry = time.Unix(sec, 0)
	switch {
	case f[3] == "-":
	case f[3][0] == 'x':
		if out.HW, err = hex.DecodeString(f[3][1:]); err != nil || len(out.HW) == 0 || len(out.HW) > 16 {
			return fmt.Errorf("lease record %s: hwaddr %q: not 1-16 hex bytes", f[0], f[3])
		}
	default:
		if out.HW, err = net.ParseMAC(f[3]); err != nil {
			return fmt.Errorf("lease record %s: hwaddr %q: %w", f[0], f[3], err)
		}
	}
	if f[4] != "-" {
		if out.ClientID, err = hex.DecodeString(f[4]); err != nil || len(out.ClientID) == 0 {
			return fmt.Errorf("lease record %s: client id %q: not hex", f[0], f[4])
		}
	}
	if f[5] != "-" {
		if !validHostname(f[5]) {
			return fmt.Errorf("lease record %s: hostname %q: not a plain DNS label", f[0], f[5])
		}
		out.Hostname = f[5]
	}
	*r = out
	return nil
}

// validHostname accepts what a lease may carry as a client's host name: letters,
// digits, '-' and '.', at most 253 bytes, and no leading '-'. Anything else a
// client sends is dropped rather than stored or logged.
func validHostname(h string) bool {
	if h == "" {
		return true
	}
	if len(h) > 253 || h[0] == '-' || h == "-" {
		return false
	}
	for i := 0; i < len(h); i++ {
		c := h[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '.':
		default:
			return false
		}
	}
	return true
}

// parseLeaseLog reads a whole log. Lines that fail their checksum are skipped
// and counted (a torn last write after a crash is expected, and so is a
// partial final line without newline); comments and blank lines are ignored.
func parseLeaseLog(data []byte) (recs []leaseRecord, bad int) {
	for len(data) > 0 {
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			// Partial final line: the write that produced it was never acknowledged.
			bad++
			break
		}
		line := data[:i]
		data = data[i+1:]
		if len(line) == 0 || line[0] == '#' {
			continue
		}
		var r leaseRecord
		if err := r.UnmarshalText(line); err != nil {
			bad++
			continue
		}
		recs = append(recs, r)
	}
	return recs, bad
}
