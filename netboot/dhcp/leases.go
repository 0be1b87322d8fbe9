package dhcp

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// Lease is a client's claim on an address, as the table holds it.
type Lease struct {
	IP       net.IP
	MAC      net.HardwareAddr
	ClientID []byte
	Hostname string
	State    LeaseState
	Expiry   time.Time
}

// lease is a table entry. Offers live only in memory (offered == true); every
// other change is also written to the log.
type lease struct {
	ip       uint32
	state    LeaseState
	offered  bool
	checking bool // offered, not sent yet: its ARP check is under way
	expiry   time.Time
	hw       net.HardwareAddr
	clientID []byte
	key      string
	hostname string
}

// fixedOwner is the node a fixed address belongs to, as last learnt.
type fixedOwner struct {
	hw   string
	seen time.Time
}

const fixedTTL = time.Minute

// clientKey identifies a client: its client identifier (option 61) when it
// sends one, else its hardware address (RFC 2131 §4.2).
// A client identifier that is just hardware type 1 plus the MAC (what iPXE,
// udhcpc and systemd-networkd send by default) is the MAC: the PXE ROM and the
// OS that sends no identifier (dhclient) then share one lease.
func clientKey(clientID []byte, hw net.HardwareAddr) string {
	if len(clientID) == len(hw)+1 && clientID[0] == 1 && string(clientID[1:]) == string(hw) {
		return "h" + string(hw)
	}
	if len(clientID) > 0 {
		return "i" + string(clientID)
	}
	return "h" + string(hw)
}

// leaseTable allocates addresses and remembers leases. One mutex guards it and
// the pending log buffer, so records reach the log in the order the table
// changed.
type leaseTable struct {
	mu       sync.Mutex
	byIP     map[uint32]*lease
	byClient map[string]*lease
	start    uint32 // dynamic range, inclusive
	end      uint32
	cursor   uint32
	server   uint32
	subnet   *net.IPNet
	net0     uint32 // network and broadcast addresses are never leased
	bcast    uint32
	// reservedFor says whether an address is some enrolled node's fixed address.
	reservedFor func(ip net.IP) (net.HardwareAddr, bool)
	// fixed remembers fixed addresses learnt from Host lookups and reservedFor
	// answers, for fixedTTL, so scans do not ask the registry again and again
	// (and a node's old address is released soon after its record changes).
	fixed map[uint32]fixedOwner

	exhaustedUntil time.Time
	// ahead holds addresses checked free by ARP (when probing is on).
	ahead        ahead
	log          *leaseLog // nil: memory only
	logger       *slog.Logger
	kick         chan struct{}
	compactEvery int
	// Group-commit counters: records written and syncs that made them durable.
	written, syncs atomic.Uint64
}

func newLeaseTable(cfg *Config) *leaseTable {
	t := &leaseTable{
		byIP:         make(map[uint32]*lease),
		byClient:     make(map[string]*lease),
		subnet:       cfg.Subnet,
		fixed:        make(map[uint32]fixedOwner),
		logger:       cfg.Logger,
		kick:         make(chan struct{}, 1),
		compactEvery: 10000,
	}
	if cfg.ServerIP.To4() != nil {
		t.server = ipToU32(cfg.ServerIP)
	}
	if cfg.RangeStart != nil {
		t.start, t.end = ipToU32(cfg.RangeStart), ipToU32(cfg.RangeEnd)
		t.cursor = t.start
	}
	if cfg.Subnet != nil {
		n := ipToU32(cfg.Subnet.IP.Mask(cfg.Subnet.Mask))
		ones, bits := cfg.Subnet.Mask.Size()
		t.net0 = n
		t.bcast = n | (1<<(bits-ones) - 1)
	}
	return t
}

// load replays a lease log into the table.
func (t *leaseTable) load(data []byte) (records, bad int) {
	recs, bad := parseLeaseLog(data)
	t.mu.Lock()
	defer t.mu.Unlock()
	for i := range recs {
		t.applyLocked(&recs[i])
	}
	if t.log != nil {
		t.log.records = len(recs)
	}
	return len(recs), bad
}

// applyLocked puts a persisted record into the maps. It is the one place where
// a client moves between addresses, used both live and on replay, so both
// agree: a client holds at most one address; the newest record for an address
// wins.
func (t *leaseTable) applyLocked(r *leaseRecord) *lease {
	ip := ipToU32(r.IP.AsSlice())
	l := &lease{ip: ip, state: r.State, expiry: r.Expiry, hw: r.HW, clientID: r.ClientID, hostname: r.Hostname}
	l.key = clientKey(r.ClientID, r.HW)
	if r.State == StateInUse {
		l.key = inUseKey(r.HW)
	}
	t.setLocked(l)
	return l
}

// inUseKey names a StateInUse entry: never a client's key, since the host
// that answered ARP may also be a client of ours with a lease elsewhere.
func inUseKey(hw net.HardwareAddr) string { return "a" + string(hw) }

// setLocked installs l as the entry of its address and of its client.
func (t *leaseTable) setLocked(l *lease) {
	if old := t.byIP[l.ip]; old != nil && old.key != l.key && t.byClient[old.key] == old {
		delete(t.byClient, old.key)
	}
	if l.state == StateInUse {
		// No client's lease: it only takes the address.
		t.byIP[l.ip] = l
		return
	}
	if prev := t.byClient[l.key]; prev != nil && prev.ip != l.ip && t.byIP[prev.ip] == prev {
		delete(t.byIP, prev.ip)
	}
	t.byIP[l.ip] = l
	if l.state == StateDeclined {
		if t.byClient[l.key] != nil && t.byClient[l.key].ip == l.ip {
			delete(t.byClient, l.key)
		}
		return
	}
	t.byClient[l.key] = l
}

// persistLocked queues the record of l and returns the commit that will carry it.
func (t *leaseTable) persistLocked(l *lease) *commit {
	if t.log == nil {
		return nil
	}
	r := leaseRecord{IP: netip.AddrFrom4([4]byte(u32ToIP(l.ip))), State: l.state, Expiry: l.expiry, HW: l.hw, ClientID: l.clientID, Hostname: l.hostname}
	t.log.pending = r.appendText(t.log.pending)
	t.log.records++
	if t.log.records > t.compactEvery && t.log.records > 4*len(t.byIP) {
		t.log.compact = true
	}
	c := t.log.batch
	select {
	case t.kick <- struct{}{}:
	default:
	}
	return c
}

// wait blocks until c is durable.
func wait(ctx context.Context, c *commit) error {
	if c == nil {
		return nil
	}
	select {
	case <-c.done:
		return c.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// runWriter is the single goroutine that writes the log. It returns after a
// final flush once ctx is done.
func (t *leaseTable) runWriter(ctx context.Context) {
	if t.log == nil {
		return
	}
	var spare []byte
	var lastErr time.Time
	failed := 0
	for {
		stop := false
		select {
		case <-t.kick:
		case <-ctx.Done():
			stop = true
		}
		t.mu.Lock()
		c := t.log.batch
		t.log.batch = newCommit()
		var err error
		if t.log.compact {
			t.log.compact = false
			snap := t.snapshotLocked()
			t.log.pending = t.log.pending[:0]
			t.log.records = bytes.Count(snap, []byte{'\n'}) - 1
			t.mu.Unlock()
			err = t.log.replace(snap)
		} else {
			buf := t.log.pending
			t.log.pending = spare[:0]
			t.mu.Unlock()
			if len(buf) > 0 {
				err = t.log.write(buf)
				t.written.Add(uint64(bytes.Count(buf, []byte{'\n'})))
				t.syncs.Add(1)
			}
			spare = buf
		}
		if err != nil {
			// One line per 10 s: a full disk under a boot storm fails every batch.
			if now := time.Now(); now.Sub(lastErr) >= 10*time.Second {
				t.logger.Error("lease log write failed; acknowledgements withheld", "stage", "dhcp", "err", err, "failed_batches", failed+1)
				lastErr, failed = now, 0
			} else {
				failed++
			}
		}
		c.err = err
		close(c.done)
		if stop {
			return
		}
	}
}

// snapshotLocked serialises every persisted lease, oldest address first.
func (t *leaseTable) snapshotLocked() []byte {
	b := []byte(leaseLogHeader)
	ips := make([]uint32, 0, len(t.byIP))
	for ip, l := range t.byIP {
		if !l.offered {
			ips = append(ips, ip)
		}
	}
	sort.Slice(ips, func(i, j int) bool { return ips[i] < ips[j] })
	for _, ip := range ips {
		l := t.byIP[ip]
		r := leaseRecord{IP: netip.AddrFrom4([4]byte(u32ToIP(ip))), State: l.state, Expiry: l.expiry, HW: l.hw, ClientID: l.clientID, Hostname: l.hostname}
		b = r.appendText(b)
	}
	return b
}

// inRange reports whether ip is in the dynamic range.
func (t *leaseTable) inRange(ip uint32) bool { return t.start != 0 && ip >= t.start && ip <= t.end }

// usableLocked reports whether ip may be given to the client with key/hw now.
// The lease table is consulted before the registry, so a scan over a full
// pool never calls the registry.
func (t *leaseTable) usableLocked(ip uint32, key string, hw net.HardwareAddr, now time.Time) bool {
	if ip == t.server || ip == t.net0 || ip == t.bcast {
		return false
	}
	if l := t.byIP[ip]; l != nil {
		switch {
		case l.state == StateDeclined:
			if !now.After(l.expiry) {
				return false
			}
		case l.state == StateInUse:
			// The host seen using it may have it: a lease lost with the
			// lease file must not cost a running node its address.
			if !now.After(l.expiry) && !bytes.Equal(l.hw, hw) {
				return false
			}
		case l.key == key, l.state == StateReleased:
		default:
			if !now.After(l.expiry) {
				return false
			}
		}
	}
	if o, ok := t.fixed[ip]; ok {
		if now.Sub(o.seen) < fixedTTL {
			return o.hw == string(hw)
		}
		delete(t.fixed, ip)
	}
	if t.reservedFor != nil {
		if mac, ok := t.reservedFor(u32ToIP(ip)); ok {
			t.fixed[ip] = fixedOwner{hw: string(mac), seen: now}
			return bytes.Equal(mac, hw)
		}
	}
	return true
}

// errExhausted: no address is free for a new client.
var errExhausted = errors.New("address range exhausted")

// offer picks an address for a DISCOVER and holds it for the client.
// fixed is the client's enrolled address, if any. check is true when the
// address is new to the client and was not verified free by ARP in advance:
// with probing on, the caller checks it before offering.
func (t *leaseTable) offer(key string, hw net.HardwareAddr, clientID []byte, requested, fixed net.IP, hold time.Duration, now time.Time) (ip net.IP, check bool, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	v, check, err := t.chooseLocked(key, hw, requested, fixed, now)
	if err != nil {
		return nil, false, err
	}
	if l := t.byIP[v]; l != nil && l.key == key && !l.offered && l.state == StateBound && now.Before(l.expiry) {
		// The client already holds it: nothing to reserve.
		return u32ToIP(v), false, nil
	}
	ip = u32ToIP(v)
	l := &lease{ip: v, state: StateBound, offered: true, checking: check, expiry: now.Add(hold), hw: hw, clientID: clientID, key: key}
	if prev := t.byClient[key]; prev != nil && prev.ip == v {
		l.hostname = prev.hostname
	}
	// An offer must not erase the client's persisted lease elsewhere, so it
	// only takes the address slot.
	if old := t.byIP[v]; old != nil && old.key != key && t.byClient[old.key] == old {
		delete(t.byClient, old.key)
	}
	t.byIP[v] = l
	if prev := t.byClient[key]; prev == nil || prev.ip == v || t.byIP[prev.ip] != prev {
		t.byClient[key] = l
	}
	return ip, check, nil
}

// chooseLocked applies the allocation order: the enrolled address; the
// client's current or last address; the address it asks for; the next free
// one in the range (with ARP probing on: the oldest one verified free, else
// the next free one, to be checked).
func (t *leaseTable) chooseLocked(key string, hw net.HardwareAddr, requested, fixed net.IP, now time.Time) (ip uint32, check bool, err error) {
	if fixed != nil {
		ip := ipToU32(fixed)
		t.fixed[ip] = fixedOwner{hw: string(hw), seen: now}
		if t.usableLocked(ip, key, hw, now) {
			return ip, false, nil
		}
		t.logger.Warn("fixed address held by another client; giving a dynamic one until it is free", "stage", "dhcp", "mac", hw.String(), "ip", fixed.String())
	}
	if l := t.byClient[key]; l != nil && t.byIP[l.ip] == l && t.inRange(l.ip) && t.usableLocked(l.ip, key, hw, now) {
		if l.offered && l.checking && now.Before(l.expiry) {
			return 0, false, errChecking
		}
		return l.ip, false, nil
	}
	if requested != nil && requested.To4() != nil {
		ip := ipToU32(requested)
		if t.inRange(ip) && t.usableLocked(ip, key, hw, now) {
			switch {
			case !t.ahead.on:
				return ip, false, nil
			case t.byIP[ip] != nil && t.byIP[ip].key == key:
				return ip, false, nil // its own, released or expired
			case t.byIP[ip] != nil && t.byIP[ip].state == StateInUse:
				return ip, false, nil // usable, so this host is the one seen using it
			case t.isVerifiedLocked(ip, now):
				delete(t.ahead.verified, ip)
				t.ahead.demand++
				return ip, false, nil
			}
			if _, busy := t.ahead.probing[ip]; !busy {
				t.ahead.demand++
				return ip, true, nil
			}
			// Being checked in the background: take a verified one instead.
		}
	}
	if t.start == 0 {
		return 0, false, errExhausted
	}
	if t.ahead.on {
		if ip, ok := t.takeVerifiedLocked(key, hw, now); ok {
			t.ahead.demand++
			return ip, false, nil
		}
	}
	if now.Before(t.exhaustedUntil) {
		return 0, false, errExhausted
	}
	// Next-fit scan: fresh addresses first in a young pool, O(1) amortised.
	// With probing on it starts where the background prober stopped: what
	// lies behind is leased, verified (and just found empty) or being probed.
	size := t.end - t.start + 1
	cursor := &t.cursor
	if t.ahead.on {
		cursor = &t.ahead.cursor
	}
	ip = *cursor
	probing := false
	for i := uint32(0); i < size; i++ {
		if ip > t.end || ip < t.start {
			ip = t.start
		}
		if t.usableLocked(ip, key, hw, now) {
			if _, busy := t.ahead.probing[ip]; !busy {
				*cursor = ip + 1
				if t.ahead.on {
					t.ahead.demand++
				}
				return ip, t.ahead.on, nil
			}
			probing = true
		}
		ip++
	}
	if probing {
		// Every free address is being checked: the caller waits for one.
		return 0, false, errProbing
	}
	// Scanning a full pool for every DISCOVER of a boot storm is wasted work;
	// look again after a short pause or when an address is freed.
	t.exhaustedUntil = now.Add(time.Second)
	return 0, false, errExhausted
}

// errChecking: the client's offer waits for its ARP check (a retransmitted DISCOVER).
var errChecking = errors.New("offer being checked")

// errProbing: the free addresses are all being checked by ARP right now.
var errProbing = errors.New("free addresses are being probed")

// errNotYours: the address cannot be confirmed for this client (NAK).
var errNotYours = errors.New("address not available to this client")

// bind confirms an address for a REQUEST. selecting is true when the client
// answers our offer (server identifier present); then the address must be the
// one offered or otherwise free. Without an offer (INIT-REBOOT, RENEWING,
// REBINDING) the server acknowledges an address that is the client's or free,
// which also recovers clients whose leases predate a lost lease file.
func (t *leaseTable) bind(key string, hw net.HardwareAddr, clientID []byte, ip net.IP, fixed net.IP, hostname string, leaseTime time.Duration, now time.Time) (*commit, error) {
	v := ipToU32(ip)
	t.mu.Lock()
	defer t.mu.Unlock()
	if fixed != nil && !fixed.Equal(ip) {
		// An enrolled node must use its own address: make it start over.
		return nil, errNotYours
	}
	if fixed == nil && !t.inRange(v) {
		return nil, errNotYours
	}
	if fixed != nil {
		t.fixed[v] = fixedOwner{hw: string(hw), seen: now}
	}
	if !t.usableLocked(v, key, hw, now) {
		return nil, errNotYours
	}
	if !validHostname(hostname) {
		// The log format has no room for it; the node still gets option 12.
		hostname = ""
	}
	l := &lease{ip: v, state: StateBound, expiry: now.Add(leaseTime).Truncate(time.Second), hw: hw, clientID: clientID, key: key, hostname: hostname}
	t.setLocked(l)
	return t.persistLocked(l), nil
}

// forgetOffer drops an offer the client declined by choosing another server.
func (t *leaseTable) forgetOffer(key string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if l := t.byClient[key]; l != nil && l.offered && t.byIP[l.ip] == l {
		delete(t.byIP, l.ip)
		delete(t.byClient, key)
	}
}

// release ends the client's lease on ip (DHCPRELEASE). The record is queued
// but not waited for: losing it in a crash only keeps the address reserved
// until it expires.
func (t *leaseTable) release(key string, ip net.IP, now time.Time) bool {
	v := ipToU32(ip)
	t.mu.Lock()
	defer t.mu.Unlock()
	l := t.byIP[v]
	if l == nil || l.key != key || l.offered || l.state != StateBound {
		return false
	}
	nl := *l
	nl.state, nl.expiry = StateReleased, now.Truncate(time.Second)
	t.setLocked(&nl)
	t.persistLocked(&nl)
	t.exhaustedUntil = time.Time{}
	return true
}

// decline takes ip out of the pool for hold after a client saw it in use.
func (t *leaseTable) decline(key string, hw net.HardwareAddr, ip net.IP, hold time.Duration, now time.Time) bool {
	v := ipToU32(ip)
	t.mu.Lock()
	defer t.mu.Unlock()
	l := t.byIP[v]
	if l == nil || l.key != key {
		return false
	}
	nl := &lease{ip: v, state: StateDeclined, expiry: now.Add(hold).Truncate(time.Second), hw: hw, key: key}
	t.setLocked(nl)
	t.persistLocked(nl)
	return true
}

// active counts addresses bound and unexpired.
func (t *leaseTable) active(now time.Time) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for _, l := range t.byIP {
		if !l.offered && l.state == StateBound && now.Before(l.expiry) {
			n++
		}
	}
	return n
}

// list returns the persisted leases, by address.
func (t *leaseTable) list() []Lease {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]Lease, 0, len(t.byIP))
	for _, l := range t.byIP {
		if l.offered {
			continue
		}
		out = append(out, Lease{IP: u32ToIP(l.ip), MAC: bytes.Clone(l.hw), ClientID: bytes.Clone(l.clientID), Hostname: l.hostname, State: l.state, Expiry: l.expiry})
	}
	sort.Slice(out, func(i, j int) bool { return ipToU32(out[i].IP) < ipToU32(out[j].IP) })
	return out
}

func (t *leaseTable) String() string {
	return fmt.Sprintf("leaseTable(%d entries)", len(t.byIP))
}
