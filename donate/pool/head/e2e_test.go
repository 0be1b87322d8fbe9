package head

// The real-md tests: md has no module on the host, so a QEMU guest (Debian's kernel, TCG) runs
// this package's own test binary as the pool head (package poolvm), against donors on a bridge
// inside a test namespace. They run with DISTONET_E2E=1 (make e2e), about 3 minutes each:
//   - TestE2EPoolHeadOverAoE: four vblade donors, an overnight array through the Server:
//     create + ext4 + NFS export read back by the host, a donor killed, its return, the window
//     closing and reopening (e2e_guest_test.go);
//   - TestE2EPoolHeadOverISCSI: four tgt donors with CHAP, the guest's kernel initiator
//     (e2e_iscsi_test.go);
//   - TestE2EPoolHeadRetireReplace: five donors, hot spare takeover and a retired member
//     hot-replaced (e2e_retire_test.go);
//   - TestE2EPoolHeadDirtyDegraded: four boots over five donors' disks: power cuts mid-write
//     with one and with two donors gone, the refused starts and the documented recovery, and
//     a cut while idle that needs none (e2e_dirty_test.go).

import (
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/distonet/distonet/donate/pool/poolvm"
	"github.com/distonet/distonet/internal/lab"
)

// guestEnv makes the test binary run the guest scenario instead of tests.
const guestEnv = "DISTONET_POOL_GUEST"

func TestMain(m *testing.M) {
	if os.Getenv(guestEnv) != "" {
		os.Exit(guestMain())
	}
	if os.Geteuid() == 0 {
		_ = lab.Sweep()
	}
	os.Exit(m.Run())
}

func TestE2EPoolHeadOverAoE(t *testing.T) {
	if os.Getenv("DISTONET_E2E") == "" {
		t.Skip("real md runs in a QEMU guest: set DISTONET_E2E=1 (make e2e)")
	}
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	netconfig, err := os.ReadFile("/etc/netconfig") // libtirpc's, for rpcbind in the guest
	if err != nil {
		t.Fatal(err)
	}
	services, err := os.ReadFile("/etc/services")
	if err != nil {
		t.Fatal(err)
	}
	// The guest exports the array's filesystem with its kernel NFS server; the host reads the
	// test file back over NFS with libnfs's nfs-cat from inside the namespace.
	var nfsPath, nfsSum string
	cfg := poolvm.Config{Package: wd, GuestEnv: guestEnv, Donors: 4,
		BridgeAddr: "10.78.0.1/24", GuestAddr: "10.78.0.2/24",
		Debs:         []string{"nfs-kernel-server", "nfs-common", "rpcbind", "libtirpc3", "libevent-core-2.1-7", "libwrap0", "libnfsidmap1"},
		DebBinaries:  []string{"/usr/sbin/exportfs", "/usr/sbin/rpc.mountd", "/usr/sbin/rpc.nfsd", "/sbin/rpcbind"},
		ExtraModules: []string{"nfsd"},
		Files: map[string]string{
			"/etc/passwd":    "root:x:0:0:root:/root:/bin/sh\n_rpc:x:100:65534::/run/rpcbind:/bin/false\n",
			"/etc/group":     "root:x:0:\nnogroup:x:65534:\n",
			"/etc/netconfig": string(netconfig),
			"/etc/exports":   "",
			"/etc/services":  string(services),
		},
		OnLine: func(line string) {
			if f := strings.Fields(line); len(f) == 4 && f[0] == "CHECK" && f[1] == "nfs" {
				nfsPath, nfsSum = f[2], f[3]
			}
		},
		OnNeed: func(ns *lab.Netns, verb string, _ int) error {
			if verb != "nfsread" || nfsPath == "" {
				return fmt.Errorf("unknown request %s", verb)
			}
			c := ns.Command(context.Background(), "nfs-cat", "nfs://10.78.0.2"+nfsPath)
			out, err := c.Output()
			if err != nil {
				return fmt.Errorf("nfs-cat %s: %w", nfsPath, err)
			}
			if got := fmt.Sprintf("%x", sha256.Sum256(out)); got != nfsSum {
				return fmt.Errorf("nfs-cat %s: %d bytes, sha256 %s, want %s", nfsPath, len(out), got, nfsSum)
			}
			t.Logf("host: read %d bytes of %s over NFS, checksum matches", len(out), nfsPath)
			return nil
		},
	}
	lab.Require(t, "nfs-cat")
	if got := poolvm.Run(t, cfg); got != "ok" {
		t.Errorf("guest scenario: %s", got)
	}
}
