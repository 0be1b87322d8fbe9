package pool

import (
	"encoding/json"
	"fmt"
	"sort"
	"time"
)

// Array states a head reports.
const (
	ArrayRunning  = "running"  // active, every member in sync
	ArrayDegraded = "degraded" // active with members missing (within parity)
	ArraySyncing  = "syncing"  // active, resync or recovery running (see SyncAction)
	ArrayStopped  = "stopped"  // planned, not assembled (window closed, or head idle)
	ArrayWaiting  = "waiting"  // not enough members present to create or assemble it
	ArrayFailed   = "failed"   // the head could not bring it up; Message says why
)

// ArrayStatus is what a pool head reports about one planned array.
type ArrayStatus struct {
	Name        string  `json:"name"`
	Window      string  `json:"window,omitempty"`
	UUID        string  `json:"uuid,omitempty"`
	Device      string  `json:"device,omitempty"` // /dev/md/<name> on the head
	State       string  `json:"state"`
	Degraded    bool    `json:"degraded"`
	SyncAction  string  `json:"sync_action,omitempty"` // resync | recovery | check | reshape
	SyncPercent float64 `json:"sync_percent,omitempty"`
	SyncSpeed   string  `json:"sync_speed,omitempty"`  // md's estimate, e.g. 1152K/sec
	SyncFinish  string  `json:"sync_finish,omitempty"` // md's estimate, e.g. 0.8min
	RaidDevices int     `json:"raid_devices"`
	Active      int     `json:"active_devices"`
	Spares      int     `json:"spare_devices"`
	Failed      int     `json:"failed_devices"`
	// UsableBytes is the array's capacity (md's array size when it runs, else the plan's).
	UsableBytes int64          `json:"usable_bytes"`
	Filesystem  string         `json:"filesystem,omitempty"` // ext4, or empty when left raw
	MountPoint  string         `json:"mount_point,omitempty"`
	Members     []MemberStatus `json:"members,omitempty"`
	Message     string         `json:"message,omitempty"`
	Head        string         `json:"head,omitempty"` // which machine reported it
	UpdatedAt   time.Time      `json:"updated_at,omitzero"`
}

// MemberStatus is one planned disk of an array as md sees it.
type MemberStatus struct {
	Disk   string `json:"disk"` // Member.ID
	Node   string `json:"node"`
	Device string `json:"device,omitempty"` // /dev/etherd/e1.0 on the head
	Role   string `json:"role"`             // member | spare
	Slot   int    `json:"slot"`             // RAID role for members, -1 for spares
	// State is md's view: in_sync, rebuilding, spare, faulty, missing, detached.
	State string `json:"state"`
}

// DiskStatus is one donated disk in `distonet pool status --json`.
type DiskStatus struct {
	Node      string `json:"node"`
	Group     string `json:"group,omitempty"`
	Transport string `json:"transport"`
	Address   string `json:"address"`
	SizeBytes int64  `json:"size_bytes"`
	State     string `json:"state"` // the inventory's: online, offline, withdrawing, retired
	Window    string `json:"window,omitempty"`
	Array     string `json:"array,omitempty"` // planned array, empty when unused
	Role      string `json:"role,omitempty"`  // member | spare
	MDState   string `json:"md_state,omitempty"`
}

// Status is the whole document: disks, arrays beside them, and the planner's reasons.
type Status struct {
	Disks   []DiskStatus  `json:"disks"`
	Arrays  []ArrayStatus `json:"arrays"`
	Reasons []string      `json:"reasons,omitempty"`
}

// BuildStatus joins the inventory, the plan and the head's last reports. Arrays the head
// has not reported on are listed as stopped with the plan's capacity.
func BuildStatus(inv []Member, l Layout, reports []ArrayStatus, reasons []Reason) Status {
	st := Status{Disks: []DiskStatus{}, Arrays: []ArrayStatus{}}
	byName := map[string]ArrayStatus{}
	for _, r := range reports {
		byName[r.Name] = r
	}
	where := map[string][2]string{} // disk ID -> array, role
	mdState := map[string]string{}
	for _, a := range l.Arrays {
		for _, d := range a.Members {
			if d.Address != "" {
				where[d.ID()] = [2]string{a.Name, "member"}
			}
		}
		for _, d := range a.Spares {
			where[d.ID()] = [2]string{a.Name, "spare"}
		}
		r, ok := byName[a.Name]
		if !ok {
			r = ArrayStatus{Name: a.Name, Window: a.Window, UUID: a.UUID, State: ArrayStopped, RaidDevices: len(a.Members)}
		}
		if r.UsableBytes == 0 {
			r.UsableBytes = a.UsableBytes()
		}
		for _, m := range r.Members {
			mdState[m.Disk] = m.State
		}
		st.Arrays = append(st.Arrays, r)
	}
	for _, m := range inv {
		w := where[m.ID()]
		st.Disks = append(st.Disks, DiskStatus{Node: m.Node, Group: m.Group, Transport: m.Transport, Address: m.Address,
			SizeBytes: m.SizeBytes, State: m.State, Window: m.Window, Array: w[0], Role: w[1], MDState: mdState[m.ID()]})
	}
	sort.SliceStable(st.Disks, func(i, j int) bool {
		if st.Disks[i].Node != st.Disks[j].Node {
			return naturalLess(st.Disks[i].Node, st.Disks[j].Node)
		}
		return naturalLess(st.Disks[i].Address, st.Disks[j].Address)
	})
	for _, r := range reasons {
		st.Reasons = append(st.Reasons, r.String())
	}
	return st
}

// StatusJSON is the output of `distonet pool status --json`: an object whose "disks" lists
// every donated disk (node, transport, address, size_bytes, state, and where the plan put
// it) and whose "arrays" lists the planned arrays with the head's last report.
func StatusJSON(inv []Member, l Layout, reports []ArrayStatus, reasons []Reason) ([]byte, error) {
	return BuildStatus(inv, l, reports, reasons).JSON()
}

// JSON renders a status as `distonet pool status --json` prints it.
func (s Status) JSON() ([]byte, error) {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("pool status: %w", err)
	}
	return append(b, '\n'), nil
}

// Released reports whether the head has let go of a disk, so its agent may stop exporting
// it: no report shows it attached to a running array. The agent's withdrawal waits for this
// (an AoE disk pulled from a running array stalls I/O until the driver's dead timer).
func Released(reports []ArrayStatus, diskID string) bool {
	for _, r := range reports {
		if r.State == ArrayStopped || r.State == ArrayWaiting {
			continue
		}
		for _, m := range r.Members {
			if m.Disk == diskID && m.State != "detached" {
				return false
			}
		}
	}
	return true
}
