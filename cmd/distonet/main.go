// Command distonet is the DiStoNet appliance: one binary that serves diskless nodes (DHCP,
// TFTP, HTTP boot, NFS root, iSCSI overlay volumes), manages the registry from the command
// line, and — inside a node's initramfs — runs as the node init and the donation agent.
package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/distonet/distonet/images/nodeinit"
)

// version is set at build time (-ldflags "-X main.version=...").
var version = "dev"

func main() {
	// Inside a node's initramfs the same binary is PID 1 (the node init), modprobe for the
	// kernel, and the iSCSI relogin watcher; Dispatch does not return in those roles.
	if nodeinit.Dispatch() {
		return
	}
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
