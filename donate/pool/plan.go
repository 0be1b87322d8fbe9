package pool

import (
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
)

// Options tune the planner. The zero value gives the documented defaults.
type Options struct {
	// MinMembers is the smallest array formed (default 4, md's RAID6 minimum: two data, two
	// parity). Values below 4 are raised to 4.
	MinMembers int
	// MaxMembers caps an array's width (default 8, the founding bench's array): wider arrays
	// rebuild longer and lose more to a third failure.
	MaxMembers int
	// MaxPerGroup is how many members of one array may share a group (room) (default 2:
	// RAID6 survives losing a whole room).
	MaxPerGroup int
	// Spares is the number of hot spares per array (default 1; negative for none).
	Spares int
	// SizeTolerance is how much smaller than the largest member the smallest may be, as a
	// fraction (default 0.10). md uses the smallest member's size on every member; the rest
	// of a larger disk (at most this fraction) is left unused, because a disk is exported whole
	// and a second-tier array over remainders would put two members on one disk.
	SizeTolerance float64
	// NamePrefix starts every array name (default "pool"): <prefix>-<class>-<n>, where class
	// is "always" or the window as HHMM-HHMM.
	NamePrefix string
}

func (o Options) withDefaults() Options {
	if o.MinMembers < 4 {
		o.MinMembers = 4
	}
	if o.MaxMembers == 0 {
		o.MaxMembers = 8
	}
	if o.MaxMembers < o.MinMembers {
		o.MaxMembers = o.MinMembers
	}
	if o.MaxPerGroup <= 0 {
		o.MaxPerGroup = 2
	}
	if o.Spares == 0 {
		o.Spares = 1
	}
	if o.Spares < 0 {
		o.Spares = 0
	}
	if o.SizeTolerance <= 0 || o.SizeTolerance >= 1 || math.IsNaN(o.SizeTolerance) {
		o.SizeTolerance = 0.10
	}
	if o.NamePrefix == "" {
		o.NamePrefix = "pool"
	}
	return o
}

// Plan lays out md RAID6 arrays over the inventory, starting from the previous layout:
//
//   - every array of prev is kept with its members in their slots; a member that left the
//     inventory (retired, gone, moved to another window, shrunk) leaves its slot, which is
//     filled by one of the array's spares, else by the smallest free disk of the class that is
//     large enough (even a much larger one: redundancy first), else stays empty (the array
//     runs degraded); arrays are never reshaped or widened;
//   - free disks seed new arrays per availability class (always-on, or each window): members
//     within SizeTolerance of each other, at most one per node and MaxPerGroup per group,
//     MinMembers to MaxMembers wide, largest disks first;
//   - what is left becomes hot spares of arrays of its class and size, else stays unused.
//
// The result depends only on prev, the set of members (not their order) and opts, so the same
// inventory gives the same layout, and adding a disk never moves an existing member. Offline
// and withdrawing disks stay planned (an overnight disk is offline all day); only retired
// disks and disks of unknown size are left out. Reasons say what was left out and why.
func Plan(prev Layout, inv []Member, opts Options) (Layout, []Reason) {
	o := opts.withDefaults()
	p := &planner{opts: o, used: map[string]bool{}, names: map[string]bool{}}
	p.admit(inv)
	p.keep(prev)
	p.repair()
	p.seed()
	p.addSpares()
	p.reportUnused()
	if p.out.Arrays == nil {
		p.out.Arrays = []Array{}
	}
	return p.out, p.reasons
}

type planner struct {
	opts     Options
	eligible map[string]Member // by ID, window normalised
	used     map[string]bool   // IDs placed in the output
	names    map[string]bool
	out      Layout
	reasons  []Reason
}

func (p *planner) reason(r Reason) { p.reasons = append(p.reasons, r) }

// admit validates the inventory and keeps the disks that may be planned.
func (p *planner) admit(inv []Member) {
	sorted := append([]Member(nil), inv...)
	// Sort fully so duplicates resolve the same way whatever the input order.
	sort.Slice(sorted, func(i, j int) bool { return memberLess(sorted[i], sorted[j]) })
	p.eligible = map[string]Member{}
	for _, m := range sorted {
		id := m.ID()
		r := Reason{Disk: id}
		switch {
		case m.Transport != TransportAoE && m.Transport != TransportISCSI:
			r.Text = fmt.Sprintf("unknown transport %q: left out", m.Transport)
		case m.Address == "":
			r.Text = "no address: left out"
		case m.Node == "":
			r.Text = "no node: left out (one member per node cannot be checked)"
		case m.State == StateRetired:
			continue // the admin's decision; keep() reports it if it was planned
		case m.SizeBytes <= 0:
			r.Text = "size unknown: left out until its agent reports it"
		}
		if r.Text == "" && m.Window != "" {
			w, err := ParseWindow(m.Window)
			if err != nil {
				r.Text = fmt.Sprintf("%v: left out", err)
			} else {
				m.Window = w.String()
			}
		}
		if r.Text == "" {
			if _, dup := p.eligible[id]; dup {
				r.Text = fmt.Sprintf("listed twice (node %s): the second entry is ignored", m.Node)
			}
		}
		if r.Text != "" {
			p.reason(r)
			continue
		}
		p.eligible[id] = m
	}
}

func memberLess(a, b Member) bool {
	for _, c := range [][2]string{{a.ID(), b.ID()}, {a.Node, b.Node}, {a.Group, b.Group}, {a.Window, b.Window}, {a.State, b.State}, {a.Portal, b.Portal}} {
		if c[0] != c[1] {
			return c[0] < c[1]
		}
	}
	return a.SizeBytes < b.SizeBytes
}

// fits reports why disk id cannot take a place in array a ("" when it can).
func (p *planner) fits(id string, a Array) string {
	m, ok := p.eligible[id]
	switch {
	case !ok:
		return "left the inventory or was retired"
	case p.used[id]:
		return "is already placed in another array"
	case m.Window != a.Window:
		return fmt.Sprintf("moved to availability class %s", className(m.Window))
	case m.SizeBytes < a.MemberSizeBytes:
		return fmt.Sprintf("is now %d bytes, smaller than the array's member size %d", m.SizeBytes, a.MemberSizeBytes)
	}
	return ""
}

// keep copies prev's arrays, emptying the slots whose disks can no longer serve.
func (p *planner) keep(prev Layout) {
	for _, pa := range prev.Arrays {
		if pa.Name == "" || p.names[pa.Name] {
			p.reason(Reason{Array: pa.Name, Text: "duplicate or empty array name in the previous plan: dropped"})
			continue
		}
		a := pa
		a.Members = make([]Disk, len(pa.Members))
		a.Spares = nil
		present := 0
		for i, d := range pa.Members {
			if d.Address == "" {
				continue
			}
			if why := p.fits(d.ID(), a); why != "" {
				p.reason(Reason{Class: className(a.Window), Array: a.Name, Disk: d.ID(), Text: fmt.Sprintf("member in slot %d %s: slot freed", i, why)})
				continue
			}
			a.Members[i] = diskOf(p.eligible[d.ID()])
			p.used[d.ID()] = true
			present++
		}
		if present == 0 {
			p.reason(Reason{Class: className(a.Window), Array: a.Name, Text: "no member left: array dropped"})
			continue
		}
		for _, d := range pa.Spares {
			why := p.fits(d.ID(), a)
			if why == "" {
				why = p.domainConflict(a, p.eligible[d.ID()], false)
			}
			if why != "" {
				p.reason(Reason{Class: className(a.Window), Array: a.Name, Disk: d.ID(), Text: "spare " + why + ": dropped"})
				continue
			}
			a.Spares = append(a.Spares, diskOf(p.eligible[d.ID()]))
			p.used[d.ID()] = true
		}
		p.warnDomains(a)
		p.names[a.Name] = true
		p.out.Arrays = append(p.out.Arrays, a)
	}
}

// domainConflict says why m may not join a's members ("" when it may). withSpares also
// counts the spares, for a disk that becomes a spare.
func (p *planner) domainConflict(a Array, m Member, withSpares bool) string {
	group := 0
	disks := append([]Disk(nil), a.Members...)
	if withSpares {
		disks = append(disks, a.Spares...)
	}
	for _, d := range disks {
		if d.Address == "" || d.ID() == m.ID() {
			continue
		}
		if d.Node == m.Node {
			return fmt.Sprintf("shares node %s with a member", m.Node)
		}
	}
	for _, d := range a.Members {
		if d.Address != "" && d.ID() != m.ID() && m.Group != "" && d.Group == m.Group {
			group++
		}
	}
	if group >= p.opts.MaxPerGroup {
		return fmt.Sprintf("group %s already has %d members", m.Group, group)
	}
	return ""
}

// repair fills the empty slots of kept arrays: the array's own spares first (md has already
// rebuilt onto one when a member failed), then free disks of the class, smallest fit first.
func (p *planner) repair() {
	for ai := range p.out.Arrays {
		a := &p.out.Arrays[ai]
		present := a.present()
		if present == len(a.Members) {
			continue
		}
		if present < len(a.Members)-2 {
			p.reason(Reason{Class: className(a.Window), Array: a.Name, Text: fmt.Sprintf("only %d of %d members left, more than RAID6 can lose: not repaired, its data needs the missing members back", present, len(a.Members))})
			continue
		}
		for i := range a.Members {
			if a.Members[i].Address != "" {
				continue
			}
			if d, ok := p.takeSpare(a); ok {
				a.Members[i] = d
				continue
			}
			if m, ok := p.bestFree(*a, math.MaxInt64, true); ok {
				a.Members[i] = diskOf(m)
				p.used[m.ID()] = true
				continue
			}
			p.reason(Reason{Class: className(a.Window), Array: a.Name, Text: fmt.Sprintf("slot %d empty: no spare or free disk of %d bytes on another node and group; the array runs degraded", i, a.MemberSizeBytes)})
		}
	}
}

func (p *planner) takeSpare(a *Array) (Disk, bool) {
	for si, s := range a.Spares {
		if p.domainConflict(*a, p.eligible[s.ID()], false) == "" {
			a.Spares = append(a.Spares[:si:si], a.Spares[si+1:]...)
			if len(a.Spares) == 0 {
				a.Spares = nil
			}
			return s, true
		}
	}
	return Disk{}, false
}

// free lists the unplaced disks of a class, largest first, then by ID.
func (p *planner) free(window string) []Member {
	var out []Member
	for id, m := range p.eligible {
		if !p.used[id] && m.Window == window {
			out = append(out, m)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].SizeBytes != out[j].SizeBytes {
			return out[i].SizeBytes > out[j].SizeBytes
		}
		return naturalLess(out[i].ID(), out[j].ID())
	})
	return out
}

// naturalLess orders digit runs by value, so e2.0 comes before e10.0.
func naturalLess(a, b string) bool {
	for a != "" && b != "" {
		da, db := digits(a), digits(b)
		if da > 0 && db > 0 {
			na, nb := strings.TrimLeft(a[:da], "0"), strings.TrimLeft(b[:db], "0")
			if len(na) != len(nb) {
				return len(na) < len(nb)
			}
			if na != nb {
				return na < nb
			}
			if da != db {
				return da < db
			}
			a, b = a[da:], b[db:]
			continue
		}
		if a[0] != b[0] {
			return a[0] < b[0]
		}
		a, b = a[1:], b[1:]
	}
	return len(a) < len(b)
}

func digits(s string) int {
	n := 0
	for n < len(s) && s[n] >= '0' && s[n] <= '9' {
		n++
	}
	return n
}

// bestFree picks the smallest free disk of a's class that is at least a's member size, at
// most maxSize, and fits its failure domains.
func (p *planner) bestFree(a Array, maxSize int64, asSpare bool) (Member, bool) {
	cands := p.free(a.Window)
	for i := len(cands) - 1; i >= 0; i-- {
		m := cands[i]
		if m.SizeBytes < a.MemberSizeBytes || m.SizeBytes > maxSize {
			continue
		}
		if p.domainConflict(a, m, asSpare) == "" {
			return m, true
		}
	}
	return Member{}, false
}

func (p *planner) classes() []string {
	set := map[string]bool{}
	for _, m := range p.eligible {
		set[m.Window] = true
	}
	out := make([]string, 0, len(set))
	for w := range set {
		out = append(out, w)
	}
	sort.Strings(out) // "" (always-on) first
	return out
}

// seed forms new arrays from free disks, class by class.
func (p *planner) seed() {
	for _, w := range p.classes() {
		rest := p.free(w)
		for len(rest) > 0 {
			picked := p.pick(rest, p.opts.MaxMembers+p.opts.Spares)
			if len(picked) < p.opts.MinMembers {
				rest = rest[1:]
				continue
			}
			// Hold back this array's spares first: a fifth disk is better as a spare than
			// as a fifth member that makes the array wider but not safer.
			width := min(p.opts.MaxMembers, max(p.opts.MinMembers, len(picked)-p.opts.Spares))
			a := Array{Name: p.newName(w), Window: w, Level: Level, MemberSizeBytes: picked[len(picked)-1].SizeBytes}
			for i, m := range picked {
				if i < width {
					a.Members = append(a.Members, diskOf(m))
				} else {
					a.Spares = append(a.Spares, diskOf(m))
				}
				p.used[m.ID()] = true
			}
			p.out.Arrays = append(p.out.Arrays, a)
			rest = p.free(w)
		}
	}
}

// pick takes, from disks sorted largest first, the largest set led by disks[0] that the
// rules allow: within SizeTolerance of it, one per node, MaxPerGroup per group, at most limit.
// (The rules make a laminar matroid, so this greedy set is as large as any.)
func (p *planner) pick(disks []Member, limit int) []Member {
	if len(disks) == 0 {
		return nil
	}
	floor := p.sizeFloor(disks[0].SizeBytes)
	var picked []Member
	nodes, groups := map[string]bool{}, map[string]int{}
	for _, m := range disks {
		if m.SizeBytes < floor || len(picked) == limit {
			break
		}
		if nodes[m.Node] || (m.Group != "" && groups[m.Group] >= p.opts.MaxPerGroup) {
			continue
		}
		nodes[m.Node] = true
		if m.Group != "" {
			groups[m.Group]++
		}
		picked = append(picked, m)
	}
	return picked
}

// sizeFloor is the smallest size that may share an array with a disk of size largest.
func (p *planner) sizeFloor(largest int64) int64 {
	return int64(math.Ceil(float64(largest) * (1 - p.opts.SizeTolerance)))
}

// sizeCeil is the largest disk that is not wasted as a member or spare of size smallest.
func (p *planner) sizeCeil(smallest int64) int64 {
	c := float64(smallest) / (1 - p.opts.SizeTolerance)
	if c >= math.MaxInt64 {
		return math.MaxInt64
	}
	return int64(math.Floor(c))
}

func (p *planner) newName(window string) string {
	class := "always"
	if window != "" {
		class = strings.ReplaceAll(window, ":", "")
	}
	for n := 0; ; n++ {
		name := p.opts.NamePrefix + "-" + class + "-" + strconv.Itoa(n)
		if !p.names[name] {
			p.names[name] = true
			return name
		}
	}
}

// addSpares hands leftover disks to arrays short of spares, in plan order, best fit first.
// A spare is not much larger than the members (SizeTolerance): a big disk left free may
// still seed an array of its own size, while a spare stays a spare.
func (p *planner) addSpares() {
	for ai := range p.out.Arrays {
		a := &p.out.Arrays[ai]
		if a.present() < len(a.Members)-2 {
			continue // beyond repair: a spare would never be used
		}
		for len(a.Spares) < p.opts.Spares {
			m, ok := p.bestFree(*a, p.sizeCeil(a.MemberSizeBytes), true)
			if !ok {
				break
			}
			a.Spares = append(a.Spares, diskOf(m))
			p.used[m.ID()] = true
		}
	}
}

// reportUnused explains every eligible disk left out, once per class.
func (p *planner) reportUnused() {
	for _, w := range p.classes() {
		rest := p.free(w)
		if len(rest) == 0 {
			continue
		}
		nodes, groups := map[string]bool{}, map[string]bool{}
		ids := make([]string, len(rest))
		for i, m := range rest {
			ids[i] = m.ID()
			nodes[m.Node] = true
			if m.Group != "" {
				groups[m.Group] = true
			}
		}
		sort.Slice(ids, func(i, j int) bool { return naturalLess(ids[i], ids[j]) })
		hasArray := false
		for _, a := range p.out.Arrays {
			hasArray = hasArray || a.Window == w
		}
		what := "no array formed"
		if hasArray {
			what = "not placed (every array of the class has its spares or none fits)"
		}
		best := 0
		for i := range rest {
			best = max(best, len(p.pick(rest[i:], len(rest))))
		}
		p.reason(Reason{Class: className(w), Text: fmt.Sprintf(
			"%s: %d free disk(s) on %d node(s) [%s], at most %d of them fit together; an array needs at least %d disks within %.0f%% of each other's size, on distinct nodes, at most %d per group",
			what, len(rest), len(nodes), strings.Join(ids, " "), best, p.opts.MinMembers, p.opts.SizeTolerance*100, p.opts.MaxPerGroup)})
	}
}

func (a Array) present() int {
	n := 0
	for _, d := range a.Members {
		if d.Address != "" {
			n++
		}
	}
	return n
}

// warnDomains reports a kept array whose members now break a failure-domain rule (a node
// moved rooms, two disks now name the same node): the planner never moves members to fix
// it, the admin decides.
func (p *planner) warnDomains(a Array) {
	nodes, groups := map[string]int{}, map[string]int{}
	for _, d := range a.Members {
		if d.Address == "" {
			continue
		}
		nodes[d.Node]++
		if d.Group != "" {
			groups[d.Group]++
		}
	}
	for _, n := range sortedKeys(nodes) {
		if nodes[n] > 1 {
			p.reason(Reason{Class: className(a.Window), Array: a.Name, Text: fmt.Sprintf("node %s now holds %d members: losing it costs that many (members are never moved; retire one to have it replaced)", n, nodes[n])})
		}
	}
	for _, g := range sortedKeys(groups) {
		if groups[g] > p.opts.MaxPerGroup {
			p.reason(Reason{Class: className(a.Window), Array: a.Name, Text: fmt.Sprintf("group %s now holds %d members, more than %d (members are never moved; retire one to have it replaced)", g, groups[g], p.opts.MaxPerGroup)})
		}
	}
}

func sortedKeys(m map[string]int) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
