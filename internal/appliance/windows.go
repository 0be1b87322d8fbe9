package appliance

import (
	"context"
	"net"
	"time"

	"github.com/distonet/distonet/donate/window"
	"github.com/distonet/distonet/internal/registry"
)

// insideWindow is the default Window: a node boots diskless when it has no donation window
// or is inside it; outside, its iPXE script boots the local disk (its daytime OS).
func insideWindow(loc *time.Location) Window {
	return func(n registry.Node, now time.Time) bool {
		if n.Donate.Window == "" || n.Donate.Mode == "none" {
			return true
		}
		w, err := window.Parse(n.Donate.Window)
		if err != nil {
			return true // the registry validated it; never strand a node on a parse error
		}
		return w.Contains(now.In(loc))
	}
}

// windowMembers lists the nodes that donate inside a window.
type windowMembers struct{ store *registry.Store }

func (m windowMembers) DonationMembers() []window.Member {
	nodes, err := m.store.Nodes()
	if err != nil {
		return nil
	}
	var out []window.Member
	for _, n := range nodes {
		if n.Donate.Mode == "none" || n.Donate.Window == "" {
			continue
		}
		w, err := window.Parse(n.Donate.Window)
		if err != nil {
			continue
		}
		out = append(out, window.Member{Node: n.Name, MAC: n.HardwareAddr(), Window: w})
	}
	return out
}

// clock adapts Options.Now to the scheduler's clock.
type clock struct{ now func() time.Time }

func (c clock) Now() time.Time                         { return c.now() }
func (c clock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// newScheduler wakes window members when their window opens and marks their donations as
// withdrawing when it closes (the agents withdraw on their own clock and the pool head
// releases the members).
func (a *Appliance) newScheduler(now func() time.Time) *window.Scheduler {
	loc, _ := a.cfg.Location()
	s := &window.Scheduler{Clock: clock{now}, Members: windowMembers{a.store}, Location: loc, Log: a.log.With("svc", "window")}
	if a.cfg.Donate.WakeOnLAN && a.cfg.DHCP.Mode != "off" {
		bcast := broadcast(a.cfg.Subnet())
		s.Actions.Wake = func(ctx context.Context, m window.Member) error {
			return window.Wake(ctx, m.MAC, &net.UDPAddr{IP: bcast, Port: 9}, a.cfg.Interface)
		}
	}
	s.Actions.Withdraw = func(ctx context.Context, m window.Member) error {
		return a.store.UpdateDisks(m.Node, func(d *registry.DonatedDisk) {
			if d.State == "online" {
				d.State = "withdrawing"
			}
		})
	}
	return s
}

func broadcast(n *net.IPNet) net.IP {
	ip := n.IP.To4()
	out := make(net.IP, 4)
	for i := range out {
		out[i] = ip[i] | ^n.Mask[i]
	}
	return out
}
