package registry

import (
	"crypto/rand"
	"encoding/base32"
	"fmt"
	"net"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Node is an enrolled machine.
type Node struct {
	Name       string    `json:"name"`
	MAC        string    `json:"mac"` // canonical lower-case aa:bb:cc:dd:ee:ff
	Group      string    `json:"group,omitempty"`
	Image      string    `json:"image"`
	Role       string    `json:"role,omitempty"` // "" or pool-head
	Donate     Donate    `json:"donate"`
	VolumeSize int64     `json:"volume_size,omitempty"` // bytes; 0 = the group's default
	IP         string    `json:"ip,omitempty"`          // fixed address; empty = from the range
	Created    time.Time `json:"created"`
	// AoE address of the node's donated disk, assigned at enrollment.
	Shelf int `json:"shelf"`
	Slot  int `json:"slot"`

	Secrets Secrets `json:"secrets"`
}

// Donate is a node's donation policy.
type Donate struct {
	Mode   string `json:"mode"`             // none | aoe | iscsi
	Window string `json:"window,omitempty"` // HH:MM-HH:MM, empty = always
	Device string `json:"device,omitempty"` // explicit device or LABEL=...; empty = the spare disk
	Wipe   bool   `json:"wipe,omitempty"`
	// AfterWindow says what a classroom PC does when its window closes: poweroff | reboot.
	AfterWindow string `json:"after_window,omitempty"`
}

// Secrets are issued at enrollment and never logged.
type Secrets struct {
	CHAPSecret string `json:"chap_secret"`
	BootToken  string `json:"boot_token"`
	AgentToken string `json:"agent_token"`
	DonateCHAP string `json:"donate_chap_secret,omitempty"`
}

// Redacted returns the node without its secrets, for listings.
func (n Node) Redacted() Node {
	n.Secrets = Secrets{}
	return n
}

// HardwareAddr is the node's MAC.
func (n Node) HardwareAddr() net.HardwareAddr {
	hw, _ := net.ParseMAC(n.MAC)
	return hw
}

var nameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// ValidateName accepts a node name usable as a hostname label and in an IQN.
func ValidateName(name string) error {
	if !nameRE.MatchString(name) {
		return fmt.Errorf("name %q: want a hostname label: 1-63 lower-case letters, digits and '-', not starting or ending with '-'", name)
	}
	return nil
}

// NormalizeMAC parses a 6-byte MAC in any common notation and returns aa:bb:cc:dd:ee:ff.
func NormalizeMAC(s string) (string, error) {
	hw, err := net.ParseMAC(strings.TrimSpace(s))
	if err != nil || len(hw) != 6 {
		return "", fmt.Errorf("mac %q: want an Ethernet address such as 52:54:00:12:34:56", s)
	}
	if hw[0]&1 == 1 {
		return "", fmt.Errorf("mac %q: a multicast address cannot be a node", s)
	}
	return hw.String(), nil
}

// Window is a daily time window, possibly crossing midnight.
type Window struct {
	Start, End time.Duration // since midnight
}

// ParseWindow reads "HH:MM-HH:MM".
func ParseWindow(s string) (Window, error) {
	a, b, ok := strings.Cut(s, "-")
	if !ok {
		return Window{}, fmt.Errorf("window %q: want HH:MM-HH:MM, e.g. 20:00-07:00", s)
	}
	start, err1 := parseClock(a)
	end, err2 := parseClock(b)
	if err1 != nil || err2 != nil {
		return Window{}, fmt.Errorf("window %q: want HH:MM-HH:MM with hours 00-23 and minutes 00-59", s)
	}
	if start == end {
		return Window{}, fmt.Errorf("window %q: start and end are equal; leave the window empty to donate always", s)
	}
	return Window{start, end}, nil
}

func parseClock(s string) (time.Duration, error) {
	h, m, ok := strings.Cut(strings.TrimSpace(s), ":")
	if !ok || len(h) != 2 || len(m) != 2 {
		return 0, fmt.Errorf("bad clock %q", s)
	}
	hh, err1 := strconv.Atoi(h)
	mm, err2 := strconv.Atoi(m)
	if err1 != nil || err2 != nil || hh < 0 || hh > 23 || mm < 0 || mm > 59 {
		return 0, fmt.Errorf("bad clock %q", s)
	}
	return time.Duration(hh)*time.Hour + time.Duration(mm)*time.Minute, nil
}

// FieldError is a refused value of one node field (name, mac, image, group, donate, window,
// after-window, role, ip, volume_size), so a form can show the reason beside that field.
type FieldError struct {
	Field string
	Err   error
}

func (e *FieldError) Error() string { return e.Err.Error() }
func (e *FieldError) Unwrap() error { return e.Err }

func fieldErr(field string, err error) error { return &FieldError{Field: field, Err: err} }

// Validate checks every field a user can type and fills defaults. Errors are *FieldError.
func (n *Node) Validate() error {
	if err := ValidateName(n.Name); err != nil {
		return fieldErr("name", err)
	}
	mac, err := NormalizeMAC(n.MAC)
	if err != nil {
		return fieldErr("mac", err)
	}
	n.MAC = mac
	if n.Image == "" {
		return fieldErr("image", fmt.Errorf("image: required (see `distonet image list`)"))
	}
	if n.Group != "" {
		if err := ValidateName(n.Group); err != nil {
			return fieldErr("group", fmt.Errorf("group: %w", err))
		}
	}
	switch n.Donate.Mode {
	case "":
		n.Donate.Mode = "none"
	case "none", "aoe", "iscsi":
	default:
		return fieldErr("donate", fmt.Errorf("donate %q: want none, aoe or iscsi", n.Donate.Mode))
	}
	if n.Donate.Window != "" {
		if _, err := ParseWindow(n.Donate.Window); err != nil {
			return fieldErr("window", err)
		}
	}
	switch n.Donate.AfterWindow {
	case "", "poweroff", "reboot":
	default:
		return fieldErr("after-window", fmt.Errorf("after-window %q: want poweroff or reboot", n.Donate.AfterWindow))
	}
	switch n.Role {
	case "", "pool-head":
	default:
		return fieldErr("role", fmt.Errorf("role %q: want pool-head or nothing", n.Role))
	}
	if n.IP != "" && net.ParseIP(n.IP).To4() == nil {
		return fieldErr("ip", fmt.Errorf("ip %q: want an IPv4 address", n.IP))
	}
	if n.VolumeSize < 0 {
		return fieldErr("volume_size", fmt.Errorf("volume size %d: must not be negative", n.VolumeSize))
	}
	return nil
}

// NewSecret returns a random token of n bytes of entropy, base32 without padding, lower case.
func NewSecret(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("crypto/rand: %v", err)) // the kernel's RNG failing leaves nothing safe to do
	}
	return strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b))
}

// Discovered is a MAC seen at DHCP but not enrolled.
type Discovered struct {
	MAC         string    `json:"mac"`
	State       string    `json:"state"` // always "discovered"
	FirstSeen   time.Time `json:"first_seen"`
	LastSeen    time.Time `json:"last_seen"`
	Arch        string    `json:"arch,omitempty"`
	VendorClass string    `json:"vendor_class,omitempty"`
	IPXE        bool      `json:"ipxe,omitempty"`
}

// IQNPrefix names DiStoNet's iSCSI targets and initiators (the project's founding year).
const IQNPrefix = "iqn.2011-06.org.distonet"

// TargetIQN is the iSCSI target of the node's overlay volume.
func (n Node) TargetIQN() string { return IQNPrefix + ":node." + n.Name }

// InitiatorIQN is the initiator name the node logs in with; the target's ACL allows only it.
func (n Node) InitiatorIQN() string { return IQNPrefix + ":initiator." + n.Name }

// DonateIQN is the iSCSI target of the node's donated disk.
func (n Node) DonateIQN() string { return IQNPrefix + ":donate." + n.Name }

// AoEAddress is the node's donated disk as the aoe driver names it.
func (n Node) AoEAddress() string { return fmt.Sprintf("e%d.%d", n.Shelf, n.Slot) }
