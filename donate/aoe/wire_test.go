package aoe

import (
	"bytes"
	"errors"
	"net"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var (
	macA = net.HardwareAddr{0x02, 0x11, 0x22, 0x33, 0x44, 0x55}
	macB = net.HardwareAddr{0x02, 0xaa, 0xbb, 0xcc, 0xdd, 0xee}
)

func TestHeaderWire(t *testing.T) {
	h := Header{Dst: macA, Src: macB, Version: 1, Response: true, Error: true, Err: ErrorTargetReserved, Shelf: 0x0102, Slot: 3, Command: CommandReserve, Tag: 0xdeadbeef}
	want := []byte{
		0x02, 0x11, 0x22, 0x33, 0x44, 0x55, 0x02, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0x88, 0xa2,
		0x1c, 6, 0x01, 0x02, 3, 3, 0xde, 0xad, 0xbe, 0xef,
	}
	got, err := h.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("marshal:\n got %x\nwant %x", got, want)
	}
	var back Header
	if err := back.UnmarshalBinary(want); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(h, back); diff != "" {
		t.Fatalf("round trip (-want +got):\n%s", diff)
	}
	bad := []struct {
		name string
		b    []byte
	}{
		{"short", want[:23]},
		{"wrong ethertype", append(append(append([]byte{}, want[:12]...), 0x08, 0x00), want[14:]...)},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			if err := new(Header).UnmarshalBinary(tc.b); err == nil {
				t.Fatal("accepted")
			}
		})
	}
	if err := (&Header{Dst: macA[:5], Src: macB}).MarshalTo(make([]byte, HeaderLen)); err == nil {
		t.Fatal("marshalled a 5-byte MAC")
	}
}

func TestArgsWire(t *testing.T) {
	type marshaler interface {
		MarshalBinary() ([]byte, error)
		UnmarshalBinary([]byte) error
	}
	cases := []struct {
		name  string
		in    marshaler
		wire  []byte
		fresh func() marshaler
	}{
		{
			"ata write lba48",
			&ATAArg{Extended: true, Write: true, Async: true, Device: true, ErrFeature: 1, SectorCount: 2, CmdStatus: ATAWriteSectorsExt, LBA: 0x0000_0605_0403_0201, Data: []byte{9, 8}},
			[]byte{0x53, 1, 2, 0x34, 1, 2, 3, 4, 5, 6, 0, 0, 9, 8},
			func() marshaler { return new(ATAArg) },
		},
		{
			"config",
			&ConfigArg{BufferCount: 16, FirmwareVersion: 0x4019, SectorCount: 17, Version: 1, Command: ConfigForceSet, String: []byte("ab")},
			[]byte{0, 16, 0x40, 0x19, 17, 0x14, 0, 2, 'a', 'b'},
			func() marshaler { return new(ConfigArg) },
		},
		{
			"mac mask edit",
			&MACMaskArg{Command: MACMaskEdit, Directives: []Directive{{Command: DirectiveAdd, MAC: macA}, {Command: DirectiveDelete, MAC: macB}}},
			[]byte{0, 1, 0, 2, 0, 1, 0x02, 0x11, 0x22, 0x33, 0x44, 0x55, 0, 2, 0x02, 0xaa, 0xbb, 0xcc, 0xdd, 0xee},
			func() marshaler { return new(MACMaskArg) },
		},
		{
			"reserve set",
			&ReserveArg{Command: ReserveSet, MACs: []net.HardwareAddr{macA}},
			[]byte{1, 1, 0x02, 0x11, 0x22, 0x33, 0x44, 0x55},
			func() marshaler { return new(ReserveArg) },
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.in.MarshalBinary()
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, tc.wire) {
				t.Fatalf("marshal:\n got %x\nwant %x", got, tc.wire)
			}
			back := tc.fresh()
			if err := back.UnmarshalBinary(tc.wire); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.in, back); diff != "" {
				t.Fatalf("round trip (-want +got):\n%s", diff)
			}
			for n := range len(tc.wire) {
				short := tc.fresh()
				// Every prefix that cuts the fixed part or a declared count must fail.
				if err := short.UnmarshalBinary(tc.wire[:n]); err == nil && n < minLen(tc.name) {
					t.Fatalf("accepted %d-byte prefix", n)
				}
			}
		})
	}
}

// minLen is the shortest prefix of each case's wire bytes that is still a valid message.
func minLen(name string) int {
	switch name {
	case "ata write lba48":
		return ATAArgLen
	case "config":
		return ConfigArgLen + 2
	case "mac mask edit":
		return MACMaskArgLen + 2*DirectiveLen
	}
	return ReserveArgLen + 6
}

func TestArgErrors(t *testing.T) {
	cases := []struct {
		name string
		err  error
	}{
		{"config string over 1024", (&ConfigArg{}).UnmarshalBinary([]byte{0, 0, 0, 0, 0, 0, 0x04, 0x01})},
		{"config string longer than frame", (&ConfigArg{}).UnmarshalBinary([]byte{0, 0, 0, 0, 0, 0, 0, 3, 'a'})},
		{"mask count beyond frame", (&MACMaskArg{}).UnmarshalBinary([]byte{0, 1, 0, 1, 0, 1, 2})},
		{"reserve count beyond frame", (&ReserveArg{}).UnmarshalBinary([]byte{1, 2, 1, 2, 3, 4, 5, 6})},
		{"ata short", (&ATAArg{}).UnmarshalBinary(make([]byte, 11))},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.err == nil {
				t.Fatal("accepted")
			}
		})
	}
	if !errors.Is(cases[1].err, ErrShort) {
		t.Errorf("short config string: %v, want ErrShort", cases[1].err)
	}
	// 32+ directives overflowed a uint8 size computation in github.com/mdlayher/aoe.
	m := MACMaskArg{Directives: make([]Directive, 40)}
	for i := range m.Directives {
		m.Directives[i] = Directive{Command: DirectiveAdd, MAC: macA}
	}
	b, err := m.MarshalBinary()
	if err != nil || len(b) != MACMaskArgLen+40*DirectiveLen {
		t.Fatalf("40 directives: %d bytes, %v", len(b), err)
	}
}

func TestIdentify(t *testing.T) {
	for _, tc := range []struct {
		name    string
		sectors uint64
		lba28   uint32
	}{
		{"small", 32768, 32768},
		{"over lba28", 1 << 30, maxLBA28},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := Identify(tc.sectors, "1.2:node", "DiStoNet AoE target", "V1")
			got, lba48 := IdentifySectors(id[:])
			if got != tc.sectors || !lba48 {
				t.Fatalf("IdentifySectors = %d, %v; want %d, true", got, lba48, tc.sectors)
			}
			if v := uint32(id[120]) | uint32(id[121])<<8 | uint32(id[122])<<16 | uint32(id[123])<<24; v != tc.lba28 {
				t.Fatalf("words 60-61 = %d, want %d", v, tc.lba28)
			}
			if s := IdentifyString(id[:], 27, 47); s != "DiStoNet AoE target" {
				t.Fatalf("model %q", s)
			}
			if s := IdentifyString(id[:], 10, 20); s != "1.2:node" {
				t.Fatalf("serial %q", s)
			}
		})
	}
}

func TestSectorsPerFrame(t *testing.T) {
	for _, tc := range []struct{ mtu, want int }{{1500, 2}, {9000, 17}, {100, 0}, {65535, 127}} {
		if got := SectorsPerFrame(tc.mtu); got != tc.want {
			t.Errorf("SectorsPerFrame(%d) = %d, want %d", tc.mtu, got, tc.want)
		}
	}
}
