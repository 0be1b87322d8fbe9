package aoe

import (
	"bytes"
	"context"
	"errors"
	"os"
	"testing"
)

// exercise writes patterns through the client at several offsets and reads them back, then
// checks the backing file holds the same bytes.
func exercise(t *testing.T, c *Client, file string) {
	t.Helper()
	spf := c.SectorsPerFrame() * SectorSize
	cases := []struct {
		name string
		off  int64
		n    int
	}{
		{"one sector at 0", 0, SectorSize},
		{"one frame", 4096, spf},
		{"frame plus one sector", 1 << 20, spf + SectorSize},
		{"1 MiB spanning many tags", 2 << 20, 1 << 20},
		{"last sector", c.Size() - SectorSize, SectorSize},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			want := randomBytes(t, tc.n)
			if _, err := c.WriteAt(want, tc.off); err != nil {
				t.Fatalf("WriteAt: %v", err)
			}
			got := make([]byte, tc.n)
			if _, err := c.ReadAt(got, tc.off); err != nil {
				t.Fatalf("ReadAt: %v", err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("read back differs from what was written (%d bytes at %d)", tc.n, tc.off)
			}
			f, err := os.Open(file)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			onDisk := make([]byte, tc.n)
			if _, err := f.ReadAt(onDisk, tc.off); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(onDisk, want) {
				t.Fatalf("backing file differs from what was written (%d bytes at %d)", tc.n, tc.off)
			}
		})
	}
}

func TestInitiatorAgainstVblade(t *testing.T) {
	for _, mtu := range []int{1500, 9000} {
		t.Run(mtuName(mtu), func(t *testing.T) {
			l := newLink(t, mtu)
			const size = 16 << 20
			file := diskFile(t, size)
			startVblade(t, l, 5, 1, file)
			cfg := discover(t, l, 5, 1)
			if !bytes.Equal(cfg.MAC, l.TMAC) || cfg.Version != Version {
				t.Fatalf("discovery answer %+v, want mac %s version 1", cfg, l.TMAC)
			}
			if want := SectorsPerFrame(mtu); int(cfg.SectorsPerFrame) != want {
				t.Errorf("vblade sectors per frame %d, our formula says %d", cfg.SectorsPerFrame, want)
			}
			c := dial(t, l, 5, 1, ClientConfig{})
			if c.Sectors() != size/SectorSize {
				t.Fatalf("IDENTIFY says %d sectors, want %d", c.Sectors(), size/SectorSize)
			}
			exercise(t, c, file)
		})
	}
}

// plainBacking hides the device mapping, so reads take the preadv path.
type plainBacking struct{ backing }

func TestTargetAgainstOwnInitiator(t *testing.T) {
	for _, tc := range []struct {
		name          string
		ring, mapping bool
		mtus          []int
	}{
		{"ring", true, true, []int{1500, 9000}},      // the default data path
		{"recvmmsg", false, true, []int{1500, 9000}}, // where the kernel refuses a ring
		{"preadv", true, false, []int{1500}},         // a backing without a mapping
		{"remap", true, true, []int{9000}},           // the mapping renewed every 64 KiB read
	} {
		for _, mtu := range tc.mtus {
			t.Run(tc.name+"/"+mtuName(mtu), func(t *testing.T) {
				if tc.name == "remap" {
					old := remapBytes
					t.Cleanup(func() { remapBytes = old }) // after the target stops
					remapBytes = 64 << 10
				}
				tg := testTargetAgainstOwnInitiator(t, mtu, tc.ring, tc.mapping)
				if tc.name == "remap" && tg.remaps.Load() == 0 {
					t.Error("the device mapping was never renewed")
				}
			})
		}
	}
}

func testTargetAgainstOwnInitiator(t *testing.T, mtu int, ring, mapping bool) *Target {
	l := newLink(t, mtu)
	const size = 16 << 20
	file := diskFile(t, size)
	noRxRing = !ring
	tg := newTargetIn(t, l, TargetConfig{Shelf: 7, Slot: 3, Device: file})
	noRxRing = false
	if (tg.ring != nil) != ring {
		t.Fatalf("receive ring %v, want %v", tg.ring != nil, ring)
	}
	if !mapping {
		tg.dev = plainBacking{tg.dev}
	}
	serveTarget(t, tg)
	cfg := discover(t, l, 7, 3)
	if !bytes.Equal(cfg.MAC, l.TMAC) || cfg.Version != Version || cfg.BufferCount != 64 ||
		int(cfg.SectorsPerFrame) != SectorsPerFrame(mtu) || cfg.FirmwareVersion != FirmwareVersion {
		t.Fatalf("discovery answer %+v", cfg)
	}
	c := dial(t, l, 7, 3, ClientConfig{})
	if c.Sectors() != size/SectorSize {
		t.Fatalf("IDENTIFY says %d sectors, want %d", c.Sectors(), size/SectorSize)
	}
	exercise(t, c, file)
	if st := tg.Stats(); st.Syncs == 0 || st.Writes == 0 {
		t.Errorf("durable target made %d syncs for %d writes", st.Syncs, st.Writes)
	}
	return tg
}

// TestSameAnswersAsVblade compares what the Linux driver reads from both targets.
func TestSameAnswersAsVblade(t *testing.T) {
	l := newLink(t, 1500)
	const size = 8 << 20
	startVblade(t, l, 1, 1, diskFile(t, size))
	ours := startTarget(t, l, TargetConfig{Shelf: 1, Slot: 2, Device: diskFile(t, size), BufferCount: 16})
	v := discover(t, l, 1, 1)
	o := discover(t, l, 1, 2)
	if v.BufferCount != o.BufferCount || v.SectorsPerFrame != o.SectorsPerFrame || v.Version != o.Version {
		t.Errorf("query config: vblade %+v, ours %+v", v, o)
	}
	vc := dial(t, l, 1, 1, ClientConfig{})
	oc := dial(t, l, 1, 2, ClientConfig{})
	vid, err := vc.Identify(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	oid, err := oc.Identify(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []int{47, 49, 50, 60, 61, 83, 84, 86, 87, 93, 100, 101, 102, 103} {
		if vid[2*w] != oid[2*w] || vid[2*w+1] != oid[2*w+1] {
			t.Errorf("IDENTIFY word %d: vblade %02x%02x, ours %02x%02x", w, vid[2*w+1], vid[2*w], oid[2*w+1], oid[2*w])
		}
	}
	for _, c := range []*Client{vc, oc} {
		_, err := c.ATA(context.Background(), ATAArg{Extended: true, CmdStatus: ATAReadSectorsExt, SectorCount: 1, LBA: size / SectorSize})
		var ae *ATAError
		if !errors.As(err, &ae) || ae.Err != ErrIDNF || ae.Status != StatusDRDY|StatusERR {
			t.Errorf("read past the end from %s: %v, want IDNF", c.Config().Address(), err)
		}
		regs, err := c.ATA(context.Background(), ATAArg{CmdStatus: ATACheckPower})
		if err != nil || regs.SectorCount != 0xff || regs.CmdStatus != StatusDRDY {
			t.Errorf("check power on %s: %+v %v", c.Config().Address(), regs, err)
		}
		if err := c.Flush(context.Background()); err != nil {
			t.Errorf("flush cache on %s: %v", c.Config().Address(), err)
		}
	}
	if st := ours.Stats(); st.Syncs == 0 {
		t.Errorf("FLUSH CACHE did not fdatasync: %+v", st)
	}
}

func mtuName(mtu int) string {
	if mtu == 9000 {
		return "mtu9000"
	}
	return "mtu1500"
}

// TestTwoTargetsOneInterfaceTwoInitiators: a node exporting two disks on one interface, used
// by two initiators at once: each target answers only its own address, data never crosses.
func TestTwoTargetsOneInterfaceTwoInitiators(t *testing.T) {
	l := newLink(t, 0)
	files := []string{diskFile(t, 8<<20), diskFile(t, 8<<20)}
	startTarget(t, l, TargetConfig{Shelf: 5, Slot: 1, Device: files[0]})
	startTarget(t, l, TargetConfig{Shelf: 5, Slot: 2, Device: files[1]})
	discover(t, l, 5, 1)
	discover(t, l, 5, 2)
	clients := []*Client{dial(t, l, 5, 1, ClientConfig{}), dial(t, l, 5, 2, ClientConfig{})}
	data := [][]byte{randomBytes(t, 2<<20), randomBytes(t, 2<<20)}
	errc := make(chan error, 2)
	for i := range clients {
		go func() {
			_, err := clients[i].WriteAt(data[i], 1<<20)
			errc <- err
		}()
	}
	for range clients {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
	for i, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(b[1<<20:3<<20], data[i]) {
			t.Fatalf("disk %d does not hold what its initiator wrote", i)
		}
	}
}
