package window

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// MagicPacketLen is the length of a Wake-on-LAN magic packet: 6 x 0xff, then 16 x the MAC.
const MagicPacketLen = 6 + 16*6

// MagicPacket is a Wake-on-LAN payload for one MAC.
type MagicPacket struct {
	MAC net.HardwareAddr
}

// MarshalBinary returns the 102-byte magic packet.
func (p MagicPacket) MarshalBinary() ([]byte, error) {
	if len(p.MAC) != 6 {
		return nil, fmt.Errorf("wake-on-lan: mac %q is not 6 bytes", p.MAC)
	}
	b := bytes.Repeat([]byte{0xff}, 6)
	for range 16 {
		b = append(b, p.MAC...)
	}
	return b, nil
}

// UnmarshalBinary parses a magic packet; a trailing SecureOn password (4 or 6 bytes) is allowed.
func (p *MagicPacket) UnmarshalBinary(b []byte) error {
	if len(b) != MagicPacketLen && len(b) != MagicPacketLen+4 && len(b) != MagicPacketLen+6 {
		return fmt.Errorf("wake-on-lan: %d bytes, want %d (+4 or +6 password)", len(b), MagicPacketLen)
	}
	if !bytes.Equal(b[:6], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}) {
		return errors.New("wake-on-lan: sync stream is not 6 x 0xff")
	}
	mac := b[6:12]
	for i := 1; i < 16; i++ {
		if !bytes.Equal(b[6+6*i:12+6*i], mac) {
			return fmt.Errorf("wake-on-lan: repetition %d differs from the first MAC", i)
		}
	}
	p.MAC = append(net.HardwareAddr(nil), mac...)
	return nil
}

// Wake sends a magic packet (three copies, 50 ms apart) for mac to the broadcast address dst (e.g. 10.202.0.255:9) and,
// when ifname is not empty, out of that interface only (the boot network).
func Wake(ctx context.Context, mac net.HardwareAddr, dst *net.UDPAddr, ifname string) error {
	payload, err := MagicPacket{MAC: mac}.MarshalBinary()
	if err != nil {
		return err
	}
	lc := net.ListenConfig{Control: func(network, address string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_BROADCAST, 1)
			if serr == nil && ifname != "" {
				serr = unix.BindToDevice(int(fd), ifname)
			}
		})
		return errors.Join(err, serr)
	}}
	pc, err := lc.ListenPacket(ctx, "udp4", ":0")
	if err != nil {
		return fmt.Errorf("wake-on-lan %s: %w", mac, err)
	}
	defer pc.Close()
	// A lost datagram would leave the node asleep for the whole window: send a few copies.
	for i := range wakeCopies {
		if _, err := pc.WriteTo(payload, dst); err != nil {
			return fmt.Errorf("wake-on-lan %s to %s: %w", mac, dst, err)
		}
		if i < wakeCopies-1 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	return nil
}

const wakeCopies = 3
