// Command distonet is the DiStoNet appliance: one binary that serves diskless nodes (DHCP,
// TFTP, HTTP boot, NFS root, iSCSI overlay volumes), manages the registry from the command
// line, and — inside a node's initramfs — runs as the node init and the donation agent.
package main

import (
	"errors"
	"fmt"
	"os"
)

// version is set at build time (-ldflags "-X main.version=...").
var version = "dev"

func main() {
	if err := newRootCommand().Execute(); err != nil {
		var exit exitError
		if errors.As(err, &exit) {
			os.Exit(exit.code)
		}
		fmt.Fprintln(os.Stderr, "distonet:", err)
		os.Exit(1)
	}
}

// exitError ends the process with a code after the message was already printed.
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit %d", e.code) }
