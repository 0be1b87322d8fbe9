package dhcp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// Host is what the registry knows of an enrolled node.
type Host struct {
	Name string // sent as option 12
	IP   net.IP // fixed address; nil for one from the range
}

// Nodes is the registry as the DHCP server sees it.
type Nodes interface {
	// Host returns the enrolled node with this MAC.
	Host(mac net.HardwareAddr) (Host, bool)
	// Seen reports a booting machine (known or not; see ClientInfo.Known), at
	// most once per MAC every SeenInterval. It is called from one goroutine,
	// off the request path, so a slow registry cannot slow DHCP down.
	Seen(ClientInfo)
}

// Reservations may be implemented by the Nodes value as well. When it is,
// the allocator asks it before handing out an address, so a node's fixed
// address inside the range is never given to another client, even before that
// node has booted once. Without it, fixed addresses are learnt as nodes boot.
type Reservations interface {
	ReservedFor(ip net.IP) (net.HardwareAddr, bool)
}

// SeenInterval bounds how often Nodes.Seen is called for one MAC.
const SeenInterval = 30 * time.Second

// ErrOtherServer is returned by Serve in server mode when another DHCP server
// answered the start-up probe.
var ErrOtherServer = errors.New("another DHCP server answers on this interface")

// Server is the DHCP server (or proxyDHCP server) of the boot network.
type Server struct {
	cfg   Config
	nodes Nodes
	res   Reservations
	table *leaseTable
	m     *metrics
	log   *slog.Logger

	ready    chan struct{}
	done     chan struct{}
	started  atomic.Bool
	closeMu  sync.Mutex
	cancel   context.CancelFunc
	closed   bool
	raw      *rawSender
	arp      *arpProber    // nil: no ARP probing
	kick     chan struct{} // wakes the probe-ahead loop
	parkSem  chan struct{} // bounds the offers waiting for an ARP check
	parked   sync.WaitGroup
	inUseMu  sync.Mutex
	inUseBy  map[string]int // addresses found in use, per answering MAC
	seenCh   chan ClientInfo
	seenMu   sync.Mutex
	seenLast map[string]time.Time

	exhaustedMu     sync.Mutex
	exhaustedLogged time.Time
	exhaustedQuiet  int
}

// New validates cfg and loads the lease log. nodes may be nil (every client is
// unknown). Sockets are opened by Serve.
func New(cfg Config, nodes Nodes) (*Server, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	s := &Server{
		cfg:      cfg,
		nodes:    nodes,
		log:      cfg.Logger.With("stage", "dhcp"),
		ready:    make(chan struct{}),
		done:     make(chan struct{}),
		seenCh:   make(chan ClientInfo, 1024),
		seenLast: make(map[string]time.Time),
		kick:     make(chan struct{}, 1),
		parkSem:  make(chan struct{}, maxParked),
	}
	if r, ok := nodes.(Reservations); ok {
		s.res = r
	}
	s.table = newLeaseTable(&s.cfg)
	if cfg.Mode == ModeServer && cfg.ARPProbe {
		s.table.ahead.init(cfg.ARPProbeValid, s.table.start)
	}
	if s.res != nil {
		s.table.reservedFor = s.res.ReservedFor
	}
	if cfg.Mode == ModeServer && cfg.LeaseFile != "" {
		l, data, err := openLeaseLog(cfg.LeaseFile)
		if err != nil {
			return nil, err
		}
		s.table.log = l
		n, bad := s.table.load(data)
		s.log.Info("leases loaded", "file", cfg.LeaseFile, "records", n, "skipped", bad, "addresses", len(s.table.byIP))
	}
	m, err := newMetrics(cfg.Metrics, s.table)
	if err != nil {
		s.closeLog()
		return nil, fmt.Errorf("dhcp metrics: %w", err)
	}
	s.m = m
	return s, nil
}

// Ready is closed once Serve listens.
func (s *Server) Ready() <-chan struct{} { return s.ready }

// Leases returns the persisted leases (server mode).
func (s *Server) Leases() []Lease { return s.table.list() }

// LeaseLogStats reports lease records written and the fdatasync calls that
// made them durable (group commit: many records per sync under load).
func (s *Server) LeaseLogStats() (records, syncs uint64) {
	return s.table.written.Load(), s.table.syncs.Load()
}

// Serve probes the link (server mode), opens the sockets on the configured
// interface and answers until ctx is done or Close is called. All sockets are
// opened by the calling goroutine before any other starts, so a caller that
// runs Serve inside a network namespace gets every socket there.
func (s *Server) Serve(ctx context.Context) error {
	if !s.started.CompareAndSwap(false, true) {
		return errors.New("dhcp: Serve called twice")
	}
	defer close(s.done)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s.closeMu.Lock()
	if s.closed {
		s.closeMu.Unlock()
		return net.ErrClosed
	}
	s.cancel = cancel
	s.closeMu.Unlock()

	ifi, err := net.InterfaceByName(s.cfg.Interface)
	if err != nil {
		s.closeLog()
		return fmt.Errorf("dhcp interface %s: %w", s.cfg.Interface, err)
	}
	// The ARP socket opens here, in the caller's namespace; the first
	// addresses are checked while the DHCP probe listens.
	var arpDone chan struct{}
	var firstAhead []*arpProbe
	if s.table.ahead.on {
		if err := s.startARP(ifi); err != nil {
			s.log.Warn("ARP probing unavailable; addresses are offered unchecked", "interface", ifi.Name, "err", err)
			s.table.mu.Lock()
			s.table.ahead.on = false
			s.table.mu.Unlock()
		} else {
			arpDone = make(chan struct{})
			go func() { s.arp.run(ctx); close(arpDone) }()
			if s.cfg.ARPProbeAhead > 0 {
				firstAhead = s.probeAhead(s.cfg.ARPProbeAhead)
			}
		}
	}
	stopARP := func() {
		if arpDone != nil {
			cancel()
			<-arpDone
		}
	}
	if s.cfg.Mode == ModeServer && !s.cfg.IgnoreOtherServers {
		if err := s.probe(ctx, ifi); err != nil {
			stopARP()
			s.closeLog()
			return err
		}
	}
	for _, p := range firstAhead {
		select {
		case <-p.done:
		case <-ctx.Done():
		}
	}
	if s.cfg.Mode == ModeProxy {
		s.warnIfAlone(ctx, ifi)
	}
	conns := []*net.UDPConn{}
	closeAll := func() {
		for _, c := range conns {
			c.Close()
		}
	}
	c, err := listenUDP(ifi.Name, s.cfg.Port)
	if err != nil {
		stopARP()
		s.closeLog()
		return err
	}
	conns = append(conns, c)
	ports := []int{s.cfg.Port}
	if s.cfg.Mode == ModeProxy {
		pc, err := listenUDP(ifi.Name, s.cfg.PXEPort)
		if err != nil {
			closeAll()
			stopARP()
			s.closeLog()
			return err
		}
		conns = append(conns, pc)
		ports = append(ports, s.cfg.PXEPort)
	}
	if s.cfg.Mode == ModeServer && len(ifi.HardwareAddr) == 6 {
		if s.raw, err = newRawSender(ifi, s.cfg.ServerIP); err != nil {
			// Broadcast replies still work; unicast to address-less clients does not.
			s.log.Warn("raw sender unavailable; replying by broadcast", "err", err)
		}
	}

	writerCtx, stopWriter := context.WithCancel(context.Background())
	writerDone := make(chan struct{})
	go func() { s.table.runWriter(writerCtx); close(writerDone) }()
	seenDone := make(chan struct{})
	go s.runSeen(seenDone)
	aheadDone := make(chan struct{})
	if arpDone != nil && s.cfg.ARPProbeAhead > 0 {
		go func() { s.runAhead(ctx); close(aheadDone) }()
	} else {
		close(aheadDone)
	}

	var wg sync.WaitGroup
	for i, conn := range conns {
		workers := s.cfg.Workers
		if ports[i] == s.cfg.PXEPort {
			workers = 2
		}
		for w := 0; w < workers; w++ {
			wg.Add(1)
			go func() { defer wg.Done(); s.serveConn(ctx, conn, ports[i]) }()
		}
	}
	s.log.Info("dhcp listening", "interface", ifi.Name, "mode", s.cfg.Mode, "ip", s.cfg.ServerIP.String())
	close(s.ready)

	<-ctx.Done()
	closeAll()
	wg.Wait()
	s.parked.Wait()
	<-aheadDone
	stopARP()
	stopWriter()
	<-writerDone
	close(s.seenCh)
	<-seenDone
	if s.raw != nil {
		s.raw.close()
	}
	s.closeLog()
	s.m.unregister(s.cfg.Metrics)
	return nil
}

// Close stops Serve and waits for it: leases are flushed when it returns.
func (s *Server) Close() error {
	s.closeMu.Lock()
	if s.closed {
		s.closeMu.Unlock()
		return nil
	}
	s.closed = true
	cancel := s.cancel
	s.closeMu.Unlock()
	if cancel != nil {
		cancel()
	}
	if s.started.Load() {
		<-s.done
	} else {
		s.closeLog()
	}
	return nil
}

func (s *Server) closeLog() {
	s.table.mu.Lock()
	l := s.table.log
	s.table.log = nil
	s.table.mu.Unlock()
	if l != nil {
		if err := l.close(); err != nil {
			s.log.Error("close lease log", "err", err)
		}
	}
}

func (s *Server) serveConn(ctx context.Context, conn *net.UDPConn, port int) {
	buf := make([]byte, 4096)
	oob := make([]byte, 128)
	for {
		n, oobn, _, src, err := conn.ReadMsgUDP(buf, oob)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		if at, ok := rxTime(oob[:oobn]); ok && time.Since(at) > staleAfter {
			s.m.errors.WithLabelValues(errStale).Inc()
			continue
		}
		req, err := dhcpv4.FromBytes(buf[:n])
		if err != nil || req.OpCode != dhcpv4.OpcodeBootRequest || len(req.ClientHWAddr) == 0 {
			s.m.errors.WithLabelValues(errMalformed).Inc()
			continue
		}
		s.handle(ctx, conn, port, src, req)
	}
}

func (s *Server) handle(ctx context.Context, conn *net.UDPConn, port int, src *net.UDPAddr, req *dhcpv4.DHCPv4) {
	mt := req.MessageType()
	s.m.requests.WithLabelValues(mt.String()).Inc()
	if s.log.Enabled(ctx, slog.LevelDebug) {
		s.log.Debug("request", "type", mt.String(), "mac", req.ClientHWAddr.String(), "ciaddr", req.ClientIPAddr.String(),
			"requested", req.RequestedIPAddress().String(), "from", src.String())
	}
	if gi := req.GatewayIPAddr; gi != nil && !gi.IsUnspecified() && !s.cfg.Subnet.Contains(gi) {
		// A relay from another subnet: this server serves one link only.
		s.m.errors.WithLabelValues(errForeignRelay).Inc()
		return
	}
	now := time.Now()
	if s.cfg.Mode == ModeProxy {
		s.handleProxy(conn, port, src, req, mt, now)
		return
	}
	switch mt {
	case dhcpv4.MessageTypeDiscover:
		s.discover(ctx, conn, req, now)
	case dhcpv4.MessageTypeRequest:
		s.request(ctx, conn, req, now)
	case dhcpv4.MessageTypeRelease:
		if s.table.release(s.key(req), req.ClientIPAddr, now) {
			s.log.Debug("released", "mac", req.ClientHWAddr.String(), "ip", req.ClientIPAddr.String())
		}
	case dhcpv4.MessageTypeDecline:
		if sid := req.ServerIdentifier(); sid != nil && !sid.Equal(s.cfg.ServerIP) {
			return
		}
		ip := req.RequestedIPAddress()
		if ip != nil && s.table.decline(s.key(req), req.ClientHWAddr, ip, s.cfg.DeclineHold, now) {
			s.log.Warn("client declined address (in use on the link?)", "mac", req.ClientHWAddr.String(), "ip", ip.String(), "hold", s.cfg.DeclineHold)
		}
	case dhcpv4.MessageTypeInform:
		s.inform(conn, req, now)
	}
}

func (s *Server) key(req *dhcpv4.DHCPv4) string {
	return clientKey(req.GetOneOption(dhcpv4.OptionClientIdentifier), req.ClientHWAddr)
}

// lookupHost asks the registry and reports the client as seen.
func (s *Server) lookupHost(req *dhcpv4.DHCPv4, ci *ClientInfo) (Host, bool) {
	var h Host
	var ok bool
	if s.nodes != nil {
		h, ok = s.nodes.Host(req.ClientHWAddr)
	}
	ci.Known = ok
	if ok && h.IP != nil && (h.IP.To4() == nil || !s.cfg.Subnet.Contains(h.IP)) {
		s.log.Warn("fixed address outside the boot subnet ignored", "mac", req.ClientHWAddr.String(), "node", h.Name, "ip", h.IP.String())
		h.IP = nil
	}
	if h.IP != nil {
		h.IP = h.IP.To4()
	}
	s.noteSeen(*ci)
	return h, ok
}

func (s *Server) discover(ctx context.Context, conn *net.UDPConn, req *dhcpv4.DHCPv4, now time.Time) {
	ci := classify(req, now)
	host, _ := s.lookupHost(req, &ci)
	ip, check, err := s.table.offer(s.key(req), req.ClientHWAddr, req.GetOneOption(dhcpv4.OptionClientIdentifier), req.RequestedIPAddress(), host.IP, s.cfg.OfferHold, now)
	switch {
	case err == nil && (!check || s.arp == nil):
		if check {
			s.table.checked(ipToU32(ip), s.key(req))
		}
		s.sendOffer(conn, req, ci, host, ip)
	case err == nil || errors.Is(err, errProbing):
		// The address must be checked by ARP first: that waits off the
		// worker, which goes on reading requests.
		if !s.park(func() {
			ip, err := s.offerChecked(ctx, req, host, ip, err)
			switch {
			case err == nil:
			case ctx.Err() != nil:
				return
			case errors.Is(err, errExhausted):
				s.m.errors.WithLabelValues(errExhaustedMsg).Inc()
				s.logExhausted(req.ClientHWAddr)
				return
			default:
				s.m.errors.WithLabelValues(errNoFreeChecked).Inc()
				return
			}
			s.sendOffer(conn, req, ci, host, ip)
		}) {
			s.m.errors.WithLabelValues(errParkFull).Inc()
		}
	case errors.Is(err, errChecking):
		// A retransmission: the check under way for this client answers it.
	default:
		s.m.errors.WithLabelValues(errExhaustedMsg).Inc()
		s.logExhausted(req.ClientHWAddr)
	}
}

func (s *Server) sendOffer(conn *net.UDPConn, req *dhcpv4.DHCPv4, ci ClientInfo, host Host, ip net.IP) {
	reply := s.newReply(req, dhcpv4.MessageTypeOffer)
	reply.YourIPAddr = ip
	s.addLeaseOptions(reply, host)
	if b, ok := s.bootFor(ci); ok {
		s.addBootOptions(reply, req, b, false)
	} else if _, isPXE := pxeClient(ci.VendorClass); isPXE || ci.IPXE {
		s.m.errors.WithLabelValues(errNoBootFile).Inc()
	}
	s.send(conn, s.cfg.Port, nil, req, reply)
}

func (s *Server) request(ctx context.Context, conn *net.UDPConn, req *dhcpv4.DHCPv4, now time.Time) {
	key := s.key(req)
	sid := req.ServerIdentifier()
	if sid != nil && !sid.Equal(s.cfg.ServerIP) {
		// The client took another server's offer.
		s.table.forgetOffer(key)
		return
	}
	want := req.RequestedIPAddress()
	if want == nil || want.IsUnspecified() {
		want = req.ClientIPAddr // RENEWING / REBINDING
	}
	if want == nil || want.To4() == nil || want.IsUnspecified() {
		s.m.errors.WithLabelValues(errMalformed).Inc()
		return
	}
	ci := classify(req, now)
	host, _ := s.lookupHost(req, &ci)
	if !s.cfg.Subnet.Contains(want) {
		s.nak(conn, req, "address not on this network")
		return
	}
	hostname := host.Name
	if hostname == "" {
		if h := req.HostName(); validHostname(h) && len(h) <= 63 {
			hostname = h
		}
	}
	c, err := s.table.bind(key, req.ClientHWAddr, req.GetOneOption(dhcpv4.OptionClientIdentifier), want, host.IP, hostname, s.cfg.LeaseTime, now)
	if err != nil {
		if sid == nil && !s.table.inRange(ipToU32(want)) && host.IP == nil {
			// INIT-REBOOT/RENEW for an address that is neither ours nor in our range: say so.
			s.nak(conn, req, "address not leased by this server")
			return
		}
		s.nak(conn, req, "address not available")
		return
	}
	// The acknowledgement goes out only once its lease is on disk.
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	err = wait(wctx, c)
	cancel()
	if err != nil {
		s.m.errors.WithLabelValues(errLeaseLog).Inc()
		return
	}
	reply := s.newReply(req, dhcpv4.MessageTypeAck)
	reply.YourIPAddr = want.To4()
	reply.ClientIPAddr = req.ClientIPAddr
	s.addLeaseOptions(reply, host)
	if b, ok := s.bootFor(ci); ok {
		s.addBootOptions(reply, req, b, false)
	}
	s.send(conn, s.cfg.Port, nil, req, reply)
}

func (s *Server) inform(conn *net.UDPConn, req *dhcpv4.DHCPv4, now time.Time) {
	ci := classify(req, now)
	host, _ := s.lookupHost(req, &ci)
	reply := s.newReply(req, dhcpv4.MessageTypeAck)
	reply.ClientIPAddr = req.ClientIPAddr
	s.addLeaseOptions(reply, host)
	// RFC 2131 §3.4: no lease time in an answer to DHCPINFORM.
	reply.Options.Del(dhcpv4.OptionIPAddressLeaseTime)
	reply.Options.Del(dhcpv4.OptionRenewTimeValue)
	reply.Options.Del(dhcpv4.OptionRebindingTimeValue)
	if b, ok := s.bootFor(ci); ok {
		s.addBootOptions(reply, req, b, false)
	}
	s.send(conn, s.cfg.Port, nil, req, reply)
}

func (s *Server) nak(conn *net.UDPConn, req *dhcpv4.DHCPv4, why string) {
	s.m.errors.WithLabelValues(errNak).Inc()
	reply := s.newReply(req, dhcpv4.MessageTypeNak)
	reply.UpdateOption(dhcpv4.OptMessage(why))
	s.send(conn, s.cfg.Port, nil, req, reply)
}

// logExhausted writes one line per minute at most, however big the storm.
func (s *Server) logExhausted(mac net.HardwareAddr) {
	s.exhaustedMu.Lock()
	defer s.exhaustedMu.Unlock()
	if time.Since(s.exhaustedLogged) < time.Minute {
		s.exhaustedQuiet++
		return
	}
	s.log.Error("address range exhausted: no offer made; widen dhcp.range or shorten the lease time",
		"mac", mac.String(), "range", fmt.Sprintf("%v-%v", s.cfg.RangeStart, s.cfg.RangeEnd), "suppressed", s.exhaustedQuiet)
	s.exhaustedLogged = time.Now()
	s.exhaustedQuiet = 0
}

// newReply starts a reply to req with the fields every answer carries.
func (s *Server) newReply(req *dhcpv4.DHCPv4, mt dhcpv4.MessageType) *dhcpv4.DHCPv4 {
	r := &dhcpv4.DHCPv4{
		OpCode:        dhcpv4.OpcodeBootReply,
		HWType:        req.HWType,
		TransactionID: req.TransactionID,
		Flags:         req.Flags,
		ClientIPAddr:  net.IPv4zero,
		YourIPAddr:    net.IPv4zero,
		ServerIPAddr:  net.IPv4zero,
		GatewayIPAddr: req.GatewayIPAddr,
		ClientHWAddr:  req.ClientHWAddr,
		Options:       dhcpv4.Options{},
	}
	r.UpdateOption(dhcpv4.OptMessageType(mt))
	r.UpdateOption(dhcpv4.OptServerIdentifier(s.cfg.ServerIP))
	// RFC 3046: relay agent information goes back to the relay; RFC 6842:
	// the client identifier goes back to the client.
	for _, code := range []dhcpv4.OptionCode{dhcpv4.OptionRelayAgentInformation, dhcpv4.OptionClientIdentifier} {
		if v := req.GetOneOption(code); v != nil {
			r.UpdateOption(dhcpv4.OptGeneric(code, v))
		}
	}
	return r
}

func (s *Server) addLeaseOptions(r *dhcpv4.DHCPv4, host Host) {
	r.UpdateOption(dhcpv4.OptSubnetMask(s.cfg.Subnet.Mask))
	bcast := u32ToIP(s.table.bcast)
	r.UpdateOption(dhcpv4.OptBroadcastAddress(bcast))
	if s.cfg.Router != nil {
		r.UpdateOption(dhcpv4.OptRouter(s.cfg.Router))
	}
	if len(s.cfg.DNS) > 0 {
		r.UpdateOption(dhcpv4.OptDNS(s.cfg.DNS...))
	}
	if s.cfg.Domain != "" {
		r.UpdateOption(dhcpv4.OptDomainName(s.cfg.Domain))
	}
	if host.Name != "" {
		r.UpdateOption(dhcpv4.OptHostName(host.Name))
	}
	lt := s.cfg.LeaseTime.Truncate(time.Second)
	r.UpdateOption(dhcpv4.OptIPAddressLeaseTime(lt))
	r.UpdateOption(dhcpv4.OptRenewTimeValue(lt / 2))
	r.UpdateOption(dhcpv4.OptRebindingTimeValue(lt * 7 / 8))
}

// send delivers a reply as RFC 2131 §4.1 says: to the relay; to the client's
// address when it has one; by broadcast when it asked for it or has no
// address; else by unicast to its hardware address. to, when set, overrides
// (replies on the PXE port go back where the request came from).
func (s *Server) send(conn *net.UDPConn, port int, to *net.UDPAddr, req, reply *dhcpv4.DHCPv4) {
	b := reply.ToBytes()
	mt := reply.MessageType()
	var err error
	gi := req.GatewayIPAddr
	switch {
	case to != nil:
		_, err = conn.WriteToUDP(b, to)
	case gi != nil && !gi.IsUnspecified():
		_, err = conn.WriteToUDP(b, &net.UDPAddr{IP: gi, Port: port})
	case mt == dhcpv4.MessageTypeNak:
		_, err = conn.WriteToUDP(b, &net.UDPAddr{IP: net.IPv4bcast, Port: dhcpv4.ClientPort})
	case req.ClientIPAddr != nil && !req.ClientIPAddr.IsUnspecified():
		_, err = conn.WriteToUDP(b, &net.UDPAddr{IP: req.ClientIPAddr, Port: dhcpv4.ClientPort})
	case req.IsBroadcast() || reply.YourIPAddr == nil || reply.YourIPAddr.IsUnspecified() || s.raw == nil || len(req.ClientHWAddr) != 6:
		_, err = conn.WriteToUDP(b, &net.UDPAddr{IP: net.IPv4bcast, Port: dhcpv4.ClientPort})
	default:
		err = s.raw.send(b, req.ClientHWAddr, reply.YourIPAddr, s.cfg.Port, dhcpv4.ClientPort)
		if err != nil {
			_, err = conn.WriteToUDP(b, &net.UDPAddr{IP: net.IPv4bcast, Port: dhcpv4.ClientPort})
		}
	}
	if s.log.Enabled(context.Background(), slog.LevelDebug) {
		s.log.Debug("reply", "type", mt.String(), "mac", req.ClientHWAddr.String(), "yiaddr", reply.YourIPAddr.String(), "err", err)
	}
	if err != nil {
		s.m.errors.WithLabelValues(errSend).Inc()
		s.log.Warn("reply not sent", "mac", req.ClientHWAddr.String(), "type", mt.String(), "err", err)
		return
	}
	s.m.replies.WithLabelValues(mt.String()).Inc()
}

// noteSeen queues ci for Nodes.Seen, once per MAC per SeenInterval; when the
// queue is full the report is dropped rather than delaying the reply.
func (s *Server) noteSeen(ci ClientInfo) {
	if s.nodes == nil {
		return
	}
	// A change of what the machine is (enrolled, now iPXE) is reported at once.
	k := fmt.Sprintf("%s|%t|%t|%d|%s", ci.MAC, ci.Known, ci.IPXE, ci.Arch, ci.VendorClass)
	s.seenMu.Lock()
	last, ok := s.seenLast[k]
	if ok && ci.Time.Sub(last) < SeenInterval {
		s.seenMu.Unlock()
		return
	}
	s.seenLast[k] = ci.Time
	if len(s.seenLast) > 100000 {
		for m, t := range s.seenLast {
			if ci.Time.Sub(t) >= SeenInterval {
				delete(s.seenLast, m)
			}
		}
	}
	s.seenMu.Unlock()
	select {
	case s.seenCh <- ci:
	default:
	}
}

func (s *Server) runSeen(done chan struct{}) {
	defer close(done)
	for ci := range s.seenCh {
		if s.nodes != nil {
			s.nodes.Seen(ci)
		}
	}
}
