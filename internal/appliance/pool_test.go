package appliance

import (
	"testing"
	"time"

	"github.com/distonet/distonet/donate/pool"
	"github.com/distonet/distonet/internal/registry"
)

// A donor that stopped heartbeating without withdrawing (switched off, crashed) is offline in
// the inventory the pool head reads, so the head fails the member at once.
func TestInventoryMarksSilentDonorsOffline(t *testing.T) {
	st, err := registry.Open(t.TempDir(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	now := time.Now().UTC()
	for _, d := range []registry.DonatedDisk{
		{Node: "fresh", Transport: "aoe", Address: "e1.0", SizeBytes: 1 << 30, State: "online", LastSeen: now.Add(-5 * time.Second)},
		{Node: "silent", Transport: "aoe", Address: "e2.0", SizeBytes: 1 << 30, State: "online", LastSeen: now.Add(-StaleAfter - time.Second)},
		{Node: "night", Transport: "aoe", Address: "e3.0", SizeBytes: 1 << 30, State: "withdrawn", LastSeen: now},
	} {
		if _, err := st.AddNode(registry.Node{Name: d.Node, MAC: "52:54:00:00:00:0" + d.Address[1:2], Image: "demo"}); err != nil {
			t.Fatal(err)
		}
		if err := st.PutDisk(d); err != nil {
			t.Fatal(err)
		}
	}
	inv, err := inventory(st)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, m := range inv {
		got[m.Node] = m.State
	}
	want := map[string]string{"fresh": pool.StateOnline, "silent": pool.StateOffline, "night": pool.StateOffline}
	for node, w := range want {
		if got[node] != w {
			t.Errorf("%s: state %q, want %q", node, got[node], w)
		}
	}
}
