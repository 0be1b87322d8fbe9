package mmsg

import (
	"bytes"
	"errors"
	"net"
	"os"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

func TestMmsghdrMatchesC(t *testing.T) {
	// struct mmsghdr on 64-bit Linux: a 56-byte msghdr and an unsigned int, padded to 64.
	if unsafe.Sizeof(uintptr(0)) == 8 && unsafe.Sizeof(unix.Mmsghdr{}) != 64 {
		t.Fatalf("mmsghdr is %d bytes, C has 64", unsafe.Sizeof(unix.Mmsghdr{}))
	}
}

// Datagrams queued on a socket come out of one Recv in order with their lengths, at most
// as many as the buffers; Recv then waits, within the read deadline, and allocates nothing.
func TestRecvTakesQueuedDatagrams(t *testing.T) {
	rx, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer rx.Close()
	tx, err := net.DialUDP("udp4", nil, rx.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Close()
	rc, err := rx.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	r := NewReceiver(rc, 4)
	bufs := make([][]byte, 4)
	for i := range bufs {
		bufs[i] = make([]byte, 100)
	}
	lens := make([]int, 4)
	sent := [][]byte{[]byte("a"), []byte("bb"), []byte("ccc"), []byte("dddd"), []byte("eeeee")}
	for _, p := range sent {
		if _, err := tx.Write(p); err != nil {
			t.Fatal(err)
		}
	}
	var got [][]byte
	for len(got) < len(sent) {
		n, err := r.Recv(bufs, lens)
		if err != nil {
			t.Fatal(err)
		}
		if n < 1 || n > 4 {
			t.Fatalf("Recv returned %d datagrams", n)
		}
		for i := range n {
			got = append(got, append([]byte(nil), bufs[i][:lens[i]]...))
		}
	}
	for i := range sent {
		if !bytes.Equal(got[i], sent[i]) {
			t.Fatalf("datagram %d: %q, want %q", i, got[i], sent[i])
		}
	}
	_ = rx.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	if _, err := r.Recv(bufs, lens); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Recv on an empty socket: %v, want the deadline", err)
	}
	_ = rx.SetReadDeadline(time.Time{})
	allocs := testing.AllocsPerRun(50, func() {
		if _, err := tx.Write(sent[0]); err != nil {
			t.Fatal(err)
		}
		if _, err := r.Recv(bufs, lens); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per Recv", allocs)
	}
}
