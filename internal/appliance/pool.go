package appliance

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/distonet/distonet/donate/pool"
	"github.com/distonet/distonet/internal/api"
	"github.com/distonet/distonet/internal/registry"
)

// Registry documents the pool keeps.
const (
	docPoolLayout  = "pool/layout"  // pool.Layout: the planned arrays
	docPoolReasons = "pool/reasons" // []pool.Reason: what the planner left out and why
	docPoolReports = "pool/reports" // []pool.ArrayStatus: the head's last reports
)

// StaleAfter is how long an online disk may go without its agent's heartbeat (every 10 s)
// before it counts as offline: the donor was switched off or crashed without withdrawing,
// and the pool head fails the member now rather than stall on the aoe driver's dead timer.
const StaleAfter = 35 * time.Second

// inventory turns the registry's donated disks into the planner's members.
func inventory(st *registry.Store) ([]pool.Member, error) {
	disks, err := st.Disks()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	inv := make([]pool.Member, 0, len(disks))
	for _, d := range disks {
		state := d.State
		switch {
		case state == "withdrawn":
			state = pool.StateOffline // an overnight disk is offline all day, still planned
		case state == pool.StateOnline && !d.LastSeen.IsZero() && now.Sub(d.LastSeen) > StaleAfter:
			state = pool.StateOffline // silent agent: see StaleAfter
		}
		inv = append(inv, pool.Member{Node: d.Node, Group: d.Group, Transport: d.Transport, Address: d.Address,
			SizeBytes: d.SizeBytes, Window: d.Window, State: state, Portal: d.Portal})
	}
	return inv, nil
}

// replan lays the pool out again from the inventory, starting from the stored layout so
// existing arrays keep their members, and stores it when it changed.
func replan(st *registry.Store) error {
	inv, err := inventory(st)
	if err != nil {
		return err
	}
	var prev pool.Layout
	if _, err := st.GetDoc(docPoolLayout, &prev); err != nil {
		return fmt.Errorf("pool layout: %w", err)
	}
	next, reasons := pool.Plan(prev, inv, pool.Options{})
	a, _ := json.Marshal(prev)
	b, _ := json.Marshal(next)
	if !bytes.Equal(a, b) {
		if err := st.PutDoc(docPoolLayout, next); err != nil {
			return err
		}
	}
	var oldReasons []pool.Reason
	_, _ = st.GetDoc(docPoolReasons, &oldReasons)
	ra, _ := json.Marshal(oldReasons)
	rb, _ := json.Marshal(reasons)
	if !bytes.Equal(ra, rb) {
		return st.PutDoc(docPoolReasons, reasons)
	}
	return nil
}

// PoolStatus is the document `distonet pool status --json` prints.
func PoolStatus(st *registry.Store) ([]byte, error) {
	s, err := poolStatus(st)
	if err != nil {
		return nil, err
	}
	return s.JSON()
}

// poolStatus joins the inventory, the plan and the head's last reports.
func poolStatus(st *registry.Store) (pool.Status, error) {
	inv, err := inventory(st)
	if err != nil {
		return pool.Status{}, err
	}
	var (
		layout  pool.Layout
		reports []pool.ArrayStatus
		reasons []pool.Reason
	)
	for key, v := range map[string]any{docPoolLayout: &layout, docPoolReports: &reports, docPoolReasons: &reasons} {
		if _, err := st.GetDoc(key, v); err != nil {
			return pool.Status{}, fmt.Errorf("pool %s: %w", key, err)
		}
	}
	return pool.BuildStatus(inv, layout, reports, reasons), nil
}

// inUse reports whether the head's last reports show a node's disk in a running array.
func inUse(st *registry.Store) func(node, address string) bool {
	return func(node, address string) bool {
		var reports []pool.ArrayStatus
		if _, err := st.GetDoc(docPoolReports, &reports); err != nil {
			return true // unknown: keep the member until the head says otherwise
		}
		disks, _ := st.Disks()
		for _, d := range disks {
			if d.Node == node && d.Address == address {
				return !pool.Released(reports, d.Transport+":"+d.Address)
			}
		}
		return false
	}
}

// poolHooks connect the API's pool routes to the registry.
func poolHooks(st *registry.Store) api.PoolHooks {
	return api.PoolHooks{
		Status: func() ([]byte, error) { return PoolStatus(st) },
		Layout: func() ([]byte, error) {
			var l pool.Layout
			if _, err := st.GetDoc(docPoolLayout, &l); err != nil {
				return nil, err
			}
			return json.Marshal(l)
		},
		Report: func(raw []byte) error {
			var rep pool.ArrayStatus
			if err := json.Unmarshal(raw, &rep); err != nil || rep.Name == "" {
				return fmt.Errorf("pool report: want one array status with a name: %v", err)
			}
			return recordReport(st, rep)
		},
	}
}

// recordReport keeps the head's latest status of each array, and the UUID md gave an array
// the head just created (the plan keeps it from then on).
func recordReport(st *registry.Store, rep pool.ArrayStatus) error {
	var reports []pool.ArrayStatus
	if _, err := st.GetDoc(docPoolReports, &reports); err != nil {
		return err
	}
	replaced := false
	for i := range reports {
		if reports[i].Name == rep.Name {
			reports[i], replaced = rep, true
		}
	}
	if !replaced {
		reports = append(reports, rep)
	}
	if err := st.PutDoc(docPoolReports, reports); err != nil {
		return err
	}
	if rep.UUID == "" {
		return nil
	}
	var l pool.Layout
	if _, err := st.GetDoc(docPoolLayout, &l); err != nil {
		return err
	}
	for i := range l.Arrays {
		if l.Arrays[i].Name == rep.Name && l.Arrays[i].UUID == "" {
			l.Arrays[i].UUID = rep.UUID
			return st.PutDoc(docPoolLayout, l)
		}
	}
	return nil
}

// planLoop re-plans the pool whenever the registry changes.
func (a *Appliance) planLoop(ctx context.Context) {
	changes, stop := a.store.Watch()
	defer stop()
	for {
		if err := replan(a.store); err != nil {
			a.log.Warn("pool plan", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-changes:
		}
	}
}
