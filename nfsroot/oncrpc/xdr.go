package oncrpc

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// ErrShort is returned when an XDR item runs past the end of its message.
var ErrShort = errors.New("xdr: message too short")

// Decoder reads XDR (RFC 4506) items from a byte slice. The first error sticks, so a
// procedure decodes all its arguments and checks Err once; each read names its field so
// the error says which one was wrong.
type Decoder struct {
	B   []byte
	Err error
}

// NewDecoder returns a decoder over b; decoded opaques alias b.
func NewDecoder(b []byte) *Decoder { return &Decoder{B: b} }

func (d *Decoder) fail(field string, err error) {
	if d.Err == nil {
		d.Err = fmt.Errorf("%s: %w", field, err)
	}
}

// Uint32 reads an unsigned int.
func (d *Decoder) Uint32(field string) uint32 {
	if d.Err != nil {
		return 0
	}
	if len(d.B) < 4 {
		d.fail(field, ErrShort)
		return 0
	}
	v := binary.BigEndian.Uint32(d.B)
	d.B = d.B[4:]
	return v
}

// Uint64 reads an unsigned hyper.
func (d *Decoder) Uint64(field string) uint64 {
	hi := d.Uint32(field)
	lo := d.Uint32(field)
	return uint64(hi)<<32 | uint64(lo)
}

// Bool reads a bool (any non-zero word is true).
func (d *Decoder) Bool(field string) bool { return d.Uint32(field) != 0 }

// Opaque reads a variable-length opaque of at most max bytes. The result aliases the input.
func (d *Decoder) Opaque(field string, max int) []byte {
	n := d.Uint32(field)
	if d.Err != nil {
		return nil
	}
	if uint64(n) > uint64(max) {
		d.fail(field, fmt.Errorf("length %d exceeds %d", n, max))
		return nil
	}
	padded := (int(n) + 3) &^ 3
	if len(d.B) < padded {
		d.fail(field, ErrShort)
		return nil
	}
	v := d.B[:n:n]
	d.B = d.B[padded:]
	return v
}

// String reads a string of at most max bytes.
func (d *Decoder) String(field string, max int) string { return string(d.Opaque(field, max)) }

// Fixed reads n bytes of fixed-length opaque data.
func (d *Decoder) Fixed(field string, n int) []byte {
	if d.Err != nil {
		return nil
	}
	padded := (n + 3) &^ 3
	if n < 0 || len(d.B) < padded {
		d.fail(field, ErrShort)
		return nil
	}
	v := d.B[:n:n]
	d.B = d.B[padded:]
	return v
}

// The Append helpers build XDR in place, without reflection.

// AppendUint32 appends an unsigned int.
func AppendUint32(b []byte, v uint32) []byte { return binary.BigEndian.AppendUint32(b, v) }

// AppendUint64 appends an unsigned hyper.
func AppendUint64(b []byte, v uint64) []byte { return binary.BigEndian.AppendUint64(b, v) }

// AppendBool appends a bool.
func AppendBool(b []byte, v bool) []byte {
	if v {
		return AppendUint32(b, 1)
	}
	return AppendUint32(b, 0)
}

// AppendOpaque appends a variable-length opaque.
func AppendOpaque(b []byte, v []byte) []byte {
	b = AppendUint32(b, uint32(len(v)))
	b = append(b, v...)
	return AppendPad(b, len(v))
}

// AppendString appends a string.
func AppendString(b []byte, v string) []byte {
	b = AppendUint32(b, uint32(len(v)))
	b = append(b, v...)
	return AppendPad(b, len(v))
}

// AppendPad appends the zero bytes that align an item of n bytes to four.
func AppendPad(b []byte, n int) []byte {
	switch (4 - n%4) % 4 {
	case 1:
		b = append(b, 0)
	case 2:
		b = append(b, 0, 0)
	case 3:
		b = append(b, 0, 0, 0)
	}
	return b
}
