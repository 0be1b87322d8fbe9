package pool

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Window is a daily donation window in the appliance's time zone. Start == End is refused
// (it would mean either never or always); End before Start wraps past midnight.
type Window struct {
	Start, End time.Duration // since midnight
}

// ParseWindow reads HH:MM-HH:MM (H:MM accepted). Windows are a node's --window setting.
func ParseWindow(s string) (Window, error) {
	a, b, ok := strings.Cut(strings.TrimSpace(s), "-")
	if !ok {
		return Window{}, fmt.Errorf("window %q: want HH:MM-HH:MM", s)
	}
	start, err := parseClock(a)
	if err != nil {
		return Window{}, fmt.Errorf("window %q: start: %w", s, err)
	}
	end, err := parseClock(b)
	if err != nil {
		return Window{}, fmt.Errorf("window %q: end: %w", s, err)
	}
	if start == end {
		return Window{}, fmt.Errorf("window %q: start equals end", s)
	}
	return Window{Start: start, End: end}, nil
}

func parseClock(s string) (time.Duration, error) {
	h, m, ok := strings.Cut(strings.TrimSpace(s), ":")
	if !ok || len(m) != 2 || len(h) < 1 || len(h) > 2 {
		return 0, fmt.Errorf("%q is not HH:MM", s)
	}
	hh, err1 := strconv.Atoi(h)
	mm, err2 := strconv.Atoi(m)
	if err1 != nil || err2 != nil || hh < 0 || hh > 23 || mm < 0 || mm > 59 || h[0] == '+' || h[0] == '-' || m[0] == '+' || m[0] == '-' {
		return 0, fmt.Errorf("%q is not HH:MM", s)
	}
	return time.Duration(hh)*time.Hour + time.Duration(mm)*time.Minute, nil
}

// String is the normalised HH:MM-HH:MM form, the availability class the planner groups by.
func (w Window) String() string {
	c := func(d time.Duration) string { return fmt.Sprintf("%02d:%02d", int(d.Hours()), int(d.Minutes())%60) }
	return c(w.Start) + "-" + c(w.End)
}

// Duration is how long the window stays open.
func (w Window) Duration() time.Duration {
	if w.End > w.Start {
		return w.End - w.Start
	}
	return 24*time.Hour - w.Start + w.End
}

// Open reports whether t falls inside the window and, if so, when it closes.
func (w Window) Open(t time.Time) (bool, time.Time) {
	midnight := time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, t.Location())
	// The window that contains t opened either today or, when it wraps, yesterday.
	for _, day := range []time.Time{midnight, midnight.AddDate(0, 0, -1)} {
		open := w.openOn(day)
		end := open.Add(w.Duration())
		if !t.Before(open) && t.Before(end) {
			return true, end
		}
	}
	return false, time.Time{}
}

// NextOpen is the first opening at or after t.
func (w Window) NextOpen(t time.Time) time.Time {
	if ok, _ := w.Open(t); ok {
		return t
	}
	midnight := time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, t.Location())
	for _, day := range []time.Time{midnight, midnight.AddDate(0, 0, 1)} {
		open := w.openOn(day)
		if !open.Before(t) {
			return open
		}
	}
	return t // unreachable: tomorrow's opening is always after t
}

// openOn is the wall-clock opening on day's date (DST shifts the instant, not the clock).
func (w Window) openOn(day time.Time) time.Time {
	return time.Date(day.Year(), day.Month(), day.Day(), int(w.Start.Hours()), int(w.Start.Minutes())%60, 0, 0, day.Location())
}
