package aoe

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"sync"
	"testing"
	"time"
)

// TestConcurrentCalls: several goroutines stream through one Client at once. Its receiving
// goroutine completes requests of every call and sends each call's next ones, and no answer
// may land in another call's buffer.
func TestConcurrentCalls(t *testing.T) {
	l := newLink(t, 1500)
	file := diskFile(t, 16<<20)
	startTarget(t, l, TargetConfig{Shelf: 6, Slot: 1, Device: file})
	c := dial(t, l, 6, 1, ClientConfig{})
	const calls, size = 4, 1 << 20
	want := make([][]byte, calls)
	for i := range want {
		want[i] = randomBytes(t, size)
	}
	var wg sync.WaitGroup
	errs := make([]error, calls)
	for i := range calls {
		wg.Go(func() {
			off := int64(i) * 2 * size
			if _, err := c.WriteAt(want[i], off); err != nil {
				errs[i] = fmt.Errorf("call %d: WriteAt: %w", i, err)
				return
			}
			got := make([]byte, size)
			if _, err := c.ReadAt(got, off); err != nil {
				errs[i] = fmt.Errorf("call %d: ReadAt: %w", i, err)
				return
			}
			if !bytes.Equal(got, want[i]) {
				errs[i] = fmt.Errorf("call %d: read back differs from what it wrote", i)
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
}

// TestRetransmission: requests the target ignores for a while (the initiator's MAC is masked
// out) are sent again on timeout, and the call completes with the right data once the target
// answers.
func TestRetransmission(t *testing.T) {
	l := newLink(t, 1500)
	file := diskFile(t, 4<<20)
	want := randomBytes(t, 256<<10)
	if err := os.WriteFile(file, append(want, make([]byte, 4<<20-len(want))...), 0o600); err != nil {
		t.Fatal(err)
	}
	tg := startTarget(t, l, TargetConfig{Shelf: 6, Slot: 2, Device: file})
	// 50 ms, doubled per try: about 3 s before giving up, far beyond the masked spell.
	c := dial(t, l, 6, 2, ClientConfig{Timeout: 50 * time.Millisecond, Retries: 6})
	setMasks := func(m []net.HardwareAddr) {
		tg.state.mu.Lock()
		tg.state.masks = m
		tg.state.mu.Unlock()
	}
	setMasks([]net.HardwareAddr{{0x02, 0, 0, 0, 0, 0x99}}) // someone else only
	done := make(chan error, 1)
	got := make([]byte, len(want))
	go func() { _, err := c.ReadAt(got, 0); done <- err }()
	// Let the first sends go unanswered: the target counts them as dropped.
	for i := 0; tg.Stats().Dropped == 0; i++ {
		if i == 200 {
			t.Fatal("the target never saw the masked requests")
		}
		time.Sleep(10 * time.Millisecond)
	}
	setMasks(nil)
	if err := <-done; err != nil {
		t.Fatalf("ReadAt after the mask was lifted: %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("data read after retransmission differs from the file")
	}
}
