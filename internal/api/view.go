// Package api is the appliance's JSON HTTP API under /api/: nodes, discovered MACs, images,
// the pool, and the routes booting nodes and their agents call. The CLI, the web UI's scripts
// and admins' tools use it. Admin routes accept `Authorization: Bearer <state_dir/admin.token>`
// or a logged-in web session; node routes accept only that node's own token.
package api

import (
	"time"

	"github.com/distonet/distonet/internal/registry"
)

// NodeView is a node as the API and `node list/show --json` print it. Secrets appear only
// in ISCSI and Secrets, filled only on request (root / admin).
type NodeView struct {
	Name       string          `json:"name"`
	MAC        string          `json:"mac"`
	State      string          `json:"state"` // enrolled | booting | ready | discovered
	Group      string          `json:"group,omitempty"`
	Image      string          `json:"image,omitempty"`
	Role       string          `json:"role,omitempty"`
	Donate     registry.Donate `json:"donate"`
	VolumeSize int64           `json:"volume_size,omitempty"`
	IP         string          `json:"ip,omitempty"`
	Created    *time.Time      `json:"created,omitempty"`
	AoE        *AoEView        `json:"aoe,omitempty"`
	ISCSI      *ISCSIView      `json:"iscsi,omitempty"`
	LastBoot   *registry.Boot  `json:"last_boot,omitempty"`

	// Discovered MACs only.
	FirstSeen   *time.Time `json:"first_seen,omitempty"`
	LastSeen    *time.Time `json:"last_seen,omitempty"`
	Arch        string     `json:"arch,omitempty"`
	VendorClass string     `json:"vendor_class,omitempty"`
}

// AoEView is where an AoE donor's disk appears.
type AoEView struct {
	Shelf int `json:"shelf"`
	Slot  int `json:"slot"`
}

// ISCSIView is the node's overlay volume as an initiator reaches it (contract).
type ISCSIView struct {
	Portal     string `json:"portal"`
	Target     string `json:"target"`
	LUN        int    `json:"lun"`
	Initiator  string `json:"initiator"`
	CHAPUser   string `json:"chap_user"`
	CHAPSecret string `json:"chap_secret"`
}

// ViewOf renders an enrolled node. portal is the iSCSI portal (A.B.C.D:3260).
func ViewOf(n registry.Node, tl registry.Timeline, portal string, secrets bool) NodeView {
	created := n.Created
	v := NodeView{
		Name: n.Name, MAC: n.MAC, State: "enrolled", Group: n.Group, Image: n.Image, Role: n.Role,
		Donate: n.Donate, VolumeSize: n.VolumeSize, IP: n.IP, Created: &created,
	}
	if n.Donate.Mode == "aoe" {
		v.AoE = &AoEView{Shelf: n.Shelf, Slot: n.Slot}
	}
	if b, ok := tl.LastBoot(); ok {
		v.LastBoot = &b
		v.State = "booting"
		for _, st := range b.Stages {
			if st.Stage == "ready" && st.OK {
				v.State = "ready"
			}
		}
		if v.IP == "" {
			v.IP = b.IP
		}
	}
	if secrets {
		v.ISCSI = &ISCSIView{
			Portal: portal, Target: n.TargetIQN(), LUN: 0, Initiator: n.InitiatorIQN(),
			CHAPUser: n.Name, CHAPSecret: n.Secrets.CHAPSecret,
		}
	}
	return v
}

// ViewOfDiscovered renders a MAC seen at DHCP but not enrolled.
func ViewOfDiscovered(d registry.Discovered) NodeView {
	first, last := d.FirstSeen, d.LastSeen
	return NodeView{MAC: d.MAC, State: "discovered", FirstSeen: &first, LastSeen: &last, Arch: d.Arch, VendorClass: d.VendorClass}
}

// NodeRequest is the body of POST /api/nodes and PUT /api/nodes/{name}.
type NodeRequest struct {
	Name       string          `json:"name"`
	MAC        string          `json:"mac"`
	Image      string          `json:"image"`
	Group      string          `json:"group,omitempty"`
	Role       string          `json:"role,omitempty"`
	Donate     registry.Donate `json:"donate"`
	VolumeSize int64           `json:"volume_size,omitempty"`
	IP         string          `json:"ip,omitempty"`
}

// Node converts a request into a registry node.
func (r NodeRequest) Node() registry.Node {
	return registry.Node{Name: r.Name, MAC: r.MAC, Image: r.Image, Group: r.Group, Role: r.Role,
		Donate: r.Donate, VolumeSize: r.VolumeSize, IP: r.IP}
}

// Error is the body of every non-2xx answer.
type Error struct {
	Error string `json:"error"`
	Field string `json:"field,omitempty"`
}
