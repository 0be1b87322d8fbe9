package aoe

import (
	"fmt"
)

// ATAArgLen is the fixed part of the Issue ATA Command argument.
const ATAArgLen = 12

// SectorSize is the ATA logical sector size AoE transfers.
const SectorSize = 512

// ATA commands the target implements.
const (
	ATAReadSectors     uint8 = 0x20
	ATAReadSectorsExt  uint8 = 0x24
	ATAWriteSectors    uint8 = 0x30
	ATAWriteSectorsExt uint8 = 0x34
	ATACheckPower      uint8 = 0xe5
	ATAFlushCache      uint8 = 0xe7
	ATAFlushCacheExt   uint8 = 0xea
	ATAIdentify        uint8 = 0xec
)

// ATA status register bits.
const (
	StatusBSY  uint8 = 1 << 7
	StatusDRDY uint8 = 1 << 6
	StatusDF   uint8 = 1 << 5
	StatusDRQ  uint8 = 1 << 3
	StatusERR  uint8 = 1 << 0
)

// ATA error register bits.
const (
	ErrUNC  uint8 = 1 << 6
	ErrIDNF uint8 = 1 << 4
	ErrABRT uint8 = 1 << 2
)

// ATAArg is the Issue ATA Command argument (AoE r11 section 3.1). In a request CmdStatus is
// the ATA command and ErrFeature the feature register; in a response they are the status and
// error registers.
type ATAArg struct {
	Extended    bool // E: LBA48 command
	Device      bool // D: device/head register flag
	Async       bool // A: asynchronous write
	Write       bool // W: data travels to the target
	ErrFeature  uint8
	SectorCount uint8
	CmdStatus   uint8
	LBA         uint64 // 48 bits, little-endian on the wire
	Data        []byte // aliases the buffer after UnmarshalBinary
}

// MarshalTo writes the argument and its data into b and returns the bytes written.
func (a *ATAArg) MarshalTo(b []byte) (int, error) {
	n := ATAArgLen + len(a.Data)
	if len(b) < n {
		return 0, fmt.Errorf("ata arg: buffer of %d bytes, need %d: %w", len(b), n, ErrShort)
	}
	if a.LBA>>48 != 0 {
		return 0, fmt.Errorf("ata arg: lba %#x does not fit 48 bits", a.LBA)
	}
	var f uint8
	if a.Extended {
		f |= 0x40
	}
	if a.Device {
		f |= 0x10
	}
	if a.Async {
		f |= 0x02
	}
	if a.Write {
		f |= 0x01
	}
	b[0], b[1], b[2], b[3] = f, a.ErrFeature, a.SectorCount, a.CmdStatus
	putLBA(b[4:10], a.LBA)
	b[10], b[11] = 0, 0
	copy(b[ATAArgLen:], a.Data)
	return n, nil
}

// MarshalBinary returns the encoded argument.
func (a *ATAArg) MarshalBinary() ([]byte, error) {
	b := make([]byte, ATAArgLen+len(a.Data))
	if _, err := a.MarshalTo(b); err != nil {
		return nil, err
	}
	return b, nil
}

// UnmarshalBinary parses the argument; Data aliases b (no copy, the data path reuses buffers).
// Reserved bits and bytes are ignored, as the Linux driver and vblade do.
func (a *ATAArg) UnmarshalBinary(b []byte) error {
	if len(b) < ATAArgLen {
		return fmt.Errorf("ata arg: %d bytes, want %d: %w", len(b), ATAArgLen, ErrShort)
	}
	a.Extended = b[0]&0x40 != 0
	a.Device = b[0]&0x10 != 0
	a.Async = b[0]&0x02 != 0
	a.Write = b[0]&0x01 != 0
	a.ErrFeature, a.SectorCount, a.CmdStatus = b[1], b[2], b[3]
	a.LBA = getLBA(b[4:10])
	a.Data = b[ATAArgLen:]
	return nil
}

func putLBA(b []byte, lba uint64) {
	for i := range 6 {
		b[i] = byte(lba >> (8 * i))
	}
}

func getLBA(b []byte) uint64 {
	var v uint64
	for i := range 6 {
		v |= uint64(b[i]) << (8 * i)
	}
	return v
}
