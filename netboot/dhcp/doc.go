// Package dhcp is the appliance's DHCPv4 service on the boot network: the
// first thing a node talks to when it powers on.
//
// It serves two modes. In server mode it hands out addresses from a range
// (fixed addresses for enrolled nodes, from the registry through Nodes) and
// keeps leases in an append-only log whose records are fdatasync'ed, in
// groups, before the acknowledgement leaves, so a lease that a client holds
// survives a restart and a kill -9; the log is compacted by writing a snapshot
// beside it and renaming it over. Before answering anything it probes the link
// and refuses to start if another DHCP server answers. It never offers an
// address some other host already uses: addresses new to a client are checked
// with RFC 5227 ARP probes on the interface, ahead of demand in the background
// so a boot storm takes verified addresses without waiting (arpserve.go); a
// squatter's address is held like a DECLINE and logged once. In proxy mode another
// server owns the addresses and this one answers PXE clients with boot
// information only (proxyDHCP on port 67, PXE boot server on 4011); it checks
// at start that some DHCP server answers and warns once if none does.
//
// In both modes it decides what a network-booting client loads: a PXE ROM
// gets the iPXE binary for its architecture (option 93) by TFTP, a UEFI HTTP
// boot client gets it by URL, and a client that is already iPXE gets its
// per-MAC script URL, <BootHTTPBase>/boot/<mac>.ipxe (iPXE percent-encodes
// the colons; net/http decodes them). The offers carry the options that end
// the firmware's ProxyDHCP wait (firmware.go explains which iPXE code path
// each one ends); netboot/ra ends the IPv6 router wait.
//
// Serving TFTP and HTTP, rendering scripts and recording discovered machines
// are left to other packages: this one reports each machine through
// Nodes.Seen and never imports them.
package dhcp
