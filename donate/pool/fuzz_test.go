package pool

import (
	"encoding/json"
	"math/rand/v2"
	"testing"
)

// FuzzPlan feeds the planner a previous layout as the registry would store it (JSON, possibly
// hand-edited or from an older version) and a random inventory: it must never panic, and
// every array it newly forms must respect the rules.
func FuzzPlan(f *testing.F) {
	seedInv := []Member{aoe(1, "A", gb), aoe(2, "A", gb), aoe(3, "B", gb), aoe(4, "B", gb), aoe(5, "", gb)}
	l, _ := Plan(Layout{}, seedInv, Options{})
	b, _ := json.Marshal(l)
	f.Add(b, uint64(1), uint8(10))
	f.Add([]byte(`{"arrays":[{"name":"x","members":[{"transport":"aoe","address":"e1.0","node":"n01"},{}],"member_size_bytes":-5}]}`), uint64(2), uint8(3))
	f.Add([]byte(`{"arrays":[{"name":"x"},{"name":"x"},{"name":""}]}`), uint64(3), uint8(0))
	f.Fuzz(func(t *testing.T, prevJSON []byte, seed uint64, n uint8) {
		var prev Layout
		if json.Unmarshal(prevJSON, &prev) != nil {
			return
		}
		r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
		inv := randomInventory(r, int(n%48))
		got, _ := Plan(prev, inv, Options{})
		again, _ := Plan(got, inv, Options{})
		if len(again.Arrays) != len(got.Arrays) {
			t.Fatalf("re-plan changed the number of arrays: %d -> %d", len(got.Arrays), len(again.Arrays))
		}
		// Arrays the planner formed itself (not carried over from prev) follow every rule.
		kept := map[string]bool{}
		for _, a := range prev.Arrays {
			kept[a.Name] = true
		}
		var fresh Layout
		for _, a := range got.Arrays {
			if !kept[a.Name] {
				fresh.Arrays = append(fresh.Arrays, a)
			}
		}
		checkInvariants(t, fresh, inv, Options{}, true)
	})
}
