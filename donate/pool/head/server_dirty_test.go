package head

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/distonet/distonet/donate/pool"
)

// Through the Server: a dirty degraded array is reported failed on every pass, with the
// recovery in the message, but md is asked only once, and the array is not taken as up.
func TestServerReportsADirtyDegradedArrayOnce(t *testing.T) {
	r, a, _ := dirtyRig(t, []reply{fail(1, noArray)})
	reg := &fakeRegistry{layout: pool.Layout{Arrays: []pool.Array{a}}, members: inventoryOf(a)}
	reg.setState("e2.0", pool.StateOffline)
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	s, err := NewServer(ServerConfig{Head: r.head, Registry: reg, Location: time.UTC, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := s.Reconcile(ctx); err != nil || reg.last().State != pool.ArrayWaiting {
		t.Fatalf("within the grace period: %v %+v", err, reg.last())
	}
	now = now.Add(10 * time.Minute)
	for i := 0; i < 3; i++ {
		err := s.Reconcile(ctx)
		st := reg.last()
		if !errors.Is(err, ErrDirtyDegraded) || st.State != pool.ArrayFailed || !strings.Contains(st.Message, "mdadm --assemble --force --run /dev/md/data0") {
			t.Fatalf("pass %d: err %v, status %+v", i, err, st)
		}
	}
	if got := len(filterCalls(r.run.calls, "--assemble")); got != 1 {
		t.Errorf("%d assembly attempts, want 1: %q", got, r.run.calls)
	}
	s.mu.Lock()
	_, up := s.up[a.Name]
	s.mu.Unlock()
	if up {
		t.Error("a refused array counted as brought up")
	}
}
