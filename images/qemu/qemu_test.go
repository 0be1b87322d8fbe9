package qemu

import (
	"strings"
	"testing"
)

func TestArgs(t *testing.T) {
	tests := []struct {
		name string
		o    Options
		want []string // substrings of the joined command line, in order
		not  []string
	}{
		{"direct boot", Options{Kernel: "/k", Initrd: "/i", Append: "console=ttyS0", Tap: "t0", MAC: "52:54:00:00:00:01"},
			[]string{"-accel tcg", "-m 512", "-serial stdio", "virtio-rng-pci", "-kernel /k", "-initrd /i", "-append console=ttyS0",
				"tap,id=n0,ifname=t0,script=no,downscript=no", "virtio-net-pci,netdev=n0,mac=52:54:00:00:00:01,romfile="},
			[]string{"-boot n"}},
		{"netboot e1000", Options{Tap: "t1", NIC: "e1000", NetBoot: true, MemoryMB: 256, NoRNG: true, Disks: []string{"/d.img"}},
			[]string{"-m 256", "e1000,netdev=n0", "-boot n", "file=/d.img,format=raw,if=virtio,index=0"},
			[]string{"romfile", "-kernel", "virtio-rng"}},
		{"netboot own ROM", Options{Tap: "t1", NetBoot: true, ROM: "/rom.bin"},
			[]string{"virtio-net-pci,netdev=n0,romfile=/rom.bin", "-boot n"}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			line := strings.Join(Args(tc.o), " ")
			rest := line
			for _, w := range tc.want {
				i := strings.Index(rest, w)
				if i < 0 {
					t.Fatalf("command line lacks %q (in order):\n%s", w, line)
				}
				rest = rest[i+len(w):]
			}
			for _, n := range tc.not {
				if strings.Contains(line, n) {
					t.Errorf("command line has %q:\n%s", n, line)
				}
			}
		})
	}
}
