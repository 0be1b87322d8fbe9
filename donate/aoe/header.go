package aoe

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
)

// EtherType is AoE's Ethernet frame type.
const EtherType = 0x88A2

// Version is the AoE protocol version this package speaks (AoE r11 calls it version 1).
const Version = 1

// HeaderLen is the length of the Ethernet header plus the AoE header.
const HeaderLen = 14 + 10

// MinFrameLen is the shortest Ethernet frame (without FCS); shorter replies are zero-padded,
// as vblade does, because veth and some drivers do not pad for us.
const MinFrameLen = 60

// Broadcast addresses: a request to shelf 0xffff or slot 0xff reaches every shelf or slot.
const (
	BroadcastShelf uint16 = 0xffff
	BroadcastSlot  uint8  = 0xff
)

// Command is the AoE command code.
type Command uint8

// Commands of AoE r11 section 2.
const (
	CommandATA         Command = 0
	CommandQueryConfig Command = 1
	CommandMACMask     Command = 2
	CommandReserve     Command = 3
)

func (c Command) String() string {
	switch c {
	case CommandATA:
		return "ata"
	case CommandQueryConfig:
		return "query-config"
	case CommandMACMask:
		return "mac-mask"
	case CommandReserve:
		return "reserve-release"
	}
	return fmt.Sprintf("command(%d)", uint8(c))
}

// Error is the AoE error code carried when the error flag is set.
type Error uint8

// Errors of AoE r11 section 2.
const (
	ErrorUnrecognizedCommand Error = 1
	ErrorBadArgument         Error = 2
	ErrorDeviceUnavailable   Error = 3
	ErrorConfigStringPresent Error = 4
	ErrorUnsupportedVersion  Error = 5
	ErrorTargetReserved      Error = 6
)

func (e Error) Error() string {
	switch e {
	case ErrorUnrecognizedCommand:
		return "aoe: unrecognized command code"
	case ErrorBadArgument:
		return "aoe: bad argument parameter"
	case ErrorDeviceUnavailable:
		return "aoe: device unavailable"
	case ErrorConfigStringPresent:
		return "aoe: config string present"
	case ErrorUnsupportedVersion:
		return "aoe: unsupported version"
	case ErrorTargetReserved:
		return "aoe: target is reserved"
	}
	return fmt.Sprintf("aoe: error %d", uint8(e))
}

// ErrShort reports a frame or argument shorter than its fixed part or its declared length.
var ErrShort = errors.New("aoe: message too short")

// Header is the Ethernet header followed by the AoE header (AoE r11 section 2).
type Header struct {
	Dst, Src net.HardwareAddr // 6 bytes each
	Version  uint8            // 4 bits
	Response bool
	Error    bool
	Err      Error // meaningful when Error is set
	Shelf    uint16
	Slot     uint8
	Command  Command
	Tag      uint32
}

// MarshalTo writes the header into b, which must hold HeaderLen bytes.
func (h *Header) MarshalTo(b []byte) error {
	if len(b) < HeaderLen {
		return fmt.Errorf("aoe header: buffer of %d bytes: %w", len(b), ErrShort)
	}
	if len(h.Dst) != 6 || len(h.Src) != 6 {
		return fmt.Errorf("aoe header: dst %q / src %q: want 6-byte MACs", h.Dst, h.Src)
	}
	if h.Version > 0xf {
		return fmt.Errorf("aoe header: version %d does not fit 4 bits", h.Version)
	}
	copy(b[0:6], h.Dst)
	copy(b[6:12], h.Src)
	binary.BigEndian.PutUint16(b[12:14], EtherType)
	f := h.Version << 4
	if h.Response {
		f |= 0x08
	}
	if h.Error {
		f |= 0x04
	}
	b[14] = f
	b[15] = uint8(h.Err)
	binary.BigEndian.PutUint16(b[16:18], h.Shelf)
	b[18] = h.Slot
	b[19] = uint8(h.Command)
	binary.BigEndian.PutUint32(b[20:24], h.Tag)
	return nil
}

// MarshalBinary returns the HeaderLen bytes of the header.
func (h *Header) MarshalBinary() ([]byte, error) {
	b := make([]byte, HeaderLen)
	if err := h.MarshalTo(b); err != nil {
		return nil, err
	}
	return b, nil
}

// UnmarshalBinary parses the first HeaderLen bytes of b. Dst and Src alias b. It does not
// judge the version or the command: a target must still answer those with an error.
func (h *Header) UnmarshalBinary(b []byte) error {
	if len(b) < HeaderLen {
		return fmt.Errorf("aoe header: %d bytes, want %d: %w", len(b), HeaderLen, ErrShort)
	}
	if et := binary.BigEndian.Uint16(b[12:14]); et != EtherType {
		return fmt.Errorf("aoe header: ethertype %#04x, want %#04x", et, EtherType)
	}
	h.Dst = net.HardwareAddr(b[0:6:6])
	h.Src = net.HardwareAddr(b[6:12:12])
	h.Version = b[14] >> 4
	h.Response = b[14]&0x08 != 0
	h.Error = b[14]&0x04 != 0
	h.Err = Error(b[15])
	h.Shelf = binary.BigEndian.Uint16(b[16:18])
	h.Slot = b[18]
	h.Command = Command(b[19])
	h.Tag = binary.BigEndian.Uint32(b[20:24])
	return nil
}
