package head

import (
	"bufio"
	"bytes"
	"fmt"
	"strconv"
	"strings"
)

// Mdstat is /proc/mdstat: the kernel's one-page view of every md array.
type Mdstat struct {
	Personalities []string // raid6, raid5, ...
	Arrays        []MdstatArray
}

// MdstatArray is one mdN stanza.
type MdstatArray struct {
	Device   string // md127
	Active   bool   // "active"; false for "inactive" (assembled but not started)
	ReadOnly string // "", "read-only" or "auto-read-only"
	Level    string // raid6; empty when inactive
	Members  []MdstatMember
	Blocks   int64 // 1 KiB blocks of the array (of the members' sum when inactive)
	// RaidDisks and InSync come from [n/m]; Status from [UU_U] ('_' = missing or failed).
	RaidDisks, InSync int
	Status            string
	// Action is the running sync: resync, recovery, check, repair or reshape; Progress its
	// percentage. Delayed/Pending: the action waits for another array or for a write.
	Action   string
	Progress float64
	Delayed  bool
	Pending  bool
	Finish   string // e.g. 0.8min
	Speed    string // e.g. 1152K/sec
	Bitmap   string // e.g. "1/1 pages [4KB], 65536KB chunk"
}

// MdstatMember is one "vdb[1](F)" entry.
type MdstatMember struct {
	Name        string // kernel name: vdb, etherd!e1.0 shows as etherd/e1.0
	Slot        int    // the number in brackets (md's descriptor number, not the RAID role)
	Faulty      bool   // (F)
	Spare       bool   // (S)
	WriteMostly bool   // (W)
	Replacement bool   // (R)
	Journal     bool   // (J)
}

// Degraded reports whether members are missing from the RAID set.
func (a MdstatArray) Degraded() bool { return a.Active && a.RaidDisks > 0 && a.InSync < a.RaidDisks }

// ParseMdstat reads /proc/mdstat. It is strict about the lines it knows and ignores lines it
// does not, so a newer kernel's extra lines do not break the head.
func ParseMdstat(b []byte) (Mdstat, error) {
	var st Mdstat
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	var cur *MdstatArray
	line := 0
	for sc.Scan() {
		line++
		text := sc.Text()
		trimmed := strings.TrimSpace(text)
		switch {
		case trimmed == "":
			cur = nil
		case strings.HasPrefix(text, "Personalities :"):
			for _, f := range strings.Fields(strings.TrimPrefix(text, "Personalities :")) {
				st.Personalities = append(st.Personalities, strings.Trim(f, "[]"))
			}
		case strings.HasPrefix(text, "unused devices:"), strings.HasPrefix(text, "read_ahead"):
			cur = nil
		case strings.HasPrefix(text, "md") && strings.Contains(text, " : "):
			a, err := parseMdstatHead(text)
			if err != nil {
				return Mdstat{}, fmt.Errorf("mdstat line %d: %w", line, err)
			}
			st.Arrays = append(st.Arrays, a)
			cur = &st.Arrays[len(st.Arrays)-1]
		case cur != nil && (text[0] == ' ' || text[0] == '\t'):
			if err := parseMdstatDetail(cur, trimmed); err != nil {
				return Mdstat{}, fmt.Errorf("mdstat line %d (%s): %w", line, cur.Device, err)
			}
		}
	}
	if err := sc.Err(); err != nil {
		return Mdstat{}, fmt.Errorf("mdstat: %w", err)
	}
	return st, nil
}

// Array returns the stanza for device (md127).
func (s Mdstat) Array(device string) (MdstatArray, bool) {
	for _, a := range s.Arrays {
		if a.Device == device {
			return a, true
		}
	}
	return MdstatArray{}, false
}

func parseMdstatHead(text string) (MdstatArray, error) {
	dev, rest, _ := strings.Cut(text, " : ")
	a := MdstatArray{Device: strings.TrimSpace(dev)}
	f := strings.Fields(rest)
	if len(f) == 0 {
		return a, fmt.Errorf("%s: no state", a.Device)
	}
	switch f[0] {
	case "active":
		a.Active = true
	case "inactive":
	default:
		return a, fmt.Errorf("%s: state %q is neither active nor inactive", a.Device, f[0])
	}
	f = f[1:]
	if len(f) > 0 && (f[0] == "(read-only)" || f[0] == "(auto-read-only)") {
		a.ReadOnly = strings.Trim(f[0], "()")
		f = f[1:]
	}
	if a.Active && len(f) > 0 && !strings.Contains(f[0], "[") {
		a.Level = f[0]
		f = f[1:]
	}
	for _, m := range f {
		mm, err := parseMdstatMember(m)
		if err != nil {
			return a, fmt.Errorf("%s: %w", a.Device, err)
		}
		a.Members = append(a.Members, mm)
	}
	return a, nil
}

func parseMdstatMember(s string) (MdstatMember, error) {
	open := strings.LastIndexByte(s, '[')
	closing := strings.LastIndexByte(s, ']')
	if open <= 0 || closing < open {
		return MdstatMember{}, fmt.Errorf("member %q: want name[n]", s)
	}
	n, err := strconv.Atoi(s[open+1 : closing])
	if err != nil || n < 0 {
		return MdstatMember{}, fmt.Errorf("member %q: slot is not a number", s)
	}
	m := MdstatMember{Name: s[:open], Slot: n}
	flags := s[closing+1:]
	for flags != "" {
		if len(flags) < 3 || flags[0] != '(' || flags[2] != ')' {
			return MdstatMember{}, fmt.Errorf("member %q: bad flags %q", s, flags)
		}
		switch flags[1] {
		case 'F':
			m.Faulty = true
		case 'S':
			m.Spare = true
		case 'W':
			m.WriteMostly = true
		case 'R':
			m.Replacement = true
		case 'J':
			m.Journal = true
		default:
			return MdstatMember{}, fmt.Errorf("member %q: unknown flag %q", s, flags[:3])
		}
		flags = flags[3:]
	}
	return m, nil
}

func parseMdstatDetail(a *MdstatArray, t string) error {
	switch {
	case strings.HasPrefix(t, "bitmap:"):
		a.Bitmap = strings.TrimSpace(strings.TrimPrefix(t, "bitmap:"))
	case strings.Contains(t, " blocks"):
		f := strings.Fields(t)
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil || n < 0 {
			return fmt.Errorf("blocks %q is not a number", f[0])
		}
		a.Blocks = n
		// [n/m] [UU_U] close the line for redundant levels.
		for _, w := range f[1:] {
			if !strings.HasPrefix(w, "[") || !strings.HasSuffix(w, "]") {
				continue
			}
			in := w[1 : len(w)-1]
			if total, ok, found := strings.Cut(in, "/"); found {
				t, err1 := strconv.Atoi(total)
				o, err2 := strconv.Atoi(ok)
				if err1 != nil || err2 != nil || t < 0 || o < 0 {
					return fmt.Errorf("disk count %q", w)
				}
				a.RaidDisks, a.InSync = t, o
			} else if strings.Trim(in, "U_") == "" {
				a.Status = in
			}
		}
	case strings.Contains(t, "=DELAYED"), strings.Contains(t, "=PENDING"):
		action, _, _ := strings.Cut(t, "=")
		a.Action = strings.TrimSpace(action)
		a.Delayed = strings.Contains(t, "DELAYED")
		a.Pending = strings.Contains(t, "PENDING")
	case strings.Contains(t, "% ("), strings.HasPrefix(t, "["):
		// [>....]  resync =  4.8% (3456/63488) finish=0.8min speed=1152K/sec
		if i := strings.IndexByte(t, ']'); strings.HasPrefix(t, "[") && i > 0 {
			t = strings.TrimSpace(t[i+1:])
		}
		action, rest, ok := strings.Cut(t, "=")
		if !ok {
			return fmt.Errorf("sync line %q", t)
		}
		a.Action = strings.TrimSpace(action)
		f := strings.Fields(rest)
		if len(f) == 0 || !strings.HasSuffix(f[0], "%") {
			return fmt.Errorf("sync line %q: no percentage", t)
		}
		p, err := strconv.ParseFloat(strings.TrimSuffix(f[0], "%"), 64)
		if err != nil || !(p >= 0 && p <= 100) {
			return fmt.Errorf("sync line %q: percentage", t)
		}
		a.Progress = p
		for _, w := range f[1:] {
			if v, ok := strings.CutPrefix(w, "finish="); ok {
				a.Finish = v
			}
			if v, ok := strings.CutPrefix(w, "speed="); ok {
				a.Speed = v
			}
		}
	}
	return nil
}
