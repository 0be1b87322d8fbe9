// Package bootconfig is the document a booting node fetches from the appliance with its
// one-time boot token, and the stage events it reports back. It is shared by the daemon
// (which renders it from the registry) and the node init (which acts on it), so it holds
// data only.
package bootconfig

import "time"

// Routes on the appliance's HTTP listener, relative to the server URL given on the kernel
// command line as distonet.server=.
const (
	ConfigPath = "/api/boot/config" // GET, Authorization: Bearer <boot token>
	EventPath  = "/api/boot/event"  // POST an Event, same header
)

// Kernel command-line keys the iPXE node script passes to the node init.
const (
	ArgServer = "distonet.server" // e.g. http://10.202.0.1
	ArgToken  = "distonet.token"  // the node's boot token
	ArgMAC    = "BOOTIF"          // iPXE/pxelinux convention: 01-aa-bb-cc-dd-ee-ff
)

// Config is what a node needs to build its root and start its agent.
type Config struct {
	Node     string `json:"node"`
	Hostname string `json:"hostname"`
	// Role is "pool-head" for the node that assembles the pool; its agent runs the pool head.
	Role    string  `json:"role,omitempty"`
	NFS     NFS     `json:"nfs"`
	ISCSI   ISCSI   `json:"iscsi"`
	Overlay Overlay `json:"overlay"`
	Donate  Donate  `json:"donate"`
	// Pool tunes the pool head on a pool-head node (nil on other nodes).
	Pool *Pool `json:"pool,omitempty"`
	// AgentToken authenticates the donation agent to the appliance for the whole boot
	// (the boot token is single-use).
	AgentToken string `json:"agent_token"`
	Server     string `json:"server"` // base URL of the appliance
}

// NFS names the read-only lower layer.
type NFS struct {
	Server  string `json:"server"`  // IP address of the appliance
	Path    string `json:"path"`    // e.g. /images/demo
	Options string `json:"options"` // kernel mount options, e.g. vers=3,proto=tcp,port=2049,mountport=2049,nolock,ro
}

// ISCSI names the node's persistent volume (LUN 0), the overlay's upper layer.
type ISCSI struct {
	Portal     string `json:"portal"` // A.B.C.D:3260
	Target     string `json:"target"`
	LUN        int    `json:"lun"`
	Initiator  string `json:"initiator"`
	CHAPUser   string `json:"chap_user"`
	CHAPSecret string `json:"chap_secret"`
}

// Overlay holds the overlayfs options (index=off,xino=off,... by default).
type Overlay struct {
	Options string `json:"options"`
}

// Donate is the node's donation policy.
type Donate struct {
	Mode     string `json:"mode"`             // none | aoe | iscsi
	Device   string `json:"device,omitempty"` // explicit device or partition label (LABEL=DISTONET); empty = pick the spare disk
	Wipe     bool   `json:"wipe,omitempty"`
	Window   string `json:"window,omitempty"`    // HH:MM-HH:MM in TimeZone; empty = always
	TimeZone string `json:"time_zone,omitempty"` // IANA name of the appliance's zone (the node's clock may be UTC)
	// AfterWindow is what the node does after withdrawing at the window's close: poweroff,
	// reboot (to its local OS), or nothing.
	AfterWindow string   `json:"after_window,omitempty"`
	Shelf       int      `json:"shelf,omitempty"`
	Slot        int      `json:"slot,omitempty"`
	AllowMACs   []string `json:"allow_macs,omitempty"` // AoE MAC allow-list (the pool head's MACs)
	// iSCSI donation: the target the node exports and who may log in.
	ISCSITarget     string   `json:"iscsi_target,omitempty"`
	ISCSIInitiators []string `json:"iscsi_initiators,omitempty"`
	CHAPUser        string   `json:"chap_user,omitempty"`
	CHAPSecret      string   `json:"chap_secret,omitempty"`
}

// Stages of a boot, in the order a node meets them.
const (
	StageDHCP     = "dhcp"
	StageBootFile = "bootfile"
	StageKernel   = "kernel"
	StageNFS      = "nfs"
	StageISCSI    = "iscsi"
	StageOverlay  = "overlay"
	StageReady    = "ready"
	StageDonated  = "donated"
)

// Event is one step of a boot reported by the node init (or recorded by the appliance itself
// for DHCP and boot-file fetches).
type Event struct {
	Stage   string    `json:"stage"`
	OK      bool      `json:"ok"`
	Message string    `json:"message,omitempty"`
	Time    time.Time `json:"time"`
	// Uptime is the node's seconds since kernel start, so the timeline can be placed
	// even when the node's clock is wrong.
	Uptime float64 `json:"uptime,omitempty"`
}

// Pool is the pool head's timing, set centrally in the appliance's configuration.
type Pool struct {
	StopBeforeSeconds    int    `json:"stop_before_seconds"`    // stop an overnight array this long before its window closes
	AssembleGraceSeconds int    `json:"assemble_grace_seconds"` // wait this long for late members before assembling degraded
	Export               string `json:"export"`                 // nfs (the node's kernel NFS server) or none
}
