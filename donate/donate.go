// Package donate gives a node's spare disk to the pool: Export is the function behind
// `distonet donate export` (check the device, optionally wipe it, serve it over AoE or hand
// it to an iSCSI exporter until the context ends). The pieces live in sub-packages: aoe (wire
// format, target, initiator), disk (candidates and safety checks), window (donation windows
// and Wake-on-LAN) and agent (the loop a booted node runs). The pool inventory record is
// registry.DonatedDisk; the pool planner is donate/pool's.
package donate

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"

	"github.com/distonet/distonet/donate/aoe"
	"github.com/distonet/distonet/donate/disk"
)

// ISCSIExporter serves a checked device as an iSCSI target until ctx ends. The integrator
// implements it over overlay/iscsit (target IQN, CHAP, initiator ACL are its own config).
type ISCSIExporter interface {
	ExportISCSI(ctx context.Context, device string) error
}

// ExportOptions are the flags of `distonet donate export`.
type ExportOptions struct {
	Device    string // file or block device (required)
	Interface string // AoE: network interface
	Shelf     uint16 // AoE: e<Shelf>.<Slot>
	Slot      uint8
	AllowMACs []net.HardwareAddr // AoE: MAC allow-list (empty: everyone, as vblade)
	StateFile string             // AoE: where the mask list, reservations and config string persist
	Unsafe    bool               // AoE: acknowledge writes before they are durable
	// Wipe allows a device that carries a partition table or filesystem: its signatures are
	// erased before export. Mounted or in-use devices are refused regardless.
	Wipe bool
	// ISCSI, when set, exports over iSCSI instead of AoE.
	ISCSI ISCSIExporter
	// System locates /sys, /proc, /dev (tests); zero is the real system.
	System disk.System
	Logger *slog.Logger
}

// ParseAoEAddress reads "SHELF.SLOT" (as on the command line) or "eSHELF.SLOT".
func ParseAoEAddress(s string) (uint16, uint8, error) {
	a, b, ok := strings.Cut(strings.TrimPrefix(s, "e"), ".")
	shelf, err1 := strconv.ParseUint(a, 10, 16)
	slot, err2 := strconv.ParseUint(b, 10, 8)
	if !ok || err1 != nil || err2 != nil {
		return 0, 0, fmt.Errorf("aoe address %q: want SHELF.SLOT (shelf 0-65534, slot 0-254)", s)
	}
	if shelf == uint64(aoe.BroadcastShelf) || slot == uint64(aoe.BroadcastSlot) {
		return 0, 0, fmt.Errorf("aoe address %q: shelf 65535 and slot 255 are broadcast addresses", s)
	}
	return uint16(shelf), uint8(slot), nil
}

// Export checks the device, wipes it when asked and allowed, and serves it until ctx ends.
// It refuses a device with a partition table or filesystem signature unless opts.Wipe, and a
// mounted or in-use device always.
func Export(ctx context.Context, opts ExportOptions) error {
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	if opts.Device == "" {
		return errors.New("donate export: a device is required")
	}
	// The operator names the device on the command line, so it counts as named by policy;
	// any size and removable media are the operator's call, like vblade.
	policy := disk.Policy{Devices: []string{opts.Device}, Wipe: opts.Wipe, MinSize: -1, AllowRemovable: true, System: opts.System}
	if err := disk.CheckDonatable(opts.Device, policy); err != nil {
		return fmt.Errorf("donate export: %w", err)
	}
	if opts.Wipe {
		if err := wipeIfSigned(opts.Device, opts.System, log); err != nil {
			return fmt.Errorf("donate export: %w", err)
		}
	}
	if opts.ISCSI != nil {
		log.Info("exporting over iSCSI", "device", opts.Device, "stage", "donate")
		return opts.ISCSI.ExportISCSI(ctx, opts.Device)
	}
	if opts.Interface == "" {
		return errors.New("donate export: an interface is required for AoE")
	}
	t, err := aoe.NewTarget(aoe.TargetConfig{
		Interface: opts.Interface, Shelf: opts.Shelf, Slot: opts.Slot, Device: opts.Device,
		StateFile: opts.StateFile, Unsafe: opts.Unsafe, AllowMACs: opts.AllowMACs,
	}, log)
	if err != nil {
		return fmt.Errorf("donate export: %w", err)
	}
	serr := t.Serve(ctx)
	cerr := t.Close()
	return errors.Join(serr, cerr)
}

// wipeIfSigned erases signatures only when there are some, so an export of a blank disk
// never writes to it before the pool does.
func wipeIfSigned(device string, sys disk.System, log *slog.Logger) error {
	if err := disk.CheckDonatable(device, disk.Policy{MinSize: -1, AllowRemovable: true, System: sys}); !errors.Is(err, disk.ErrSignature) {
		return nil
	}
	log.Warn("wiping partition table and filesystem signatures", "device", device, "stage", "donate")
	return disk.Wipe(device)
}
