package window

import (
	"context"
	"log/slog"
	"net"
	"sync"
	"time"
)

// Clock is the time source; tests pass a fake.
type Clock interface {
	Now() time.Time
	After(d time.Duration) <-chan time.Time
}

// SystemClock is the real clock.
type SystemClock struct{}

func (SystemClock) Now() time.Time                         { return time.Now() }
func (SystemClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// Member is a node that donates inside a window.
type Member struct {
	Node   string
	MAC    net.HardwareAddr
	Window Window
}

// Members is the registry seam: the enrolled nodes that donate.
type Members interface {
	DonationMembers() []Member
}

// Actions are what the appliance does on a decision. Any may be nil.
type Actions struct {
	Wake     func(ctx context.Context, m Member) error // send Wake-on-LAN
	SetBoot  func(m Member, b Boot) error              // switch the node's boot script
	Withdraw func(ctx context.Context, m Member) error // tell the pool to release the member
}

// Scheduler applies Decide to every member on every tick and on every edge.
type Scheduler struct {
	Clock    Clock
	Members  Members
	Actions  Actions
	Location *time.Location // the appliance's time zone; default time.Local
	Tick     time.Duration  // longest sleep between decisions; default 1 minute
	Log      *slog.Logger

	mu   sync.Mutex
	prev map[string]time.Time
	boot map[string]Boot
}

// Step decides for every member at now and runs the actions; it returns the decisions and
// the earliest next change.
func (s *Scheduler) Step(ctx context.Context, now time.Time) (map[string]Decision, time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.prev == nil {
		s.prev, s.boot = map[string]time.Time{}, map[string]Boot{}
	}
	loc := s.Location
	if loc == nil {
		loc = time.Local
	}
	now = now.In(loc)
	log := s.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	out := map[string]Decision{}
	var next time.Time
	for _, m := range s.Members.DonationMembers() {
		d := m.Window.Decide(s.prev[m.Node], now)
		s.prev[m.Node] = now
		out[m.Node] = d
		if !d.NextChange.IsZero() && (next.IsZero() || d.NextChange.Before(next)) {
			next = d.NextChange
		}
		if b, seen := s.boot[m.Node]; (!seen || b != d.Boot) && s.Actions.SetBoot != nil {
			if err := s.Actions.SetBoot(m, d.Boot); err != nil {
				log.Warn("window: set boot failed", "node", m.Node, "mac", m.MAC, "boot", d.Boot, "err", err)
			} else {
				s.boot[m.Node] = d.Boot
			}
		}
		if d.Wake && s.Actions.Wake != nil {
			log.Info("window open: waking node", "node", m.Node, "mac", m.MAC, "window", m.Window.String())
			if err := s.Actions.Wake(ctx, m); err != nil {
				log.Warn("window: wake-on-lan failed", "node", m.Node, "mac", m.MAC, "err", err)
			}
		}
		if d.Withdraw && s.Actions.Withdraw != nil {
			log.Info("window closed: withdrawing node", "node", m.Node, "mac", m.MAC, "window", m.Window.String())
			if err := s.Actions.Withdraw(ctx, m); err != nil {
				log.Warn("window: withdraw failed", "node", m.Node, "mac", m.MAC, "err", err)
			}
		}
	}
	return out, next
}

// Run steps at every edge (and at least every Tick, to pick up registry changes) until ctx ends.
func (s *Scheduler) Run(ctx context.Context) error {
	tick := s.Tick
	if tick <= 0 {
		tick = time.Minute
	}
	for {
		now := s.Clock.Now()
		_, next := s.Step(ctx, now)
		wait := tick
		if !next.IsZero() && next.Sub(now) < wait {
			wait = max(next.Sub(now), 0)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-s.Clock.After(wait):
		}
	}
}
