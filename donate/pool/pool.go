// Package pool is the appliance-side half of donation: the inventory of donated disks, the
// planner that lays them out as md RAID6 arrays (failure domains, sizes, availability
// classes, hot spares, stable across runs) and the status document `distonet pool status`
// prints. It holds no I/O: the registry stores the inventory and the plan, and the pool head
// (package head) drives mdadm to make the plan real.
package pool

import (
	"fmt"
	"strings"
)

// Transports a donated disk can be reached over.
const (
	TransportAoE   = "aoe"
	TransportISCSI = "iscsi"
)

// States of a donated disk, as the registry records them from its agent's reports.
const (
	StateOnline      = "online"      // exported and heartbeating
	StateOffline     = "offline"     // not exported now (window closed, node down); still planned
	StateWithdrawing = "withdrawing" // its agent is leaving: the head must release it first
	StateRetired     = "retired"     // gone for good (node removed, disk replaced): never planned
)

// Member is one donated disk of the inventory.
type Member struct {
	Node      string `json:"node"`
	Group     string `json:"group,omitempty"` // room or rack: a failure domain; empty = the node alone
	Transport string `json:"transport"`       // aoe | iscsi
	Address   string `json:"address"`         // e<shelf>.<slot> for AoE, the target IQN for iSCSI
	SizeBytes int64  `json:"size_bytes"`
	Window    string `json:"window,omitempty"` // HH:MM-HH:MM when it is donated; empty = always-on
	State     string `json:"state"`
	// Portal is the iSCSI portal (A.B.C.D:3260); empty for AoE.
	Portal string `json:"portal,omitempty"`
}

// ID names a disk across runs: the transport and its address (an AoE shelf.slot or an IQN)
// are unique on the boot network.
func (m Member) ID() string { return m.Transport + ":" + m.Address }

// Disk is a member as the plan keeps it: identity and what the layout depended on, not the
// runtime state (which would make two runs over the same disks differ).
type Disk struct {
	Node      string `json:"node"`
	Group     string `json:"group,omitempty"`
	Transport string `json:"transport"`
	Address   string `json:"address"`
	Portal    string `json:"portal,omitempty"`
	SizeBytes int64  `json:"size_bytes"`
}

// ID is the same identity as Member.ID.
func (d Disk) ID() string { return d.Transport + ":" + d.Address }

func diskOf(m Member) Disk {
	return Disk{Node: m.Node, Group: m.Group, Transport: m.Transport, Address: m.Address, Portal: m.Portal, SizeBytes: m.SizeBytes}
}

// Level is the md RAID level of every planned array: RAID6 survives any two lost members.
const Level = 6

// Array is one planned md RAID6 array.
type Array struct {
	// Name is the md array name (mdadm --name, /dev/md/<Name>): short, stable, unique.
	Name string `json:"name"`
	// Window is the availability class: empty for always-on disks, else the normalised
	// HH:MM-HH:MM window every member shares.
	Window string `json:"window,omitempty"`
	Level  int    `json:"level"`
	// MemberSizeBytes is the smallest member's size when the array was laid out: md uses that
	// much of every member, and a replacement must be at least that large.
	MemberSizeBytes int64 `json:"member_size_bytes"`
	// Members are the active slots in RAID role order. A zero Disk (empty Address) is a slot
	// whose disk left the inventory with nothing to replace it: the array runs degraded.
	Members []Disk `json:"members"`
	// Spares are hot spares: md rebuilds onto one as soon as a member fails.
	Spares []Disk `json:"spares,omitempty"`
	// UUID is md's array UUID, recorded by the head once the array exists; the planner keeps it.
	UUID string `json:"uuid,omitempty"`
}

// UsableBytes is the capacity the array offers: two members' worth goes to parity.
func (a Array) UsableBytes() int64 {
	if len(a.Members) < 2 {
		return 0
	}
	return int64(len(a.Members)-2) * a.MemberSizeBytes
}

// Layout is the plan of every array, stored by the registry as JSON. (It is not called Plan
// because Plan is the function that computes it.)
type Layout struct {
	Arrays []Array `json:"arrays"`
}

// Array returns the planned array called name.
func (p Layout) Array(name string) (Array, bool) {
	for _, a := range p.Arrays {
		if a.Name == name {
			return a, true
		}
	}
	return Array{}, false
}

// Reason says why the planner did, or could not do, something: a disk left out, an array not
// formed, a slot left empty.
type Reason struct {
	Class string `json:"class,omitempty"` // "always-on" or a window
	Array string `json:"array,omitempty"`
	Disk  string `json:"disk,omitempty"` // Member.ID
	Text  string `json:"text"`
}

func (r Reason) String() string {
	var b strings.Builder
	for _, kv := range [][2]string{{"class", r.Class}, {"array", r.Array}, {"disk", r.Disk}} {
		if kv[1] != "" {
			fmt.Fprintf(&b, "%s %s: ", kv[0], kv[1])
		}
	}
	b.WriteString(r.Text)
	return b.String()
}

func className(window string) string {
	if window == "" {
		return "always-on"
	}
	return window
}
