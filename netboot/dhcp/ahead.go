package dhcp

import (
	"net"
	"time"
)

// ahead is the probe-ahead state of the lease table, guarded by its mutex:
// addresses of the range already checked free by ARP, so an offer to a new
// client takes one at once instead of waiting for a probe.
type ahead struct {
	on    bool
	valid time.Duration // how long a verification stays good
	// verified maps an address to when it was found free; queue holds the
	// same addresses in that order (stale entries are skipped lazily).
	verified map[uint32]time.Time
	queue    []verifiedAddr
	probing  map[uint32]struct{} // background probes in flight
	cursor   uint32              // where the next search for candidates starts
	// fullUntil pauses candidate searches after one found the range full.
	fullUntil time.Time
	// demand counts offers to new clients since the prober last looked
	// (taken from the verified set or not): the prober sizes the set from it.
	demand int
	// wake, when set, is closed as soon as an address is verified: offers
	// that found the set empty and every free address being probed wait on it.
	wake chan struct{}
}

type verifiedAddr struct {
	ip uint32
	at time.Time
}

func (a *ahead) init(valid time.Duration, start uint32) {
	a.on = true
	a.valid = valid
	a.verified = make(map[uint32]time.Time)
	a.probing = make(map[uint32]struct{})
	a.cursor = start
}

// isVerifiedLocked reports whether ip was found free recently enough.
func (t *leaseTable) isVerifiedLocked(ip uint32, now time.Time) bool {
	at, ok := t.ahead.verified[ip]
	return ok && now.Sub(at) < t.ahead.valid
}

// takeVerifiedLocked hands out the oldest verified address the client may
// have, or reports that none is ready.
func (t *leaseTable) takeVerifiedLocked(key string, hw net.HardwareAddr, now time.Time) (uint32, bool) {
	a := &t.ahead
	i := 0
	defer func() { a.queue = a.queue[i:] }()
	for ; i < len(a.queue); i++ {
		v := a.queue[i]
		at, ok := a.verified[v.ip]
		if !ok || !at.Equal(v.at) {
			continue // taken, dropped or verified again since
		}
		if now.Sub(at) >= a.valid {
			delete(a.verified, v.ip)
			continue
		}
		delete(a.verified, v.ip)
		if t.usableLocked(v.ip, key, hw, now) {
			i++
			return v.ip, true
		}
	}
	return 0, false
}

// aheadCandidatesLocked picks up to n addresses to probe in the background:
// free in the table, not verified, not being probed. They are marked probing.
func (t *leaseTable) aheadCandidatesLocked(n int, now time.Time) []uint32 {
	a := &t.ahead
	if n <= 0 || t.start == 0 || now.Before(a.fullUntil) {
		return nil
	}
	// Drop expired verifications from the front (the queue is in time order),
	// so their addresses can be probed again.
	i := 0
	for ; i < len(a.queue); i++ {
		v := a.queue[i]
		at, ok := a.verified[v.ip]
		if ok && at.Equal(v.at) {
			if now.Sub(at) < a.valid {
				break
			}
			delete(a.verified, v.ip)
		}
	}
	a.queue = a.queue[i:]

	var out []uint32
	size := t.end - t.start + 1
	ip := a.cursor
	var k uint32
	for k = 0; k < size && len(out) < n; k++ {
		if ip > t.end || ip < t.start {
			ip = t.start
		}
		_, probing := a.probing[ip]
		if !probing && !t.isVerifiedLocked(ip, now) && t.usableLocked(ip, "", nil, now) {
			out = append(out, ip)
			a.probing[ip] = struct{}{}
		}
		ip++
	}
	a.cursor = ip
	if k == size && len(out) < n {
		// A full pass: nothing more to find until addresses come free.
		a.fullUntil = now.Add(time.Second)
	}
	return out
}

// aheadDoneLocked records a background probe's result. A free address is
// verified only if it is still free in the table.
func (t *leaseTable) aheadDoneLocked(ip uint32, free bool, now time.Time) {
	delete(t.ahead.probing, ip)
	if free && t.usableLocked(ip, "", nil, now) {
		t.ahead.verified[ip] = now
		t.ahead.queue = append(t.ahead.queue, verifiedAddr{ip: ip, at: now})
		if t.ahead.wake != nil {
			close(t.ahead.wake)
			t.ahead.wake = nil
		}
	}
}

// verifiedReady returns a channel closed once an address is verified (at
// once if some already is), or nil when nothing is being probed either.
func (t *leaseTable) verifiedReady() <-chan struct{} {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.ahead.verified) > 0 {
		c := make(chan struct{})
		close(c)
		return c
	}
	if len(t.ahead.probing) == 0 {
		return nil
	}
	if t.ahead.wake == nil {
		t.ahead.wake = make(chan struct{})
	}
	return t.ahead.wake
}

// holdInUse takes ip out of the pool for hold because the host mac answered
// for it, as a DECLINE would, except for that host itself (StateInUse).
// Nothing changes if the address has meanwhile been offered or leased to a
// client (the conflict is then that client's to detect and DECLINE), so a
// late answer cannot undo a lease.
func (t *leaseTable) holdInUse(ip uint32, mac net.HardwareAddr, offeredTo string, hold time.Duration, now time.Time) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.ahead.on {
		delete(t.ahead.verified, ip)
		delete(t.ahead.probing, ip)
	}
	if l := t.byIP[ip]; l != nil && !(l.offered && l.key == offeredTo) && !t.usableLocked(ip, "", nil, now) {
		return false
	}
	l := &lease{ip: ip, state: StateInUse, expiry: now.Add(hold).Truncate(time.Second), hw: mac, key: inUseKey(mac)}
	t.setLocked(l)
	t.persistLocked(l)
	return true
}

// checked marks the client's offer of ip as checked free: a retransmitted
// DISCOVER now gets it at once.
func (t *leaseTable) checked(ip uint32, key string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if l := t.byIP[ip]; l != nil && l.offered && l.key == key {
		l.checking = false
	}
}

// claimVerified drops ip from the verified set when some host was seen using
// it; it reports whether ip was there (and is now held).
func (t *leaseTable) claimVerified(ip uint32, mac net.HardwareAddr, hold time.Duration, now time.Time) bool {
	t.mu.Lock()
	if _, ok := t.ahead.verified[ip]; !ok {
		t.mu.Unlock()
		return false
	}
	t.mu.Unlock()
	return t.holdInUse(ip, mac, "", hold, now)
}

// verifiedCount is the size of the verified set (metrics, tests).
func (t *leaseTable) verifiedCount() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.ahead.verified)
}
