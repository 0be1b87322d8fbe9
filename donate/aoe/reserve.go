package aoe

import (
	"fmt"
	"net"
)

// ReserveArgLen is the fixed part of the Reserve/Release argument; each MAC adds 6 bytes.
const ReserveArgLen = 2

// ReserveCommand is the Reserve/Release sub-command (AoE r11 section 3.4).
type ReserveCommand uint8

// Reserve/Release sub-commands.
const (
	ReserveRead     ReserveCommand = 0 // read the reserve list
	ReserveSet      ReserveCommand = 1 // set it, if the sender is on the current list (or it is empty)
	ReserveForceSet ReserveCommand = 2 // set it unconditionally
)

// ReserveArg is the Reserve/Release argument. An empty list releases the target.
type ReserveArg struct {
	Command ReserveCommand
	MACs    []net.HardwareAddr // at most 255
}

// MarshalTo writes the argument into b and returns the bytes written.
func (r *ReserveArg) MarshalTo(b []byte) (int, error) {
	if len(r.MACs) > 255 {
		return 0, fmt.Errorf("reserve arg: %d macs exceed 255", len(r.MACs))
	}
	n := ReserveArgLen + 6*len(r.MACs)
	if len(b) < n {
		return 0, fmt.Errorf("reserve arg: buffer of %d bytes, need %d: %w", len(b), n, ErrShort)
	}
	b[0], b[1] = uint8(r.Command), uint8(len(r.MACs))
	for i, m := range r.MACs {
		if len(m) != 6 {
			return 0, fmt.Errorf("reserve arg: mac %d %q is not 6 bytes", i, m)
		}
		copy(b[ReserveArgLen+6*i:], m)
	}
	return n, nil
}

// MarshalBinary returns the encoded argument.
func (r *ReserveArg) MarshalBinary() ([]byte, error) {
	b := make([]byte, ReserveArgLen+6*len(r.MACs))
	if _, err := r.MarshalTo(b); err != nil {
		return nil, err
	}
	return b, nil
}

// UnmarshalBinary parses the argument; the MACs are copied.
func (r *ReserveArg) UnmarshalBinary(b []byte) error {
	if len(b) < ReserveArgLen {
		return fmt.Errorf("reserve arg: %d bytes, want %d: %w", len(b), ReserveArgLen, ErrShort)
	}
	count := int(b[1])
	if len(b)-ReserveArgLen < 6*count {
		return fmt.Errorf("reserve arg: mac count %d needs %d bytes, %d follow: %w", count, 6*count, len(b)-ReserveArgLen, ErrShort)
	}
	r.Command = ReserveCommand(b[0])
	r.MACs = make([]net.HardwareAddr, count)
	for i := range r.MACs {
		r.MACs[i] = append(net.HardwareAddr(nil), b[ReserveArgLen+6*i:ReserveArgLen+6*i+6]...)
	}
	return nil
}
