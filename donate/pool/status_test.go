package pool

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestStatusJSON(t *testing.T) {
	inv := []Member{aoe(2, "A", 100*gb), aoe(1, "A", 100*gb), aoe(3, "B", 100*gb), aoe(4, "B", 100*gb), aoe(5, "", 100*gb),
		{Node: "n10", Transport: TransportISCSI, Address: "iqn.2026-01.net.distonet:n10", SizeBytes: 50 * gb, State: StateOffline, Window: "22:00-06:00"}}
	l, reasons := Plan(Layout{}, inv, Options{})
	reports := []ArrayStatus{{Name: "pool-always-0", State: ArraySyncing, SyncAction: "resync", SyncPercent: 42.5, UsableBytes: 199 * gb,
		Members:   []MemberStatus{{Disk: "aoe:e1.0", Node: "n01", Role: "member", State: "in_sync"}, {Disk: "aoe:e5.0", Node: "n05", Role: "spare", State: "spare"}},
		UpdatedAt: time.Date(2026, 11, 26, 6, 0, 0, 0, time.UTC)}}
	b, err := StatusJSON(inv, l, reports, reasons)
	if err != nil {
		t.Fatal(err)
	}
	// Decode generically: the keys are the contract.
	var doc struct {
		Disks   []map[string]any `json:"disks"`
		Arrays  []map[string]any `json:"arrays"`
		Reasons []string         `json:"reasons"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatalf("%v\n%s", err, b)
	}
	var nodes []string
	for _, d := range doc.Disks {
		for _, k := range []string{"node", "transport", "address", "size_bytes", "state"} {
			if _, ok := d[k]; !ok {
				t.Errorf("disk %v lacks %q", d, k)
			}
		}
		nodes = append(nodes, d["node"].(string))
	}
	if diff := cmp.Diff([]string{"n01", "n02", "n03", "n04", "n05", "n10"}, nodes); diff != "" {
		t.Errorf("disk order (-want +got):\n%s", diff)
	}
	first := doc.Disks[0]
	if first["address"] != "e1.0" || first["transport"] != "aoe" || first["size_bytes"] != float64(100*gb) || first["state"] != "online" ||
		first["array"] != "pool-always-0" || first["role"] != "member" || first["md_state"] != "in_sync" {
		t.Errorf("first disk %v", first)
	}
	if last := doc.Disks[5]; last["address"] != "iqn.2026-01.net.distonet:n10" || last["state"] != "offline" || last["array"] != nil {
		t.Errorf("iscsi disk %v", last)
	}
	if len(doc.Arrays) != 1 || doc.Arrays[0]["state"] != "syncing" || doc.Arrays[0]["sync_percent"] != 42.5 || doc.Arrays[0]["usable_bytes"] != float64(199*gb) {
		t.Errorf("arrays %v", doc.Arrays)
	}
	if len(doc.Reasons) != 1 {
		t.Errorf("reasons %v", doc.Reasons)
	}
}

func TestBuildStatusUnreportedArrayIsStopped(t *testing.T) {
	inv := []Member{aoe(1, "", gb), aoe(2, "", gb), aoe(3, "", gb), aoe(4, "", gb), aoe(5, "", gb), aoe(6, "", gb)}
	l, _ := Plan(Layout{}, inv, Options{Spares: -1})
	st := BuildStatus(inv, l, nil, nil)
	want := []ArrayStatus{{Name: "pool-always-0", State: ArrayStopped, RaidDevices: 6, UsableBytes: 4 * gb}}
	if diff := cmp.Diff(want, st.Arrays); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	empty := BuildStatus(nil, Layout{}, nil, nil)
	b, _ := json.Marshal(empty)
	if string(b) != `{"disks":[],"arrays":[]}` {
		t.Errorf("empty status %s", b)
	}
}

func TestParseWindow(t *testing.T) {
	tests := []struct {
		in, want string
		dur      time.Duration
	}{
		{"22:00-06:00", "22:00-06:00", 8 * time.Hour},
		{"8:30-17:45", "08:30-17:45", 9*time.Hour + 15*time.Minute},
		{" 23:59 - 00:01 ", "23:59-00:01", 2 * time.Minute},
	}
	for _, tt := range tests {
		w, err := ParseWindow(tt.in)
		if err != nil || w.String() != tt.want || w.Duration() != tt.dur {
			t.Errorf("ParseWindow(%q) = %v (%v), %v", tt.in, w, w.Duration(), err)
		}
	}
	for _, bad := range []string{"", "22:00", "22:00-22:00", "24:00-06:00", "22:60-06:00", "2200-0600", "-1:00-06:00", "22:00-+6:00", "aa:bb-cc:dd", "22:0-06:00"} {
		if _, err := ParseWindow(bad); err == nil {
			t.Errorf("ParseWindow(%q) accepted", bad)
		}
	}
}

func TestWindowOpenAndNext(t *testing.T) {
	w, _ := ParseWindow("22:00-06:00")
	loc := time.UTC
	at := func(d, h, m int) time.Time { return time.Date(2026, 11, d, h, m, 0, 0, loc) }
	tests := []struct {
		now      time.Time
		open     bool
		closes   time.Time
		nextOpen time.Time
	}{
		{at(26, 12, 0), false, time.Time{}, at(26, 22, 0)},
		{at(26, 22, 0), true, at(27, 6, 0), at(26, 22, 0)},
		{at(27, 3, 0), true, at(27, 6, 0), at(27, 3, 0)},
		{at(27, 6, 0), false, time.Time{}, at(27, 22, 0)},
		{at(26, 23, 59), true, at(27, 6, 0), at(26, 23, 59)},
	}
	for _, tt := range tests {
		open, closes := w.Open(tt.now)
		if open != tt.open || !closes.Equal(tt.closes) || !w.NextOpen(tt.now).Equal(tt.nextOpen) {
			t.Errorf("%v: open %v closes %v next %v", tt.now, open, closes, w.NextOpen(tt.now))
		}
	}
	day, _ := ParseWindow("08:00-18:00")
	if open, closes := day.Open(at(26, 9, 0)); !open || !closes.Equal(at(26, 18, 0)) {
		t.Errorf("day window: %v %v", open, closes)
	}
	if open, _ := day.Open(at(26, 7, 59)); open {
		t.Error("day window open before it starts")
	}
}

func TestNaturalLess(t *testing.T) {
	for _, c := range [][2]string{{"e2.0", "e10.0"}, {"a", "b"}, {"e1.0", "e1.1"}, {"n01", "n2"}, {"x", "x1"}, {"e1", "e01"}} {
		if !naturalLess(c[0], c[1]) || naturalLess(c[1], c[0]) {
			t.Errorf("naturalLess(%q, %q) wrong", c[0], c[1])
		}
	}
}

func TestReleased(t *testing.T) {
	running := ArrayStatus{Name: "a", State: ArrayDegraded, Members: []MemberStatus{
		{Disk: "aoe:e1.0", State: "in_sync"}, {Disk: "aoe:e2.0", State: "detached"}, {Disk: "aoe:e3.0", State: "faulty"}}}
	stopped := ArrayStatus{Name: "b", State: ArrayStopped, Members: []MemberStatus{{Disk: "aoe:e9.0", State: "detached"}}}
	for id, want := range map[string]bool{"aoe:e1.0": false, "aoe:e2.0": true, "aoe:e3.0": false, "aoe:e9.0": true, "aoe:e7.0": true} {
		if got := Released([]ArrayStatus{running, stopped}, id); got != want {
			t.Errorf("Released(%s) = %v, want %v", id, got, want)
		}
	}
}
