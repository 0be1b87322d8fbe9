package dhcp

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// maxAhead caps the verified set however hard the storm.
const maxAhead = 4096

// maxChecks bounds the addresses tried for one DISCOVER when hosts keep
// answering: each answer arrives fast, but a LAN full of squatters must not
// keep one DISCOVER probing for long (the client sends another).
const maxChecks = 4

// startARP opens the ARP socket on the boot interface.
func (s *Server) startARP(ifi *net.Interface) error {
	if len(ifi.HardwareAddr) != 6 {
		return fmt.Errorf("interface %s is not Ethernet", ifi.Name)
	}
	a, err := newARPProber(ifi, s.table.start, s.table.end, s.cfg.ARPProbeTimeout)
	if err != nil {
		return err
	}
	a.claimed = func(ip uint32, mac net.HardwareAddr) {
		if s.table.claimVerified(ip, mac, s.cfg.DeclineHold, time.Now()) {
			s.m.arp.WithLabelValues(probeSeen, probeInUse).Inc()
			s.logInUse(ip, mac, "seen in ARP traffic")
		}
	}
	s.arp = a
	return nil
}

// maxParked bounds the DISCOVERs waiting for an ARP check at once (about a
// probe timeout's worth of a storm far beyond what the server sustains);
// beyond it a DISCOVER goes unanswered and its client sends it again.
const maxParked = 4096

// park runs fn in a goroutine of its own unless maxParked already wait.
func (s *Server) park(fn func()) bool {
	select {
	case s.parkSem <- struct{}{}:
	default:
		return false
	}
	s.parked.Add(1)
	go func() {
		defer s.parked.Done()
		defer func() { <-s.parkSem }()
		fn()
	}()
	return true
}

// offerChecked finishes an offer that needs ARP: ip was reserved for the
// client and is probed now (its client may answer for it: it is then using
// its own address); or, with errProbing, every free address was being
// probed in the background and the first one found free is taken. An
// address found in use is held and the next one tried.
func (s *Server) offerChecked(ctx context.Context, req *dhcpv4.DHCPv4, host Host, ip net.IP, err error) (net.IP, error) {
	key := s.key(req)
	waited := false
	check := err == nil
	s.kickAhead() // the verified set ran dry: the prober makes it bigger
	for try := 0; try < maxChecks; try++ {
		if try > 0 || waited {
			ip, check, err = s.table.offer(key, req.ClientHWAddr, req.GetOneOption(dhcpv4.OptionClientIdentifier), req.RequestedIPAddress(), host.IP, s.cfg.OfferHold, time.Now())
		}
		if errors.Is(err, errProbing) && !waited {
			waited = true
			if ready := s.table.verifiedReady(); ready != nil {
				t := time.NewTimer(s.cfg.ARPProbeTimeout * 2)
				select {
				case <-ready:
				case <-t.C:
				case <-ctx.Done():
				}
				t.Stop()
			}
			try--
			continue
		}
		if err != nil {
			return nil, err
		}
		if !check {
			return ip, nil
		}
		v := ipToU32(ip)
		mac, err := s.arp.check(ctx, v, req.ClientHWAddr)
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			// Offering unchecked is what a server without probing does.
			s.log.Warn("ARP probe failed; offering unchecked", "mac", req.ClientHWAddr.String(), "ip", ip.String(), "err", err)
			s.table.checked(v, key)
			return ip, nil
		}
		if mac == nil {
			s.m.arp.WithLabelValues(probeInline, probeFree).Inc()
			s.table.checked(v, key)
			return ip, nil
		}
		s.m.arp.WithLabelValues(probeInline, probeInUse).Inc()
		if s.table.holdInUse(v, mac, key, s.cfg.DeclineHold, time.Now()) {
			s.logInUse(v, mac, "answered the ARP probe")
		}
	}
	return nil, errors.New("every address tried is in use on the link")
}

func (s *Server) kickAhead() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// probeAhead starts background probes for up to n more addresses.
func (s *Server) probeAhead(n int) []*arpProbe {
	now := time.Now()
	s.table.mu.Lock()
	ips := s.table.aheadCandidatesLocked(n, now)
	s.table.mu.Unlock()
	if len(ips) == 0 {
		return nil
	}
	// One frame per address: the peers (ISC dhcpd, dnsmasq) send one ping;
	// two would double the ARP broadcasts of a storm for a rare lost frame.
	probes, failed, err := s.arp.start(ips, nil, false, s.aheadFinished)
	if err != nil {
		s.log.Warn("ARP probes not sent", "count", len(failed), "err", err)
		s.table.mu.Lock()
		for _, ip := range failed {
			s.table.aheadDoneLocked(ip, false, now)
		}
		s.table.mu.Unlock()
	}
	return probes
}

// aheadFinished records a background probe's result.
func (s *Server) aheadFinished(p *arpProbe) {
	if p.inUse != nil {
		s.m.arp.WithLabelValues(probeAhead, probeInUse).Inc()
		if s.table.holdInUse(p.ip, p.inUse, "", s.cfg.DeclineHold, time.Now()) {
			s.logInUse(p.ip, p.inUse, "answered the ARP probe")
		}
		return
	}
	s.m.arp.WithLabelValues(probeAhead, probeFree).Inc()
	s.table.mu.Lock()
	s.table.aheadDoneLocked(p.ip, true, time.Now())
	s.table.mu.Unlock()
}

// runAhead keeps the verified set topped up. Its size follows demand: enough
// for the offers made while a probe waits for answers, twice over, so a boot
// storm finds addresses ready.
func (s *Server) runAhead(ctx context.Context) {
	every := min(50*time.Millisecond, s.cfg.ARPProbeTimeout/4)
	tick := time.NewTicker(every)
	defer tick.Stop()
	last := time.Now()
	rate := 0.0 // offers to new clients per second, decaying
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-s.kick:
		}
		now := time.Now()
		s.table.mu.Lock()
		d := s.table.ahead.demand
		s.table.ahead.demand = 0
		have := len(s.table.ahead.verified) + len(s.table.ahead.probing)
		s.table.mu.Unlock()
		if el := now.Sub(last).Seconds(); el > 0 {
			rate = max(float64(d)/el, rate*0.9)
		}
		last = now
		want := min(maxAhead, s.cfg.ARPProbeAhead+int(2*rate*s.cfg.ARPProbeTimeout.Seconds()))
		if want > have {
			s.probeAhead(want - have)
		}
	}
}

// proxyARPSuspect is how many addresses one MAC may answer for before the
// server says it looks like proxy ARP rather than hosts squatting.
const proxyARPSuspect = 8

// logInUse reports an address some other host uses: one line per detection
// (the hold keeps it from being probed again until DeclineHold passes).
func (s *Server) logInUse(ip uint32, mac net.HardwareAddr, how string) {
	s.log.Warn("address in use on the link: not offered, held", "ip", u32ToIP(ip).String(), "mac", mac.String(),
		"how", how, "hold", s.cfg.DeclineHold)
	// A device answering ARP for addresses it does not use (proxy ARP) would
	// take the whole range out of service one hold at a time: say so once.
	s.inUseMu.Lock()
	defer s.inUseMu.Unlock()
	if s.inUseBy == nil {
		s.inUseBy = make(map[string]int)
	}
	s.inUseBy[string(mac)]++
	if s.inUseBy[string(mac)] == proxyARPSuspect {
		s.log.Error("one host answers ARP for many addresses of the range (proxy ARP?); each is held: switch dhcp.arp_probe off if it does not really use them",
			"mac", mac.String(), "addresses", proxyARPSuspect)
	}
	if len(s.inUseBy) > 4096 {
		clear(s.inUseBy)
	}
}
