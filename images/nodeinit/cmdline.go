package nodeinit

import (
	"fmt"
	"net"
	"strings"

	"github.com/distonet/distonet/internal/bootconfig"
)

// Cmdline is what the node init takes from the kernel command line.
type Cmdline struct {
	Server string           // distonet.server=, e.g. http://10.202.0.1
	Token  string           // distonet.token=
	MAC    net.HardwareAddr // BOOTIF=01-aa-bb-cc-dd-ee-ff (nil: first NIC with a link)
	Rescue bool             // distonet.rescue: stop in a shell before switch_root
	Debug  bool             // distonet.debug: print the boot config (without secrets)
}

// ParseCmdline reads /proc/cmdline's text. Unknown words are the kernel's or the image's.
func ParseCmdline(s string) (Cmdline, error) {
	var c Cmdline
	for _, w := range strings.Fields(s) {
		k, v, _ := strings.Cut(w, "=")
		switch k {
		case bootconfig.ArgServer:
			c.Server = strings.TrimRight(v, "/")
		case bootconfig.ArgToken:
			c.Token = v
		case bootconfig.ArgMAC:
			mac, err := ParseBOOTIF(v)
			if err != nil {
				return c, err
			}
			c.MAC = mac
		case "distonet.rescue":
			c.Rescue = true
		case "distonet.debug":
			c.Debug = true
		}
	}
	if c.Server == "" {
		return c, fmt.Errorf("kernel command line has no %s=", bootconfig.ArgServer)
	}
	if !strings.HasPrefix(c.Server, "http://") && !strings.HasPrefix(c.Server, "https://") {
		return c, fmt.Errorf("%s=%q: want an http:// URL", bootconfig.ArgServer, c.Server)
	}
	if c.Token == "" {
		return c, fmt.Errorf("kernel command line has no %s=", bootconfig.ArgToken)
	}
	return c, nil
}

// ParseBOOTIF reads pxelinux/iPXE's BOOTIF value: the ARP hardware type (01 for Ethernet)
// and the MAC, dash-separated; a bare MAC with colons or dashes is accepted too.
func ParseBOOTIF(v string) (net.HardwareAddr, error) {
	parts := strings.FieldsFunc(v, func(r rune) bool { return r == '-' || r == ':' })
	if len(parts) == 7 {
		if parts[0] != "01" {
			return nil, fmt.Errorf("BOOTIF=%s: hardware type %s is not Ethernet (01)", v, parts[0])
		}
		parts = parts[1:]
	}
	if len(parts) != 6 {
		return nil, fmt.Errorf("BOOTIF=%s: want 01-aa-bb-cc-dd-ee-ff", v)
	}
	mac, err := net.ParseMAC(strings.Join(parts, ":"))
	if err != nil {
		return nil, fmt.Errorf("BOOTIF=%s: %w", v, err)
	}
	return mac, nil
}
