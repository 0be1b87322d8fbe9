package disk

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode/utf16"
)

// Signature is something on a device that says it already holds data.
type Signature struct {
	Type   string // "ext4", "xfs", "btrfs", "swap", "LVM2_member", "crypto_LUKS", "dos", "gpt", "linux_raid_member", "zfs_member", "bcache", "isw_raid_member", "ddf_raid_member", "vfat", "exfat", "ntfs", "hfsplus", "iso9660"
	Offset int64  // where the magic was found
	Label  string // filesystem label or, for "gpt", the partition names joined by ","
}

func (s Signature) String() string {
	if s.Label != "" {
		return fmt.Sprintf("%s (label %q) at offset %d", s.Type, s.Label, s.Offset)
	}
	return fmt.Sprintf("%s at offset %d", s.Type, s.Offset)
}

// IsPartitionTable reports whether the signature is a partition table rather than content.
func (s Signature) IsPartitionTable() bool { return s.Type == "dos" || s.Type == "gpt" }

// Detect reads the places where known formats keep their magic numbers and returns every
// signature found on a device of the given size. It reads at most a few hundred KiB.
func Detect(r io.ReaderAt, size int64) ([]Signature, error) {
	d := detector{r: r, size: size}
	var out []Signature
	for _, probe := range []func() (*Signature, error){
		d.ext, d.xfs, d.btrfs, d.swap, d.lvm, d.luks, d.md, d.zfs, d.bcache, d.isw, d.ddf,
		d.ntfs, d.exfat, d.vfat, d.hfsplus, d.iso9660, d.gpt, d.mbr,
	} {
		s, err := probe()
		if err != nil {
			return nil, err
		}
		if s != nil {
			out = append(out, *s)
		}
	}
	return out, nil
}

type detector struct {
	r    io.ReaderAt
	size int64
}

// read returns n bytes at off, or nil when the device is too small to hold them.
func (d *detector) read(off int64, n int) ([]byte, error) {
	if off < 0 || off+int64(n) > d.size {
		return nil, nil
	}
	b := make([]byte, n)
	if _, err := d.r.ReadAt(b, off); err != nil && !(errors.Is(err, io.EOF)) {
		return nil, fmt.Errorf("read %d bytes at %d: %w", n, off, err)
	}
	return b, nil
}

func cstring(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return strings.TrimSpace(string(b))
}

func (d *detector) ext() (*Signature, error) {
	sb, err := d.read(1024, 1024)
	if sb == nil || err != nil {
		return nil, err
	}
	if binary.LittleEndian.Uint16(sb[0x38:]) != 0xef53 {
		return nil, nil
	}
	compat := binary.LittleEndian.Uint32(sb[0x5c:])
	incompat := binary.LittleEndian.Uint32(sb[0x60:])
	typ := "ext2"
	switch {
	case incompat&(0x40|0x80|0x200) != 0: // extents, 64bit, flex_bg
		typ = "ext4"
	case compat&0x4 != 0: // has_journal
		typ = "ext3"
	}
	return &Signature{Type: typ, Offset: 1024 + 0x38, Label: cstring(sb[0x78 : 0x78+16])}, nil
}

func (d *detector) xfs() (*Signature, error) {
	sb, err := d.read(0, 512)
	if sb == nil || err != nil || string(sb[0:4]) != "XFSB" {
		return nil, err
	}
	return &Signature{Type: "xfs", Offset: 0, Label: cstring(sb[108:120])}, nil
}

func (d *detector) btrfs() (*Signature, error) {
	sb, err := d.read(65536, 4096)
	if sb == nil || err != nil || string(sb[64:72]) != "_BHRfS_M" {
		return nil, err
	}
	return &Signature{Type: "btrfs", Offset: 65536 + 64, Label: cstring(sb[0x12b : 0x12b+256])}, nil
}

func (d *detector) swap() (*Signature, error) {
	for _, page := range []int64{4096, 8192, 16384, 65536} {
		b, err := d.read(page-10, 10)
		if err != nil {
			return nil, err
		}
		if b == nil {
			continue
		}
		if s := string(b); s == "SWAPSPACE2" || s == "SWAP-SPACE" {
			label := ""
			if hdr, _ := d.read(1024, 64); hdr != nil && s == "SWAPSPACE2" {
				label = cstring(hdr[28:44])
			}
			return &Signature{Type: "swap", Offset: page - 10, Label: label}, nil
		}
	}
	return nil, nil
}

func (d *detector) lvm() (*Signature, error) {
	for i := int64(0); i < 4; i++ {
		b, err := d.read(i*512, 32)
		if err != nil {
			return nil, err
		}
		if b != nil && string(b[0:8]) == "LABELONE" && string(b[24:32]) == "LVM2 001" {
			return &Signature{Type: "LVM2_member", Offset: i * 512}, nil
		}
	}
	return nil, nil
}

func (d *detector) luks() (*Signature, error) {
	for _, off := range []int64{0, 0x4000} { // LUKS1/2 header, LUKS2 secondary header
		b, err := d.read(off, 6)
		if err != nil {
			return nil, err
		}
		if b != nil && (string(b) == "LUKS\xba\xbe" || string(b) == "SKUL\xba\xbe") {
			return &Signature{Type: "crypto_LUKS", Offset: off}, nil
		}
	}
	return nil, nil
}

// md finds Linux RAID superblocks: v0.90 and v1.0 near the end, v1.1 at 0, v1.2 at 4 KiB.
func (d *detector) md() (*Signature, error) {
	offs := []int64{0, 4096}
	if d.size >= 128<<10 {
		offs = append(offs, (d.size&^(64<<10-1))-64<<10) // v0.90
	}
	if d.size >= 12<<10 {
		offs = append(offs, ((d.size/512-16)&^7)*512) // v1.0
	}
	for _, off := range offs {
		b, err := d.read(off, 4)
		if err != nil {
			return nil, err
		}
		if b != nil && binary.LittleEndian.Uint32(b) == 0xa92b4efc {
			return &Signature{Type: "linux_raid_member", Offset: off}, nil
		}
	}
	return nil, nil
}

// zfs looks for an uberblock magic in the first vdev label's uberblock ring (128-256 KiB).
func (d *detector) zfs() (*Signature, error) {
	ring, err := d.read(128<<10, 128<<10)
	if ring == nil || err != nil {
		return nil, err
	}
	for o := 0; o+8 <= len(ring); o += 1024 {
		m := binary.LittleEndian.Uint64(ring[o:])
		if m == 0x00bab10c || binary.BigEndian.Uint64(ring[o:]) == 0x00bab10c {
			return &Signature{Type: "zfs_member", Offset: 128<<10 + int64(o)}, nil
		}
	}
	return nil, nil
}

// bcache backing or cache device: superblock at 4 KiB, magic at offset 24 in it.
func (d *detector) bcache() (*Signature, error) {
	b, err := d.read(4096+24, 16)
	magic := []byte{0xc6, 0x85, 0x73, 0xf6, 0x4e, 0x1a, 0x45, 0xca, 0x82, 0x65, 0xf5, 0x7f, 0x48, 0xba, 0x6d, 0x81}
	if b == nil || err != nil || !bytes.Equal(b, magic) {
		return nil, err
	}
	return &Signature{Type: "bcache", Offset: 4096 + 24}, nil
}

// isw finds Intel Matrix/RST firmware RAID metadata in the second-to-last sector: a
// dual-boot PC's RAID set must never be broken by a donation.
func (d *detector) isw() (*Signature, error) {
	off := d.size&^511 - 1024
	b, err := d.read(off, 24)
	if b == nil || err != nil || string(b) != "Intel Raid ISM Cfg Sig. " {
		return nil, err
	}
	return &Signature{Type: "isw_raid_member", Offset: off}, nil
}

// ddf finds SNIA DDF firmware RAID anchor headers in the last sector.
func (d *detector) ddf() (*Signature, error) {
	off := d.size&^511 - 512
	b, err := d.read(off, 4)
	if b == nil || err != nil || binary.BigEndian.Uint32(b) != 0xde11de11 {
		return nil, err
	}
	return &Signature{Type: "ddf_raid_member", Offset: off}, nil
}

func (d *detector) exfat() (*Signature, error) {
	b, err := d.read(0, 512)
	if b == nil || err != nil || string(b[3:11]) != "EXFAT   " {
		return nil, err
	}
	return &Signature{Type: "exfat", Offset: 3}, nil
}

// hfsplus finds an HFS+ ("H+") or HFSX ("HX") volume header at 1 KiB.
func (d *detector) hfsplus() (*Signature, error) {
	b, err := d.read(1024, 2)
	if b == nil || err != nil || (string(b) != "H+" && string(b) != "HX") {
		return nil, err
	}
	return &Signature{Type: "hfsplus", Offset: 1024}, nil
}

func (d *detector) ntfs() (*Signature, error) {
	b, err := d.read(0, 512)
	if b == nil || err != nil || string(b[3:11]) != "NTFS    " {
		return nil, err
	}
	return &Signature{Type: "ntfs", Offset: 3}, nil
}

func (d *detector) vfat() (*Signature, error) {
	b, err := d.read(0, 512)
	if b == nil || err != nil || b[510] != 0x55 || b[511] != 0xaa {
		return nil, err
	}
	switch {
	case string(b[82:90]) == "FAT32   ":
		return &Signature{Type: "vfat", Offset: 82, Label: cstring(b[71:82])}, nil
	case string(b[54:62]) == "FAT16   " || string(b[54:62]) == "FAT12   ":
		return &Signature{Type: "vfat", Offset: 54, Label: cstring(b[43:54])}, nil
	}
	return nil, nil
}

func (d *detector) iso9660() (*Signature, error) {
	b, err := d.read(32769, 5)
	if b == nil || err != nil || string(b) != "CD001" {
		return nil, err
	}
	return &Signature{Type: "iso9660", Offset: 32769}, nil
}

// gpt finds a GPT header at LBA 1 for 512- or 4096-byte sectors and reads partition names.
func (d *detector) gpt() (*Signature, error) {
	for _, ss := range []int64{512, 4096} {
		h, err := d.read(ss, 92)
		if err != nil {
			return nil, err
		}
		if h == nil || string(h[0:8]) != "EFI PART" {
			continue
		}
		names := gptNames(d, h, ss)
		return &Signature{Type: "gpt", Offset: ss, Label: strings.Join(names, ",")}, nil
	}
	return nil, nil
}

// gptEntry is one used GPT partition entry: Index is its slot in the entry array, which
// Linux numbers from 1 (slot 0 is sda1).
type gptEntry struct {
	Index int
	Name  string
}

func gptNames(d *detector, h []byte, sectorSize int64) []string {
	var names []string
	for _, e := range gptEntries(d, h, sectorSize) {
		names = append(names, e.Name)
	}
	return names
}

// gptEntries reads the used entries of a GPT header's entry array (best effort).
func gptEntries(d *detector, h []byte, sectorSize int64) []gptEntry {
	lba := int64(binary.LittleEndian.Uint64(h[72:]))
	count := int64(binary.LittleEndian.Uint32(h[80:]))
	esize := int64(binary.LittleEndian.Uint32(h[84:]))
	if esize < 128 || esize > 4096 || count > 1024 || lba <= 0 || lba > d.size/sectorSize {
		return nil
	}
	arr, _ := d.read(lba*sectorSize, int(count*esize))
	var out []gptEntry
	for i := int64(0); arr != nil && i < count; i++ {
		e := arr[i*esize : (i+1)*esize]
		if bytes.Equal(e[0:16], make([]byte, 16)) {
			continue
		}
		u := make([]uint16, 36)
		for j := range u {
			u[j] = binary.LittleEndian.Uint16(e[56+2*j:])
		}
		if k := indexZero(u); k >= 0 {
			u = u[:k]
		}
		out = append(out, gptEntry{Index: int(i), Name: string(utf16.Decode(u))})
	}
	return out
}

// GPTPartitionNames maps partition numbers (1-based, as in sda1) to their GPT names.
func GPTPartitionNames(r io.ReaderAt, size int64) (map[int]string, error) {
	d := detector{r: r, size: size}
	for _, ss := range []int64{512, 4096} {
		h, err := d.read(ss, 92)
		if err != nil {
			return nil, err
		}
		if h == nil || string(h[0:8]) != "EFI PART" {
			continue
		}
		out := map[int]string{}
		for _, e := range gptEntries(&d, h, ss) {
			out[e.Index+1] = e.Name
		}
		return out, nil
	}
	return nil, nil
}

func indexZero(u []uint16) int {
	for i, v := range u {
		if v == 0 {
			return i
		}
	}
	return -1
}

// mbr finds a DOS partition table: boot signature plus at least one used, sane entry.
// A FAT or NTFS boot sector also ends in 0x55AA, so those are not taken for a table.
func (d *detector) mbr() (*Signature, error) {
	b, err := d.read(0, 512)
	if b == nil || err != nil || b[510] != 0x55 || b[511] != 0xaa {
		return nil, err
	}
	if string(b[3:11]) == "NTFS    " || string(b[3:11]) == "EXFAT   " || string(b[82:90]) == "FAT32   " || string(b[54:62]) == "FAT16   " || string(b[54:62]) == "FAT12   " {
		return nil, nil
	}
	used := false
	for i := range 4 {
		e := b[446+16*i : 446+16*(i+1)]
		if e[0] != 0 && e[0] != 0x80 {
			return nil, nil // boot flag must be 0x00 or 0x80
		}
		if e[4] != 0 && binary.LittleEndian.Uint32(e[12:]) != 0 {
			used = true
		}
	}
	if !used {
		return nil, nil
	}
	return &Signature{Type: "dos", Offset: 510}, nil
}
