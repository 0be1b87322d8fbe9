package httpboot

import (
	"errors"
	"fmt"
	"net"
	"strings"
)

// Route prefixes the handler serves; mount it on both.
const (
	BootPrefix  = "/boot/"
	FilesPrefix = "/files/"
)

const scriptSuffix = ".ipxe"

// ParseBootPath extracts the MAC from "/boot/<mac>.ipxe". The MAC is EUI-48, written with
// colons or hyphens in any case (iPXE's ${net0/mac} or ${net0/mac:hexhyp}).
func ParseBootPath(p string) (net.HardwareAddr, error) {
	rest, ok := strings.CutPrefix(p, BootPrefix)
	if !ok {
		return nil, fmt.Errorf("path %q is not under %s", p, BootPrefix)
	}
	macText, ok := strings.CutSuffix(rest, scriptSuffix)
	if !ok {
		return nil, fmt.Errorf("path %q does not end in %s", p, scriptSuffix)
	}
	// net.ParseMAC also takes dotted and 8/20-byte forms; a node's NIC is 6 bytes with
	// colons or hyphens, and anything else is more likely a typo than a NIC.
	if len(macText) != 17 {
		return nil, fmt.Errorf("%q is not a MAC address like 52:54:00:12:34:56", macText)
	}
	mac, err := net.ParseMAC(macText)
	if err != nil || len(mac) != 6 {
		return nil, fmt.Errorf("%q is not a MAC address like 52:54:00:12:34:56", macText)
	}
	return mac, nil
}

var errBadFilePath = errors.New("bad file path")

// parseFilePath turns "/files/<rel>" into a path relative to the files root. Absolute
// paths, ".." elements and empty names are refused before the file system is asked;
// symlinks out of the root are refused when opening (os.Root).
func parseFilePath(p string) (string, error) {
	rel, ok := strings.CutPrefix(p, FilesPrefix)
	if !ok {
		return "", fmt.Errorf("path %q is not under %s: %w", p, FilesPrefix, errBadFilePath)
	}
	if rel == "" || strings.HasPrefix(rel, "/") || strings.HasSuffix(rel, "/") {
		return "", fmt.Errorf("%q does not name a file: %w", rel, errBadFilePath)
	}
	for _, elem := range strings.Split(rel, "/") {
		switch elem {
		case "", ".", "..":
			return "", fmt.Errorf("%q has an empty, '.' or '..' element: %w", rel, errBadFilePath)
		}
		if strings.IndexByte(elem, 0) >= 0 {
			return "", fmt.Errorf("%q contains NUL: %w", rel, errBadFilePath)
		}
	}
	return rel, nil
}
