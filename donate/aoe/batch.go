package aoe

import (
	"errors"
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// batchSize is how many frames one recvmmsg moves. With 16-64 tags in flight a syscall per
// frame (what vblade does) dominates the cost of a request; batching is where a Go target
// wins that back.
const batchSize = 32

// txSocket is a send-only AF_PACKET socket on the interface. Bound with protocol 0 it
// receives nothing, and kept out of the netpoller it wakes nobody: Go polls each socket it
// manages for EPOLLOUT as well, and on such a socket every transmitted frame, freed on
// delivery, signals write space and wakes a poller thread for nothing.
type txSocket struct {
	fd int
}

func openTxSocket(ifindex int) (*txSocket, error) {
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("send socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Ifindex: ifindex}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("send socket bind: %w", err)
	}
	// Frames go straight to the driver: AoE has its own flow control (tags, bufcnt), a
	// qdisc only adds work per frame. Best effort: old kernels lack the option.
	_ = unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_QDISC_BYPASS, 1)
	// The FORCE variant passes wmem_max as root; fall back quietly otherwise.
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, socketBuffer) != nil {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, socketBuffer)
	}
	return &txSocket{fd: fd}, nil
}

func (s *txSocket) Close() error { return unix.Close(s.fd) }

// sender batches frames for one sendmmsg on a txSocket. Each frame is a buffer plus optional
// data sent by reference (a read's sectors, straight from the device mapping: the kernel
// copies them into the socket buffer, so user space copies nothing). One sender per
// goroutine; several may share the socket.
type sender struct {
	s     *txSocket
	parts [][2][]byte
	msgs  []unix.Mmsghdr
	iovs  []unix.Iovec
}

func newSender(s *txSocket) *sender { return &sender{s: s} }

// add queues a frame made of b followed by ext (which may be nil).
func (s *sender) add(b, ext []byte) { s.parts = append(s.parts, [2][]byte{b, ext}) }

// flush transmits the queued frames, as few system calls as it can, and forgets them. It
// returns how many were sent: all, or the index of the frame that failed with err.
func (s *sender) flush() (int, error) {
	parts := s.parts
	s.parts = s.parts[:0]
	defer clear(parts) // drop references to frames and the mapping
	if len(parts) == 0 {
		return 0, nil
	}
	if cap(s.msgs) < len(parts) {
		s.msgs = make([]unix.Mmsghdr, len(parts))
		s.iovs = make([]unix.Iovec, 2*len(parts))
	}
	msgs, iovs := s.msgs[:len(parts)], s.iovs[:2*len(parts)]
	for i, p := range parts {
		iov := iovs[2*i : 2*i+2]
		k := 0
		for _, b := range p {
			if len(b) > 0 {
				iov[k].Base = &b[0]
				iov[k].SetLen(len(b))
				k++
			}
		}
		msgs[i] = unix.Mmsghdr{}
		msgs[i].Hdr.Iov = &iov[0]
		msgs[i].Hdr.SetIovlen(k)
	}
	sent := 0
	for sent < len(msgs) {
		// Raw and non-blocking: the call only queues frames (the socket is bound, so no
		// address), and entersyscall would wake the runtime's sysmon thread.
		r, _, e := unix.RawSyscall6(unix.SYS_SENDMMSG, uintptr(s.s.fd), uintptr(unsafe.Pointer(&msgs[sent])), uintptr(len(msgs)-sent), unix.MSG_DONTWAIT, 0, 0)
		switch {
		case e == unix.EINTR:
		case e == unix.EAGAIN:
			// Send buffer full: wait for room, a bounded while (a dead link must not hang us).
			pfd := []unix.PollFd{{Fd: int32(s.s.fd), Events: unix.POLLOUT}}
			if n, err := unix.Poll(pfd, 100); err != nil && err != unix.EINTR {
				return sent, fmt.Errorf("sendmmsg: poll: %w", err)
			} else if n == 0 {
				return sent, fmt.Errorf("sendmmsg: %w", e)
			}
		case e != 0:
			return sent, e
		case r == 0:
			return sent, errors.New("sendmmsg sent nothing")
		default:
			sent += int(r)
		}
	}
	return sent, nil
}
