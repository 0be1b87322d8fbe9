package oncrpc

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// lastFragment marks the final fragment of a record (RFC 5531 §11).
const lastFragment = 1 << 31

// ErrRecordTooLarge is returned when a record grows past the reader's limit.
var ErrRecordTooLarge = errors.New("rpc record too large")

// ReadRecord reads one record marked record (all its fragments) from r into buf[:0],
// growing it as needed up to max bytes.
func ReadRecord(r io.Reader, buf []byte, max int) ([]byte, error) {
	buf = buf[:0]
	var hdr [4]byte
	for {
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			if len(buf) > 0 && errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return buf, err
		}
		mark := binary.BigEndian.Uint32(hdr[:])
		n := int(mark &^ lastFragment)
		if len(buf)+n > max {
			return buf, fmt.Errorf("%w: more than %d bytes", ErrRecordTooLarge, max)
		}
		start := len(buf)
		if cap(buf) < start+n {
			grown := make([]byte, start, start+n)
			copy(grown, buf)
			buf = grown
		}
		buf = buf[:start+n]
		if _, err := io.ReadFull(r, buf[start:]); err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return buf, err
		}
		if mark&lastFragment != 0 {
			return buf, nil
		}
	}
}

// RecordMark returns the header of a record of n bytes sent as one fragment.
func RecordMark(n int) [4]byte {
	var h [4]byte
	binary.BigEndian.PutUint32(h[:], uint32(n)|lastFragment)
	return h
}

// RecordBuffered tells whether a whole one-fragment record is already in br's buffer, so
// that ReadRecord on br returns it without reading from the connection.
func RecordBuffered(br *bufio.Reader) bool {
	if br.Buffered() < 4 {
		return false // Peek would wait for the connection
	}
	hdr, err := br.Peek(4)
	if err != nil {
		return false
	}
	mark := binary.BigEndian.Uint32(hdr)
	return mark&lastFragment != 0 && br.Buffered() >= 4+int(mark&^lastFragment)
}
