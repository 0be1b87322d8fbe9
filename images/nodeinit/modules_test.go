package nodeinit

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestColdplugPlan(t *testing.T) {
	gated := busAliases("testdata/modules")
	names := []string{"crc32c_generic", "virtio_pci", "virtio_net", "virtio_blk", "virtio_rng", "e1000", "r8169", "iscsi_tcp", "aoe"}
	tests := []struct {
		name              string
		pci, virtio       []string
		now, later, want  []string
		skipNow, skipLate []string
	}{
		{
			name:     "QEMU with virtio NIC and RNG",
			pci:      []string{"pci:v00008086d00001237sv00001AF4sd00001100bc06sc00i00", "pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00"},
			virtio:   []string{"virtio:d00000001v00001AF4", "virtio:d00000004v00001AF4"},
			now:      []string{"crc32c_generic", "virtio_pci", "iscsi_tcp", "aoe"},
			later:    []string{"virtio_net", "virtio_blk", "virtio_rng"},
			want:     []string{"virtio_net", "virtio_rng"},
			skipNow:  []string{"e1000", "r8169"},
			skipLate: []string{"virtio_blk"},
		},
		{
			name:    "PC with an Intel NIC",
			pci:     []string{"pci:v00008086d0000100Esv00008086sd0000001Ebc02sc00i00"},
			now:     []string{"crc32c_generic", "e1000", "iscsi_tcp", "aoe"},
			later:   []string{"virtio_net", "virtio_blk", "virtio_rng"},
			skipNow: []string{"virtio_pci", "r8169"},
			// no virtio bus at all: every virtio driver is skipped
			skipLate: []string{"virtio_net", "virtio_blk", "virtio_rng"},
		},
		{
			name: "no sysfs: load everything",
			now:  names,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			now, later, skip := planColdplug(names, gated, tc.pci)
			if diff := cmp.Diff(tc.now, now); diff != "" {
				t.Errorf("now (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.later, later); diff != "" {
				t.Errorf("virtio (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.skipNow, skip); diff != "" {
				t.Errorf("skipped (-want +got):\n%s", diff)
			}
			if len(later) == 0 {
				return
			}
			want, skipLate := planVirtio(later, gated, tc.virtio)
			if diff := cmp.Diff(tc.want, want); diff != "" {
				t.Errorf("virtio load (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.skipLate, skipLate); diff != "" {
				t.Errorf("virtio skipped (-want +got):\n%s", diff)
			}
		})
	}
}

func TestModprobeTargets(t *testing.T) {
	l, err := NewModuleLoader("testdata/modules")
	if err != nil {
		t.Fatal(err)
	}
	// What the kernel's request_module() passes: options, then a name or an alias.
	mods, unknown := l.modprobeTargets([]string{"-q", "--", "crypto-crc32c", "overlay", "virtio-net", "fs-xfs"})
	if diff := cmp.Diff([]string{"crc32c_generic", "overlay", "virtio-net"}, mods); diff != "" {
		t.Errorf("modules (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"fs-xfs"}, unknown); diff != "" {
		t.Errorf("unknown (-want +got):\n%s", diff)
	}
}

func TestSlowest(t *testing.T) {
	l := &ModuleLoader{Took: map[string]time.Duration{"ext4": 1200 * time.Millisecond, "nfs": 300 * time.Millisecond, "sunrpc": 800 * time.Millisecond, "crc16": time.Millisecond}}
	if got, want := l.Slowest(2), "ext4 1.2s, sunrpc 0.8s"; got != want {
		t.Errorf("Slowest(2) = %q, want %q", got, want)
	}
	if got := (&ModuleLoader{}).Slowest(3); got != "" {
		t.Errorf("Slowest of nothing = %q", got)
	}
}
