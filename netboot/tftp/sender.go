package tftp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"time"
)

// sender serves one read transfer that pin/tftp cannot: one that negotiated the timeout or
// windowsize option (pin/tftp acknowledges neither and has no per-transfer timeout) or a
// blksize below 512. It sends a window of blocks and accepts cumulative ACKs (RFC 7440);
// a window of 1 is RFC 1350 lockstep, which never retransmits on a duplicate ACK (that is
// the Sorcerer's Apprentice bug).
type sender struct {
	conn    *net.UDPConn // connected to the client: the kernel drops other sources (TIDs)
	src     io.Reader
	oack    []byte // nil when no option was acknowledged
	p       params
	retries int
}

var errClientGone = errors.New("client stopped acknowledging")

// run sends the file and returns the bytes sent.
func (s *sender) run() (int64, error) {
	rbuf := make([]byte, 516)
	if s.oack != nil {
		if err := s.handshake(rbuf); err != nil {
			return 0, err
		}
	}
	w := s.p.window
	blocks := make([][]byte, w)
	for i := range blocks {
		blocks[i] = make([]byte, 4+s.p.blockSize)
	}
	lens := make([]int, w)
	var (
		base, next = uint64(1), uint64(1) // first unacknowledged, next to send
		last       uint64                 // sequence of the final (short) block, 0 until read
		sent       int64
		tries      int
		fastResent uint64 // base for which a duplicate ACK already triggered a resend
	)
	resend := func() error {
		for q := base; q < next; q++ {
			if _, err := s.conn.Write(blocks[q%uint64(w)][:lens[q%uint64(w)]]); err != nil {
				return fmt.Errorf("resend block %d: %w", q, err)
			}
		}
		return s.conn.SetReadDeadline(time.Now().Add(s.p.timeout))
	}
	for {
		filled := false
		for next < base+uint64(w) && (last == 0 || next <= last) {
			b := blocks[next%uint64(w)]
			n, err := io.ReadFull(s.src, b[4:])
			switch {
			case err == io.EOF || err == io.ErrUnexpectedEOF:
				last = next
			case err != nil:
				s.fail(ErrUndefined, "read error")
				return sent, fmt.Errorf("read block %d: %w", next, err)
			}
			binary.BigEndian.PutUint16(b, uint16(OpDATA))
			binary.BigEndian.PutUint16(b[2:], uint16(next))
			lens[next%uint64(w)] = 4 + n
			if _, err := s.conn.Write(b[:4+n]); err != nil {
				return sent, fmt.Errorf("send block %d: %w", next, err)
			}
			sent += int64(n)
			next++
			filled = true
		}
		if filled {
			if err := s.conn.SetReadDeadline(time.Now().Add(s.p.timeout)); err != nil {
				return sent, err
			}
		}
		n, err := s.conn.Read(rbuf)
		if err != nil {
			if isTimeout(err) {
				if tries++; tries > s.retries {
					return sent, fmt.Errorf("block %d after %d tries: %w", base, tries, errClientGone)
				}
				if err := resend(); err != nil {
					return sent, err
				}
				continue
			}
			return sent, fmt.Errorf("wait for ack of block %d: %w", base, err)
		}
		switch PacketOpcode(rbuf[:n]) {
		case OpACK:
			blk, err := ParseACK(rbuf[:n])
			if err != nil {
				continue
			}
			// Map the 16-bit block number onto the outstanding sequence (it wraps).
			off := uint64(blk - uint16(base-1))
			if off > next-base {
				continue // older than base-1 or never sent
			}
			if off == 0 {
				// Duplicate of the last in-order block: with a window, the client lost
				// something after it; resend once per base, never in lockstep.
				if w > 1 && fastResent != base {
					fastResent = base
					if err := resend(); err != nil {
						return sent, err
					}
				}
				continue
			}
			base += off
			tries = 0
			if last != 0 && base > last {
				return sent, nil
			}
		case OpERROR:
			var e ErrorPacket
			_ = e.UnmarshalBinary(rbuf[:n])
			return sent, fmt.Errorf("client error %d: %q", e.Code, e.Message)
		}
	}
}

// handshake sends the OACK until the client acknowledges it with ACK 0.
func (s *sender) handshake(rbuf []byte) error {
	for tries := 0; ; tries++ {
		if tries > s.retries {
			return fmt.Errorf("oack: %w", errClientGone)
		}
		if _, err := s.conn.Write(s.oack); err != nil {
			return fmt.Errorf("send oack: %w", err)
		}
		if err := s.conn.SetReadDeadline(time.Now().Add(s.p.timeout)); err != nil {
			return err
		}
		for {
			n, err := s.conn.Read(rbuf)
			if err != nil {
				if isTimeout(err) {
					break
				}
				return fmt.Errorf("wait for ack of oack: %w", err)
			}
			switch PacketOpcode(rbuf[:n]) {
			case OpACK:
				if blk, err := ParseACK(rbuf[:n]); err == nil && blk == 0 {
					return nil
				}
			case OpERROR:
				var e ErrorPacket
				_ = e.UnmarshalBinary(rbuf[:n])
				return fmt.Errorf("client refused options: error %d: %q", e.Code, e.Message)
			}
		}
	}
}

// fail tells the client why the transfer ends; best effort.
func (s *sender) fail(code ErrorCode, msg string) {
	if b, err := (&ErrorPacket{Code: code, Message: msg}).MarshalBinary(); err == nil {
		_, _ = s.conn.Write(b)
	}
}

func isTimeout(err error) bool {
	return errors.Is(err, os.ErrDeadlineExceeded)
}
