package head

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/distonet/distonet/donate/pool"
)

// Registry is the head's narrow view of the appliance: the plan, the inventory with the
// agents' states, and where to put what it sees. The daemon passes the real registry (or an
// API client on a pool-head node); tests pass a fake.
type Registry interface {
	Layout(ctx context.Context) (pool.Layout, error)
	Members(ctx context.Context) ([]pool.Member, error)
	// Report records an array's status; a status with a UUID the plan lacks is the head
	// saying it created the array: the registry stores the UUID in the plan.
	Report(ctx context.Context, st pool.ArrayStatus) error
}

// ServerConfig tunes the reconcile loop.
type ServerConfig struct {
	Head     *Head
	Registry Registry
	// Interval between reconcile passes (default 10 s).
	Interval time.Duration
	// StopBefore is how long before an overnight window closes its array is stopped, so
	// members leave a clean array (default 10 min).
	StopBefore time.Duration
	// Location is the time zone windows are written in (default time.Local).
	Location *time.Location
	Now      func() time.Time // default time.Now
	// AssembleGrace is how long after a window opens (or the server starts, for always-on
	// arrays) it waits for every member before assembling degraded (default 5 min): donors
	// boot over a few minutes, and each late one would cost a resync.
	AssembleGrace time.Duration
	// KeepOnExit leaves arrays running when Serve returns (default: stop them cleanly).
	KeepOnExit bool
	Name       string // this head's name in reports (default: none)
	Logger     *slog.Logger
}

// Server runs the head: every Interval it brings up the arrays whose class is available,
// stops those whose window is closing, and fails members whose agents withdraw.
type Server struct {
	cfg  ServerConfig
	log  *slog.Logger
	mu   sync.Mutex
	up   map[string]pool.Array // arrays this server brought up
	born time.Time             // first reconcile, the always-on arrays' "opening"
	done chan struct{}
	once sync.Once
}

// NewServer returns a Server; Head and Registry are required.
func NewServer(cfg ServerConfig) (*Server, error) {
	if cfg.Head == nil || cfg.Registry == nil {
		return nil, errors.New("pool head: Head and Registry are required")
	}
	if cfg.Interval <= 0 {
		cfg.Interval = 10 * time.Second
	}
	if cfg.StopBefore <= 0 {
		cfg.StopBefore = 10 * time.Minute
	}
	if cfg.AssembleGrace <= 0 {
		cfg.AssembleGrace = 5 * time.Minute
	}
	if cfg.Location == nil {
		cfg.Location = time.Local
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{cfg: cfg, log: log, up: map[string]pool.Array{}, done: make(chan struct{})}, nil
}

// Serve reconciles until ctx ends or Close is called, then (unless KeepOnExit) stops the
// arrays it brought up.
func (s *Server) Serve(ctx context.Context) error {
	t := time.NewTicker(s.cfg.Interval)
	defer t.Stop()
	for {
		if err := s.Reconcile(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("pool reconcile", "stage", "reconcile", "err", err)
		}
		select {
		case <-ctx.Done():
			return s.shutdown()
		case <-s.done:
			return s.shutdown()
		case <-t.C:
		}
	}
}

// Close makes Serve return.
func (s *Server) Close() error {
	s.once.Do(func() { close(s.done) })
	return nil
}

func (s *Server) shutdown() error {
	if s.cfg.KeepOnExit {
		return nil
	}
	// A fresh, bounded context: the serving one is already cancelled.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s.mu.Lock()
	arrays := make([]pool.Array, 0, len(s.up))
	for _, a := range s.up {
		arrays = append(arrays, a)
	}
	s.mu.Unlock()
	var errs []error
	for _, a := range arrays {
		if err := s.cfg.Head.Stop(ctx, a); err != nil {
			errs = append(errs, err)
			continue
		}
		s.mu.Lock()
		delete(s.up, a.Name)
		s.mu.Unlock()
	}
	return errors.Join(errs...)
}

// Available reports whether an array's class is available at now, and for an overnight
// array how long until it must stop.
func (s *Server) Available(a pool.Array, now time.Time) (bool, time.Duration, error) {
	if a.Window == "" {
		return true, 0, nil
	}
	w, err := pool.ParseWindow(a.Window)
	if err != nil {
		return false, 0, fmt.Errorf("array %s: %w", a.Name, err)
	}
	open, closes := w.Open(now.In(s.cfg.Location))
	if !open {
		return false, 0, nil
	}
	left := closes.Sub(now) - s.cfg.StopBefore
	return left > 0, left, nil
}

// Reconcile runs one pass over the plan.
func (s *Server) Reconcile(ctx context.Context) error {
	l, err := s.cfg.Registry.Layout(ctx)
	if err != nil {
		return fmt.Errorf("pool head: layout: %w", err)
	}
	inv, err := s.cfg.Registry.Members(ctx)
	if err != nil {
		return fmt.Errorf("pool head: inventory: %w", err)
	}
	state := map[string]string{}
	for _, m := range inv {
		state[m.ID()] = m.State
	}
	now := s.cfg.Now()
	s.mu.Lock()
	if s.born.IsZero() {
		s.born = now
	}
	s.mu.Unlock()
	var errs []error
	inPlan := map[string]bool{}
	for _, a := range l.Arrays {
		inPlan[a.Name] = true
		if err := s.reconcileArray(ctx, a, state, now); err != nil {
			errs = append(errs, err)
		}
	}
	// An array this server brought up that the plan dropped is stopped cleanly.
	s.mu.Lock()
	var gone []pool.Array
	for name, a := range s.up {
		if !inPlan[name] {
			gone = append(gone, a)
		}
	}
	s.mu.Unlock()
	for _, a := range gone {
		if err := s.cfg.Head.Stop(ctx, a); err != nil {
			errs = append(errs, err)
			continue
		}
		s.log.Info("pool array dropped from the plan: stopped", "array", a.Name, "stage", "stop")
		s.mu.Lock()
		delete(s.up, a.Name)
		s.mu.Unlock()
	}
	return errors.Join(errs...)
}

func (s *Server) reconcileArray(ctx context.Context, a pool.Array, state map[string]string, now time.Time) error {
	h := s.cfg.Head
	want, _, err := s.Available(a, now)
	if err != nil {
		return err
	}
	s.mu.Lock()
	_, isUp := s.up[a.Name]
	s.mu.Unlock()
	if !want {
		if !isUp {
			if _, running, err := h.detail(ctx, a.Name); err != nil || !running {
				return err
			}
		}
		if err := h.Stop(ctx, a); err != nil {
			s.report(ctx, h.failed(a, err))
			return err
		}
		s.mu.Lock()
		delete(s.up, a.Name)
		s.mu.Unlock()
		st, err := h.Status(ctx, a)
		if err == nil {
			s.report(ctx, st)
		}
		return err
	}
	// Members whose agents are leaving or gone: fail them now rather than on I/O timeouts.
	disks, _, _ := plannedDisks(a)
	for _, d := range disks {
		switch state[d.ID()] {
		case pool.StateOnline:
			continue
		}
		h.mu.Lock()
		_, attached := h.devs[d.ID()]
		h.mu.Unlock()
		if attached {
			if err := h.Withdraw(ctx, a, d); err != nil {
				s.log.Warn("pool member withdraw", "array", a.Name, "node", d.Node, "disk", d.ID(), "stage", "withdraw", "err", err)
			}
		}
	}
	present := func(d pool.Disk) bool { return state[d.ID()] == pool.StateOnline }
	if !isUp {
		if wait, msg := s.graceLeft(a, present, now); wait {
			if _, running, err := h.detail(ctx, a.Name); err != nil || !running {
				if err == nil {
					s.report(ctx, h.waiting(a, msg))
				}
				return err
			}
		}
	}
	st, err := h.Up(ctx, a, present)
	if st.State != pool.ArrayWaiting && st.State != pool.ArrayFailed {
		s.mu.Lock()
		s.up[a.Name] = a
		s.mu.Unlock()
	}
	s.report(ctx, st)
	return err
}

func (s *Server) report(ctx context.Context, st pool.ArrayStatus) {
	st.Head = s.cfg.Name
	st.UpdatedAt = s.cfg.Now()
	if err := s.cfg.Registry.Report(ctx, st); err != nil {
		s.log.Warn("pool status report", "array", st.Name, "stage", "report", "err", err)
	}
}

// graceLeft says whether to hold off assembling a with members missing: within
// AssembleGrace of its window's opening (or of the server's start).
func (s *Server) graceLeft(a pool.Array, present func(pool.Disk) bool, now time.Time) (bool, string) {
	missing := 0
	for _, d := range a.Members {
		if d.Address != "" && !present(d) {
			missing++
		}
	}
	if missing == 0 {
		return false, ""
	}
	s.mu.Lock()
	opened := s.born
	s.mu.Unlock()
	if a.Window != "" {
		if w, err := pool.ParseWindow(a.Window); err == nil {
			if open, closes := w.Open(now.In(s.cfg.Location)); open {
				if o := closes.Add(-w.Duration()); o.After(opened) {
					opened = o
				}
			}
		}
	}
	if left := opened.Add(s.cfg.AssembleGrace).Sub(now); left > 0 {
		return true, fmt.Sprintf("%d member(s) not online yet; waiting up to %v more before assembling degraded", missing, left.Round(time.Second))
	}
	return false, ""
}
