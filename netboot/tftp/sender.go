package tftp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"time"

	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"
)

// sender carries every read transfer once the request is accepted and the options are
// negotiated. pin/tftp's engine was the lock-step path until measured against it: its
// per-block loop (a read deadline, a read that fails with EAGAIN, a park in the netpoller,
// a wake-up, the read again, then the write) cannot be entered from outside, and it
// lost to tftpd-hpa on a single transfer, where every microsecond of the round trip
// counts. Its send-ahead waits for the ACK of each block of a window in order, so one
// lost block stalls it until it gives up (its PR #42: "not yet a rolling window"), and it
// acknowledges neither timeout nor windowsize. So:
//
//   - lock-step (window 1, RFC 1350) sends a block and waits for its ACK in one netpoller
//     round: the write is made inside the netpoller's read, after it reset the socket's
//     readiness, so no read is spent before the ACK can exist (two syscalls a block, not
//     three), and the callback and the read deadline are not remade per block. A duplicate ACK is never answered (the Sorcerer's Apprentice bug); a
//     timeout resends the block. Tried and dropped, as slower on 2 shared cores: a
//     blocking read for a lone transfer, as tftpd-hpa does (Go's runtime then keeps
//     sysmon busy), and a busy poll for the ACK (the poller holds a CPU the client needs).
//   - a window (send-ahead or RFC 7440 windowsize) goes out as one UDP GSO send (the
//     kernel cuts it into blocks, one trip down the stack instead of one per block), or
//     one sendmmsg where GSO is missing; ACKs are drained with recvmmsg, treated as
//     cumulative, and a timeout or a gap goes back to the first unacknowledged block.
type sender struct {
	conn    *net.UDPConn // connected to the client: the kernel drops other sources (TIDs)
	raw     syscall.RawConn
	batch   batchConn // the same socket, for sendmmsg/recvmmsg
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
	gsoSegs     int // blocks per GSO send; 0 when the socket has no UDP_SEGMENT
	// The lock-step wait: its netpoller callback, made once, and the callback's state.
	waitFn   func(fd uintptr) bool
	waitOut  []byte // to send first; nil once sent (or to send after EAGAIN)
	waitBuf  []byte
	waitN    int
	waitErr  error
	deadline time.Time // the read deadline last set
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
	raw, err := s.conn.SyscallConn()
	if err != nil {
		return 0, fmt.Errorf("transfer socket: %w", err)
	}
	s.raw = raw
	s.waitFn = s.waitCallback
	rbuf := make([]byte, 516)
	if s.oack != nil {
		if err := s.exchange(s.oack, 0, rbuf); err != nil {
			return 0, fmt.Errorf("oack: %w", err)
		}
	}
	if s.p.window == 1 {
		return s.lockstep(rbuf)
	}
	s.gsoSegs = enableGSO(raw, 4+s.p.blockSize)
	return s.windowed()
}

// lockstep sends one block at a time, each once its predecessor is acknowledged.
func (s *sender) lockstep(rbuf []byte) (int64, error) {
	b := make([]byte, 4+s.p.blockSize)
	binary.BigEndian.PutUint16(b, uint16(OpDATA))
	var sent int64
	for seq := uint16(1); ; seq++ {
		n, err := io.ReadFull(s.src, b[4:])
		last := err == io.EOF || err == io.ErrUnexpectedEOF
		if err != nil && !last {
			s.fail(ErrUndefined, "read error")
			return sent, fmt.Errorf("read block %d: %w", seq, err)
		}
		binary.BigEndian.PutUint16(b[2:], seq)
		if err := s.exchange(b[:4+n], seq, rbuf); err != nil {
			return sent, fmt.Errorf("block %d: %w", seq, err)
		}
		sent += int64(n)
		if last {
			return sent, nil
		}
	}
}

// exchange sends pkt and waits for the ACK of block want, resending pkt after each
// timeout. Any other ACK (a late duplicate of the previous one) is ignored, never
// answered, and does not restart the timer.
func (s *sender) exchange(pkt []byte, want uint16, rbuf []byte) error {
	for tries := 0; ; tries++ {
		if tries > s.retries {
			return fmt.Errorf("after %d tries: %w", tries, errClientGone)
		}
		if err := s.armTimer(); err != nil {
			return err
		}
		out := pkt
		for {
			n, err := s.await(out, rbuf)
			out = nil
			if err != nil {
				if isTimeout(err) {
					break
				}
				return err
			}
			switch PacketOpcode(rbuf[:n]) {
			case OpACK:
				if blk, err := ParseACK(rbuf[:n]); err == nil && blk == want {
					return nil
				}
			case OpERROR:
				return clientError(rbuf[:n])
			}
		}
	}
}

// armTimer sets the read deadline one timeout from now. A deadline set less than 1/64
// of the timeout ago is kept (the wait may end up to that much early): resetting the
// runtime timer on every block of a fast transfer costs more than the block's wait.
func (s *sender) armTimer() error {
	now := time.Now()
	want := now.Add(s.p.timeout)
	if d := want.Sub(s.deadline); d >= 0 && d < s.p.timeout/64 {
		return nil
	}
	s.deadline = want
	return s.conn.SetReadDeadline(want)
}

// await sends out (unless nil) and returns the next packet from the client, within the
// read deadline. The write happens inside the netpoller's read so the readiness the
// answer raises cannot be missed, and no read is tried before the answer can exist.
func (s *sender) await(out, rbuf []byte) (int, error) {
	s.waitOut, s.waitBuf, s.waitN, s.waitErr = out, rbuf, 0, nil
	if err := s.raw.Read(s.waitFn); err != nil {
		return 0, err
	}
	if s.waitErr != nil {
		return 0, s.waitErr
	}
	if s.waitOut != nil { // the send buffer was full: write where Go can wait
		if _, err := s.conn.Write(s.waitOut); err != nil {
			return 0, fmt.Errorf("send: %w", err)
		}
		return s.await(nil, rbuf)
	}
	return s.waitN, nil
}

// waitCallback is await's netpoller callback: true when done, false to wait for input.
func (s *sender) waitCallback(fd uintptr) bool {
	if s.waitOut != nil {
		if _, err := unix.Write(int(fd), s.waitOut); err != nil {
			if err != unix.EAGAIN {
				s.waitErr = fmt.Errorf("send: %w", err)
			}
			return true
		}
		s.waitOut = nil
		// The ACK cannot be there yet on any real link: wait for the netpoller's word
		// rather than spend a read that fails. The readiness it raises is not lost, as
		// RawConn.Read reset it before calling here.
		return false
	}
	n, err := unix.Read(int(fd), s.waitBuf)
	if err == unix.EAGAIN {
		return false
	}
	s.waitN, s.waitErr = n, err
	return true
}

// windowed sends up to a window of blocks ahead of the client's ACKs.
func (s *sender) windowed() (int64, error) {
	acks := make([]ipv4.Message, maxAcksPerRead)
	for i := range acks {
		acks[i].Buffers = [][]byte{make([]byte, 516)}
	}
	w := uint64(s.p.window)
	seg := 4 + s.p.blockSize
	// One buffer, block after block: a run of blocks that does not wrap is one GSO send.
	ring := make([]byte, int(w)*seg)
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
		if err := s.writeBlocks(out, ring, seg, lens, from, to); err != nil {
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
			i := int(next % w)
			b := ring[i*seg : (i+1)*seg]
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
			lens[i] = 4 + n
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
					// A duplicate of the last in-order block: the client lost something
					// after it; resend once per base.
					if fastResent != base {
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
				return sent, clientError(pkt)
			}
		}
	}
}

func clientError(pkt []byte) error {
	var e ErrorPacket
	_ = e.UnmarshalBinary(pkt)
	return fmt.Errorf("client error %d: %q", e.Code, e.Message)
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

// maxUDPPayload is the largest UDP payload over IPv4; a GSO send may not exceed it.
const maxUDPPayload = 65507

// enableGSO asks the kernel to cut each send into datagrams of seg bytes (UDP_SEGMENT,
// Linux 4.18+) and returns how many blocks one send may carry; 0 when unavailable.
func enableGSO(raw syscall.RawConn, seg int) int {
	segs := min(64, maxUDPPayload/seg) // 64: the kernel's UDP_MAX_SEGMENTS floor
	if segs < 2 {
		return 0
	}
	var serr error
	if err := raw.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_SEGMENT, seg)
	}); err != nil || serr != nil {
		return 0
	}
	return segs
}

// disableGSO turns UDP_SEGMENT off after the kernel refused a GSO send (a device without
// checksum offload answers EIO, a path MTU below the block EINVAL).
func (s *sender) disableGSO() {
	s.gsoSegs = 0
	_ = s.raw.Control(func(fd uintptr) {
		_ = unix.SetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_SEGMENT, 0)
	})
}

// writeBlocks sends blocks [from, to) of the ring: runs of adjacent blocks as GSO sends
// when the socket has UDP_SEGMENT, else batched with sendmmsg. Only the file's last
// block is short, and it is always the last one sent, as GSO requires.
func (s *sender) writeBlocks(out []ipv4.Message, ring []byte, seg int, lens []int, from, to uint64) error {
	w := uint64(len(lens))
	for s.gsoSegs > 0 && from < to {
		i := from % w
		end := min(to, from+(w-i), from+uint64(s.gsoSegs))
		if end-from == 1 {
			break // a lone block: no gain
		}
		n := int(end-from-1)*seg + lens[(end-1)%w]
		if _, err := s.conn.Write(ring[int(i)*seg : int(i)*seg+n]); err != nil {
			if errors.Is(err, unix.EIO) || errors.Is(err, unix.EINVAL) {
				s.disableGSO()
				break
			}
			return err
		}
		from = end
	}
	if from == to {
		return nil
	}
	block := func(q uint64) []byte { i := int(q % w); return ring[i*seg : i*seg+lens[i]] }
	if s.batch == nil || to-from == 1 {
		for q := from; q < to; q++ {
			if _, err := s.conn.Write(block(q)); err != nil {
				return err
			}
		}
		return nil
	}
	ms := out[:0]
	for q := from; q < to; q++ {
		ms = append(ms, ipv4.Message{Buffers: [][]byte{block(q)}})
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

// fail tells the client why the transfer ends; best effort.
func (s *sender) fail(code ErrorCode, msg string) {
	if b, err := (&ErrorPacket{Code: code, Message: msg}).MarshalBinary(); err == nil {
		_, _ = s.conn.Write(b)
	}
}

func isTimeout(err error) bool {
	return errors.Is(err, os.ErrDeadlineExceeded)
}
