// Package aoe speaks ATA over Ethernet, protocol revision 11 (EtherType 0x88A2): the wire
// format, a durable target that exports one file or block device (what a donor node runs),
// and a user-space initiator (what the appliance uses for discovery, health checks and tests).
//
// Raw Ethernet goes through github.com/mdlayher/packet: github.com/mdlayher/raw is now only a
// deprecated wrapper around it, and packet exposes SyscallConn, which we need to set
// PACKET_IGNORE_OUTGOING (without it a socket reads back its own frames) and socket buffers.
//
// The wire format is ours rather than github.com/mdlayher/aoe's (idle since 2016, no go.mod):
// its MACMaskArg.MarshalBinary computes the buffer size in uint8 and panics for more than 31
// directives, its Header.UnmarshalBinary refuses unknown commands before a target can answer
// "unrecognized command code" (and vendor commands 0xf0-0xff), and it copies every ATA payload
// into a fresh slice, which the data path cannot afford.
//
// The target answers as vblade 25 does where the Linux aoe driver looks (Query Config fields,
// IDENTIFY words 60-61 and 100-103, LBA48 bits, ATA status/error bits), with two differences
// by design: a write is acknowledged only once it is on stable storage (group commit with
// fdatasync across outstanding tags; Unsafe turns that off), and the MAC mask list, the
// reserve list and the config string survive restarts in a state file.
//
// The target's data path takes requests from a PACKET_RX_RING (no system call while frames
// wait; recvmmsg where the kernel refuses a ring), answers a batch with one sendmmsg on a
// send-only socket kept out of the netpoller, sends read data by reference from a read-only
// mapping of the device (the kernel's copy into the socket buffer is the only one), writes
// with pwrite, and allocates nothing per frame. The initiator's receiving goroutine sends the
// next requests of a call itself, so streaming costs no goroutine hand-off per frame.
//
// This package leaves disk choice and safety checks to donate/disk and scheduling to the
// agent; it never imports another protocol package.
package aoe
