package dhcp

import (
	"context"
	"errors"
	"fmt"
	"net"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
)

// probe broadcasts a DISCOVER on the interface, as a client would, and fails
// if any server offers an address within ProbeTimeout. It runs before this
// server binds port 67, so it cannot hear itself.
func (s *Server) probe(ctx context.Context, ifi *net.Interface) error {
	// Three sends over the timeout (t, then 2t): one lost packet does not
	// hide a server.
	c, err := nclient4.New(ifi.Name, nclient4.WithTimeout(s.cfg.ProbeTimeout/3), nclient4.WithRetry(2))
	if err != nil {
		return fmt.Errorf("dhcp probe on %s: %w", ifi.Name, err)
	}
	defer c.Close()
	offer, err := c.DiscoverOffer(ctx, dhcpv4.WithOption(dhcpv4.OptClassIdentifier("distonet-probe")))
	switch {
	case err == nil:
		server := offer.ServerIdentifier()
		if server == nil {
			server = offer.ServerIPAddr
		}
		s.log.Error("another DHCP server answers on the boot interface; refusing to hand out addresses",
			"interface", ifi.Name, "server", server.String(), "offered", offer.YourIPAddr.String())
		return fmt.Errorf("%w: %v offered %v on %s; set dhcp.mode: proxy to boot nodes beside it, or override the probe (dhcp.ignore_other_servers) only if that server will be stopped",
			ErrOtherServer, server, offer.YourIPAddr, ifi.Name)
	case errors.Is(err, nclient4.ErrNoResponse) || errors.Is(err, context.DeadlineExceeded):
		return nil
	case ctx.Err() != nil:
		return ctx.Err()
	default:
		return fmt.Errorf("dhcp probe on %s: %w", ifi.Name, err)
	}
}

// warnIfAlone runs in proxy mode: a proxy gives boot information only, so
// without a DHCP server on the link no node gets an address. The client is
// opened by the caller (inside the right network namespace); the wait runs in
// the background and ends with one warning if nobody answered.
func (s *Server) warnIfAlone(ctx context.Context, ifi *net.Interface) {
	c, err := nclient4.New(ifi.Name, nclient4.WithTimeout(s.cfg.ProbeTimeout/3), nclient4.WithRetry(2))
	if err != nil {
		s.log.Warn("proxy mode: cannot check for a DHCP server", "interface", ifi.Name, "err", err)
		return
	}
	go func() {
		defer c.Close()
		offer, err := c.DiscoverOffer(ctx, dhcpv4.WithOption(dhcpv4.OptClassIdentifier("distonet-probe")))
		switch {
		case err == nil:
			s.log.Info("proxy mode: DHCP server found", "interface", ifi.Name, "server", offer.ServerIdentifier().String())
		case ctx.Err() == nil:
			s.log.Warn("proxy mode but no DHCP server answered on the boot interface: nodes will get boot information and no address; use dhcp.mode: server if the appliance should hand out addresses",
				"interface", ifi.Name, "waited", s.cfg.ProbeTimeout)
		}
	}()
}
