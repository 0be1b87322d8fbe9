package aoe

import (
	"errors"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// batchSize is how many frames one recvmmsg/sendmmsg moves. With 16-64 tags in flight a
// syscall per frame (what vblade does) dominates the cost of a request; batching is where a
// Go target wins that back.
const batchSize = 32

// mmsghdr is struct mmsghdr (x/sys/unix has no type for it); Go pads it to the same size as C
// on every architecture (64 bytes on amd64).
type mmsghdr struct {
	hdr unix.Msghdr
	len uint32
}

// batchIO receives and sends frames on a bound AF_PACKET socket, many per system call.
type batchIO struct {
	rc   syscall.RawConn
	msgs []mmsghdr
	iovs []unix.Iovec
	bufs [][]byte // scratch for callers
}

func newBatchIO(rc syscall.RawConn) *batchIO {
	return &batchIO{rc: rc, msgs: make([]mmsghdr, batchSize), iovs: make([]unix.Iovec, batchSize), bufs: make([][]byte, 0, batchSize)}
}

func (b *batchIO) setup(bufs [][]byte) []mmsghdr {
	n := min(len(bufs), len(b.msgs))
	for i := range n {
		b.iovs[i].Base = &bufs[i][0]
		b.iovs[i].SetLen(len(bufs[i]))
		b.msgs[i] = mmsghdr{}
		b.msgs[i].hdr.Iov = &b.iovs[i]
		b.msgs[i].hdr.SetIovlen(1)
	}
	return b.msgs[:n]
}

// recv fills bufs with received frames (at least one; it waits) and returns their lengths
// in lens, returning how many were received.
func (b *batchIO) recv(bufs [][]byte, lens []int) (int, error) {
	msgs := b.setup(bufs)
	var n int
	var serr error
	err := b.rc.Read(func(fd uintptr) bool {
		r, _, e := unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&msgs[0])), uintptr(len(msgs)), unix.MSG_DONTWAIT, 0, 0)
		if e == unix.EAGAIN || e == unix.EINTR {
			return false
		}
		if e != 0 {
			serr = e
		}
		n = int(r)
		return true
	})
	if err != nil {
		return 0, err
	}
	if serr != nil {
		return 0, serr
	}
	for i := range n {
		lens[i] = int(msgs[i].len)
	}
	return n, nil
}

// send transmits every frame in bufs (a bound packet socket needs no address).
func (b *batchIO) send(bufs [][]byte) error {
	for len(bufs) > 0 {
		msgs := b.setup(bufs)
		var n int
		var serr error
		err := b.rc.Write(func(fd uintptr) bool {
			r, _, e := unix.Syscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&msgs[0])), uintptr(len(msgs)), unix.MSG_DONTWAIT, 0, 0)
			if e == unix.EAGAIN || e == unix.EINTR {
				return false
			}
			if e != 0 {
				serr = e
			}
			n = int(r)
			return true
		})
		if err != nil {
			return err
		}
		if serr != nil {
			return serr
		}
		if n <= 0 {
			return errors.New("sendmmsg sent nothing")
		}
		bufs = bufs[n:]
	}
	return nil
}
