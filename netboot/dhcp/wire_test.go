package dhcp

import (
	"bytes"
	"context"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/insomniacslk/dhcp/dhcpv4"
	"golang.org/x/sys/unix"
)

func TestLeaseRecordText(t *testing.T) {
	hw, _ := net.ParseMAC("52:54:00:12:34:56")
	tests := []struct {
		name string
		rec  leaseRecord
		line string
	}{
		{"bound", leaseRecord{IP: netip.MustParseAddr("10.0.0.5"), State: StateBound, Expiry: time.Unix(1700000000, 0), HW: hw, ClientID: []byte{1, 0x52, 0x54, 0, 0x12, 0x34, 0x56}, Hostname: "node-a"},
			"10.0.0.5 b 1700000000 52:54:00:12:34:56 01525400123456 node-a"},
		{"released-bare", leaseRecord{IP: netip.MustParseAddr("10.0.0.6"), State: StateReleased, Expiry: time.Unix(5, 0)},
			"10.0.0.6 r 5 - - -"},
		{"odd hardware length", leaseRecord{IP: netip.MustParseAddr("10.0.0.8"), State: StateBound, Expiry: time.Unix(9, 0), HW: net.HardwareAddr{1, 2, 3}},
			"10.0.0.8 b 9 x010203 - -"},
		{"declined", leaseRecord{IP: netip.MustParseAddr("10.0.0.7"), State: StateDeclined, Expiry: time.Unix(9, 0), HW: hw},
			"10.0.0.7 d 9 52:54:00:12:34:56 - -"},
		{"in use (answered ARP)", leaseRecord{IP: netip.MustParseAddr("10.0.0.9"), State: StateInUse, Expiry: time.Unix(9, 0), HW: hw},
			"10.0.0.9 u 9 52:54:00:12:34:56 - -"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b, err := tc.rec.MarshalText()
			if err != nil {
				t.Fatal(err)
			}
			body := string(b[:bytes.LastIndexByte(b, ' ')])
			if body != tc.line {
				t.Errorf("line = %q, want %q + checksum", body, tc.line)
			}
			var got leaseRecord
			if err := got.UnmarshalText(b); err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(tc.rec, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); d != "" {
				t.Errorf("round trip (-want +got):\n%s", d)
			}
		})
	}
}

func TestLeaseRecordRejects(t *testing.T) {
	good, _ := (&leaseRecord{IP: netip.MustParseAddr("10.0.0.5"), State: StateBound, Expiry: time.Unix(1, 0)}).MarshalText()
	flip := bytes.Clone(good)
	flip[3] = '9' // 10.0.0.5 -> 10.9.0.5 without fixing the checksum
	tests := []struct {
		name, line, wantErr string
	}{
		{"no checksum", "10.0.0.5 b 1 - - -", "checksum"},
		{"bad checksum", string(flip), "checksum"},
		{"empty", "", "checksum"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var r leaseRecord
			err := r.UnmarshalText([]byte(tc.line))
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("UnmarshalText(%q) = %v, want error about %s", tc.line, err, tc.wantErr)
			}
		})
	}
	if _, err := (&leaseRecord{IP: netip.MustParseAddr("10.0.0.5"), State: StateBound, Hostname: "bad name"}).MarshalText(); err == nil {
		t.Error("hostname with a space accepted")
	}
}

// A torn final line (kill -9 mid-write) and a corrupt line are skipped; the rest replays.
func TestParseLeaseLogSkipsTornAndCorrupt(t *testing.T) {
	var b []byte
	b = append(b, leaseLogHeader...)
	r1 := leaseRecord{IP: netip.MustParseAddr("10.0.0.5"), State: StateBound, Expiry: time.Unix(100, 0)}
	r2 := leaseRecord{IP: netip.MustParseAddr("10.0.0.6"), State: StateBound, Expiry: time.Unix(100, 0)}
	b = r1.appendText(b)
	b = append(b, "garbage line\n"...)
	b = r2.appendText(b)
	torn := r1.appendText(nil)
	b = append(b, torn[:len(torn)/2]...)
	recs, bad := parseLeaseLog(b)
	if len(recs) != 2 || bad != 2 {
		t.Errorf("got %d records, %d bad; want 2 and 2", len(recs), bad)
	}
}

func TestEncapsulatedOptions(t *testing.T) {
	tests := []struct {
		name string
		wire []byte
		want EncapsulatedOptions
		err  bool
	}{
		{"pxe discovery control", []byte{6, 1, 8, 255}, EncapsulatedOptions{{6, []byte{8}}}, false},
		{"pads and no end", []byte{0, 0, 176, 1, 1}, EncapsulatedOptions{{176, []byte{1}}}, false},
		{"stops at end", []byte{1, 0, 255, 9, 9}, EncapsulatedOptions{{1, nil}}, false},
		{"truncated value", []byte{6, 3, 1}, nil, true},
		{"missing length", []byte{6}, nil, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got EncapsulatedOptions
			err := got.UnmarshalBinary(tc.wire)
			if (err != nil) != tc.err {
				t.Fatalf("err = %v, want error %v", err, tc.err)
			}
			if tc.err {
				return
			}
			if d := cmp.Diff(tc.want, got); d != "" {
				t.Errorf("(-want +got):\n%s", d)
			}
		})
	}
	if _, err := (EncapsulatedOptions{{255, nil}}).MarshalBinary(); err == nil {
		t.Error("end code marshalled as an item")
	}
}

func TestParseUserClassAndArch(t *testing.T) {
	for _, tc := range []struct {
		in   []byte
		want []string
	}{
		{[]byte("iPXE"), []string{"iPXE"}},
		{[]byte{4, 'i', 'P', 'X', 'E', 2, 'a', 'b'}, []string{"iPXE", "ab"}},
		{nil, nil},
	} {
		if d := cmp.Diff(tc.want, ParseUserClass(tc.in)); d != "" {
			t.Errorf("ParseUserClass(%q): %s", tc.in, d)
		}
	}
	if a, err := ParseClientArch([]byte{0, 11, 0, 7}); err != nil || a != ArchARM64 {
		t.Errorf("ParseClientArch = %v, %v; want efi-arm64", a, err)
	}
	if _, err := ParseClientArch([]byte{0}); err == nil {
		t.Error("odd-length option 93 accepted")
	}
}

// The allocator in isolation: order of preference, offers, holds, fixed
// addresses, decline and release, and replay of its own log giving the same
// table.
func TestLeaseTable(t *testing.T) {
	_, subnet, _ := net.ParseCIDR("10.0.0.0/24")
	cfg := Config{ServerIP: net.ParseIP("10.0.0.1").To4(), Subnet: subnet, RangeStart: net.ParseIP("10.0.0.10").To4(), RangeEnd: net.ParseIP("10.0.0.12").To4()}
	cfg.Interface = "test0"
	if err := cfg.validate(); err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1000, 0)
	mac := func(i byte) net.HardwareAddr { return net.HardwareAddr{2, 0, 0, 0, 0, i} }
	key := func(i byte) string { return clientKey(nil, mac(i)) }

	tb := newLeaseTable(&cfg)
	ip1, _, err := tb.offer(key(1), mac(1), nil, nil, nil, 30*time.Second, now)
	if err != nil || ip1.String() != "10.0.0.10" {
		t.Fatalf("first offer = %v, %v", ip1, err)
	}
	// Offered addresses are held: the next client gets another one.
	ip2, _, _ := tb.offer(key(2), mac(2), nil, nil, nil, 30*time.Second, now)
	if ip2.Equal(ip1) {
		t.Fatalf("offer hold ignored: both got %v", ip1)
	}
	if _, err := tb.bind(key(1), mac(1), nil, ip1, nil, "a", time.Hour, now); err != nil {
		t.Fatal(err)
	}
	// Another client cannot bind an address bound to client 1.
	if _, err := tb.bind(key(3), mac(3), nil, ip1, nil, "", time.Hour, now); err == nil {
		t.Error("client 3 bound client 1's address")
	}
	// After the hold, client 2's unrequested offer is free again.
	ip3, _, _ := tb.offer(key(3), mac(3), nil, ip2, nil, 30*time.Second, now.Add(time.Minute))
	if !ip3.Equal(ip2) {
		t.Errorf("expired offer not reusable: got %v, want %v", ip3, ip2)
	}
	// A fixed address outside the range.
	fixed := net.ParseIP("10.0.0.50").To4()
	got, _, _ := tb.offer(key(4), mac(4), nil, nil, fixed, 30*time.Second, now)
	if !got.Equal(fixed) {
		t.Errorf("fixed offer = %v, want %v", got, fixed)
	}
	if _, err := tb.bind(key(4), mac(4), nil, fixed, fixed, "n4", time.Hour, now); err != nil {
		t.Error(err)
	}
	// Dynamic client asking for the fixed address: refused.
	if _, err := tb.bind(key(5), mac(5), nil, fixed, nil, "", time.Hour, now); err == nil {
		t.Error("dynamic client bound a fixed address")
	}
	// Decline takes an address out; release frees it.
	if !tb.decline(key(1), mac(1), ip1, 10*time.Minute, now) {
		t.Error("decline refused")
	}
	if tb.usableLocked(ipToU32(ip1), key(6), mac(6), now.Add(time.Minute)) {
		t.Error("declined address usable during hold")
	}
	if !tb.usableLocked(ipToU32(ip1), key(6), mac(6), now.Add(11*time.Minute)) {
		t.Error("declined address unusable after hold")
	}
	if !tb.release(key(4), fixed, now) {
		t.Error("release refused")
	}
	if tb.release(key(5), fixed, now) {
		t.Error("release by a stranger accepted")
	}
}

// Replaying the log of a table gives the same persisted leases, and
// compaction (snapshot) replays to the same state too.
func TestLeaseTableReplay(t *testing.T) {
	_, subnet, _ := net.ParseCIDR("10.0.0.0/24")
	cfg := Config{ServerIP: net.ParseIP("10.0.0.1").To4(), Subnet: subnet, RangeStart: net.ParseIP("10.0.0.10").To4(), RangeEnd: net.ParseIP("10.0.0.200").To4()}
	cfg.Interface = "test0"
	if err := cfg.validate(); err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1000, 0)
	tb := newLeaseTable(&cfg)
	tb.log = &leaseLog{batch: newCommit()}
	for i := byte(1); i <= 40; i++ {
		hw := net.HardwareAddr{2, 0, 0, 0, 0, i}
		k := clientKey(nil, hw)
		ip, _, err := tb.offer(k, hw, nil, nil, nil, time.Minute, now)
		if err != nil {
			t.Fatal(err)
		}
		tb.bind(k, hw, nil, ip, nil, "", time.Hour, now)
		switch i % 4 {
		case 1:
			tb.release(k, ip, now)
		case 2:
			tb.decline(k, hw, ip, time.Hour, now)
		}
	}
	// Client 3 moves to a fixed address: its range address is freed.
	hw3 := net.HardwareAddr{2, 0, 0, 0, 0, 3}
	tb.bind(clientKey(nil, hw3), hw3, nil, net.ParseIP("10.0.0.250"), net.ParseIP("10.0.0.250"), "", time.Hour, now)

	log := append([]byte(leaseLogHeader), tb.log.pending...)
	replayed := newLeaseTable(&cfg)
	replayed.load(log)
	if d := cmp.Diff(tb.list(), replayed.list()); d != "" {
		t.Errorf("replay differs (-live +replayed):\n%s", d)
	}
	snap := newLeaseTable(&cfg)
	tb.mu.Lock()
	s := tb.snapshotLocked()
	tb.mu.Unlock()
	snap.load(s)
	if d := cmp.Diff(tb.list(), snap.list()); d != "" {
		t.Errorf("snapshot differs (-live +snapshot):\n%s", d)
	}
}

func TestUDPFrameChecksums(t *testing.T) {
	payload := []byte("hello dhcp")
	f := udpFrame(net.HardwareAddr{2, 0, 0, 0, 0, 1}, net.HardwareAddr{2, 0, 0, 0, 0, 2}, net.IPv4(10, 0, 0, 1).To4(), net.IPv4(10, 0, 0, 9).To4(), 67, 68, payload)
	ip := f[14:34]
	if checksum(ip, 0) != 0 {
		t.Error("IPv4 header checksum does not verify")
	}
	udp := f[34:]
	ph := uint32(10<<8) + 1 + uint32(10<<8) + 9 + 17 + uint32(len(udp))
	if checksum(udp, ph) != 0 {
		t.Error("UDP checksum does not verify")
	}
	if !bytes.Equal(udp[8:], payload) {
		t.Error("payload not carried")
	}
}

func TestClassify(t *testing.T) {
	req, _ := dhcpv4.New(dhcpv4.WithHwAddr(net.HardwareAddr{2, 0, 0, 0, 0, 1}),
		dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient:Arch:00011:UNDI:003000")),
		dhcpv4.WithOption(dhcpv4.OptGeneric(dhcpv4.GenericOptionCode(93), []byte{0, 11})),
		dhcpv4.WithOption(dhcpv4.OptGeneric(dhcpv4.GenericOptionCode(77), []byte("iPXE"))))
	ci := classify(req, time.Unix(0, 0))
	want := ClientInfo{MAC: req.ClientHWAddr, Arch: ArchARM64, HasArch: true, VendorClass: "PXEClient:Arch:00011:UNDI:003000", UserClass: "iPXE", IPXE: true, Time: time.Unix(0, 0)}
	if d := cmp.Diff(want, ci); d != "" {
		t.Errorf("classify (-want +got):\n%s", d)
	}
}

// The writer compacts a long log into a snapshot (rename over the old file)
// and keeps appending after it; the file then replays to the live table.
func TestLeaseLogCompaction(t *testing.T) {
	_, subnet, _ := net.ParseCIDR("10.0.0.0/24")
	cfg := Config{Interface: "test0", ServerIP: net.ParseIP("10.0.0.1").To4(), Subnet: subnet, RangeStart: net.ParseIP("10.0.0.10").To4(), RangeEnd: net.ParseIP("10.0.0.20").To4()}
	if err := cfg.validate(); err != nil {
		t.Fatal(err)
	}
	path := t.TempDir() + "/leases.log"
	l, data, err := openLeaseLog(path)
	if err != nil {
		t.Fatal(err)
	}
	tb := newLeaseTable(&cfg)
	tb.log = l
	tb.load(data)
	tb.compactEvery = 20
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { tb.runWriter(ctx); close(done) }()
	now := time.Unix(1000, 0)
	hw := net.HardwareAddr{2, 0, 0, 0, 0, 1}
	k := clientKey(nil, hw)
	// One client renewing 200 times: 200 records for one address.
	for i := 0; i < 200; i++ {
		c, err := tb.bind(k, hw, nil, net.ParseIP("10.0.0.10"), nil, "", time.Hour, now.Add(time.Duration(i)*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		if err := wait(context.Background(), c); err != nil {
			t.Fatal(err)
		}
	}
	cancel()
	<-done
	l.close()
	data, err = os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if n := bytes.Count(data, []byte{'\n'}); n > 60 {
		t.Errorf("log has %d lines after 200 renewals of one lease; compaction did not run", n)
	}
	// A second server must not open a log that is in use.
	l2, _, err := openLeaseLog(path)
	if err != nil {
		t.Fatalf("reopen after close: %v", err)
	}
	if _, _, err := openLeaseLog(path); err == nil {
		t.Error("second open of a locked lease log succeeded")
	}
	l2.close()
	replayed := newLeaseTable(&cfg)
	replayed.load(data)
	if d := cmp.Diff(tb.list(), replayed.list()); d != "" {
		t.Errorf("compacted log replays differently (-live +replayed):\n%s", d)
	}
}

// The registry is asked about reservations only for addresses the table would
// give out, and its answers are remembered: a full pool costs it nothing.
func TestReservationLookupsBounded(t *testing.T) {
	_, subnet, _ := net.ParseCIDR("10.0.0.0/16")
	cfg := Config{Interface: "test0", ServerIP: net.ParseIP("10.0.0.1").To4(), Subnet: subnet, RangeStart: net.ParseIP("10.0.1.0").To4(), RangeEnd: net.ParseIP("10.0.4.255").To4()}
	if err := cfg.validate(); err != nil {
		t.Fatal(err)
	}
	tb := newLeaseTable(&cfg)
	calls := 0
	owner := net.HardwareAddr{2, 0, 0, 0, 0, 0xff}
	tb.reservedFor = func(ip net.IP) (net.HardwareAddr, bool) {
		calls++
		if ip.Equal(net.ParseIP("10.0.1.5")) {
			return owner, true
		}
		return nil, false
	}
	now := time.Unix(1000, 0)
	n := 0
	for i := 0; ; i++ {
		hw := net.HardwareAddr{2, 0, 0, 0, byte(i >> 8), byte(i)}
		ip, _, err := tb.offer(clientKey(nil, hw), hw, nil, nil, nil, time.Hour, now)
		if err != nil {
			break
		}
		if ip.Equal(net.ParseIP("10.0.1.5")) {
			t.Fatalf("reserved address offered to %v", hw)
		}
		n++
	}
	if n != 1023 {
		t.Errorf("%d offers from a pool of 1024 with one reserved, want 1023", n)
	}
	if calls > 1024 {
		t.Errorf("%d registry calls to fill a pool of 1024", calls)
	}
	before := calls
	for i := 0; i < 100; i++ {
		hw := net.HardwareAddr{2, 1, 0, 0, 0, byte(i)}
		tb.offer(clientKey(nil, hw), hw, nil, nil, nil, time.Hour, now.Add(2*time.Second))
	}
	if calls != before {
		t.Errorf("full pool: %d registry calls for 100 DISCOVERs, want 0", calls-before)
	}
}

// An expired lease is free for another client; until then it is not.
func TestExpiredLeaseReused(t *testing.T) {
	_, subnet, _ := net.ParseCIDR("10.0.0.0/24")
	cfg := Config{Interface: "test0", ServerIP: net.ParseIP("10.0.0.1").To4(), Subnet: subnet, RangeStart: net.ParseIP("10.0.0.10").To4(), RangeEnd: net.ParseIP("10.0.0.10").To4()}
	if err := cfg.validate(); err != nil {
		t.Fatal(err)
	}
	tb := newLeaseTable(&cfg)
	now := time.Unix(1000, 0)
	a, b := net.HardwareAddr{2, 0, 0, 0, 0, 1}, net.HardwareAddr{2, 0, 0, 0, 0, 2}
	if _, err := tb.bind(clientKey(nil, a), a, nil, net.ParseIP("10.0.0.10"), nil, "", time.Minute, now); err != nil {
		t.Fatal(err)
	}
	if _, _, err := tb.offer(clientKey(nil, b), b, nil, nil, nil, time.Minute, now.Add(59*time.Second)); err == nil {
		t.Error("address offered to b while a's lease runs")
	}
	ip, _, err := tb.offer(clientKey(nil, b), b, nil, nil, nil, time.Minute, now.Add(2*time.Minute))
	if err != nil || !ip.Equal(net.ParseIP("10.0.0.10")) {
		t.Errorf("after expiry: offer %v, %v; want 10.0.0.10", ip, err)
	}
	if n := tb.active(now.Add(2 * time.Minute)); n != 0 {
		t.Errorf("%d active leases after expiry, want 0", n)
	}
}

// The kernel stamps what a timestamping socket receives; rxTime reads it.
func TestRxTimeFromKernel(t *testing.T) {
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	raw, _ := c.SyscallConn()
	raw.Control(func(fd uintptr) { unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1) })
	before := time.Now()
	if _, err := c.WriteToUDP([]byte("x"), c.LocalAddr().(*net.UDPAddr)); err != nil {
		t.Fatal(err)
	}
	buf, oob := make([]byte, 16), make([]byte, 128)
	_, oobn, _, _, err := c.ReadMsgUDP(buf, oob)
	if err != nil {
		t.Fatal(err)
	}
	at, ok := rxTime(oob[:oobn])
	if !ok || at.Before(before.Add(-time.Second)) || at.After(time.Now().Add(time.Second)) {
		t.Errorf("rxTime = %v, %v; sent at %v", at, ok, before)
	}
	if _, ok := rxTime(nil); ok {
		t.Error("time read from no control data")
	}
}

func TestConfigValidate(t *testing.T) {
	good := func() Config {
		_, subnet, _ := net.ParseCIDR("10.0.0.0/24")
		c := DefaultConfig()
		c.Interface, c.ServerIP, c.Subnet = "eth0", net.ParseIP("10.0.0.1"), subnet
		c.RangeStart, c.RangeEnd = net.ParseIP("10.0.0.10"), net.ParseIP("10.0.0.20")
		return c
	}
	tests := []struct {
		name   string
		change func(*Config)
		want   []string // "" for valid
	}{
		{"valid", func(*Config) {}, nil},
		{"proxy needs no range", func(c *Config) { c.Mode, c.RangeStart, c.RangeEnd = ModeProxy, nil, nil }, nil},
		{"bad mode", func(c *Config) { c.Mode = "relay" }, []string{"dhcp.mode"}},
		{"no interface", func(c *Config) { c.Interface = "" }, []string{"dhcp.interface"}},
		{"server outside subnet", func(c *Config) { c.ServerIP = net.ParseIP("10.9.0.1") }, []string{"dhcp.server_ip"}},
		{"range reversed", func(c *Config) { c.RangeStart, c.RangeEnd = c.RangeEnd, c.RangeStart }, []string{"dhcp.range"}},
		{"range outside", func(c *Config) { c.RangeEnd = net.ParseIP("10.0.1.5") }, []string{"dhcp.range"}},
		{"short lease", func(c *Config) { c.LeaseTime = time.Second }, []string{"dhcp.lease_time"}},
		{"bad base", func(c *Config) { c.BootHTTPBase = "10.0.0.1" }, []string{"dhcp.boot_http_base"}},
		{"bad prefix", func(c *Config) { c.HTTPBootPrefix = "boot" }, []string{"dhcp.http_boot_prefix"}},
		{"two at once", func(c *Config) { c.Mode, c.Interface = "x", "" }, []string{"dhcp.mode", "dhcp.interface"}},
		{"ARP probe timeout too short", func(c *Config) { c.ARPProbeTimeout = time.Millisecond }, []string{"dhcp.arp_probe_timeout"}},
		{"ARP probe timeout too long", func(c *Config) { c.ARPProbeTimeout = time.Minute }, []string{"dhcp.arp_probe_timeout"}},
		{"ARP checks inline only", func(c *Config) { c.ARPProbeAhead = -1 }, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := good()
			tc.change(&c)
			err := c.validate()
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("validate: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("validate accepted; want errors about %v", tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not name %s", err, w)
				}
			}
		})
	}
}

// When the log cannot be written, the commit reports the error: the server
// then withholds the ACK (request waits on it), so no client holds a lease
// the log does not.
func TestCommitFailsWhenLogUnwritable(t *testing.T) {
	_, subnet, _ := net.ParseCIDR("10.0.0.0/24")
	cfg := Config{Interface: "test0", ServerIP: net.ParseIP("10.0.0.1").To4(), Subnet: subnet, RangeStart: net.ParseIP("10.0.0.10").To4(), RangeEnd: net.ParseIP("10.0.0.20").To4()}
	if err := cfg.validate(); err != nil {
		t.Fatal(err)
	}
	path := t.TempDir() + "/leases.log"
	l, _, err := openLeaseLog(path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.close()
	// Swap in a read-only handle: every append fails, as on a full or failed disk.
	l.f.Close()
	if l.f, err = os.Open(path); err != nil {
		t.Fatal(err)
	}
	tb := newLeaseTable(&cfg)
	tb.log = l
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { tb.runWriter(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	hw := net.HardwareAddr{2, 0, 0, 0, 0, 1}
	c, err := tb.bind(clientKey(nil, hw), hw, nil, net.ParseIP("10.0.0.10"), nil, "", time.Hour, time.Unix(1000, 0))
	if err != nil {
		t.Fatal(err)
	}
	if err := wait(context.Background(), c); err == nil {
		t.Fatal("commit succeeded on an unwritable log")
	}
}

// A failed append (a partial record on disk) is cut away before the next
// batch, so the next acknowledged record replays.
func TestPartialWriteRepaired(t *testing.T) {
	path := t.TempDir() + "/leases.log"
	l, _, err := openLeaseLog(path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.close()
	r1 := leaseRecord{IP: netip.MustParseAddr("10.0.0.5"), State: StateBound, Expiry: time.Unix(100, 0)}
	if err := l.write(r1.appendText(nil)); err != nil {
		t.Fatal(err)
	}
	// Simulate a write that got half a record out before failing.
	half := r1.appendText(nil)
	if _, err := l.f.Write(half[:len(half)/2]); err != nil {
		t.Fatal(err)
	}
	l.dirty = true
	r2 := leaseRecord{IP: netip.MustParseAddr("10.0.0.6"), State: StateBound, Expiry: time.Unix(100, 0)}
	if err := l.write(r2.appendText(nil)); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(path)
	recs, bad := parseLeaseLog(data)
	if len(recs) != 2 || bad != 0 || recs[1].IP != r2.IP {
		t.Errorf("after repair: %d records, %d bad; want both, none bad:\n%s", len(recs), bad, data)
	}
}
