package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/distonet/distonet/donate/pool/head"
	"github.com/distonet/distonet/images/nodeinit"
)

// The pool head exports each array's filesystem to the cluster over NFS with the kernel's own
// server (nfsd): a read-write, many-client file service that our read-only NFS root server is
// not meant to be. On the appliance host the admin runs nfs-kernel-server as usual; on a
// booted pool-head node nothing starts it, so the agent does (NFSv4 only: no rpcbind, statd
// or lockd to run, and every client kernel of the last decade speaks it).

// exportMode values for `--export` and what a pool-head node does.
const (
	exportNFS  = "nfs"
	exportNone = "none"
)

// nfsExporter returns the head's Exporter for mode: the kernel NFS server for the clients
// (a CIDR), or nil for none.
func nfsExporter(mode, clients string) (head.Exporter, error) {
	switch mode {
	case exportNone:
		return nil, nil
	case exportNFS, "":
		if clients == "" {
			return nil, errors.New("nfs export: no client network to export to")
		}
		return &head.KernelNFS{Runner: head.ExecRunner{}, Clients: clients}, nil
	}
	return nil, fmt.Errorf("--export %q: want nfs or none", mode)
}

// leaseNetwork is the boot network the node init got its lease on, as a CIDR: who may mount
// the pool's exports from a pool-head node.
func leaseNetwork(file string) (string, error) {
	raw, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("the node's DHCP lease: %w", err)
	}
	var l nodeinit.Lease
	if err := json.Unmarshal(raw, &l); err != nil {
		return "", fmt.Errorf("the node's DHCP lease %s: %w", file, err)
	}
	if l.IP.To4() == nil || len(l.Mask) == 0 {
		return "", fmt.Errorf("the node's DHCP lease %s has no address and mask", file)
	}
	n := net.IPNet{IP: l.IP.Mask(l.Mask), Mask: l.Mask}
	return n.String(), nil
}

// startKernelNFS starts nfsd and mountd on a pool-head node (NFSv4 only, TCP). It is
// idempotent: a server already running (an agent restart) is left as it is.
func startKernelNFS(ctx context.Context, log *slog.Logger) error {
	if raw, err := os.ReadFile("/proc/fs/nfsd/threads"); err == nil && strings.TrimSpace(string(raw)) != "0" {
		return nil
	}
	steps := [][]string{
		{"modprobe", "nfsd"},
		{"mkdir", "-p", "/proc/fs/nfsd", "/var/lib/nfs", "/etc/exports.d"},
		{"mount", "-t", "nfsd", "nfsd", "/proc/fs/nfsd"},
		{"touch", "/etc/exports"},
		// The export table must exist before nfsd answers its first client.
		{"exportfs", "-r"},
		{"rpc.mountd", "--no-udp", "-N", "2", "-N", "3"},
		{"rpc.nfsd", "--no-udp", "-N", "2", "-N", "3", "8"},
	}
	for _, s := range steps {
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		out, err := exec.CommandContext(cctx, s[0], s[1:]...).CombinedOutput()
		cancel()
		if err != nil {
			if s[0] == "mount" && strings.Contains(string(out), "busy") {
				continue // mounted already
			}
			return fmt.Errorf("start the NFS server: %s: %w: %s", strings.Join(s, " "), err, strings.TrimSpace(string(out)))
		}
	}
	log.Info("kernel NFS server running (NFSv4, TCP) for the pool's exports")
	return nil
}

// nodeExporter is a pool-head node's Exporter for mode: for nfs, it starts the kernel NFS
// server and exports to the network the node booted on.
func nodeExporter(ctx context.Context, mode string, log *slog.Logger) (head.Exporter, error) {
	if mode == exportNone {
		return nil, nil
	}
	clients, err := leaseNetwork(nodeinit.LeaseFile)
	if err != nil {
		return nil, err
	}
	if err := startKernelNFS(ctx, log); err != nil {
		return nil, err
	}
	return nfsExporter(mode, clients)
}
