package dhcp

import (
	"net"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// handleProxy answers PXE and UEFI HTTP boot clients beside another DHCP
// server (PXE spec 2.1, "proxyDHCP"): on port 67 an offer without an address
// that carries only the boot information; on port 4011 (and to a REQUEST on 67
// naming this server) an acknowledgement with the same. Other clients are left
// to the server that owns the addresses.
func (s *Server) handleProxy(conn *net.UDPConn, port int, src *net.UDPAddr, req *dhcpv4.DHCPv4, mt dhcpv4.MessageType, now time.Time) {
	ci := classify(req, now)
	pxe, http := pxeClient(ci.VendorClass)
	// Only a PXE ROM, or iPXE presenting itself as one, takes proxy offers.
	if !pxe && !http {
		return
	}
	s.lookupHost(req, &ci)
	b, ok := s.bootFor(ci)
	if !ok {
		s.m.errors.WithLabelValues(errNoBootFile).Inc()
		return
	}
	var reply *dhcpv4.DHCPv4
	var to *net.UDPAddr
	switch {
	case port == s.cfg.Port && mt == dhcpv4.MessageTypeDiscover:
		reply = s.newReply(req, dhcpv4.MessageTypeOffer)
	case port == s.cfg.Port && mt == dhcpv4.MessageTypeRequest:
		if sid := req.ServerIdentifier(); sid == nil || !sid.Equal(s.cfg.ServerIP) {
			return // a REQUEST for the address server's offer
		}
		reply = s.newReply(req, dhcpv4.MessageTypeAck)
	case port == s.cfg.PXEPort && (mt == dhcpv4.MessageTypeRequest || mt == dhcpv4.MessageTypeInform):
		reply = s.newReply(req, dhcpv4.MessageTypeAck)
		reply.ClientIPAddr = req.ClientIPAddr
		to = src
	default:
		return
	}
	s.addBootOptions(reply, req, b, true)
	s.send(conn, s.cfg.Port, to, req, reply)
}
