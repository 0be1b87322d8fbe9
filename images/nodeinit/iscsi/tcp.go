package iscsi

import (
	"context"
	"fmt"
	"io"
	"net"
	"time"
)

// TCPTransport runs login PDUs over a plain TCP connection (tests, tools, discovery).
type TCPTransport struct{ Conn net.Conn }

// RoundTrip sends pdu and reads one response PDU.
func (t TCPTransport) RoundTrip(ctx context.Context, pdu []byte) ([]byte, error) {
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(30 * time.Second)
	}
	_ = t.Conn.SetDeadline(deadline)
	if _, err := t.Conn.Write(pdu); err != nil {
		return nil, fmt.Errorf("send PDU: %w", err)
	}
	return ReadPDU(t.Conn)
}

// ReadPDU reads one PDU (BHS, AHS and padded data segment) from r.
func ReadPDU(r io.Reader) ([]byte, error) {
	bhs := make([]byte, BHSLen)
	if _, err := io.ReadFull(r, bhs); err != nil {
		return nil, fmt.Errorf("read PDU header: %w", err)
	}
	n := int(bhs[4])*4 + dataLen(bhs)
	n += pad4(n)
	b := make([]byte, BHSLen+n)
	copy(b, bhs)
	if _, err := io.ReadFull(r, b[BHSLen:]); err != nil {
		return nil, fmt.Errorf("read PDU data: %w", err)
	}
	return b, nil
}
