// Package ra sends IPv6 Router Advertisements on the boot interface so that
// network-boot firmware stops waiting for IPv6 routers.
//
// Why: iPXE configures every interface with all its configurators at once
// (DHCPv4 and IPv6) and waits for all of them. Its IPv6 configurator
// (src/net/ndp.c, start_ipv6conf) sends Router Solicitations on a retry timer
// and only gives up after ~13 s on a link where nothing answers. The first
// Router Advertisement it receives stops that timer
// (ipv6conf_rx_router_advertisement): with neither the M nor the O flag set
// it ends IPv6 configuration at once (ipv6conf_done); with M or O it would go
// on to DHCPv6 and wait again, so those flags stay clear. The router lifetime
// is 0 by default: the appliance announces itself as a router that is not a
// default router and advertises no prefix, so hosts on the link change
// neither their routes nor their addresses.
//
// The package leaves DHCP to netboot/dhcp; the daemon runs both.
package ra

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"syscall"
	"time"

	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"
)

// Config configures a Server.
type Config struct {
	// Interface is the boot network interface.
	Interface string
	// Interval between unsolicited advertisements. Default: 10s. Router
	// Solicitations are answered at once (at most one answer per 200 ms).
	Interval time.Duration
	// RouterLifetime is advertised as is. Default 0: not a default router.
	RouterLifetime time.Duration
	// Logger receives structured logs. Default: slog.Default().
	Logger *slog.Logger
}

// Server advertises on one interface.
type Server struct {
	cfg   Config
	log   *slog.Logger
	ready chan struct{}

	mu     sync.Mutex
	conn   *ipv6.PacketConn
	closed bool
	sent   uint64
}

// New checks cfg; the socket is opened by Serve.
func New(cfg Config) (*Server, error) {
	if cfg.Interface == "" {
		return nil, errors.New("ra.interface: required")
	}
	if cfg.Interval <= 0 {
		cfg.Interval = 10 * time.Second
	}
	if cfg.RouterLifetime < 0 || cfg.RouterLifetime > 9000*time.Second {
		return nil, fmt.Errorf("ra.router_lifetime: %v outside 0..9000s (RFC 4861)", cfg.RouterLifetime)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Server{cfg: cfg, log: cfg.Logger.With("stage", "ra", "interface", cfg.Interface), ready: make(chan struct{})}, nil
}

// Ready is closed once Serve has its socket.
func (s *Server) Ready() <-chan struct{} { return s.ready }

// Sent is the number of advertisements sent.
func (s *Server) Sent() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sent
}

var allNodes = net.ParseIP("ff02::1")
var allRouters = net.ParseIP("ff02::2")

// Serve opens the socket on the calling goroutine (so a caller inside a
// network namespace gets it there), then advertises until ctx is done or
// Close is called.
func (s *Server) Serve(ctx context.Context) error {
	ifi, err := net.InterfaceByName(s.cfg.Interface)
	if err != nil {
		return fmt.Errorf("ra interface %s: %w", s.cfg.Interface, err)
	}
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptString(int(fd), unix.SOL_SOCKET, unix.SO_BINDTODEVICE, ifi.Name)
		}); err != nil {
			return err
		}
		return serr
	}}
	c, err := lc.ListenPacket(ctx, "ip6:ipv6-icmp", "::")
	if err != nil {
		return fmt.Errorf("ra socket on %s: %w", ifi.Name, err)
	}
	pc := ipv6.NewPacketConn(c)
	// RFC 4861 §6.1.2: receivers drop router discovery messages whose hop
	// limit is not 255 (proof they were not forwarded).
	if err := pc.SetMulticastHopLimit(255); err != nil {
		c.Close()
		return fmt.Errorf("ra hop limit: %w", err)
	}
	if err := pc.SetHopLimit(255); err != nil {
		c.Close()
		return fmt.Errorf("ra hop limit: %w", err)
	}
	if err := pc.SetMulticastInterface(ifi); err != nil {
		c.Close()
		return fmt.Errorf("ra multicast interface: %w", err)
	}
	_ = pc.SetMulticastLoopback(false)
	var f ipv6.ICMPFilter
	f.SetAll(true)
	f.Accept(ipv6.ICMPTypeRouterSolicitation)
	if err := pc.SetICMPFilter(&f); err != nil {
		c.Close()
		return fmt.Errorf("ra icmp filter: %w", err)
	}
	if err := pc.JoinGroup(ifi, &net.IPAddr{IP: allRouters}); err != nil {
		c.Close()
		return fmt.Errorf("ra join ff02::2 on %s: %w", ifi.Name, err)
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		c.Close()
		return net.ErrClosed
	}
	s.conn = pc
	s.mu.Unlock()
	msg, err := (&RouterAdvertisement{RouterLifetime: s.cfg.RouterLifetime, SourceLinkAddr: ifi.HardwareAddr}).MarshalBinary()
	if err != nil {
		c.Close()
		return err
	}
	close(s.ready)
	s.log.Info("sending router advertisements", "interval", s.cfg.Interval, "router_lifetime", s.cfg.RouterLifetime)

	solicited := make(chan struct{}, 1)
	go func() {
		buf := make([]byte, 1500)
		for {
			n, _, _, err := pc.ReadFrom(buf)
			if err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				continue
			}
			if isRouterSolicitation(buf[:n]) {
				select {
				case solicited <- struct{}{}:
				default:
				}
			}
		}
	}()
	go func() {
		<-ctx.Done()
		s.Close()
	}()

	dst := &net.IPAddr{IP: allNodes, Zone: ifi.Name}
	timer := time.NewTimer(0)
	defer timer.Stop()
	var last, failingSince time.Time
	warned := false
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-timer.C:
		case <-solicited:
			if time.Since(last) < 200*time.Millisecond {
				continue
			}
		}
		next := s.cfg.Interval
		if _, err := pc.WriteTo(msg, &ipv6.ControlMessage{HopLimit: 255, IfIndex: ifi.Index}, dst); err != nil {
			s.mu.Lock()
			closed := s.closed
			s.mu.Unlock()
			if closed || errors.Is(err, net.ErrClosed) {
				return nil
			}
			// No usable link-local source yet (DAD still running): retry soon.
			s.log.Debug("router advertisement not sent", "err", err)
			next = min(next, 300*time.Millisecond)
			if failingSince.IsZero() {
				failingSince = time.Now()
			} else if !warned && time.Since(failingSince) > 5*time.Second {
				// IPv6 disabled on the interface, most likely: say what it costs, once.
				s.log.Warn("cannot send router advertisements (IPv6 disabled on the interface?); iPXE will wait for IPv6 routers before booting", "err", err)
				warned = true
			}
		} else {
			s.mu.Lock()
			s.sent++
			s.mu.Unlock()
			last = time.Now()
			failingSince, warned = time.Time{}, false
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(next)
	}
}

// Close stops Serve.
func (s *Server) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	if s.conn != nil {
		return s.conn.Close()
	}
	return nil
}
