package tftp

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
)

// Opcode is a TFTP packet type (RFC 1350, RFC 2347).
type Opcode uint16

// Opcodes.
const (
	OpRRQ   Opcode = 1
	OpWRQ   Opcode = 2
	OpDATA  Opcode = 3
	OpACK   Opcode = 4
	OpERROR Opcode = 5
	OpOACK  Opcode = 6
)

// ErrorCode is the code carried by an ERROR packet.
type ErrorCode uint16

// Error codes (RFC 1350, RFC 2347).
const (
	ErrUndefined      ErrorCode = 0
	ErrNotFound       ErrorCode = 1
	ErrAccess         ErrorCode = 2
	ErrDiskFull       ErrorCode = 3
	ErrIllegalOp      ErrorCode = 4
	ErrUnknownTID     ErrorCode = 5
	ErrFileExists     ErrorCode = 6
	ErrNoUser         ErrorCode = 7
	ErrOptionRejected ErrorCode = 8
)

// Option is one negotiated option. Names are kept lower-case: RFC 2347 makes them
// case-insensitive, so parsing folds them once and nothing downstream compares cases.
type Option struct {
	Name  string
	Value string
}

// Request is a read (RRQ) or write (WRQ) request.
type Request struct {
	Op       Opcode
	Filename string
	Mode     string // lower-case: "octet", "netascii" or "mail"
	Options  []Option
}

// Option returns the value of the named option (lower-case name).
func (r *Request) Option(name string) (string, bool) {
	for _, o := range r.Options {
		if o.Name == name {
			return o.Value, true
		}
	}
	return "", false
}

// UnmarshalBinary parses an RRQ or WRQ. Option names are folded to lower case and a
// repeated option keeps its first value. Trailing NUL padding, which some PXE ROMs send, is
// ignored; an unterminated string is an error.
func (r *Request) UnmarshalBinary(b []byte) error {
	if len(b) < 2 {
		return errors.New("request: short packet")
	}
	op := Opcode(binary.BigEndian.Uint16(b))
	if op != OpRRQ && op != OpWRQ {
		return fmt.Errorf("request: opcode %d is not RRQ or WRQ", op)
	}
	fields, err := splitStrings(b[2:])
	if err != nil {
		return fmt.Errorf("request: %w", err)
	}
	if len(fields) < 2 {
		return errors.New("request: missing filename or mode")
	}
	if fields[0] == "" {
		return errors.New("request: empty filename")
	}
	mode := strings.ToLower(fields[1])
	switch mode {
	case "octet", "netascii", "mail":
	default:
		return fmt.Errorf("request: mode %q unknown", fields[1])
	}
	*r = Request{Op: op, Filename: fields[0], Mode: mode}
	opts := fields[2:]
	for i := 0; i < len(opts); i += 2 {
		if opts[i] == "" {
			if allEmpty(opts[i:]) {
				break // NUL padding, not an option
			}
			return fmt.Errorf("request: empty option name at option %d", i/2)
		}
		if i+1 == len(opts) {
			return fmt.Errorf("request: option %q has no value", opts[i])
		}
		name := strings.ToLower(opts[i])
		if _, dup := r.Option(name); dup {
			continue
		}
		r.Options = append(r.Options, Option{Name: name, Value: opts[i+1]})
	}
	return nil
}

// MarshalBinary encodes the request.
func (r *Request) MarshalBinary() ([]byte, error) {
	if r.Op != OpRRQ && r.Op != OpWRQ {
		return nil, fmt.Errorf("request: opcode %d is not RRQ or WRQ", r.Op)
	}
	b := binary.BigEndian.AppendUint16(nil, uint16(r.Op))
	var err error
	for _, s := range []string{r.Filename, r.Mode} {
		if b, err = appendString(b, s); err != nil {
			return nil, fmt.Errorf("request: %w", err)
		}
	}
	if b, err = appendOptions(b, r.Options); err != nil {
		return nil, fmt.Errorf("request: %w", err)
	}
	return b, nil
}

// OACK is an option acknowledgement (RFC 2347).
type OACK []Option

// MarshalBinary encodes the OACK.
func (o OACK) MarshalBinary() ([]byte, error) {
	b, err := appendOptions(binary.BigEndian.AppendUint16(nil, uint16(OpOACK)), o)
	if err != nil {
		return nil, fmt.Errorf("oack: %w", err)
	}
	return b, nil
}

// UnmarshalBinary parses an OACK, keeping names as sent.
func (o *OACK) UnmarshalBinary(b []byte) error {
	if len(b) < 2 || Opcode(binary.BigEndian.Uint16(b)) != OpOACK {
		return errors.New("oack: not an OACK packet")
	}
	fields, err := splitStrings(b[2:])
	if err != nil {
		return fmt.Errorf("oack: %w", err)
	}
	if len(fields)%2 != 0 {
		return fmt.Errorf("oack: option %q has no value", fields[len(fields)-1])
	}
	*o = nil
	for i := 0; i < len(fields); i += 2 {
		*o = append(*o, Option{Name: fields[i], Value: fields[i+1]})
	}
	return nil
}

// ErrorPacket is an ERROR packet.
type ErrorPacket struct {
	Code    ErrorCode
	Message string
}

// MarshalBinary encodes the ERROR packet.
func (e *ErrorPacket) MarshalBinary() ([]byte, error) {
	b := binary.BigEndian.AppendUint16(nil, uint16(OpERROR))
	b = binary.BigEndian.AppendUint16(b, uint16(e.Code))
	b, err := appendString(b, e.Message)
	if err != nil {
		return nil, fmt.Errorf("error packet: %w", err)
	}
	return b, nil
}

// UnmarshalBinary parses an ERROR packet. A missing final NUL is tolerated: the message
// is informational and some clients omit it.
func (e *ErrorPacket) UnmarshalBinary(b []byte) error {
	if len(b) < 4 || Opcode(binary.BigEndian.Uint16(b)) != OpERROR {
		return errors.New("error packet: short or wrong opcode")
	}
	msg := b[4:]
	if i := bytes.IndexByte(msg, 0); i >= 0 {
		msg = msg[:i]
	}
	*e = ErrorPacket{Code: ErrorCode(binary.BigEndian.Uint16(b[2:])), Message: string(msg)}
	return nil
}

// ParseACK returns the block number of an ACK packet.
func ParseACK(b []byte) (uint16, error) {
	if len(b) < 4 || Opcode(binary.BigEndian.Uint16(b)) != OpACK {
		return 0, errors.New("ack: short or wrong opcode")
	}
	return binary.BigEndian.Uint16(b[2:]), nil
}

// PacketOpcode returns the opcode of a packet, or 0 when it is too short to have one.
func PacketOpcode(b []byte) Opcode {
	if len(b) < 2 {
		return 0
	}
	return Opcode(binary.BigEndian.Uint16(b))
}

func allEmpty(ss []string) bool {
	for _, s := range ss {
		if s != "" {
			return false
		}
	}
	return true
}

// splitStrings splits NUL-terminated strings; every string must be terminated.
func splitStrings(b []byte) ([]string, error) {
	var out []string
	for len(b) > 0 {
		i := bytes.IndexByte(b, 0)
		if i < 0 {
			return nil, fmt.Errorf("string %d (%q) not NUL-terminated", len(out), b)
		}
		out = append(out, string(b[:i]))
		b = b[i+1:]
	}
	return out, nil
}

func appendString(b []byte, s string) ([]byte, error) {
	if strings.IndexByte(s, 0) >= 0 {
		return nil, fmt.Errorf("string %q contains NUL", s)
	}
	return append(append(b, s...), 0), nil
}

func appendOptions(b []byte, opts []Option) ([]byte, error) {
	var err error
	for _, o := range opts {
		if o.Name == "" {
			return nil, errors.New("empty option name")
		}
		if b, err = appendString(b, o.Name); err != nil {
			return nil, fmt.Errorf("option name: %w", err)
		}
		if b, err = appendString(b, o.Value); err != nil {
			return nil, fmt.Errorf("option %s: %w", o.Name, err)
		}
	}
	return b, nil
}
