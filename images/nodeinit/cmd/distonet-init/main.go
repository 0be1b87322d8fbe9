// Command distonet-init is the node init on its own, for tests and for building an
// initramfs without the full appliance: as PID 1 it boots the node, as modprobe it loads
// modules, as distonet-iscsid it watches the iSCSI session. The appliance's own binary
// does the same through nodeinit.Dispatch and adds the agent.
package main

import (
	"fmt"
	"os"

	"github.com/distonet/distonet/images/nodeinit"
)

func main() {
	if nodeinit.Dispatch() {
		return
	}
	if len(os.Args) > 1 && os.Args[1] == "agent" {
		// This build has no donation agent; the appliance's binary does.
		fmt.Println("distonet-init: agent: not part of this build, nothing to donate")
		return
	}
	fmt.Fprintln(os.Stderr, "usage: distonet-init runs as PID 1 in an initramfs (or as modprobe / distonet-iscsid)")
	os.Exit(2)
}
