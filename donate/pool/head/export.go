package head

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
)

// KernelNFS exports each mounted array with the head's kernel NFS server (nfs-kernel-server:
// nfsd, rpc.mountd, exportfs): one file per array in ExportsDir, then `exportfs -r`, which
// also withdraws what no file lists any more. This is the default export of a pool head that
// runs its own kernel NFS server; an appliance that re-exports md devices itself (as iSCSI
// LUNs) passes its own Exporter and the Filesystem "none".
type KernelNFS struct {
	Runner Runner
	// Clients is who may mount, in exports(5) syntax (e.g. 10.202.0.0/24). Required: an
	// export to the world is never the default.
	Clients string
	// Options are the exports(5) options (default rw,sync,no_subtree_check,no_root_squash:
	// the cluster's nodes run as root on the trusted boot network).
	Options string
	// ExportsDir is read by exportfs (default /etc/exports.d).
	ExportsDir string
}

var exportClients = regexp.MustCompile(`^[A-Za-z0-9.:/*\-]+$`)

func (k *KernelNFS) file(array string) string {
	dir := k.ExportsDir
	if dir == "" {
		dir = "/etc/exports.d"
	}
	return filepath.Join(dir, "distonet-"+array+".exports")
}

// Export implements Exporter.
func (k *KernelNFS) Export(ctx context.Context, array, _, mountpoint string) error {
	if !exportClients.MatchString(k.Clients) {
		return fmt.Errorf("nfs export of %s: clients %q: want a host, network or CIDR", array, k.Clients)
	}
	opts := k.Options
	if opts == "" {
		opts = "rw,sync,no_subtree_check,no_root_squash"
	}
	f := k.file(array)
	if err := os.MkdirAll(filepath.Dir(f), 0o755); err != nil {
		return fmt.Errorf("nfs export of %s: %w", array, err)
	}
	line := fmt.Sprintf("%s %s(%s)\n", mountpoint, k.Clients, opts)
	if err := os.WriteFile(f, []byte(line), 0o644); err != nil {
		return fmt.Errorf("nfs export of %s: %w", array, err)
	}
	if _, err := k.Runner.Run(ctx, "exportfs", "-r"); err != nil {
		return fmt.Errorf("nfs export of %s: %w", array, err)
	}
	return nil
}

// Unexport implements Exporter; it must succeed before the filesystem can be unmounted.
func (k *KernelNFS) Unexport(ctx context.Context, array, _, _ string) error {
	if err := os.Remove(k.file(array)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("nfs unexport of %s: %w", array, err)
	}
	if _, err := k.Runner.Run(ctx, "exportfs", "-r"); err != nil {
		return fmt.Errorf("nfs unexport of %s: %w", array, err)
	}
	return nil
}
