package web

import (
	"strings"
	"testing"
	"time"

	"github.com/distonet/distonet/donate/pool"
	"github.com/distonet/distonet/internal/registry"
)

// The pool page shows each array the head reports: state, resync progress, usable capacity
// and members with md's view of them; a disk the head sees offline is shown offline.
func TestPoolPageShowsArrays(t *testing.T) {
	st := pool.Status{
		Arrays: []pool.ArrayStatus{{
			Name: "pool-2000-0700-0", Window: "20:00-07:00", State: pool.ArraySyncing, Degraded: true,
			SyncAction: "recovery", SyncPercent: 42.5, SyncFinish: "3.1min", RaidDevices: 4, Active: 3, Failed: 1,
			UsableBytes: 500 << 30, Filesystem: "ext4", MountPoint: "/srv/distonet/pool/pool-2000-0700-0", Head: "head1",
			Members: []pool.MemberStatus{
				{Disk: "aoe:e1.0", Node: "pc01", Role: "member", State: "in_sync"},
				{Disk: "aoe:e1.1", Node: "pc02", Role: "member", State: "rebuilding"},
			},
		}},
		Disks:   []pool.DiskStatus{{Node: "pc01", Transport: "aoe", Address: "e1.0", State: pool.StateOffline}},
		Reasons: []string{"aoe:e1.9 (pc09): size unknown: left out until its agent reports it"},
	}
	e := newEnv(t, func(o *Options) { o.Pool = func() (pool.Status, error) { return st, nil } })
	e.setPassword()
	if _, err := e.store.AddNode(registry.Node{Name: "pc01", MAC: "52:54:00:00:00:01", Image: "debian-12", Donate: registry.Donate{Mode: "aoe"}}); err != nil {
		t.Fatal(err)
	}
	e.store.PutDisk(registry.DonatedDisk{Node: "pc01", Device: "/dev/sdb", Transport: "aoe", Address: "e1.0", SizeBytes: 250 << 30, State: "online", LastSeen: time.Now()})
	c, _ := e.login()
	r := e.do(c, "GET", "/pool", nil)
	for _, want := range []string{
		`data-array="pool-2000-0700-0"`, `<span class="badge busy">syncing</span>`, `<span class="badge bad">degraded</span>`,
		"recovery", `value="42.5"`, "3.1min left", "500.0 GiB", "3/4 active", "1 failed",
		`<span class="badge busy">rebuilding</span>`, "/srv/distonet/pool/pool-2000-0700-0", "head1", "size unknown",
		`<td><span class="badge bad">offline</span></td>`,
	} {
		if !strings.Contains(r.body, want) {
			t.Errorf("/pool lacks %s", want)
		}
	}
	if t.Failed() {
		t.Logf("body:\n%s", r.body)
	}
}
