package dhcp

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mdlayher/packet"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// arpProber checks that addresses are unused before they are offered: it
// broadcasts RFC 5227 probes on the boot interface and reads every ARP message
// that claims an address of the dynamic range. A probe that nobody answers
// within the timeout means the address is free; any answer (or any other
// claim of the address seen meanwhile) means some host uses it.
type arpProber struct {
	conn    *packet.Conn
	hw      net.HardwareAddr
	timeout time.Duration
	// claimed is told of a claim on an address with no probe in flight, so
	// addresses already verified free can be dropped.
	claimed func(ip uint32, mac net.HardwareAddr)

	closed atomic.Bool

	mu      sync.Mutex
	pending map[uint32][]*arpProbe
	fresh   []*arpProbe // in their first half, in send order
	resent  []*arpProbe // in their second half (sent again if asked), in send order
}

// arpProbe is one address being checked.
type arpProbe struct {
	ip     uint32
	allow  net.HardwareAddr // the client it is for: its own answer is no conflict
	resend bool             // send a second probe half-way
	sent   time.Time
	done   chan struct{}
	inUse  net.HardwareAddr // set before done closes when someone answered
	// finish is called once, outside the lock, when the probe ends.
	finish   func(*arpProbe)
	finished bool
}

var bcastHW = net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

// newARPProber opens the ARP socket on ifi. Only messages claiming an address
// in [start, end] reach user space (a BPF filter in the kernel), so a busy
// campus LAN's ARP chatter costs nothing.
func newARPProber(ifi *net.Interface, start, end uint32, timeout time.Duration) (*arpProber, error) {
	filter, err := bpf.Assemble(arpRangeFilter(start, end))
	if err != nil {
		return nil, fmt.Errorf("arp filter: %w", err)
	}
	c, err := packet.Listen(ifi, packet.Datagram, unix.ETH_P_ARP, &packet.Config{Filter: filter})
	if err != nil {
		return nil, fmt.Errorf("arp socket on %s: %w", ifi.Name, err)
	}
	// Our own probes would come back otherwise (they carry no sender
	// address, so they could not be mistaken for a claim, but they cost a read).
	if rc, err := c.SyscallConn(); err == nil {
		_ = rc.Control(func(fd uintptr) {
			_ = unix.SetsockoptInt(int(fd), unix.SOL_PACKET, unix.PACKET_IGNORE_OUTGOING, 1)
		})
	}
	return &arpProber{
		conn:    c,
		hw:      ifi.HardwareAddr,
		timeout: timeout,
		pending: make(map[uint32][]*arpProbe),
	}, nil
}

// arpRangeFilter accepts an ARP message whose sender address is in
// [start, end], or a probe (sender 0.0.0.0) whose target is. On a datagram
// packet socket the filter sees the ARP message at offset 0.
func arpRangeFilter(start, end uint32) []bpf.Instruction {
	return []bpf.Instruction{
		bpf.LoadAbsolute{Off: 14, Size: 4}, // sender protocol address
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: 0, SkipTrue: 3},
		bpf.JumpIf{Cond: bpf.JumpLessThan, Val: start, SkipTrue: 6},
		bpf.JumpIf{Cond: bpf.JumpGreaterThan, Val: end, SkipTrue: 5},
		bpf.RetConstant{Val: 0xffff},
		bpf.LoadAbsolute{Off: 24, Size: 4}, // target protocol address
		bpf.JumpIf{Cond: bpf.JumpLessThan, Val: start, SkipTrue: 2},
		bpf.JumpIf{Cond: bpf.JumpGreaterThan, Val: end, SkipTrue: 1},
		bpf.RetConstant{Val: 0xffff},
		bpf.RetConstant{Val: 0},
	}
}

// start sends a probe for each address and returns them in flight; finish
// (may be nil) is called as each ends. With resend, a second probe goes out
// half-way, so one lost frame cannot hide a host. Addresses whose probe could
// not be sent are returned with the error and not started.
func (a *arpProber) start(ips []uint32, allow net.HardwareAddr, resend bool, finish func(*arpProbe)) ([]*arpProbe, []uint32, error) {
	probes := make([]*arpProbe, 0, len(ips))
	var failed []uint32
	var firstErr error
	for _, ip := range ips {
		// In flight before it is sent: on a fast link the answer can be
		// read before send returns.
		p := &arpProbe{ip: ip, allow: allow, resend: resend, sent: time.Now(), done: make(chan struct{}), finish: finish}
		a.mu.Lock()
		a.pending[ip] = append(a.pending[ip], p)
		a.mu.Unlock()
		if err := a.send(ip); err != nil {
			a.mu.Lock()
			if !p.finished {
				a.endLocked(p, nil) // the caller hears of it through failed
			}
			a.mu.Unlock()
			failed = append(failed, ip)
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		a.mu.Lock()
		if !p.finished {
			a.fresh = append(a.fresh, p)
		}
		a.mu.Unlock()
		probes = append(probes, p)
	}
	return probes, failed, firstErr
}

func (a *arpProber) send(ip uint32) error {
	req := probeRequest(a.hw, netip.AddrFrom4([4]byte(u32ToIP(ip))))
	b, err := req.MarshalBinary()
	if err != nil {
		return err
	}
	if _, err := a.conn.WriteTo(b, &packet.Addr{HardwareAddr: bcastHW}); err != nil {
		return fmt.Errorf("arp probe for %v: %w", u32ToIP(ip), err)
	}
	return nil
}

// check probes one address for the client allow and waits for the answer:
// the MAC that answered, or nil when the address is free.
func (a *arpProber) check(ctx context.Context, ip uint32, allow net.HardwareAddr) (net.HardwareAddr, error) {
	ps, _, err := a.start([]uint32{ip}, allow, true, nil)
	if err != nil {
		return nil, err
	}
	select {
	case <-ps[0].done:
		return ps[0].inUse, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// run reads ARP messages and ends probes until ctx is done; it closes the socket.
func (a *arpProber) run(ctx context.Context) {
	readDone := make(chan struct{})
	go func() { defer close(readDone); a.read() }()
	tick := time.NewTicker(max(a.timeout/8, time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			a.closed.Store(true)
			a.conn.Close()
			<-readDone
			a.endAll()
			return
		case now := <-tick.C:
			a.sweep(now)
		}
	}
}

// sweep resends probes half-way through their time when asked to, and ends
// the unanswered ones as free.
func (a *arpProber) sweep(now time.Time) {
	var again []uint32
	var ended []*arpProbe
	a.mu.Lock()
	i := 0
	for ; i < len(a.fresh) && now.Sub(a.fresh[i].sent) >= a.timeout/2; i++ {
		if p := a.fresh[i]; !p.finished {
			if p.resend {
				again = append(again, p.ip)
			}
			a.resent = append(a.resent, p)
		}
	}
	a.fresh = compactFront(a.fresh, i)
	i = 0
	for ; i < len(a.resent) && now.Sub(a.resent[i].sent) >= a.timeout; i++ {
		if p := a.resent[i]; !p.finished {
			ended = append(ended, a.endLocked(p, nil))
		}
	}
	a.resent = compactFront(a.resent, i)
	a.mu.Unlock()
	for _, ip := range again {
		_ = a.send(ip) // the first probe went out; a failed second one only weakens the check
	}
	for _, p := range ended {
		a.finished(p)
	}
}

// compactFront drops the first n entries, reusing the array.
func compactFront(s []*arpProbe, n int) []*arpProbe {
	if n == 0 {
		return s
	}
	m := copy(s, s[n:])
	clear(s[m:])
	return s[:m]
}

// endLocked marks p ended; the caller calls finished(p) after unlocking.
func (a *arpProber) endLocked(p *arpProbe, inUse net.HardwareAddr) *arpProbe {
	p.finished = true
	p.inUse = inUse
	list := a.pending[p.ip]
	for j, q := range list {
		if q == p {
			list = append(list[:j], list[j+1:]...)
			break
		}
	}
	if len(list) == 0 {
		delete(a.pending, p.ip)
	} else {
		a.pending[p.ip] = list
	}
	return p
}

func (a *arpProber) finished(p *arpProbe) {
	close(p.done)
	if p.finish != nil {
		p.finish(p)
	}
}

// endAll ends what is still in flight at shutdown as unanswered.
func (a *arpProber) endAll() {
	a.mu.Lock()
	var ended []*arpProbe
	for _, list := range a.pending {
		for _, p := range list {
			if !p.finished {
				ended = append(ended, p)
			}
		}
	}
	for _, p := range ended {
		a.endLocked(p, nil)
	}
	a.fresh, a.resent = nil, nil
	a.mu.Unlock()
	for _, p := range ended {
		a.finished(p)
	}
}

func (a *arpProber) read() {
	buf := make([]byte, 1500)
	for {
		n, _, err := a.conn.ReadFrom(buf)
		if err != nil {
			if a.closed.Load() {
				return
			}
			// E.g. the link went down: answers cannot arrive meanwhile, and
			// reading resumes when it is back.
			time.Sleep(10 * time.Millisecond)
			continue
		}
		var m arpPacket
		if m.UnmarshalBinary(buf[:n]) != nil || bytes.Equal(m.SenderHW, a.hw) {
			continue
		}
		ip, ok := m.claimant()
		if !ok {
			continue
		}
		a.claim(ipToU32(ip.AsSlice()), m.SenderHW)
	}
}

// claim ends every probe of ip that mac is not allowed to answer, or reports
// the claim when no probe of ip is in flight.
func (a *arpProber) claim(ip uint32, mac net.HardwareAddr) {
	var ended []*arpProbe
	a.mu.Lock()
	list := a.pending[ip]
	probing := len(list) > 0
	for _, p := range append([]*arpProbe(nil), list...) {
		if p.allow != nil && bytes.Equal(p.allow, mac) {
			continue
		}
		ended = append(ended, a.endLocked(p, mac))
	}
	a.mu.Unlock()
	for _, p := range ended {
		a.finished(p)
	}
	if !probing && a.claimed != nil {
		a.claimed(ip, mac)
	}
}
