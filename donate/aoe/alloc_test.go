package aoe

import (
	"log/slog"
	"net"
	"testing"
)

// TestHandleDoesNotAllocate: the per-frame path (parse, checks, ATA read or write, response
// header) allocates nothing, so the garbage collector stays out of the data path.
func TestHandleDoesNotAllocate(t *testing.T) {
	st, _ := loadState("")
	if err := st.addMasks([]net.HardwareAddr{macB}); err != nil {
		t.Fatal(err)
	}
	tg, err := newTarget(TargetConfig{Shelf: 1, Slot: 1, Unsafe: true, BufferCount: 16}, slog.New(slog.DiscardHandler), nil,
		&net.Interface{MTU: 9000, HardwareAddr: macA}, &memBacking{b: make([]byte, 1024*SectorSize)}, 1024, st)
	if err != nil {
		t.Fatal(err)
	}
	read := seedFrame(CommandATA, []byte{0x40, 0, 17, ATAReadSectorsExt, 8, 0, 0, 0, 0, 0, 0, 0})
	write := seedFrame(CommandATA, append([]byte{0x41, 0, 17, ATAWriteSectorsExt, 8, 0, 0, 0, 0, 0, 0, 0}, make([]byte, 17*SectorSize)...))
	for _, tc := range []struct {
		name  string
		frame []byte
	}{{"read", read}, {"write", write}} {
		t.Run(tc.name, func(t *testing.T) {
			f := tg.bufs.Get().(*frame)
			allocs := testing.AllocsPerRun(100, func() {
				n := copy(f.b, tc.frame)
				if !tg.handle(f, n) {
					t.Fatal("no response")
				}
			})
			if allocs != 0 {
				t.Fatalf("%v allocations per frame", allocs)
			}
		})
	}
}
