package aoe

import "encoding/binary"

// FirmwareVersion is what Query Config and IDENTIFY report: vblade reports 0x4000+its version;
// we keep the 0x4000 family so tools that print it stay readable.
const FirmwareVersion = 0x4000 + 1

const maxLBA28 = 0x0fffffff

// Identify returns the 512-byte ATA IDENTIFY DEVICE block for a device of the given number of
// sectors. The words the Linux aoe driver reads (60-61 LBA28 size, 83/86 bit 10 LBA48,
// 100-103 LBA48 size) and the feature words match vblade's.
func Identify(sectors uint64, serial, model, firmware string) [512]byte {
	var id [512]byte
	word := func(i int, v uint16) { binary.LittleEndian.PutUint16(id[2*i:], v) }
	word(47, 0x8000)
	word(49, 0x0200) // LBA supported
	word(50, 0x4000)
	word(83, 0x5400) // LBA48 (bit 10) and FLUSH CACHE EXT (bit 13) supported
	word(84, 0x4000)
	word(86, 0x1400) // LBA48 enabled
	word(87, 0x4000)
	word(93, 0x400b)
	ataString(id[2*10:2*10+20], serial)
	ataString(id[2*23:2*23+8], firmware)
	ataString(id[2*27:2*27+40], model)
	lba28 := sectors
	if lba28 > maxLBA28 {
		lba28 = maxLBA28
	}
	binary.LittleEndian.PutUint32(id[2*60:], uint32(lba28))
	binary.LittleEndian.PutUint64(id[2*100:], sectors&(1<<48-1))
	return id
}

// ataString fills an IDENTIFY string field: space padded, two characters per word with the
// first character in the high byte.
func ataString(dst []byte, s string) {
	for i := range dst {
		dst[i] = ' '
	}
	for i := 0; i < len(dst) && i < len(s); i++ {
		dst[i^1] = s[i]
	}
}

// IdentifyString reads a string field back out of an IDENTIFY block (words from, to exclusive).
func IdentifyString(id []byte, from, to int) string {
	if len(id) < 2*to {
		return ""
	}
	b := make([]byte, 2*(to-from))
	for i := range b {
		b[i] = id[2*from+(i^1)]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == 0) {
		b = b[:len(b)-1]
	}
	return string(b)
}

// IdentifySectors returns the capacity an IDENTIFY block announces, as the Linux driver reads
// it: the LBA48 words when word 83 or 86 has bit 10, else words 60-61.
func IdentifySectors(id []byte) (sectors uint64, lba48 bool) {
	if len(id) < 512 {
		return 0, false
	}
	f := binary.LittleEndian.Uint16(id[2*83:]) | binary.LittleEndian.Uint16(id[2*86:])
	if f&(1<<10) != 0 {
		return binary.LittleEndian.Uint64(id[2*100:]) & (1<<48 - 1), true
	}
	return uint64(binary.LittleEndian.Uint32(id[2*60:])), false
}
