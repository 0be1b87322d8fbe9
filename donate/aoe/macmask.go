package aoe

import (
	"fmt"
	"net"
)

// MACMaskArgLen is the fixed part of the MAC Mask List argument; each directive adds 8 bytes.
const (
	MACMaskArgLen = 4
	DirectiveLen  = 8
)

// MACMaskCommand is the MAC Mask List sub-command (AoE r11 section 3.3).
type MACMaskCommand uint8

// MAC mask sub-commands.
const (
	MACMaskRead MACMaskCommand = 0
	MACMaskEdit MACMaskCommand = 1
)

// DirectiveCommand says what a directive does to the list.
type DirectiveCommand uint8

// Directive commands.
const (
	DirectiveNone   DirectiveCommand = 0
	DirectiveAdd    DirectiveCommand = 1
	DirectiveDelete DirectiveCommand = 2
)

// MACMaskError is the list-specific error of a MAC Mask List response.
type MACMaskError uint8

// MAC mask errors.
const (
	MACMaskErrUnspecified MACMaskError = 1
	MACMaskErrBadCommand  MACMaskError = 2
	MACMaskErrListFull    MACMaskError = 3
)

// Directive adds or deletes one MAC.
type Directive struct {
	Command DirectiveCommand
	MAC     net.HardwareAddr
}

// MACMaskArg is the MAC Mask List argument.
type MACMaskArg struct {
	Command    MACMaskCommand
	Error      MACMaskError
	Directives []Directive // at most 255
}

// MarshalTo writes the argument into b and returns the bytes written.
func (m *MACMaskArg) MarshalTo(b []byte) (int, error) {
	if len(m.Directives) > 255 {
		return 0, fmt.Errorf("mac mask arg: %d directives exceed 255", len(m.Directives))
	}
	n := MACMaskArgLen + DirectiveLen*len(m.Directives)
	if len(b) < n {
		return 0, fmt.Errorf("mac mask arg: buffer of %d bytes, need %d: %w", len(b), n, ErrShort)
	}
	b[0], b[1], b[2], b[3] = 0, uint8(m.Command), uint8(m.Error), uint8(len(m.Directives))
	for i, d := range m.Directives {
		if len(d.MAC) != 6 {
			return 0, fmt.Errorf("mac mask arg: directive %d: mac %q is not 6 bytes", i, d.MAC)
		}
		o := MACMaskArgLen + i*DirectiveLen
		b[o], b[o+1] = 0, uint8(d.Command)
		copy(b[o+2:o+8], d.MAC)
	}
	return n, nil
}

// MarshalBinary returns the encoded argument.
func (m *MACMaskArg) MarshalBinary() ([]byte, error) {
	b := make([]byte, MACMaskArgLen+DirectiveLen*len(m.Directives))
	if _, err := m.MarshalTo(b); err != nil {
		return nil, err
	}
	return b, nil
}

// UnmarshalBinary parses the argument; the MACs are copied.
func (m *MACMaskArg) UnmarshalBinary(b []byte) error {
	if len(b) < MACMaskArgLen {
		return fmt.Errorf("mac mask arg: %d bytes, want %d: %w", len(b), MACMaskArgLen, ErrShort)
	}
	count := int(b[3])
	if len(b)-MACMaskArgLen < count*DirectiveLen {
		return fmt.Errorf("mac mask arg: directive count %d needs %d bytes, %d follow: %w",
			count, count*DirectiveLen, len(b)-MACMaskArgLen, ErrShort)
	}
	m.Command, m.Error = MACMaskCommand(b[1]), MACMaskError(b[2])
	m.Directives = make([]Directive, count)
	for i := range m.Directives {
		o := MACMaskArgLen + i*DirectiveLen
		m.Directives[i] = Directive{
			Command: DirectiveCommand(b[o+1]),
			MAC:     append(net.HardwareAddr(nil), b[o+2:o+8]...),
		}
	}
	return nil
}
