package pool

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

const gb = int64(1_000_000_000)

// aoe is an online always-on AoE disk e<shelf>.0 on node n<shelf>.
func aoe(shelf int, group string, size int64) Member {
	return Member{Node: fmt.Sprintf("n%02d", shelf), Group: group, Transport: TransportAoE,
		Address: fmt.Sprintf("e%d.0", shelf), SizeBytes: size, State: StateOnline}
}

func night(m Member, w string) Member { m.Window = w; return m }

func disk(m Member) Disk { return diskOf(m) }

func names(l Layout) []string {
	var out []string
	for _, a := range l.Arrays {
		out = append(out, a.Name)
	}
	return out
}

func memberIDs(ds []Disk) []string {
	var out []string
	for _, d := range ds {
		out = append(out, d.ID())
	}
	return out
}

func reasonText(rs []Reason) string {
	var b strings.Builder
	for _, r := range rs {
		b.WriteString(r.String())
		b.WriteByte('\n')
	}
	return b.String()
}

func TestPlanFreshLayouts(t *testing.T) {
	tests := []struct {
		name string
		inv  []Member
		opts Options
		want Layout
		// wantReason is a substring one of the reasons must hold ("" = no reasons at all).
		wantReason string
	}{
		{
			name: "four equal disks make one array, no spare",
			inv:  []Member{aoe(1, "", 100*gb), aoe(2, "", 100*gb), aoe(3, "", 100*gb), aoe(4, "", 100*gb)},
			want: Layout{Arrays: []Array{{Name: "pool-always-0", Level: 6, MemberSizeBytes: 100 * gb,
				Members: []Disk{disk(aoe(1, "", 100*gb)), disk(aoe(2, "", 100*gb)), disk(aoe(3, "", 100*gb)), disk(aoe(4, "", 100*gb))}}}},
		},
		{
			name: "fifth disk becomes the hot spare",
			inv:  []Member{aoe(1, "", 100*gb), aoe(2, "", 100*gb), aoe(3, "", 100*gb), aoe(4, "", 100*gb), aoe(5, "", 100*gb)},
			want: Layout{Arrays: []Array{{Name: "pool-always-0", Level: 6, MemberSizeBytes: 100 * gb,
				Members: []Disk{disk(aoe(1, "", 100*gb)), disk(aoe(2, "", 100*gb)), disk(aoe(3, "", 100*gb)), disk(aoe(4, "", 100*gb)), disk(aoe(5, "", 100*gb))}}}},
		},
		{
			name:       "three disks: no array and a reason",
			inv:        []Member{aoe(1, "", 100*gb), aoe(2, "", 100*gb), aoe(3, "", 100*gb)},
			want:       Layout{Arrays: []Array{}},
			wantReason: "class always-on: no array formed: 3 free disk(s) on 3 node(s) [aoe:e1.0 aoe:e2.0 aoe:e3.0], at most 3 of them fit together; an array needs at least 4 disks",
		},
		{
			name: "largest disks first, member size is the smallest, 10% tolerance",
			inv: []Member{aoe(1, "", 1000*gb), aoe(2, "", 950*gb), aoe(3, "", 910*gb), aoe(4, "", 900*gb),
				aoe(5, "", 250*gb), aoe(6, "", 250*gb), aoe(7, "", 240*gb), aoe(8, "", 230*gb)},
			want: Layout{Arrays: []Array{
				{Name: "pool-always-0", Level: 6, MemberSizeBytes: 900 * gb, Members: []Disk{
					disk(aoe(1, "", 1000*gb)), disk(aoe(2, "", 950*gb)), disk(aoe(3, "", 910*gb)), disk(aoe(4, "", 900*gb))}},
				{Name: "pool-always-1", Level: 6, MemberSizeBytes: 230 * gb, Members: []Disk{
					disk(aoe(5, "", 250*gb)), disk(aoe(6, "", 250*gb)), disk(aoe(7, "", 240*gb)), disk(aoe(8, "", 230*gb))}},
			}},
		},
		{
			name: "uneven sizes outside tolerance do not mix",
			inv:  []Member{aoe(1, "", 1000*gb), aoe(2, "", 500*gb), aoe(3, "", 250*gb), aoe(4, "", 146*gb), aoe(5, "", 146*gb)},
			want: Layout{Arrays: []Array{}}, wantReason: "no array formed: 5 free disk(s) on 5 node(s) [aoe:e1.0 aoe:e2.0 aoe:e3.0 aoe:e4.0 aoe:e5.0], at most 2 of them fit together",
		},
		{
			name: "at most two per group: a third disk of room A waits",
			inv: []Member{aoe(1, "A", 100*gb), aoe(2, "A", 100*gb), aoe(3, "A", 100*gb),
				aoe(4, "B", 100*gb), aoe(5, "B", 100*gb)},
			want: Layout{Arrays: []Array{{Name: "pool-always-0", Level: 6, MemberSizeBytes: 100 * gb, Members: []Disk{
				disk(aoe(1, "A", 100*gb)), disk(aoe(2, "A", 100*gb)), disk(aoe(4, "B", 100*gb)), disk(aoe(5, "B", 100*gb))}}}},
			wantReason: "not placed",
		},
		{
			name: "one room alone cannot make an array",
			inv:  []Member{aoe(1, "A", 100*gb), aoe(2, "A", 100*gb), aoe(3, "A", 100*gb), aoe(4, "A", 100*gb)},
			want: Layout{Arrays: []Array{}}, wantReason: "at most 2 of them fit together; an array needs at least 4 disks within 10% of each other's size, on distinct nodes, at most 2 per group",
		},
		{
			name: "two disks on one node count once",
			inv: []Member{aoe(1, "", 100*gb), aoe(2, "", 100*gb), aoe(3, "", 100*gb),
				{Node: "n01", Transport: TransportISCSI, Address: "iqn.2026-01.net.distonet:n01-b", SizeBytes: 100 * gb, State: StateOnline}},
			want: Layout{Arrays: []Array{}}, wantReason: "4 free disk(s) on 3 node(s)",
		},
		{
			name: "always-on and each window get their own arrays",
			inv: []Member{aoe(1, "", 100*gb), aoe(2, "", 100*gb), aoe(3, "", 100*gb), aoe(4, "", 100*gb),
				night(aoe(11, "", 100*gb), "22:00-06:00"), night(aoe(12, "", 100*gb), "22:00-6:00"),
				night(aoe(13, "", 100*gb), "22:00-06:00"), night(aoe(14, "", 100*gb), "22:00-06:00"),
				night(aoe(21, "", 100*gb), "20:00-07:00")},
			want: Layout{Arrays: []Array{
				{Name: "pool-always-0", Level: 6, MemberSizeBytes: 100 * gb, Members: []Disk{
					disk(aoe(1, "", 100*gb)), disk(aoe(2, "", 100*gb)), disk(aoe(3, "", 100*gb)), disk(aoe(4, "", 100*gb))}},
				{Name: "pool-2200-0600-0", Window: "22:00-06:00", Level: 6, MemberSizeBytes: 100 * gb, Members: []Disk{
					disk(aoe(11, "", 100*gb)), disk(aoe(12, "", 100*gb)), disk(aoe(13, "", 100*gb)), disk(aoe(14, "", 100*gb))}},
			}},
			wantReason: "class 20:00-07:00: no array formed: 1 free disk(s)",
		},
		{
			name: "width capped, the rest seeds a second array",
			inv: func() []Member {
				var inv []Member
				for i := 1; i <= 13; i++ {
					inv = append(inv, aoe(i, "", 100*gb))
				}
				return inv
			}(),
			opts: Options{MaxMembers: 6, Spares: -1},
			want: Layout{Arrays: []Array{
				{Name: "pool-always-0", Level: 6, MemberSizeBytes: 100 * gb, Members: []Disk{
					disk(aoe(1, "", 100*gb)), disk(aoe(2, "", 100*gb)), disk(aoe(3, "", 100*gb)), disk(aoe(4, "", 100*gb)), disk(aoe(5, "", 100*gb)), disk(aoe(6, "", 100*gb))}},
				{Name: "pool-always-1", Level: 6, MemberSizeBytes: 100 * gb, Members: []Disk{
					disk(aoe(7, "", 100*gb)), disk(aoe(8, "", 100*gb)), disk(aoe(9, "", 100*gb)), disk(aoe(10, "", 100*gb)), disk(aoe(11, "", 100*gb)), disk(aoe(12, "", 100*gb))}},
			}},
			wantReason: "[aoe:e13.0]",
		},
		{
			name: "retired, sizeless and malformed disks are left out",
			inv: []Member{aoe(1, "", 100*gb), aoe(2, "", 100*gb), aoe(3, "", 100*gb),
				func() Member { m := aoe(4, "", 100*gb); m.State = StateRetired; return m }(),
				aoe(5, "", 0),
				{Node: "n06", Transport: "nbd", Address: "x", SizeBytes: gb},
				night(aoe(7, "", 100*gb), "25:00-06:00")},
			want: Layout{Arrays: []Array{}}, wantReason: "size unknown",
		},
		{
			name: "offline and withdrawing disks are still planned",
			inv: []Member{aoe(1, "", 100*gb), aoe(2, "", 100*gb),
				func() Member { m := aoe(3, "", 100*gb); m.State = StateOffline; return m }(),
				func() Member { m := aoe(4, "", 100*gb); m.State = StateWithdrawing; return m }()},
			want: Layout{Arrays: []Array{{Name: "pool-always-0", Level: 6, MemberSizeBytes: 100 * gb, Members: []Disk{
				disk(aoe(1, "", 100*gb)), disk(aoe(2, "", 100*gb)), disk(aoe(3, "", 100*gb)), disk(aoe(4, "", 100*gb))}}}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, reasons := Plan(Layout{}, tt.inv, tt.opts)
			// The spare of the "fifth disk" case is written as a fifth member above for
			// brevity: move it where it belongs.
			if tt.name == "fifth disk becomes the hot spare" {
				a := &tt.want.Arrays[0]
				a.Spares, a.Members = a.Members[4:], a.Members[:4]
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("layout (-want +got):\n%s\nreasons:\n%s", diff, reasonText(reasons))
			}
			text := reasonText(reasons)
			if tt.wantReason == "" && len(reasons) != 0 {
				t.Errorf("unexpected reasons:\n%s", text)
			}
			if tt.wantReason != "" && !strings.Contains(text, tt.wantReason) {
				t.Errorf("reasons do not mention %q:\n%s", tt.wantReason, text)
			}
		})
	}
}

func TestPlanKeepsAndRepairs(t *testing.T) {
	base := []Member{aoe(1, "", 100*gb), aoe(2, "", 100*gb), aoe(3, "", 100*gb), aoe(4, "", 100*gb), aoe(5, "", 100*gb)}
	prev, _ := Plan(Layout{}, base, Options{})
	prev.Arrays[0].UUID = "e2080faf:7ebaa914:0ae32429:3de32668"
	without := func(inv []Member, shelf int) []Member {
		return slices.DeleteFunc(slices.Clone(inv), func(m Member) bool { return m.Address == fmt.Sprintf("e%d.0", shelf) })
	}
	tests := []struct {
		name        string
		inv         []Member
		wantMembers []string
		wantSpares  []string
		wantReason  string
	}{
		{
			name:        "same inventory, same plan",
			inv:         base,
			wantMembers: []string{"aoe:e1.0", "aoe:e2.0", "aoe:e3.0", "aoe:e4.0"},
			wantSpares:  []string{"aoe:e5.0"},
		},
		{
			name:        "a bigger new disk neither moves members nor takes the spare's place",
			inv:         append(slices.Clone(base), aoe(6, "", 400*gb)),
			wantMembers: []string{"aoe:e1.0", "aoe:e2.0", "aoe:e3.0", "aoe:e4.0"},
			wantSpares:  []string{"aoe:e5.0"},
			wantReason:  "[aoe:e6.0]",
		},
		{
			name:        "a retired member's slot goes to the spare, in place",
			inv:         without(base, 2),
			wantMembers: []string{"aoe:e1.0", "aoe:e5.0", "aoe:e3.0", "aoe:e4.0"},
			wantReason:  "member in slot 1 left the inventory or was retired: slot freed",
		},
		{
			name:        "no spare: a free disk of the class fills the slot",
			inv:         append(without(without(base, 2), 5), aoe(9, "", 120*gb)),
			wantMembers: []string{"aoe:e1.0", "aoe:e9.0", "aoe:e3.0", "aoe:e4.0"},
		},
		{
			name:        "a smaller free disk cannot fill the slot: degraded",
			inv:         append(without(without(base, 2), 5), aoe(9, "", 90*gb)),
			wantMembers: []string{"aoe:e1.0", "", "aoe:e3.0", "aoe:e4.0"},
			wantReason:  "slot 1 empty",
		},
		{
			name:        "a member moved to a window leaves",
			inv:         append(without(base, 3), night(aoe(3, "", 100*gb), "22:00-06:00")),
			wantMembers: []string{"aoe:e1.0", "aoe:e2.0", "aoe:e5.0", "aoe:e4.0"},
			wantReason:  "moved to availability class 22:00-06:00",
		},
		{
			name:        "three members gone: not repaired",
			inv:         []Member{aoe(1, "", 100*gb), aoe(7, "", 100*gb), aoe(8, "", 100*gb)},
			wantMembers: []string{"aoe:e1.0", "", "", ""},
			wantReason:  "only 1 of 4 members left",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, reasons := Plan(prev, tt.inv, Options{})
			a, ok := got.Array("pool-always-0")
			if !ok {
				t.Fatalf("array pool-always-0 dropped; reasons:\n%s", reasonText(reasons))
			}
			if a.UUID != prev.Arrays[0].UUID {
				t.Errorf("UUID %q, want it kept as %q", a.UUID, prev.Arrays[0].UUID)
			}
			var gotMembers []string
			for _, d := range a.Members {
				if d.Address == "" {
					gotMembers = append(gotMembers, "")
				} else {
					gotMembers = append(gotMembers, d.ID())
				}
			}
			if diff := cmp.Diff(tt.wantMembers, gotMembers); diff != "" {
				t.Errorf("members (-want +got):\n%s\nreasons:\n%s", diff, reasonText(reasons))
			}
			if diff := cmp.Diff(tt.wantSpares, memberIDs(a.Spares)); diff != "" {
				t.Errorf("spares (-want +got):\n%s", diff)
			}
			if tt.wantReason != "" && !strings.Contains(reasonText(reasons), tt.wantReason) {
				t.Errorf("reasons do not mention %q:\n%s", tt.wantReason, reasonText(reasons))
			}
		})
	}
}

func TestPlanDropsArrayWithNoMemberLeft(t *testing.T) {
	prev, _ := Plan(Layout{}, []Member{aoe(1, "", gb), aoe(2, "", gb), aoe(3, "", gb), aoe(4, "", gb)}, Options{})
	got, reasons := Plan(prev, nil, Options{})
	if len(got.Arrays) != 0 {
		t.Errorf("arrays %v, want none", names(got))
	}
	if !strings.Contains(reasonText(reasons), "no member left: array dropped") {
		t.Errorf("reasons:\n%s", reasonText(reasons))
	}
}

func TestPlanNewArrayNamesNeverCollide(t *testing.T) {
	// The previous plan holds pool-always-0 over e1..e4; e5..e8 arrive: a new name.
	first := []Member{aoe(1, "", gb), aoe(2, "", gb), aoe(3, "", gb), aoe(4, "", gb)}
	prev, _ := Plan(Layout{}, first, Options{Spares: -1})
	inv := append(slices.Clone(first), aoe(5, "", gb), aoe(6, "", gb), aoe(7, "", gb), aoe(8, "", gb))
	got, _ := Plan(prev, inv, Options{Spares: -1})
	if diff := cmp.Diff([]string{"pool-always-0", "pool-always-1"}, names(got)); diff != "" {
		t.Errorf("names (-want +got):\n%s", diff)
	}
}

func TestLayoutJSONRoundTrip(t *testing.T) {
	inv := []Member{aoe(1, "A", gb), aoe(2, "A", gb), aoe(3, "B", gb), aoe(4, "B", gb), aoe(5, "C", gb),
		night(aoe(6, "", gb), "22:00-06:00")}
	inv[0].Transport, inv[0].Address, inv[0].Portal = TransportISCSI, "iqn.2026-01.net.distonet:n01", "10.202.0.101:3260"
	l, _ := Plan(Layout{}, inv, Options{})
	b, err := json.Marshal(l)
	if err != nil {
		t.Fatal(err)
	}
	var back Layout
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(l, back); diff != "" {
		t.Errorf("round trip (-want +got):\n%s", diff)
	}
	if !strings.Contains(string(b), `"member_size_bytes":1000000000`) {
		t.Errorf("JSON lacks snake_case keys: %s", b)
	}
}

// randomInventory draws disks over a few nodes, rooms, windows and size tiers, with some
// nodes holding two disks and some disks retired or sizeless.
func randomInventory(r *rand.Rand, n int) []Member {
	tiers := []int64{146 * gb, 250 * gb, 500 * gb, 1000 * gb}
	groups := []string{"", "A", "B", "C", "D"}
	windows := []string{"", "", "22:00-06:00", "19:00-07:00"}
	states := []string{StateOnline, StateOnline, StateOnline, StateOffline, StateWithdrawing, StateRetired}
	var inv []Member
	for i := 0; i < n; i++ {
		node := r.IntN(n*3/4 + 1)
		size := tiers[r.IntN(len(tiers))]
		size -= size / 100 * int64(r.IntN(15)) // up to 14% smaller than its tier
		if r.IntN(40) == 0 {
			size = 0
		}
		m := Member{
			Node: fmt.Sprintf("node%02d", node), Group: groups[node%len(groups)],
			Transport: TransportAoE, Address: fmt.Sprintf("e%d.%d", node, i),
			SizeBytes: size, Window: windows[node%len(windows)], State: states[r.IntN(len(states))],
		}
		if r.IntN(4) == 0 {
			m.Transport, m.Address = TransportISCSI, fmt.Sprintf("iqn.2026-01.net.distonet:node%02d-%d", node, i)
		}
		inv = append(inv, m)
	}
	return inv
}

// checkInvariants verifies what every layout must satisfy whatever the inventory.
func checkInvariants(t *testing.T, l Layout, inv []Member, o Options, fresh bool) {
	t.Helper()
	o = o.withDefaults()
	byID := map[string]Member{}
	for _, m := range inv {
		if _, dup := byID[m.ID()]; !dup {
			byID[m.ID()] = m
		}
	}
	placed := map[string]string{}
	for _, a := range l.Arrays {
		if a.Level != 6 || len(a.Members) < o.MinMembers || len(a.Members) > o.MaxMembers {
			t.Errorf("%s: level %d width %d", a.Name, a.Level, len(a.Members))
		}
		if len(a.Spares) > o.Spares {
			t.Errorf("%s: %d spares > %d", a.Name, len(a.Spares), o.Spares)
		}
		nodes := map[string]int{}
		groups := map[string]int{}
		for i, d := range append(slices.Clone(a.Members), a.Spares...) {
			if d.Address == "" {
				continue
			}
			if where, dup := placed[d.ID()]; dup {
				t.Errorf("%s placed twice: %s and %s", d.ID(), where, a.Name)
			}
			placed[d.ID()] = a.Name
			m, ok := byID[d.ID()]
			if !ok || m.State == StateRetired || m.SizeBytes <= 0 {
				t.Errorf("%s: %s is not an eligible inventory disk", a.Name, d.ID())
			}
			w := ""
			if m.Window != "" {
				pw, _ := ParseWindow(m.Window)
				w = pw.String()
			}
			if w != a.Window {
				t.Errorf("%s (class %q) holds %s of class %q", a.Name, a.Window, d.ID(), w)
			}
			if d.SizeBytes < a.MemberSizeBytes {
				t.Errorf("%s: %s (%d) smaller than member size %d", a.Name, d.ID(), d.SizeBytes, a.MemberSizeBytes)
			}
			// A repair may use a larger disk (redundancy first); fresh arrays stay in tolerance.
			if fresh && float64(a.MemberSizeBytes) < float64(d.SizeBytes)*(1-o.SizeTolerance)-1 {
				t.Errorf("%s: %s (%d) more than %.0f%% above member size %d", a.Name, d.ID(), d.SizeBytes, o.SizeTolerance*100, a.MemberSizeBytes)
			}
			nodes[d.Node]++
			if nodes[d.Node] > 1 {
				t.Errorf("%s: node %s holds two disks of the array", a.Name, d.Node)
			}
			if i < len(a.Members) && d.Group != "" {
				groups[d.Group]++
				if groups[d.Group] > o.MaxPerGroup {
					t.Errorf("%s: group %s has %d members", a.Name, d.Group, groups[d.Group])
				}
			}
		}
	}
}

func TestPlanPropertiesOnRandomInventories(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2026))
	optsets := []Options{{}, {MaxMembers: 5, Spares: 2}, {Spares: -1, SizeTolerance: 0.3}, {MaxPerGroup: 1, MinMembers: 5}}
	for iter := 0; iter < 300; iter++ {
		inv := randomInventory(r, 4+r.IntN(40))
		opts := optsets[iter%len(optsets)]
		t.Run(fmt.Sprintf("inv%03d", iter), func(t *testing.T) {
			got, _ := Plan(Layout{}, inv, opts)
			checkInvariants(t, got, inv, opts, true)

			// Nothing left over could have formed another array.
			checkMaximal(t, got, inv, opts)

			// Order of the inventory does not matter.
			shuffled := slices.Clone(inv)
			r.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
			again, _ := Plan(Layout{}, shuffled, opts)
			if diff := cmp.Diff(got, again); diff != "" {
				t.Fatalf("shuffled inventory changed the plan:\n%s", diff)
			}

			// Re-planning over its own result changes nothing.
			same, _ := Plan(got, shuffled, opts)
			if diff := cmp.Diff(got, same); diff != "" {
				t.Fatalf("re-plan is not idempotent:\n%s", diff)
			}

			// Adding disks one by one never moves an existing member or spare.
			cur := got
			grown := slices.Clone(inv)
			for k := 0; k < 6; k++ {
				extra := randomInventory(r, 1)[0]
				extra.Address += fmt.Sprintf("x%d", k)
				grown = append(grown, extra)
				next, _ := Plan(cur, grown, opts)
				checkInvariants(t, next, grown, opts, true)
				for i, a := range cur.Arrays {
					b := next.Arrays[i]
					for s, d := range a.Members {
						if d.Address != "" && b.Members[s].ID() != d.ID() {
							t.Fatalf("adding %s moved %s slot %d: %s -> %s", extra.ID(), a.Name, s, d.ID(), b.Members[s].ID())
						}
					}
					if !slices.Equal(memberIDs(a.Spares), memberIDs(b.Spares)[:len(a.Spares)]) {
						t.Fatalf("adding %s changed %s spares %v -> %v", extra.ID(), a.Name, memberIDs(a.Spares), memberIDs(b.Spares))
					}
				}
				cur = next
			}

			// Removing a disk only touches the array that held it.
			if len(got.Arrays) > 0 && len(got.Arrays[0].Members) > 0 {
				gone := got.Arrays[0].Members[0].ID()
				less := slices.DeleteFunc(slices.Clone(inv), func(m Member) bool { return m.ID() == gone })
				next, _ := Plan(got, less, opts)
				checkInvariants(t, next, less, opts, false)
				for i := 1; i < len(got.Arrays); i++ {
					if diff := cmp.Diff(got.Arrays[i].Members, next.Arrays[i].Members); diff != "" {
						t.Fatalf("removing %s changed %s:\n%s", gone, got.Arrays[i].Name, diff)
					}
				}
			}
		})
	}
}

func TestReasonsAreDeterministic(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 7))
	inv := randomInventory(r, 30)
	_, a := Plan(Layout{}, inv, Options{})
	rev := slices.Clone(inv)
	slices.Reverse(rev)
	_, b := Plan(Layout{}, rev, Options{})
	if diff := cmp.Diff(a, b); diff != "" {
		t.Errorf("reasons depend on inventory order:\n%s", diff)
	}
}

func TestUsableBytes(t *testing.T) {
	a := Array{MemberSizeBytes: 100, Members: make([]Disk, 6)}
	if got := a.UsableBytes(); got != 400 {
		t.Errorf("UsableBytes = %d, want 400", got)
	}
}

func TestPlanWarnsWhenAKeptArrayBreaksADomainRule(t *testing.T) {
	inv := []Member{aoe(1, "A", gb), aoe(2, "A", gb), aoe(3, "B", gb), aoe(4, "B", gb)}
	prev, _ := Plan(Layout{}, inv, Options{})
	inv[2].Group = "A" // pc3 was moved into room A
	got, reasons := Plan(prev, inv, Options{})
	if diff := cmp.Diff(memberIDs(prev.Arrays[0].Members), memberIDs(got.Arrays[0].Members)); diff != "" {
		t.Errorf("members moved (-want +got):\n%s", diff)
	}
	if !strings.Contains(reasonText(reasons), "group A now holds 3 members, more than 2") {
		t.Errorf("reasons:\n%s", reasonText(reasons))
	}
}

// checkMaximal verifies that the disks a fresh plan left unused cannot form an array among
// themselves: for each as the largest, the most members the rules allow is below MinMembers.
func checkMaximal(t *testing.T, l Layout, inv []Member, o Options) {
	t.Helper()
	o = o.withDefaults()
	used := map[string]bool{}
	for _, a := range l.Arrays {
		for _, d := range append(slices.Clone(a.Members), a.Spares...) {
			used[d.ID()] = true
		}
	}
	p := &planner{opts: o, used: used, names: map[string]bool{}}
	p.admit(inv)
	for _, w := range p.classes() {
		free := p.free(w)
		for i, anchor := range free {
			floor := p.sizeFloor(anchor.SizeBytes)
			nodes, groups, n := map[string]bool{}, map[string]int{}, 0
			for _, m := range free[i:] {
				if m.SizeBytes < floor {
					break
				}
				if nodes[m.Node] || (m.Group != "" && groups[m.Group] >= o.MaxPerGroup) {
					continue
				}
				nodes[m.Node] = true
				if m.Group != "" {
					groups[m.Group]++
				}
				n++
			}
			if n >= o.MinMembers {
				t.Fatalf("class %q: %d unused disks from %s could have formed an array", w, n, anchor.ID())
			}
		}
	}
}
