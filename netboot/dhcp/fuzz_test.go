package dhcp

import (
	"bytes"
	"net"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// Seeds live in testdata/fuzz/<Name>/.

func FuzzLeaseRecord(f *testing.F) {
	f.Fuzz(func(t *testing.T, line []byte) {
		var r leaseRecord
		if err := r.UnmarshalText(line); err != nil {
			return
		}
		// Whatever parses must marshal back and parse to the same record.
		b, err := r.MarshalText()
		if err != nil {
			t.Fatalf("parsed record does not marshal: %+v: %v", r, err)
		}
		var r2 leaseRecord
		if err := r2.UnmarshalText(b); err != nil {
			t.Fatalf("re-parse of %q: %v", b, err)
		}
		if r.IP != r2.IP || r.State != r2.State || !r.Expiry.Equal(r2.Expiry) || r.HW.String() != r2.HW.String() ||
			!bytes.Equal(r.ClientID, r2.ClientID) || r.Hostname != r2.Hostname {
			t.Fatalf("round trip changed record: %+v -> %+v", r, r2)
		}
	})
}

func FuzzParseLeaseLog(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		recs, bad := parseLeaseLog(data)
		if bad < 0 || len(recs) > bytes.Count(data, []byte{'\n'}) {
			t.Fatalf("%d records from %d lines", len(recs), bytes.Count(data, []byte{'\n'}))
		}
		// Replaying any log must leave a consistent table.
		_, subnet, _ := net.ParseCIDR("10.0.0.0/8")
		cfg := Config{Interface: "f0", ServerIP: net.IPv4(10, 0, 0, 1), Subnet: subnet, RangeStart: net.IPv4(10, 0, 0, 10), RangeEnd: net.IPv4(10, 0, 255, 200)}
		if err := cfg.validate(); err != nil {
			t.Fatal(err)
		}
		tb := newLeaseTable(&cfg)
		tb.load(data)
		for k, l := range tb.byClient {
			if l.key != k {
				t.Fatalf("client index %q points at lease of %q", k, l.key)
			}
		}
	})
}

func FuzzEncapsulatedOptions(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		var e EncapsulatedOptions
		if err := e.UnmarshalBinary(data); err != nil {
			return
		}
		b, err := e.MarshalBinary()
		if err != nil {
			t.Fatalf("parsed options do not marshal: %v", err)
		}
		var e2 EncapsulatedOptions
		if err := e2.UnmarshalBinary(b); err != nil {
			t.Fatalf("re-parse: %v", err)
		}
		if len(e) != len(e2) {
			t.Fatalf("round trip: %d items -> %d", len(e), len(e2))
		}
		for i := range e {
			if e[i].Code != e2[i].Code || !bytes.Equal(e[i].Data, e2[i].Data) {
				t.Fatalf("item %d changed: %v -> %v", i, e[i], e2[i])
			}
		}
	})
}

// FuzzRequestOptions feeds whole DHCP packets through the option handling this
// package writes (firmware classification, boot decision, reply options): no
// panic, and every reply marshals into a packet the library parses.
func FuzzRequestOptions(f *testing.F) {
	_, subnet, _ := net.ParseCIDR("10.0.0.0/24")
	cfg := DefaultConfig()
	cfg.Interface, cfg.ServerIP, cfg.Subnet = "f0", net.IPv4(10, 0, 0, 1), subnet
	cfg.RangeStart, cfg.RangeEnd = net.IPv4(10, 0, 0, 10), net.IPv4(10, 0, 0, 20)
	cfg.BootHTTPBase = "http://10.0.0.1"
	s, err := New(cfg, nil)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, pkt []byte) {
		req, err := dhcpv4.FromBytes(pkt)
		if err != nil || len(req.ClientHWAddr) == 0 {
			return
		}
		ci := classify(req, time.Unix(0, 0))
		reply := s.newReply(req, dhcpv4.MessageTypeOffer)
		s.addLeaseOptions(reply, Host{Name: "n"})
		if b, ok := s.bootFor(ci); ok {
			s.addBootOptions(reply, req, b, false)
		}
		if _, err := dhcpv4.FromBytes(reply.ToBytes()); err != nil {
			t.Fatalf("reply does not parse: %v", err)
		}
		// Whatever the client sent, the lease record it produces must replay.
		tb := newLeaseTable(&s.cfg)
		tb.log = &leaseLog{batch: newCommit()}
		cid := req.GetOneOption(dhcpv4.OptionClientIdentifier)
		if _, err := tb.bind(clientKey(cid, req.ClientHWAddr), req.ClientHWAddr, cid, net.IPv4(10, 0, 0, 11), nil, req.HostName(), time.Hour, time.Unix(0, 0)); err != nil {
			t.Fatalf("bind: %v", err)
		}
		recs, bad := parseLeaseLog(tb.log.pending)
		if len(recs) != 1 || bad != 0 {
			t.Fatalf("record %q does not replay (%d records, %d bad)", tb.log.pending, len(recs), bad)
		}
		replayed := newLeaseTable(&s.cfg)
		replayed.load(tb.log.pending)
		if len(replayed.list()) != 1 || replayed.list()[0].MAC.String() != req.ClientHWAddr.String() {
			t.Fatalf("replayed %+v, want the lease of %v", replayed.list(), req.ClientHWAddr)
		}
	})
}

// FuzzARPPacket: whatever parses as an ARP message marshals back to the same
// 28 bytes, and reading who it claims never fails.
func FuzzARPPacket(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		var p arpPacket
		if err := p.UnmarshalBinary(b); err != nil {
			return
		}
		out, err := p.MarshalBinary()
		if err != nil {
			t.Fatalf("parsed message does not marshal: %+v: %v", p, err)
		}
		if !bytes.Equal(out, b[:arpLen]) {
			t.Fatalf("round trip changed the message:\n%x\n%x", b[:arpLen], out)
		}
		if ip, ok := p.claimant(); ok && (!ip.Is4() || ip.IsUnspecified()) {
			t.Fatalf("claims %v", ip)
		}
	})
}
