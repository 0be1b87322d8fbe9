package aoe

import (
	"sync"
	"testing"
)

// syncRecorder wraps the backing file and tracks which writes a completed sync covers.
type syncRecorder struct {
	backing
	mu      sync.Mutex
	writes  int // WriteAt calls so far
	covered int // writes that had returned when the last completed Sync started
	syncs   int
}

func (r *syncRecorder) WriteAt(p []byte, off int64) (int, error) {
	n, err := r.backing.WriteAt(p, off)
	r.mu.Lock()
	r.writes++
	r.mu.Unlock()
	return n, err
}

func (r *syncRecorder) Sync() error {
	r.mu.Lock()
	before := r.writes
	r.mu.Unlock()
	err := r.backing.Sync()
	r.mu.Lock()
	r.covered = max(r.covered, before)
	r.syncs++
	r.mu.Unlock()
	return err
}

func (r *syncRecorder) counts() (writes, covered, syncs int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.writes, r.covered, r.syncs
}

// TestWritesAreDurableBeforeAck checks the durable default: once the initiator holds every
// acknowledgement, every write was covered by an fdatasync that started after it. The unsafe
// mode is the control: it acknowledges writes no sync covers.
func TestWritesAreDurableBeforeAck(t *testing.T) {
	for _, tc := range []struct {
		name   string
		unsafe bool
	}{{"durable", false}, {"unsafe", true}} {
		t.Run(tc.name, func(t *testing.T) {
			l := newLink(t, 0)
			tg := newTargetIn(t, l, TargetConfig{Shelf: 9, Slot: 1, Device: diskFile(t, 8<<20), Unsafe: tc.unsafe})
			rec := &syncRecorder{backing: tg.dev}
			tg.dev = rec
			serveTarget(t, tg)
			c := dial(t, l, 9, 1, ClientConfig{})
			data := randomBytes(t, 2<<20)
			if _, err := c.WriteAt(data, 0); err != nil {
				t.Fatal(err)
			}
			writes, covered, syncs := rec.counts()
			frames := len(data) / (c.SectorsPerFrame() * SectorSize)
			if writes < frames {
				t.Fatalf("%d writes reached the file for %d frames", writes, frames)
			}
			if !tc.unsafe {
				if covered != writes {
					t.Fatalf("acknowledged %d writes, only %d covered by a completed fdatasync", writes, covered)
				}
				if syncs >= writes {
					t.Logf("no group commit happened: %d syncs for %d writes", syncs, writes)
				}
				t.Logf("group commit: %d writes, %d fdatasync; %+v", writes, syncs, tg.Stats())
				return
			}
			if covered == writes {
				t.Fatalf("unsafe mode: all %d writes covered by a sync before the ack; the check cannot tell modes apart", writes)
			}
		})
	}
}
