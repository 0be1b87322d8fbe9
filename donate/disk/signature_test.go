package disk

import (
	"bytes"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"unicode/utf16"

	"github.com/google/go-cmp/cmp"
)

const imgSize = 4 << 20

// img returns a zeroed image with the given bytes written at the given offsets.
func img(patches map[int64][]byte) []byte {
	b := make([]byte, imgSize)
	for off, p := range patches {
		copy(b[off:], p)
	}
	return b
}

func le32(v uint32) []byte { return binary.LittleEndian.AppendUint32(nil, v) }

func mbrWith(entries ...[]byte) []byte {
	b := make([]byte, 512)
	for i, e := range entries {
		copy(b[446+16*i:], e)
	}
	b[510], b[511] = 0x55, 0xaa
	return b
}

func gptImage(names ...string) []byte {
	b := img(map[int64][]byte{0: mbrWith([]byte{0, 0, 2, 0, 0xee, 0, 0, 0, 1, 0, 0, 0, 0xff, 0xff, 0, 0})})
	h := b[512:]
	copy(h, "EFI PART")
	binary.LittleEndian.PutUint64(h[72:], 2)   // entries at LBA 2
	binary.LittleEndian.PutUint32(h[80:], 128) // entry count
	binary.LittleEndian.PutUint32(h[84:], 128) // entry size
	for i, n := range names {
		e := b[1024+128*i:]
		e[0] = 0xaf // a non-zero type GUID
		for j, u := range utf16.Encode([]rune(n)) {
			binary.LittleEndian.PutUint16(e[56+2*j:], u)
		}
	}
	return b
}

func TestDetectCrafted(t *testing.T) {
	v090 := int64(imgSize&^(64<<10-1)) - 64<<10
	v10 := int64((imgSize/512-16)&^7) * 512
	cases := []struct {
		name string
		b    []byte
		want []Signature
	}{
		{"zeros", img(nil), nil},
		{"xfs", img(map[int64][]byte{0: []byte("XFSB"), 108: []byte("scratch")}), []Signature{{Type: "xfs", Offset: 0, Label: "scratch"}}},
		{"btrfs", img(map[int64][]byte{65536 + 64: []byte("_BHRfS_M"), 65536 + 0x12b: []byte("pool")}), []Signature{{Type: "btrfs", Offset: 65600, Label: "pool"}}},
		{"lvm", img(map[int64][]byte{512: []byte("LABELONE"), 512 + 24: []byte("LVM2 001")}), []Signature{{Type: "LVM2_member", Offset: 512}}},
		{"luks", img(map[int64][]byte{0: []byte("LUKS\xba\xbe")}), []Signature{{Type: "crypto_LUKS", Offset: 0}}},
		{"md 1.2", img(map[int64][]byte{4096: le32(0xa92b4efc)}), []Signature{{Type: "linux_raid_member", Offset: 4096}}},
		{"md 0.90", img(map[int64][]byte{v090: le32(0xa92b4efc)}), []Signature{{Type: "linux_raid_member", Offset: v090}}},
		{"md 1.0", img(map[int64][]byte{v10: le32(0xa92b4efc)}), []Signature{{Type: "linux_raid_member", Offset: v10}}},
		{"zfs", img(map[int64][]byte{128<<10 + 2048: binary.LittleEndian.AppendUint64(nil, 0x00bab10c)}), []Signature{{Type: "zfs_member", Offset: 128<<10 + 2048}}},
		{"ntfs", img(map[int64][]byte{3: []byte("NTFS    "), 510: {0x55, 0xaa}}), []Signature{{Type: "ntfs", Offset: 3}}},
		{"fat32", img(map[int64][]byte{71: []byte("WINDATA    "), 82: []byte("FAT32   "), 510: {0x55, 0xaa}}), []Signature{{Type: "vfat", Offset: 82, Label: "WINDATA"}}},
		{"iso9660", img(map[int64][]byte{32769: []byte("CD001")}), []Signature{{Type: "iso9660", Offset: 32769}}},
		{"exfat", img(map[int64][]byte{3: []byte("EXFAT   "), 510: {0x55, 0xaa}}), []Signature{{Type: "exfat", Offset: 3}}},
		{"hfs+", img(map[int64][]byte{1024: []byte("H+")}), []Signature{{Type: "hfsplus", Offset: 1024}}},
		{"bcache", img(map[int64][]byte{4096 + 24: {0xc6, 0x85, 0x73, 0xf6, 0x4e, 0x1a, 0x45, 0xca, 0x82, 0x65, 0xf5, 0x7f, 0x48, 0xba, 0x6d, 0x81}}), []Signature{{Type: "bcache", Offset: 4120}}},
		{"intel firmware raid", img(map[int64][]byte{imgSize - 1024: []byte("Intel Raid ISM Cfg Sig. 1.0.00")}), []Signature{{Type: "isw_raid_member", Offset: imgSize - 1024}}},
		{"ddf firmware raid", img(map[int64][]byte{imgSize - 512: {0xde, 0x11, 0xde, 0x11}}), []Signature{{Type: "ddf_raid_member", Offset: imgSize - 512}}},
		{"dos table", img(map[int64][]byte{0: mbrWith([]byte{0x80, 0, 0, 0, 0x83, 0, 0, 0, 0, 8, 0, 0, 0, 0, 1, 0})}), []Signature{{Type: "dos", Offset: 510}}},
		{"boot signature without entries", img(map[int64][]byte{510: {0x55, 0xaa}}), nil},
		{"gpt with names", gptImage("DISTONET", "windows"), []Signature{{Type: "gpt", Offset: 512, Label: "DISTONET,windows"}, {Type: "dos", Offset: 510}}},
		{"swap by magic", img(map[int64][]byte{4086: []byte("SWAPSPACE2"), 1024 + 28: []byte("sw")}), []Signature{{Type: "swap", Offset: 4086, Label: "sw"}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Detect(bytes.NewReader(tc.b), int64(len(tc.b)))
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Fatalf("(-want +got):\n%s", diff)
			}
		})
	}
}

// TestDetectRealTools checks signatures written by the real mkfs.ext4 and mkswap.
func TestDetectRealTools(t *testing.T) {
	cases := []struct {
		name string
		cmd  []string
		want Signature
	}{
		{"mkfs.ext4", []string{"mkfs.ext4", "-q", "-F", "-L", "home"}, Signature{Type: "ext4", Offset: 1080, Label: "home"}},
		{"mkfs.ext2", []string{"mkfs.ext4", "-q", "-F", "-t", "ext2"}, Signature{Type: "ext2", Offset: 1080}},
		{"mkfs.ext3", []string{"mkfs.ext4", "-q", "-F", "-t", "ext3"}, Signature{Type: "ext3", Offset: 1080}},
		{"mkswap", []string{"mkswap", "-L", "swp"}, Signature{Type: "swap", Offset: 4086, Label: "swp"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := exec.LookPath(tc.cmd[0]); err != nil {
				t.Fatalf("%s not installed (e2fsprogs / util-linux): %v", tc.cmd[0], err)
			}
			p := filepath.Join(t.TempDir(), "img")
			if err := os.WriteFile(p, make([]byte, 16<<20), 0o600); err != nil {
				t.Fatal(err)
			}
			if out, err := exec.Command("/sbin/"+tc.cmd[0], append(tc.cmd[1:], p)...).CombinedOutput(); err != nil {
				t.Fatalf("%v: %v: %s", tc.cmd, err, out)
			}
			f, err := os.Open(p)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			got, err := Detect(f, 16<<20)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff([]Signature{tc.want}, got); diff != "" {
				t.Fatalf("(-want +got):\n%s", diff)
			}
		})
	}
}

func FuzzDetect(f *testing.F) {
	f.Add(img(map[int64][]byte{0: []byte("XFSB")})[:8192])
	f.Add(gptImage("a")[:8192])
	f.Add(mbrWith([]byte{0x80, 0, 0, 0, 0x83, 0, 0, 0, 0, 8, 0, 0, 0, 0, 1, 0}))
	f.Fuzz(func(t *testing.T, b []byte) {
		sigs, err := Detect(bytes.NewReader(b), int64(len(b)))
		if err != nil {
			t.Fatalf("in-memory read failed: %v", err)
		}
		for _, s := range sigs {
			if s.Offset < 0 || s.Offset >= int64(len(b)) || s.Type == "" {
				t.Fatalf("impossible signature %+v in %d bytes", s, len(b))
			}
		}
	})
}
