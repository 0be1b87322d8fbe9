package aoe

import (
	"bytes"
	"log/slog"
	"net"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// FuzzFrame parses arbitrary bytes as an AoE frame and its argument; whatever parses must
// marshal back to an equal value.
func FuzzFrame(f *testing.F) {
	f.Add(seedFrame(CommandATA, []byte{0x41, 0, 2, 0x34, 1, 0, 0, 0, 0, 0, 0, 0, 1, 2}))
	f.Add(seedFrame(CommandQueryConfig, []byte{0, 16, 0x40, 1, 2, 0x10, 0, 2, 'h', 'i'}))
	f.Add(seedFrame(CommandMACMask, []byte{0, 1, 0, 1, 0, 1, 2, 0, 0, 0, 0, 1}))
	f.Add(seedFrame(CommandReserve, []byte{1, 1, 2, 0, 0, 0, 0, 1}))
	f.Fuzz(func(t *testing.T, b []byte) {
		var h Header
		if h.UnmarshalBinary(b) != nil {
			return
		}
		hb, err := h.MarshalBinary()
		if err != nil {
			t.Fatalf("parsed header does not marshal: %v", err)
		}
		if !bytes.Equal(hb[:14], b[:14]) || !bytes.Equal(hb[15:], b[15:HeaderLen]) || hb[14]&0xfc != b[14]&0xfc {
			t.Fatalf("header round trip:\n got %x\nwant %x", hb, b[:HeaderLen])
		}
		arg := b[HeaderLen:]
		type codec interface {
			MarshalBinary() ([]byte, error)
			UnmarshalBinary([]byte) error
		}
		var a, back codec
		switch h.Command {
		case CommandATA:
			a, back = new(ATAArg), new(ATAArg)
		case CommandQueryConfig:
			a, back = new(ConfigArg), new(ConfigArg)
		case CommandMACMask:
			a, back = new(MACMaskArg), new(MACMaskArg)
		case CommandReserve:
			a, back = new(ReserveArg), new(ReserveArg)
		default:
			return
		}
		if a.UnmarshalBinary(arg) != nil {
			return
		}
		ab, err := a.MarshalBinary()
		if err != nil {
			t.Fatalf("parsed %s argument does not marshal: %v", h.Command, err)
		}
		if err := back.UnmarshalBinary(ab); err != nil {
			t.Fatalf("re-parse %s: %v", h.Command, err)
		}
		if diff := cmp.Diff(a, back); diff != "" {
			t.Fatalf("%s round trip (-first +second):\n%s", h.Command, diff)
		}
	})
}

func seedFrame(cmd Command, arg []byte) []byte {
	h := Header{Dst: macA, Src: macB, Version: Version, Shelf: 1, Slot: 1, Command: cmd, Tag: 7}
	b, _ := h.MarshalBinary()
	return append(b, arg...)
}

// memBacking is an in-memory device for the target fuzz test.
type memBacking struct{ b []byte }

func (m *memBacking) ReadAt(p []byte, off int64) (int, error)  { return copy(p, m.b[off:]), nil }
func (m *memBacking) WriteAt(p []byte, off int64) (int, error) { return copy(m.b[off:], p), nil }
func (m *memBacking) Sync() error                              { return nil }
func (m *memBacking) Close() error                             { return nil }

// FuzzTargetHandle feeds arbitrary frames to the target's request handler: it must never
// panic, never answer a frame it should drop (responses, other addresses, broadcast I/O), and
// every answer must be a well-formed response addressed back to the sender.
func FuzzTargetHandle(f *testing.F) {
	for _, s := range [][]byte{
		seedFrame(CommandATA, []byte{0x41, 0, 1, 0x24, 0, 0, 0, 0, 0, 0, 0, 0}),
		seedFrame(CommandATA, append([]byte{0x41, 0, 1, 0x34, 3, 0, 0, 0, 0, 0, 0, 0}, make([]byte, 512)...)),
		seedFrame(CommandATA, []byte{0, 0, 1, 0xec, 0, 0, 0, 0, 0, 0, 0, 0}),
		seedFrame(CommandQueryConfig, []byte{0, 0, 0, 0, 0, 3, 0, 2, 'h', 'i'}),
		seedFrame(CommandMACMask, []byte{0, 1, 0, 1, 0, 1, 2, 0, 0, 0, 0, 1}),
		seedFrame(CommandReserve, []byte{2, 1, 2, 0, 0, 0, 0, 1}),
		seedFrame(9, nil),
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := loadState("") // in memory: persistence has its own tests, fsyncs would slow fuzzing
		if err != nil {
			t.Fatal(err)
		}
		ifi := &net.Interface{MTU: 1500, HardwareAddr: macA}
		tg, err := newTarget(TargetConfig{Shelf: 1, Slot: 1, Unsafe: true, BufferCount: 16}, slog.New(slog.DiscardHandler), nil, ifi, &memBacking{b: make([]byte, 64*SectorSize)}, 64, st)
		if err != nil {
			t.Fatal(err)
		}
		fr := tg.bufs.Get().(*frame)
		n := copy(fr.b, b)
		var req Header
		reqOK := req.UnmarshalBinary(b) == nil
		var src net.HardwareAddr
		if reqOK {
			src = bytes.Clone(req.Src)
		}
		if !tg.handle(fr, n) {
			return
		}
		if !reqOK || req.Response || (req.Command != CommandQueryConfig && (req.Shelf == BroadcastShelf || req.Slot == BroadcastSlot)) {
			t.Fatalf("answered a frame it must drop: %x", b)
		}
		var h Header
		if err := h.UnmarshalBinary(fr.b[:fr.n]); err != nil {
			t.Fatalf("response does not parse: %v", err)
		}
		if !h.Response || !bytes.Equal(h.Dst, src) || !bytes.Equal(h.Src, macA) || h.Shelf != 1 || h.Slot != 1 || h.Tag != req.Tag || fr.n < MinFrameLen || fr.n > len(fr.b) {
			t.Fatalf("bad response header %+v (len %d) to %+v", h, fr.n, req)
		}
	})
}
