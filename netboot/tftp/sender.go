package tftp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"golang.org/x/net/ipv4"
)

// sender serves the read transfers pin/tftp cannot: those that negotiated timeout or
// windowsize (pin/tftp acknowledges neither and has no per-transfer timeout), a blksize
// below 512, and every send-ahead transfer (Config.Anticipate). pin/tftp's own send-ahead
// waits for the ACK of each block of a window in order, so one lost block stalls it until
// it gives up (its PR #42: "not yet a rolling window"). This one sends a window of blocks
// with one sendmmsg, drains ACKs with recvmmsg, treats ACKs as cumulative and goes back to
// the first unacknowledged block on a timeout or a gap (RFC 7440). A window of 1 is
// RFC 1350 lockstep, which never retransmits on a duplicate ACK (the Sorcerer's
// Apprentice bug).
type sender struct {
	conn    *net.UDPConn // connected to the client: the kernel drops other sources (TIDs)
	batch   batchConn    // the same socket, for sendmmsg/recvmmsg
	src     io.Reader
	oack    []byte // nil when no option was acknowledged
	p       params
	retries int
	// adaptive lets the window shrink on loss and regrow (AIMD, as TCP): for send-ahead
	// the client did not ask for, where bursts from many transfers can overflow a queue.
	// A negotiated windowsize is kept whole: RFC 7440 clients ACK at the end of a window.
	adaptive bool
	// estimateRTO retransmits after an estimated round trip rather than the full timeout,
	// unless the client negotiated the timeout (RFC 2349 makes it the retransmission wait).
	estimateRTO bool
}

// batchConn is implemented by ipv4.PacketConn and ipv6.PacketConn (their Message types
// are the same type).
type batchConn interface {
	WriteBatch(ms []ipv4.Message, flags int) (int, error)
	ReadBatch(ms []ipv4.Message, flags int) (int, error)
}

var errClientGone = errors.New("client stopped acknowledging")

// maxAcksPerRead bounds one recvmmsg.
const maxAcksPerRead = 32

// run sends the file and returns the bytes sent.
func (s *sender) run() (int64, error) {
	acks := make([]ipv4.Message, maxAcksPerRead)
	for i := range acks {
		acks[i].Buffers = [][]byte{make([]byte, 516)}
	}
	if s.oack != nil {
		if err := s.handshake(acks[0].Buffers[0]); err != nil {
			return 0, err
		}
	}
	w := uint64(s.p.window)
	blocks := make([][]byte, w)
	for i := range blocks {
		blocks[i] = make([]byte, 4+s.p.blockSize)
	}
	lens := make([]int, w)
	out := make([]ipv4.Message, w)
	var (
		base, next = uint64(1), uint64(1) // first unacknowledged, next to send
		last       uint64                 // sequence of the final (short) block, 0 until read
		sent       int64
		tries      int
		fastResent uint64 // base for which a duplicate ACK already triggered a resend
		cwnd       = w    // blocks allowed in flight
		acked      uint64 // ACKed blocks since cwnd last grew
		rto        = rtoEstimator{max: s.p.timeout}
		sentAt     = make([]time.Time, w) // first transmission; zero once retransmitted (Karn)
	)
	shrink := func() {
		if s.adaptive {
			cwnd = max(1, cwnd/2)
			acked = 0
		}
	}
	// send transmits blocks [from, to) and restarts the retransmission timer.
	send := func(from, to uint64, first bool) error {
		if from == to {
			return nil
		}
		if err := s.writeBlocks(out, blocks, lens, from, to); err != nil {
			return fmt.Errorf("send blocks %d-%d: %w", from, to-1, err)
		}
		now := time.Now()
		for q := from; q < to; q++ {
			if first {
				sentAt[q%w] = now
			} else {
				sentAt[q%w] = time.Time{}
			}
		}
		timeout := s.p.timeout
		if s.estimateRTO {
			timeout = rto.timeout()
		}
		return s.conn.SetReadDeadline(now.Add(timeout))
	}
	for {
		first := next
		for next < base+cwnd && (last == 0 || next <= last) {
			b := blocks[next%w]
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
			lens[next%w] = 4 + n
			sent += int64(n)
			next++
		}
		if err := send(first, next, true); err != nil {
			return sent, err
		}
		n, err := s.readAcks(acks)
		if err != nil {
			if isTimeout(err) {
				if tries++; tries > s.retries {
					return sent, fmt.Errorf("block %d after %d tries: %w", base, tries, errClientGone)
				}
				shrink()
				rto.backoff()
				if err := send(base, min(next, base+cwnd), false); err != nil {
					return sent, err
				}
				continue
			}
			return sent, fmt.Errorf("wait for ack of block %d: %w", base, err)
		}
		for _, m := range acks[:n] {
			pkt := m.Buffers[0][:m.N]
			switch PacketOpcode(pkt) {
			case OpACK:
				blk, err := ParseACK(pkt)
				if err != nil {
					continue
				}
				// Map the 16-bit block number onto the outstanding sequence (it wraps).
				off := uint64(blk - uint16(base-1))
				if off > next-base {
					continue // older than base-1 or never sent
				}
				if off == 0 {
					// A duplicate of the last in-order block: with a window, the client
					// lost something after it; resend once per base, never in lockstep.
					if w > 1 && fastResent != base {
						fastResent = base
						shrink()
						if err := send(base, min(next, base+cwnd), false); err != nil {
							return sent, err
						}
					}
					continue
				}
				if at := sentAt[(base+off-1)%w]; !at.IsZero() {
					rto.sample(time.Since(at))
				}
				base += off
				tries = 0
				if acked += off; acked >= cwnd && cwnd < w {
					cwnd, acked = cwnd+1, 0
				}
				if last != 0 && base > last {
					return sent, nil
				}
			case OpERROR:
				var e ErrorPacket
				_ = e.UnmarshalBinary(pkt)
				return sent, fmt.Errorf("client error %d: %q", e.Code, e.Message)
			}
		}
	}
}

// rtoEstimator is RFC 6298's retransmission timer, bounded above by the transfer's
// timeout: with send-ahead, waiting the full timeout after each lost block would stall
// the transfer for a second where the round trip is a fraction of a millisecond.
type rtoEstimator struct {
	srtt, rttvar time.Duration
	backoffs     uint
	max          time.Duration
}

// minRTO is Linux TCP's floor: on a busy host, scheduling delays of tens of milliseconds
// would otherwise fire spurious retransmissions of whole windows.
const minRTO = 200 * time.Millisecond

func (r *rtoEstimator) sample(d time.Duration) {
	if r.srtt == 0 {
		r.srtt, r.rttvar = d, d/2
	} else {
		diff := r.srtt - d
		if diff < 0 {
			diff = -diff
		}
		r.rttvar = (3*r.rttvar + diff) / 4
		r.srtt = (7*r.srtt + d) / 8
	}
	r.backoffs = 0
}

func (r *rtoEstimator) backoff() { r.backoffs = min(r.backoffs+1, 16) }

func (r *rtoEstimator) timeout() time.Duration {
	if r.srtt == 0 {
		return r.max
	}
	return min(r.max, max(minRTO, r.srtt+4*r.rttvar)<<r.backoffs)
}

// writeBlocks sends blocks [from, to) of the ring, batched when the socket allows it.
func (s *sender) writeBlocks(out []ipv4.Message, blocks [][]byte, lens []int, from, to uint64) error {
	w := uint64(len(blocks))
	if s.batch == nil || to-from == 1 {
		for q := from; q < to; q++ {
			if _, err := s.conn.Write(blocks[q%w][:lens[q%w]]); err != nil {
				return err
			}
		}
		return nil
	}
	ms := out[:0]
	for q := from; q < to; q++ {
		ms = append(ms, ipv4.Message{Buffers: [][]byte{blocks[q%w][:lens[q%w]]}})
	}
	for len(ms) > 0 {
		n, err := s.batch.WriteBatch(ms, 0)
		if err != nil {
			return err
		}
		ms = ms[n:]
	}
	return nil
}

// readAcks waits for at least one packet and returns all that are queued.
func (s *sender) readAcks(ms []ipv4.Message) (int, error) {
	if s.batch == nil {
		n, err := s.conn.Read(ms[0].Buffers[0])
		ms[0].N = n
		if err != nil {
			return 0, err
		}
		return 1, nil
	}
	return s.batch.ReadBatch(ms, 0)
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
