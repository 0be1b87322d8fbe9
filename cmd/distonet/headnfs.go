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

// nodeExportRoot is where a pool-head node mounts its arrays (head.Config.MountRoot's
// default), and the root of its NFSv4 namespace: clients mount <head>:/<array>.
const nodeExportRoot = "/srv/distonet/pool"

// mountdLog is rpc.mountd's log on a pool-head node.
const mountdLog = "/run/distonet/nfs-mountd.log"

// startKernelNFS starts nfsd and mountd on a pool-head node (NFSv4 only, TCP). The node's
// root is an overlayfs mounted without index=on, which nfsd cannot export, so the NFSv4
// pseudo-root cannot be built on it: a small tmpfs at nodeExportRoot is the exported root
// (fsid=0) and each array, mounted below it, is exported on its own. It is idempotent: a
// server already running (an agent restart) is left as it is.
func startKernelNFS(ctx context.Context, log *slog.Logger, clients string) error {
	if raw, err := os.ReadFile("/proc/fs/nfsd/threads"); err == nil && strings.TrimSpace(string(raw)) != "0" {
		return nil
	}
	if err := os.MkdirAll("/etc/exports.d", 0o755); err != nil {
		return fmt.Errorf("start the NFS server: %w", err)
	}
	root := fmt.Sprintf("%s %s(ro,fsid=0,crossmnt,no_subtree_check)\n", nodeExportRoot, clients)
	if err := os.WriteFile("/etc/exports.d/distonet-root.exports", []byte(root), 0o644); err != nil {
		return fmt.Errorf("start the NFS server: %w", err)
	}
	steps := [][]string{
		{"modprobe", "nfsd"},
		{"mkdir", "-p", "/proc/fs/nfsd", "/var/lib/nfs", nodeExportRoot},
		{"mount", "-t", "nfsd", "nfsd", "/proc/fs/nfsd"},
		{"mount", "-t", "tmpfs", "-o", "mode=0755,size=1m", "distonet-pool", nodeExportRoot},
		{"touch", "/etc/exports"},
		// The export table must exist before nfsd answers its first client.
		{"exportfs", "-r"},
		// nfs-utils 2.6 knows no version 2 to turn off; the port is explicit because an image
		// without /etc/services (netbase) cannot resolve "nfs".
		{"rpc.nfsd", "--no-udp", "-p", "2049", "-N", "3", "8"},
	}
	// mountd answers the kernel's export-cache upcalls; it stays in the foreground as the
	// agent's child so its log lands in a file (a node has no syslog).
	startMountd := func() error {
		lf, err := os.OpenFile(mountdLog, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return err
		}
		defer lf.Close()
		cmd := exec.Command("rpc.mountd", "--foreground", "--no-udp", "-N", "2", "-N", "3")
		cmd.Stdout, cmd.Stderr = lf, lf
		if err := cmd.Start(); err != nil {
			return fmt.Errorf("start the NFS server: rpc.mountd: %w", err)
		}
		go cmd.Wait() // reap it if it ever exits; the log says why
		return nil
	}
	for _, s := range steps {
		if s[0] == "rpc.nfsd" {
			if err := startMountd(); err != nil {
				return err
			}
		}
		if s[0] == "mount" && isMountPoint(s[len(s)-1]) {
			continue // mounted already (a restart after a partial start): never stack over arrays
		}
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		out, err := exec.CommandContext(cctx, s[0], s[1:]...).CombinedOutput()
		cancel()
		if err != nil {
			return fmt.Errorf("start the NFS server: %s: %w: %s", strings.Join(s, " "), err, strings.TrimSpace(string(out)))
		}
	}
	log.Info("kernel NFS server running (NFSv4, TCP) for the pool's exports", "mountd_log", mountdLog)
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
	if err := startKernelNFS(ctx, log, clients); err != nil {
		return nil, err
	}
	return nfsExporter(mode, clients)
}

// isMountPoint reports whether dir is a mount point in this mount namespace.
func isMountPoint(dir string) bool {
	raw, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[1] == dir {
			return true
		}
	}
	return false
}
