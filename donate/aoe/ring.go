package aoe

import (
	"errors"
	"fmt"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// rxRing is a PACKET_RX_RING (TPACKET_V2) on the target's packet socket: the kernel copies
// each frame into a slot shared with us, and the target takes it from there without a
// system call; it waits in the netpoller only when the ring is empty. Against recvmmsg this
// saves, per frame, the queueing of the socket buffer, the message header copies and the
// syscall itself (a sixth of the target's CPU at MTU 1500).
type rxRing struct {
	rc        syscall.RawConn
	mem       []byte
	frameSize int
	perBlock  int
	blockSize int
	frames    int
	head      int // next slot to look at
}

// TPACKET_V2 layout (linux/if_packet.h): struct tpacket2_hdr starts each slot.
const (
	tp2Status  = 0  // u32
	tp2Snaplen = 8  // u32
	tp2Mac     = 12 // u16
	tp2HdrLen  = 32 + 20
)

// ringBytes is about what the socket buffer held before: a full window of jumbo frames
// from a few initiators.
const ringBytes = 4 << 20

// newRxRing sets up a receive ring on the bound socket for frames up to frameLen bytes.
func newRxRing(rc syscall.RawConn, frameLen int) (*rxRing, error) {
	// A slot holds the header, padding up to the MAC header (the kernel aligns the network
	// header to 16 bytes with room for at least 16 bytes of link header) and the frame.
	frameSize := align16(align16(tp2HdrLen+16) + frameLen)
	blockSize := 128 << 10
	for blockSize < frameSize {
		blockSize <<= 1
	}
	perBlock := blockSize / frameSize
	blocks := max(ringBytes/blockSize, 2)
	r := &rxRing{rc: rc, frameSize: frameSize, perBlock: perBlock, blockSize: blockSize, frames: blocks * perBlock}
	var serr error
	err := rc.Control(func(fd uintptr) {
		if serr = unix.SetsockoptInt(int(fd), unix.SOL_PACKET, unix.PACKET_VERSION, unix.TPACKET_V2); serr != nil {
			serr = fmt.Errorf("PACKET_VERSION: %w", serr)
			return
		}
		req := unix.TpacketReq{Block_size: uint32(blockSize), Block_nr: uint32(blocks), Frame_size: uint32(frameSize), Frame_nr: uint32(r.frames)}
		if serr = unix.SetsockoptTpacketReq(int(fd), unix.SOL_PACKET, unix.PACKET_RX_RING, &req); serr != nil {
			serr = fmt.Errorf("PACKET_RX_RING: %w", serr)
			return
		}
		r.mem, serr = unix.Mmap(int(fd), 0, blockSize*blocks, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
		if serr != nil {
			serr = fmt.Errorf("mmap rx ring: %w", serr)
		}
	})
	if err != nil {
		return nil, err
	}
	if serr != nil {
		return nil, serr
	}
	return r, nil
}

func align16(n int) int { return (n + 15) &^ 15 }

func (r *rxRing) slot(i int) []byte {
	off := (i/r.perBlock)*r.blockSize + (i%r.perBlock)*r.frameSize
	return r.mem[off : off+r.frameSize]
}

func (r *rxRing) status(s []byte) *uint32 { return (*uint32)(unsafe.Pointer(&s[tp2Status])) }

// peek returns the frame in the head slot if the kernel has handed it over.
func (r *rxRing) peek() ([]byte, bool) {
	s := r.slot(r.head)
	if atomic.LoadUint32(r.status(s))&unix.TP_STATUS_USER == 0 {
		return nil, false
	}
	mac := int(*(*uint16)(unsafe.Pointer(&s[tp2Mac])))
	n := int(*(*uint32)(unsafe.Pointer(&s[tp2Snaplen])))
	if mac > len(s) || n > len(s)-mac { // cannot happen with a sane kernel; do not trust it blindly
		return s[:0], true
	}
	return s[mac : mac+n], true
}

// release gives the head slot back to the kernel (its frame must no longer be used) and
// moves on.
func (r *rxRing) release() {
	atomic.StoreUint32(r.status(r.slot(r.head)), unix.TP_STATUS_KERNEL)
	r.head = (r.head + 1) % r.frames
}

// wait returns once the head slot holds a frame, waiting in the netpoller for the socket
// to become readable. It fails once the socket is closed.
func (r *rxRing) wait() error {
	if _, ok := r.peek(); ok {
		return nil
	}
	return r.rc.Read(func(uintptr) bool {
		_, ok := r.peek()
		return ok
	})
}

// Close unmaps the ring; the socket must be closed or no longer read.
func (r *rxRing) Close() error {
	if r.mem == nil {
		return errors.New("rx ring already closed")
	}
	err := unix.Munmap(r.mem)
	r.mem = nil
	return err
}
