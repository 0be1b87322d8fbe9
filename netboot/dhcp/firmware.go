package dhcp

import (
	"net"
	"strings"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// ClientInfo is what a DHCP request tells about the machine behind it. The
// registry records unknown MACs from it as discovered nodes.
type ClientInfo struct {
	MAC         net.HardwareAddr
	Arch        Arch
	HasArch     bool   // option 93 was present
	VendorClass string // option 60, e.g. "PXEClient:Arch:00007:UNDI:003016"
	UserClass   string // option 77, e.g. "iPXE"
	IPXE        bool   // the firmware is already iPXE
	Known       bool   // the registry knows the MAC
	Time        time.Time
}

// classify reads the firmware-identifying options of a request.
func classify(req *dhcpv4.DHCPv4, now time.Time) ClientInfo {
	ci := ClientInfo{MAC: req.ClientHWAddr, Time: now}
	ci.VendorClass = string(req.GetOneOption(dhcpv4.GenericOptionCode(optClassID)))
	if b := req.GetOneOption(dhcpv4.GenericOptionCode(optClientArch)); b != nil {
		if a, err := ParseClientArch(b); err == nil {
			ci.Arch, ci.HasArch = a, true
		}
	}
	uc := ParseUserClass(req.GetOneOption(dhcpv4.GenericOptionCode(optUserClass)))
	ci.UserClass = strings.Join(uc, ",")
	for _, c := range uc {
		if c == "iPXE" {
			ci.IPXE = true
		}
	}
	// iPXE always sends its feature list in option 175; other firmware never does.
	if req.Options.Has(dhcpv4.GenericOptionCode(optIPXEEncap)) {
		ci.IPXE = true
	}
	return ci
}

// bootInfo is what a network-booting client is told to load.
type bootInfo struct {
	file       string // file field and option 67
	viaHTTP    bool   // file is a URL
	httpClient bool   // UEFI HTTP boot: reply must carry option 60 "HTTPClient"
	pxeClient  bool   // PXE ROM: reply carries option 60 "PXEClient" and option 43
}

// bootFor decides the boot file: iPXE gets its per-MAC script over HTTP (it
// would otherwise chainload itself forever); a UEFI HTTP boot client gets the
// iPXE binary by URL; a PXE ROM gets the iPXE binary for its architecture by
// TFTP. A client that is none of these (an OS's DHCP client) gets no boot
// information.
func (s *Server) bootFor(ci ClientInfo) (bootInfo, bool) {
	pxe, http := pxeClient(ci.VendorClass)
	switch {
	case ci.IPXE:
		if s.cfg.BootHTTPBase == "" {
			return bootInfo{}, false
		}
		return bootInfo{file: s.cfg.BootHTTPBase + "/boot/" + ci.MAC.String() + ".ipxe", viaHTTP: true, pxeClient: pxe}, true
	case http || (ci.HasArch && ci.Arch.HTTPBoot()):
		f, ok := s.cfg.BootFiles[ci.Arch]
		if !ok || s.cfg.BootHTTPBase == "" {
			return bootInfo{}, false
		}
		if !strings.Contains(f, "://") {
			f = s.cfg.BootHTTPBase + s.cfg.HTTPBootPrefix + strings.TrimLeft(f, "/")
		}
		return bootInfo{file: f, viaHTTP: true, httpClient: true}, true
	case pxe:
		arch := ci.Arch // a PXE ROM without option 93 is a BIOS one (PXE 2.1)
		f, ok := s.cfg.BootFiles[arch]
		if !ok {
			return bootInfo{}, false
		}
		return bootInfo{file: f, pxeClient: true}, true
	}
	return bootInfo{}, false
}

// addBootOptions writes the boot information into a reply, with the answers
// that end the firmware's waits (SkipProxyDHCPWait; without it a server-mode
// reply carries only file, siaddr and option 66, as a stock server's would):
//
//   - iPXE (src/net/udp/dhcp.c, dhcp_discovery_rx): after the first DHCPOFFER
//     with an address, iPXE keeps collecting offers until it has a ProxyDHCP
//     offer, or the offer carries DHCP_EB_NO_PXEDHCP (option 175, sub-option
//     176) set non-zero, or DHCP_DISC_PROXY_TIMEOUT_SEC has passed — the ~3 s
//     seen with a stock server. We set 175.176 = 1 in server mode, which also
//     stops iPXE from sending a ProxyDHCPREQUEST to port 4011 afterwards
//     (dhcp_request_rx).
//   - A PXE ROM that is not iPXE: option 60 "PXEClient" in the offer makes it a
//     combined DHCP+PXE offer, and option 43 with PXE_DISCOVERY_CONTROL bit 3
//     tells it to download the offered boot file at once, without boot-server
//     discovery or a menu prompt. (iPXE's own rule, dhcp_has_pxeopts: an offer
//     with "PXEClient", siaddr and a boot file needs no ProxyDHCPREQUEST.)
//
// The IPv6 router-discovery wait is ended by netboot/ra, not by DHCP.
func (s *Server) addBootOptions(reply *dhcpv4.DHCPv4, req *dhcpv4.DHCPv4, b bootInfo, proxy bool) {
	if len(b.file) <= 127 {
		reply.BootFileName = b.file
	}
	reply.UpdateOption(dhcpv4.OptBootFileName(b.file))
	if !b.viaHTTP {
		reply.ServerIPAddr = s.cfg.TFTPServer
		reply.UpdateOption(dhcpv4.OptTFTPServerName(s.cfg.TFTPServer.String()))
	} else {
		reply.ServerIPAddr = s.cfg.ServerIP
	}
	switch {
	case b.httpClient:
		// UEFI HTTP boot ignores offers without it (UEFI spec 2.x, 24.7).
		reply.UpdateOption(dhcpv4.OptClassIdentifier("HTTPClient"))
	case b.pxeClient && (s.cfg.SkipProxyDHCPWait || proxy):
		// Required in a proxy offer; in server mode it is one of the wait cuts.
		reply.UpdateOption(dhcpv4.OptClassIdentifier("PXEClient"))
		v, _ := EncapsulatedOptions{{Code: pxeDiscoveryControl, Data: []byte{pxeDiscoveryBootFile}}}.MarshalBinary()
		reply.UpdateOption(dhcpv4.OptGeneric(dhcpv4.GenericOptionCode(optVendorSpecific), v))
	}
	if uuid := req.GetOneOption(dhcpv4.GenericOptionCode(optClientUUID)); uuid != nil {
		reply.UpdateOption(dhcpv4.OptGeneric(dhcpv4.GenericOptionCode(optClientUUID), uuid))
	}
	if s.cfg.SkipProxyDHCPWait && !proxy {
		v, _ := EncapsulatedOptions{{Code: ipxeNoPXEDHCP, Data: []byte{1}}}.MarshalBinary()
		reply.UpdateOption(dhcpv4.OptGeneric(dhcpv4.GenericOptionCode(optIPXEEncap), v))
	}
}
