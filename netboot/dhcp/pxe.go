package dhcp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
)

// Arch is a client system architecture from DHCP option 93 (RFC 4578, IANA
// "Processor Architecture Types").
type Arch uint16

// Architectures a boot network meets. Values are IANA's.
const (
	ArchBIOS      Arch = 0  // x86 PC BIOS (legacy PXE ROM)
	ArchIA32      Arch = 6  // x86 UEFI
	ArchX64       Arch = 7  // x64 UEFI
	ArchEFIBC     Arch = 9  // EFI byte code; most x64 firmware sends it too
	ArchARM32     Arch = 10 // ARM 32-bit UEFI
	ArchARM64     Arch = 11 // ARM 64-bit UEFI
	ArchX86HTTP   Arch = 15 // x86 UEFI HTTP boot
	ArchX64HTTP   Arch = 16 // x64 UEFI HTTP boot
	ArchARM32HTTP Arch = 18 // ARM 32-bit UEFI HTTP boot
	ArchARM64HTTP Arch = 19 // ARM 64-bit UEFI HTTP boot
	ArchBIOSHTTP  Arch = 20 // PC/AT BIOS HTTP boot
)

var archNames = map[Arch]string{
	ArchBIOS:      "bios",
	ArchIA32:      "efi-ia32",
	ArchX64:       "efi-x64",
	ArchEFIBC:     "efi-bc",
	ArchARM32:     "efi-arm32",
	ArchARM64:     "efi-arm64",
	ArchX86HTTP:   "efi-ia32-http",
	ArchX64HTTP:   "efi-x64-http",
	ArchARM32HTTP: "efi-arm32-http",
	ArchARM64HTTP: "efi-arm64-http",
	ArchBIOSHTTP:  "bios-http",
}

func (a Arch) String() string {
	if n, ok := archNames[a]; ok {
		return n
	}
	return fmt.Sprintf("arch-%d", uint16(a))
}

// HTTPBoot reports whether the architecture is a UEFI HTTP boot client, which
// takes a URL as boot file instead of a TFTP path.
func (a Arch) HTTPBoot() bool {
	switch a {
	case ArchX86HTTP, ArchX64HTTP, ArchARM32HTTP, ArchARM64HTTP, ArchBIOSHTTP:
		return true
	}
	return false
}

// ParseClientArch decodes option 93, a list of 16-bit architecture types; the
// first one is the client's own.
func ParseClientArch(b []byte) (Arch, error) {
	if len(b) < 2 || len(b)%2 != 0 {
		return 0, fmt.Errorf("option 93 (client arch): length %d is not a positive multiple of 2", len(b))
	}
	return Arch(binary.BigEndian.Uint16(b)), nil
}

// DHCP option codes this package reads or writes beyond what the library names.
const (
	optVendorSpecific = 43  // PXE vendor options when option 60 is "PXEClient"
	optClassID        = 60  // vendor class identifier
	optClientID       = 61  // client identifier
	optUserClass      = 77  // RFC 3004 user class; iPXE sends "iPXE"
	optClientArch     = 93  // RFC 4578 client system architecture
	optClientNDI      = 94  // RFC 4578 network device interface
	optClientUUID     = 97  // RFC 4578 machine UUID, echoed to PXE clients
	optIPXEEncap      = 175 // iPXE's encapsulated options (DHCP_EB_ENCAP)
	optRelayAgentInfo = 82
)

// Sub-options of PXE option 43 (PXE spec 2.1, table 2-1) and iPXE option 175.
const (
	pxeDiscoveryControl = 6 // PXE_DISCOVERY_CONTROL
	ipxeNoPXEDHCP       = 176
	ipxeBusID           = 177
)

// PXE_DISCOVERY_CONTROL bit 3: boot the file named in this offer without
// boot-server discovery or a menu.
const pxeDiscoveryBootFile = 0x08

// SubOption is one code/length/value item of an encapsulated option (43, 175).
type SubOption struct {
	Code byte
	Data []byte
}

// EncapsulatedOptions is the payload of an encapsulated option such as PXE's
// option 43 or iPXE's option 175: code, length, value items, with pad (0) and
// end (255) markers that carry no length.
type EncapsulatedOptions []SubOption

var errTruncated = errors.New("truncated")

// UnmarshalBinary parses an encapsulated option payload.
func (e *EncapsulatedOptions) UnmarshalBinary(b []byte) error {
	var out EncapsulatedOptions
	for i := 0; i < len(b); {
		code := b[i]
		switch code {
		case 0: // pad
			i++
			continue
		case 255: // end
			*e = out
			return nil
		}
		if i+1 >= len(b) {
			return fmt.Errorf("sub-option %d at offset %d: length byte: %w", code, i, errTruncated)
		}
		n := int(b[i+1])
		if i+2+n > len(b) {
			return fmt.Errorf("sub-option %d at offset %d: %d bytes declared, %d left: %w", code, i, n, len(b)-i-2, errTruncated)
		}
		out = append(out, SubOption{Code: code, Data: append([]byte(nil), b[i+2:i+2+n]...)})
		i += 2 + n
	}
	*e = out
	return nil
}

// MarshalBinary encodes the items followed by an end marker.
func (e EncapsulatedOptions) MarshalBinary() ([]byte, error) {
	var out []byte
	for _, o := range e {
		if o.Code == 0 || o.Code == 255 {
			return nil, fmt.Errorf("sub-option code %d is reserved (pad/end)", o.Code)
		}
		if len(o.Data) > 255 {
			return nil, fmt.Errorf("sub-option %d: %d bytes exceed 255", o.Code, len(o.Data))
		}
		out = append(out, o.Code, byte(len(o.Data)))
		out = append(out, o.Data...)
	}
	return append(out, 255), nil
}

// Get returns the first item with the code.
func (e EncapsulatedOptions) Get(code byte) ([]byte, bool) {
	for _, o := range e {
		if o.Code == code {
			return o.Data, true
		}
	}
	return nil, false
}

// ParseUserClass decodes option 77. RFC 3004 says it is a list of
// length-prefixed items, but iPXE and many firmwares send one bare string
// ("iPXE"); both forms are accepted. A payload that does not parse as RFC 3004
// is taken as one bare string.
func ParseUserClass(b []byte) []string {
	if len(b) == 0 {
		return nil
	}
	var items []string
	for i := 0; i < len(b); {
		n := int(b[i])
		if n == 0 || i+1+n > len(b) {
			return []string{string(b)}
		}
		items = append(items, string(b[i+1:i+1+n]))
		i += 1 + n
	}
	return items
}

// pxeClient reports whether a vendor class names a PXE ROM ("PXEClient:Arch:…")
// or a UEFI HTTP boot client ("HTTPClient:…").
func pxeClient(vendorClass string) (pxe, http bool) {
	return strings.HasPrefix(vendorClass, "PXEClient"), strings.HasPrefix(vendorClass, "HTTPClient")
}
