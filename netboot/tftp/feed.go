package tftp

import (
	"net"
	"sync"
	"time"
)

// feedConn is the net.PacketConn pin/tftp's Server reads requests from. We own the
// well-known port and pass the library only requests already checked and normalised;
// it opens its own socket per transfer, so it never writes here.
type feedConn struct {
	ch        chan feedPacket
	done      chan struct{}
	closeOnce sync.Once
}

type feedPacket struct {
	b    []byte
	peer *net.UDPAddr
}

func newFeedConn() *feedConn {
	return &feedConn{ch: make(chan feedPacket, 64), done: make(chan struct{})}
}

// push queues a request for the library; false once closed.
func (f *feedConn) push(b []byte, peer *net.UDPAddr) bool {
	select {
	case <-f.done:
		return false
	default:
	}
	select {
	case f.ch <- feedPacket{b: b, peer: peer}:
		return true
	case <-f.done:
		return false
	}
}

func (f *feedConn) ReadFrom(b []byte) (int, net.Addr, error) {
	select {
	case p := <-f.ch:
		return copy(b, p.b), p.peer, nil
	case <-f.done:
		return 0, nil, net.ErrClosed
	}
}

func (f *feedConn) WriteTo([]byte, net.Addr) (int, error) { return 0, net.ErrWriteToConnected }

func (f *feedConn) Close() error {
	f.closeOnce.Do(func() { close(f.done) })
	return nil
}

// LocalAddr must parse as an IP: the library derives its address family from it.
func (f *feedConn) LocalAddr() net.Addr              { return &net.UDPAddr{IP: net.IPv4zero} }
func (f *feedConn) SetDeadline(time.Time) error      { return nil }
func (f *feedConn) SetReadDeadline(time.Time) error  { return nil }
func (f *feedConn) SetWriteDeadline(time.Time) error { return nil }
