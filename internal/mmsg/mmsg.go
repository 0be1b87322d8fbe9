// Package mmsg receives datagrams many per system call, with recvmmsg(2), on a socket Go's
// netpoller manages, with headers allocated once (no allocation per call).
package mmsg

import (
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Receiver reads batches of datagrams from one socket. It is not safe for concurrent use.
type Receiver struct {
	rc   syscall.RawConn
	msgs []unix.Mmsghdr
	iovs []unix.Iovec
	// The netpoller callback and what it reports: made once, so a call allocates nothing
	// (a closure capturing its results escaped to the heap on every call).
	readFn func(fd uintptr) bool
	n      int // datagrams asked for
	got    int
	errno  syscall.Errno
}

// NewReceiver receives on rc up to max datagrams per call.
func NewReceiver(rc syscall.RawConn, max int) *Receiver {
	r := &Receiver{rc: rc, msgs: make([]unix.Mmsghdr, max), iovs: make([]unix.Iovec, max)}
	r.readFn = r.read
	return r
}

// Recv fills bufs with received datagrams, at least one (it waits in the netpoller, within
// the socket's read deadline), returns how many and sets their lengths in lens.
func (r *Receiver) Recv(bufs [][]byte, lens []int) (int, error) {
	r.n = min(len(bufs), len(r.msgs))
	for i := range r.n {
		r.iovs[i].Base = &bufs[i][0]
		r.iovs[i].SetLen(len(bufs[i]))
		r.msgs[i] = unix.Mmsghdr{}
		r.msgs[i].Hdr.Iov = &r.iovs[i]
		r.msgs[i].Hdr.SetIovlen(1)
	}
	r.got, r.errno = 0, 0
	if err := r.rc.Read(r.readFn); err != nil {
		return 0, err
	}
	if r.errno != 0 {
		return 0, r.errno
	}
	for i := range r.got {
		lens[i] = int(r.msgs[i].Len)
	}
	return r.got, nil
}

// read is the netpoller callback: true when done, false to wait for input.
func (r *Receiver) read(fd uintptr) bool {
	// Raw: MSG_DONTWAIT never blocks, and entersyscall would wake the runtime's sysmon
	// thread after every idle spell (measured on the AoE target: a tenth of its CPU).
	res, _, e := unix.RawSyscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&r.msgs[0])), uintptr(r.n), unix.MSG_DONTWAIT, 0, 0)
	if e == unix.EAGAIN || e == unix.EINTR {
		return false
	}
	r.got, r.errno = int(res), e
	return true
}
