package appliance

import (
	"log/slog"
	"strings"
)

// congestionControlPath holds the host's default TCP congestion control.
const congestionControlPath = "/proc/sys/net/ipv4/tcp_congestion_control"

// tcpHint logs, once at start, a host TCP setting known to cost the boot services CPU:
// BBR paces every flow, in the TCP stack itself unless the interface's qdisc is fq, and a
// 32-node NFS root boot storm took 25-45% more server CPU and 1.35-1.6x the time under
// BBR than under cubic here (bench/nfsroot). The host's choice is left alone; the hint
// says how to change it for the boot network only.
func tcpHint(log *slog.Logger, readFile func(string) ([]byte, error), iface, bootNet, address string) {
	b, err := readFile(congestionControlPath)
	if err != nil {
		return
	}
	if cc := strings.TrimSpace(string(b)); cc == "bbr" {
		route := "<boot network>"
		if bootNet != "" {
			route = bootNet
		}
		dev := "<interface>"
		if iface != "" {
			dev = iface
		}
		src := ""
		if address != "" {
			src = " src " + address // keeps the connected route as the kernel made it
		}
		log.Info("host TCP congestion control is bbr: without the fq qdisc it paces every connection in the TCP stack, "+
			"which made NFS root boot storms take 25-45% more CPU than cubic; for the boot network only: "+
			"ip route replace "+route+" dev "+dev+" proto kernel scope link"+src+" congctl cubic", "stage", "tcp", "congestion_control", cc)
	}
}
