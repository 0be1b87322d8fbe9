package dhcp

import (
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/net/bpf"
)

var addrCmp = cmp.Comparer(func(a, b netip.Addr) bool { return a == b })

func TestARPPacketWire(t *testing.T) {
	us := net.HardwareAddr{0x02, 0, 0, 0, 0, 1}
	them := net.HardwareAddr{0x52, 0x54, 0, 0xab, 0xcd, 0xef}
	tests := []struct {
		name string
		pkt  arpPacket
		wire string // hex
	}{
		{"probe", probeRequest(us, netip.MustParseAddr("10.1.2.3")),
			"0001080006040001" + "020000000001" + "00000000" + "000000000000" + "0a010203"},
		{"reply", arpPacket{Op: arpReply, SenderHW: them, SenderIP: netip.MustParseAddr("10.1.2.3"), TargetHW: us, TargetIP: netip.IPv4Unspecified()},
			"0001080006040002" + "525400abcdef" + "0a010203" + "020000000001" + "00000000"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b, err := tc.pkt.MarshalBinary()
			if err != nil {
				t.Fatal(err)
			}
			if got := hexString(b); got != tc.wire {
				t.Errorf("wire = %s, want %s", got, tc.wire)
			}
			// Ethernet pads ARP to 46 bytes: the padding is ignored.
			var got arpPacket
			if err := got.UnmarshalBinary(append(b, make([]byte, 18)...)); err != nil {
				t.Fatal(err)
			}
			want := tc.pkt
			if want.TargetHW == nil {
				want.TargetHW = net.HardwareAddr{0, 0, 0, 0, 0, 0}
			}
			if d := cmp.Diff(want, got, addrCmp); d != "" {
				t.Errorf("round trip (-want +got):\n%s", d)
			}
		})
	}
}

func hexString(b []byte) string {
	const digits = "0123456789abcdef"
	var sb strings.Builder
	for _, c := range b {
		sb.WriteByte(digits[c>>4])
		sb.WriteByte(digits[c&15])
	}
	return sb.String()
}

func TestARPPacketRejects(t *testing.T) {
	good, _ := (&arpPacket{Op: arpReply, SenderHW: net.HardwareAddr{2, 0, 0, 0, 0, 1}, SenderIP: netip.MustParseAddr("10.0.0.9"), TargetIP: netip.MustParseAddr("10.0.0.1")}).MarshalBinary()
	patch := func(off int, v ...byte) []byte {
		b := append([]byte(nil), good...)
		copy(b[off:], v)
		return b
	}
	tests := []struct {
		name, wantErr string
		b             []byte
	}{
		{"short", "short packet", good[:27]},
		{"token ring", "hardware type 6", patch(0, 0, 6)},
		{"ipv6", "protocol type 0x86dd", patch(2, 0x86, 0xdd)},
		{"hlen", "hardware address length 8", patch(4, 8)},
		{"plen", "protocol address length 16", patch(5, 16)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var p arpPacket
			err := p.UnmarshalBinary(tc.b)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("err = %v, want one naming %q", err, tc.wantErr)
			}
		})
	}
	if err := (&arpPacket{}).UnmarshalBinary(nil); !errors.Is(err, errARPShort) {
		t.Errorf("empty: %v, want errARPShort", err)
	}
	for _, p := range []arpPacket{
		{SenderHW: net.HardwareAddr{1, 2, 3}, SenderIP: netip.MustParseAddr("10.0.0.1"), TargetIP: netip.MustParseAddr("10.0.0.2")},
		{SenderIP: netip.MustParseAddr("fe80::1"), TargetIP: netip.MustParseAddr("10.0.0.2")},
		{SenderIP: netip.MustParseAddr("10.0.0.1")},
	} {
		if _, err := p.MarshalBinary(); err == nil {
			t.Errorf("MarshalBinary(%+v) accepted", p)
		}
	}
}

func TestARPClaimant(t *testing.T) {
	hw := net.HardwareAddr{2, 0, 0, 0, 0, 7}
	ip := netip.MustParseAddr("10.0.0.50")
	zero := netip.IPv4Unspecified()
	tests := []struct {
		name string
		pkt  arpPacket
		want netip.Addr // invalid: no claim
	}{
		{"reply", arpPacket{Op: arpReply, SenderHW: hw, SenderIP: ip, TargetIP: zero}, ip},
		{"request from a host using it", arpPacket{Op: arpRequest, SenderHW: hw, SenderIP: ip, TargetIP: netip.MustParseAddr("10.0.0.1")}, ip},
		{"announcement", arpPacket{Op: arpRequest, SenderHW: hw, SenderIP: ip, TargetIP: ip}, ip},
		{"another host's probe", arpPacket{Op: arpRequest, SenderHW: hw, SenderIP: zero, TargetIP: ip}, ip},
		{"reply without sender", arpPacket{Op: arpReply, SenderHW: hw, SenderIP: zero, TargetIP: ip}, netip.Addr{}},
		{"probe for nothing", arpPacket{Op: arpRequest, SenderHW: hw, SenderIP: zero, TargetIP: zero}, netip.Addr{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := tc.pkt.claimant()
			if ok != tc.want.IsValid() || got != tc.want {
				t.Errorf("claimant = %v, %v; want %v", got, ok, tc.want)
			}
		})
	}
}

// The kernel filter passes exactly the messages that claim an address of the
// range, run here in x/net/bpf's interpreter over the wire bytes.
func TestARPRangeFilter(t *testing.T) {
	start, end := ipToU32(net.IPv4(10, 0, 1, 0)), ipToU32(net.IPv4(10, 0, 1, 255))
	vm, err := bpf.NewVM(arpRangeFilter(start, end))
	if err != nil {
		t.Fatal(err)
	}
	hw := net.HardwareAddr{2, 0, 0, 0, 0, 7}
	msg := func(op uint16, sender, target string) []byte {
		b, err := (&arpPacket{Op: op, SenderHW: hw, SenderIP: netip.MustParseAddr(sender), TargetIP: netip.MustParseAddr(target)}).MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	tests := []struct {
		name string
		b    []byte
		pass bool
	}{
		{"reply from the range", msg(arpReply, "10.0.1.7", "0.0.0.0"), true},
		{"first address", msg(arpRequest, "10.0.1.0", "10.0.0.1"), true},
		{"last address", msg(arpRequest, "10.0.1.255", "10.0.0.1"), true},
		{"sender below the range", msg(arpRequest, "10.0.0.255", "10.0.1.7"), false},
		{"sender above the range", msg(arpReply, "10.0.2.0", "10.0.1.7"), false},
		{"probe for the range", msg(arpRequest, "0.0.0.0", "10.0.1.9"), true},
		{"probe elsewhere", msg(arpRequest, "0.0.0.0", "10.0.3.9"), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n, err := vm.Run(tc.b)
			if err != nil {
				t.Fatal(err)
			}
			if (n > 0) != tc.pass {
				t.Errorf("filter returned %d, want pass=%v", n, tc.pass)
			}
		})
	}
}

// The lease table with probing on: background candidates, the verified set
// the offers take from, its expiry, and holds that never undo a lease.
func TestProbeAheadTable(t *testing.T) {
	_, subnet, _ := net.ParseCIDR("10.0.0.0/24")
	newTable := func() *leaseTable {
		cfg := Config{Interface: "test0", ServerIP: net.IPv4(10, 0, 0, 1).To4(), Subnet: subnet, RangeStart: net.IPv4(10, 0, 0, 10).To4(), RangeEnd: net.IPv4(10, 0, 0, 14).To4()}
		if err := cfg.validate(); err != nil {
			t.Fatal(err)
		}
		tb := newLeaseTable(&cfg)
		tb.ahead.init(30*time.Second, tb.start)
		return tb
	}
	mac := func(i byte) net.HardwareAddr { return net.HardwareAddr{2, 0, 0, 0, 0, i} }
	key := func(i byte) string { return clientKey(nil, mac(i)) }
	ip := func(last byte) uint32 { return ipToU32(net.IPv4(10, 0, 0, last)) }
	now := time.Unix(1_800_000_000, 0)

	t.Run("offers take verified addresses in order, without a check", func(t *testing.T) {
		tb := newTable()
		tb.mu.Lock()
		cands := tb.aheadCandidatesLocked(3, now)
		if d := cmp.Diff([]uint32{ip(10), ip(11), ip(12)}, cands); d != "" {
			t.Errorf("candidates (-want +got):\n%s", d)
		}
		tb.aheadDoneLocked(ip(11), true, now)
		tb.aheadDoneLocked(ip(10), true, now)
		tb.aheadDoneLocked(ip(12), false, now) // its probe failed: not verified
		tb.mu.Unlock()
		// Then the inline path goes on from where the prober stopped (.13),
		// and wraps to what it left behind (.12).
		for i, want := range []struct {
			ip    uint32
			check bool
		}{{ip(11), false}, {ip(10), false}, {ip(13), true}, {ip(14), true}, {ip(12), true}} {
			got, check, err := tb.offer(key(byte(i+1)), mac(byte(i+1)), nil, nil, nil, time.Minute, now)
			if err != nil || ipToU32(got) != want.ip || check != want.check {
				t.Errorf("offer %d = %v, check %v, %v; want %v, check %v", i, got, check, err, u32ToIP(want.ip), want.check)
			}
		}
	})

	t.Run("an offer waits rather than take an address being probed", func(t *testing.T) {
		tb := newTable()
		tb.mu.Lock()
		tb.aheadCandidatesLocked(5, now)
		tb.mu.Unlock()
		if _, _, err := tb.offer(key(1), mac(1), nil, nil, nil, time.Minute, now); !errors.Is(err, errProbing) {
			t.Fatalf("offer while the whole range is probed: %v, want errProbing", err)
		}
		ready := tb.verifiedReady()
		select {
		case <-ready:
			t.Fatal("ready before any address was verified")
		default:
		}
		tb.mu.Lock()
		tb.aheadDoneLocked(ip(14), true, now)
		tb.mu.Unlock()
		<-ready // closed by the verification
		if got, check, err := tb.offer(key(1), mac(1), nil, nil, nil, time.Minute, now); err != nil || ipToU32(got) != ip(14) || check {
			t.Errorf("offer = %v, %v, %v; want the verified .14 unchecked", got, check, err)
		}
	})

	t.Run("verifications expire and are probed again", func(t *testing.T) {
		tb := newTable()
		tb.mu.Lock()
		tb.aheadCandidatesLocked(1, now)
		tb.aheadDoneLocked(ip(10), true, now)
		later := now.Add(31 * time.Second)
		cands := tb.aheadCandidatesLocked(5, later)
		tb.mu.Unlock()
		// The cursor moved on: .11-.14 first, then .10 again after the wrap.
		if d := cmp.Diff([]uint32{ip(11), ip(12), ip(13), ip(14), ip(10)}, cands); d != "" {
			t.Errorf("candidates after expiry (-want +got):\n%s", d)
		}
		if n := tb.verifiedCount(); n != 0 {
			t.Errorf("%d verified after expiry, want 0", n)
		}
	})

	t.Run("own lease and fixed address are not checked", func(t *testing.T) {
		tb := newTable()
		got, _, _ := tb.offer(key(1), mac(1), nil, nil, nil, time.Minute, now)
		tb.checked(ipToU32(got), key(1))
		if _, err := tb.bind(key(1), mac(1), nil, got, nil, "", time.Hour, now); err != nil {
			t.Fatal(err)
		}
		// The client boots again (a new DISCOVER): its own address, unchecked.
		again, check, err := tb.offer(key(1), mac(1), nil, nil, nil, time.Minute, now.Add(time.Minute))
		if err != nil || !again.Equal(got) || check {
			t.Errorf("own lease: %v, check %v, %v; want %v unchecked", again, check, err, got)
		}
		// An enrolled node's fixed address (here inside the range): unchecked.
		fixed := net.IPv4(10, 0, 0, 13).To4()
		f, check, err := tb.offer(key(2), mac(2), nil, nil, fixed, time.Minute, now)
		if err != nil || !f.Equal(fixed) || check {
			t.Errorf("fixed address: %v, check %v, %v; want %v unchecked", f, check, err, fixed)
		}
	})

	t.Run("a retransmission waits for the check under way", func(t *testing.T) {
		tb := newTable()
		got, check, err := tb.offer(key(1), mac(1), nil, nil, nil, time.Minute, now)
		if err != nil || !check {
			t.Fatalf("first offer = %v, check %v, %v; want one to check", got, check, err)
		}
		if _, _, err := tb.offer(key(1), mac(1), nil, nil, nil, time.Minute, now); !errors.Is(err, errChecking) {
			t.Errorf("retransmission while checking: %v, want errChecking", err)
		}
		tb.checked(ipToU32(got), key(1))
		again, check, err := tb.offer(key(1), mac(1), nil, nil, nil, time.Minute, now)
		if err != nil || !again.Equal(got) || check {
			t.Errorf("retransmission after the check = %v, check %v, %v; want %v unchecked", again, check, err, got)
		}
	})

	t.Run("requested address", func(t *testing.T) {
		tb := newTable()
		// Verified: given unchecked. Unknown: checked. Being probed: not given.
		tb.mu.Lock()
		tb.aheadCandidatesLocked(2, now) // .10 .11
		tb.aheadDoneLocked(ip(10), true, now)
		tb.mu.Unlock()
		for _, tc := range []struct {
			client, want byte
			check        bool
			req          byte
		}{{1, 10, false, 10}, {2, 13, true, 13}, {3, 12, true, 11}} {
			got, check, err := tb.offer(key(tc.client), mac(tc.client), nil, net.IPv4(10, 0, 0, tc.req), nil, time.Minute, now)
			if err != nil || ipToU32(got) != ip(tc.want) || check != tc.check {
				t.Errorf("client %d asking for .%d: %v, check %v, %v; want .%d, check %v", tc.client, tc.req, got, check, err, tc.want, tc.check)
			}
		}
	})

	t.Run("holds", func(t *testing.T) {
		tb := newTable()
		squatter := net.HardwareAddr{2, 0xee, 0, 0, 0, 1}
		// A background result for a free address holds it.
		if !tb.holdInUse(ip(10), squatter, "", 10*time.Minute, now) {
			t.Error("free address not held")
		}
		// Offered to client 1: a late background answer does not take it
		// away, the inline check made for client 1 does.
		got, _, _ := tb.offer(key(1), mac(1), nil, nil, nil, time.Minute, now)
		if tb.holdInUse(ipToU32(got), squatter, "", time.Minute, now) {
			t.Error("an address offered to a client was held by a background answer")
		}
		if !tb.holdInUse(ipToU32(got), squatter, key(1), time.Minute, now) {
			t.Error("the inline check could not hold the address it checked")
		}
		// Bound: never held.
		got, _, _ = tb.offer(key(2), mac(2), nil, nil, nil, time.Minute, now)
		if _, err := tb.bind(key(2), mac(2), nil, got, nil, "", time.Hour, now); err != nil {
			t.Fatal(err)
		}
		if tb.holdInUse(ipToU32(got), squatter, key(2), time.Minute, now) {
			t.Error("a bound lease was turned into a hold")
		}
		var held []string
		for _, l := range tb.list() {
			if l.State == StateInUse {
				held = append(held, l.IP.String()+" "+l.MAC.String())
			}
		}
		if d := cmp.Diff([]string{"10.0.0.10 02:ee:00:00:00:01", "10.0.0.11 02:ee:00:00:00:01"}, held); d != "" {
			t.Errorf("held (-want +got):\n%s", d)
		}
		// The host seen using an address may have it (its lease was lost,
		// say, with the lease file): by asking for it, or renewing it.
		if got, check, err := tb.offer(clientKey(nil, squatter), squatter, nil, net.IPv4(10, 0, 0, 10), nil, time.Minute, now); err != nil || ipToU32(got) != ip(10) || check {
			t.Errorf("holder asking for its address: %v, check %v, %v; want .10 unchecked", got, check, err)
		}
		if _, err := tb.bind(clientKey(nil, squatter), squatter, nil, u32ToIP(ip(11)), nil, "", time.Hour, now); err != nil {
			t.Errorf("holder renewing its address: %v", err)
		}
		var states []string
		for _, l := range tb.list() {
			states = append(states, l.IP.String()+" "+l.State.String()+" "+l.MAC.String())
		}
		// .10 is now offered to the holder (offers are not listed).
		if d := cmp.Diff([]string{"10.0.0.11 bound 02:ee:00:00:00:01", "10.0.0.12 bound 02:00:00:00:00:02"}, states); d != "" {
			t.Errorf("after the holder came (-want +got):\n%s", d)
		}
	})

	t.Run("a hold never touches the holder's lease elsewhere", func(t *testing.T) {
		tb := newTable()
		got, _, _ := tb.offer(key(1), mac(1), nil, nil, nil, time.Minute, now)
		tb.checked(ipToU32(got), key(1))
		if _, err := tb.bind(key(1), mac(1), nil, got, nil, "", time.Hour, now); err != nil {
			t.Fatal(err)
		}
		// Client 1 also answers for .14 (an alias): .14 is held, its lease stays.
		if !tb.holdInUse(ip(14), mac(1), "", time.Minute, now) {
			t.Fatal("not held")
		}
		if l, _, _ := tb.offer(key(2), mac(2), nil, got, nil, time.Minute, now); l.Equal(got) {
			t.Errorf("client 1's address %v offered to client 2 after the hold", got)
		}
		again, _, err := tb.offer(key(1), mac(1), nil, nil, nil, time.Minute, now)
		if err != nil || !again.Equal(got) {
			t.Errorf("client 1 now offered %v, %v; want its lease %v", again, err, got)
		}
	})

	t.Run("held addresses are skipped", func(t *testing.T) {
		tb := newTable()
		squatter := net.HardwareAddr{2, 0xee, 0, 0, 0, 1}
		tb.holdInUse(ip(10), squatter, "", 10*time.Minute, now)
		tb.holdInUse(ip(11), squatter, "", 10*time.Minute, now)
		got, _, _ := tb.offer(key(2), mac(2), nil, nil, nil, time.Minute, now)
		if _, err := tb.bind(key(2), mac(2), nil, got, nil, "", time.Hour, now); err != nil {
			t.Fatal(err)
		}
		// Held addresses are neither offered nor probed until the hold ends.
		tb.mu.Lock()
		cands := tb.aheadCandidatesLocked(5, now)
		tb.mu.Unlock()
		if d := cmp.Diff([]uint32{ip(13), ip(14)}, cands); d != "" {
			t.Errorf("candidates with holds (-want +got):\n%s", d)
		}
	})
}
