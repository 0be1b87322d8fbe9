package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"

	"github.com/distonet/distonet/donate/aoe"
)

// AoEExporter exports over AoE with donate/aoe's durable target.
type AoEExporter struct {
	Interface string // the boot network interface
	StateDir  string // where the target keeps its mask list and reservations (aoe-<shelf>.<slot>.json)
	Unsafe    bool   // acknowledge writes before they are durable (not the default)
	Logger    *slog.Logger
}

// Start opens the target (its raw socket binds in the calling thread's network namespace)
// and serves it in the background.
func (x AoEExporter) Start(device string, p Policy) (Running, error) {
	if p.Shelf < 0 || p.Shelf >= int(aoe.BroadcastShelf) || p.Slot < 0 || p.Slot >= int(aoe.BroadcastSlot) {
		return nil, fmt.Errorf("aoe address e%d.%d out of range", p.Shelf, p.Slot)
	}
	var macs []net.HardwareAddr
	for _, m := range p.AllowMACs {
		hw, err := net.ParseMAC(m)
		if err != nil {
			return nil, fmt.Errorf("allow mac %q: %w", m, err)
		}
		macs = append(macs, hw)
	}
	cfg := aoe.TargetConfig{
		Interface: x.Interface, Shelf: uint16(p.Shelf), Slot: uint8(p.Slot), Device: device,
		Unsafe: x.Unsafe, AllowMACs: macs,
	}
	if x.StateDir != "" {
		cfg.StateFile = filepath.Join(x.StateDir, fmt.Sprintf("aoe-%d.%d.json", p.Shelf, p.Slot))
	}
	log := x.Logger
	if log == nil {
		log = slog.Default()
	}
	t, err := aoe.NewTarget(cfg, log)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- t.Serve(ctx) }()
	return &aoeRunning{t: t, cancel: cancel, done: done, device: device, shelf: p.Shelf, slot: p.Slot}, nil
}

type aoeRunning struct {
	t           *aoe.Target
	cancel      context.CancelFunc
	done        chan error
	device      string
	shelf, slot int
}

func (r *aoeRunning) Export() Export {
	return Export{
		Device: r.device, Transport: "aoe", Address: fmt.Sprintf("e%d.%d", r.shelf, r.slot),
		SizeBytes: int64(r.t.Sectors()) * aoe.SectorSize, MAC: r.t.HardwareAddr().String(),
	}
}

func (r *aoeRunning) Stop() error {
	r.cancel()
	serr := <-r.done
	return errors.Join(serr, r.t.Close())
}
