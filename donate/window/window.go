// Package window decides when a node donates: donation windows ("20:00-07:00", crossing
// midnight, in the appliance's time zone), what the appliance does at each edge (Wake-on-LAN
// when a window opens, diskless boot inside it and local-disk boot outside, withdrawal when it
// closes), and the Wake-on-LAN magic packet itself. The clock is injected so all of it is
// testable without waiting; the appliance wires the actions to netboot and the agent.
package window

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Window is a daily time-of-day interval. Start == End means all day.
type Window struct {
	Start, End time.Duration // since local midnight, [0, 24h]
	always     bool
}

// Always is the window of a node that donates whenever it runs (no --window).
var Always = Window{always: true}

// Parse reads "HH:MM-HH:MM" (24-hour clock; "24:00" allowed as an end). "" is Always.
// An end before the start crosses midnight: "20:00-07:00" is the night.
func Parse(s string) (Window, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return Always, nil
	}
	a, b, ok := strings.Cut(s, "-")
	if !ok {
		return Window{}, fmt.Errorf("window %q: want HH:MM-HH:MM", s)
	}
	start, err := parseClock(a, false)
	if err != nil {
		return Window{}, fmt.Errorf("window %q: start: %w", s, err)
	}
	end, err := parseClock(b, true)
	if err != nil {
		return Window{}, fmt.Errorf("window %q: end: %w", s, err)
	}
	if start == end || (start == 0 && end == 24*time.Hour) {
		return Window{Start: start, End: end, always: true}, nil
	}
	return Window{Start: start, End: end}, nil
}

func parseClock(s string, allow24 bool) (time.Duration, error) {
	s = strings.TrimSpace(s)
	hs, ms, ok := strings.Cut(s, ":")
	if !ok || len(hs) < 1 || len(hs) > 2 || len(ms) != 2 {
		return 0, fmt.Errorf("%q is not HH:MM", s)
	}
	h, err1 := strconv.Atoi(hs)
	m, err2 := strconv.Atoi(ms)
	if err1 != nil || err2 != nil || h < 0 || m < 0 || m > 59 || h > 24 || (h == 24 && (m != 0 || !allow24)) {
		return 0, fmt.Errorf("%q is not a time of day", s)
	}
	return time.Duration(h)*time.Hour + time.Duration(m)*time.Minute, nil
}

// String formats the window as Parse reads it ("" for Always).
func (w Window) String() string {
	if w.always && w.Start == 0 && w.End == 0 {
		return ""
	}
	f := func(d time.Duration) string { return fmt.Sprintf("%02d:%02d", int(d.Hours()), int(d.Minutes())%60) }
	return f(w.Start) + "-" + f(w.End)
}

// IsAlways reports whether the window never closes.
func (w Window) IsAlways() bool { return w.always }

// CrossesMidnight reports whether the window ends the day after it starts.
func (w Window) CrossesMidnight() bool { return !w.always && w.End < w.Start }

// at returns the instant of time-of-day d on t's calendar day, in t's location (wall clock,
// so a window keeps its local hours across daylight-saving changes).
func at(t time.Time, d time.Duration) time.Time {
	y, m, day := t.Date()
	return time.Date(y, m, day, int(d/time.Hour), int(d%time.Hour/time.Minute), 0, 0, t.Location())
}

// Contains reports whether t (in its own location) is inside the window: start inclusive,
// end exclusive.
func (w Window) Contains(t time.Time) bool {
	if w.always {
		return true
	}
	s, e := at(t, w.Start), at(t, w.End)
	if w.End > w.Start {
		return !t.Before(s) && t.Before(e)
	}
	return !t.Before(s) || t.Before(e)
}

// NextOpen returns the first opening strictly after t (zero for Always).
func (w Window) NextOpen(t time.Time) time.Time { return w.next(t, w.Start) }

// NextClose returns the first closing strictly after t (zero for Always).
func (w Window) NextClose(t time.Time) time.Time { return w.next(t, w.End) }

func (w Window) next(t time.Time, d time.Duration) time.Time {
	if w.always {
		return time.Time{}
	}
	for i := range 3 {
		c := at(t.AddDate(0, 0, i), d)
		if c.After(t) {
			return c
		}
	}
	return time.Time{}
}

// Boot is what a member's iPXE script boots.
type Boot int

const (
	BootLocal    Boot = iota // the node's own disk (its daytime OS)
	BootDiskless             // the DiStoNet image, which donates the disk
)

func (b Boot) String() string {
	if b == BootDiskless {
		return "diskless"
	}
	return "local"
}

// Decision is what the appliance does for one member at one instant.
type Decision struct {
	Open       bool      // inside the window
	Boot       Boot      // what the boot script serves now
	Wake       bool      // the window opened since the previous decision: send Wake-on-LAN
	Withdraw   bool      // the window closed since the previous decision: withdraw the disk
	NextChange time.Time // when the window next opens or closes (zero for Always)
}

// Decide returns the decision at now given the previous decision instant prev (zero on the
// first call). Edges are detected between prev and now, so a late tick still wakes or
// withdraws once. On the first call inside the window it wakes (the appliance may have
// started mid-window with members asleep).
func (w Window) Decide(prev, now time.Time) Decision {
	d := Decision{Open: w.Contains(now)}
	if d.Open {
		d.Boot = BootDiskless
		d.NextChange = w.NextClose(now)
	} else {
		d.NextChange = w.NextOpen(now)
	}
	if w.always {
		d.Wake = prev.IsZero()
		return d
	}
	if prev.IsZero() {
		d.Wake = d.Open
		return d
	}
	if !now.After(prev) {
		return d
	}
	// Wake only if still open, withdraw only if still closed: a tick that slept through a
	// whole window or a whole gap has nothing left to do.
	if o := w.NextOpen(prev); !o.After(now) {
		d.Wake = d.Open
	}
	if c := w.NextClose(prev); !c.After(now) {
		d.Withdraw = !d.Open
	}
	return d
}

// Tracker remembers the previous decision instant of one member, so callers can ask
// Decide(now) alone; Scheduler does the same for every member.
type Tracker struct {
	Window Window
	prev   time.Time
}

// Decide returns the decision at now and remembers now for the next call.
func (t *Tracker) Decide(now time.Time) Decision {
	d := t.Window.Decide(t.prev, now)
	t.prev = now
	return d
}
