package head

import (
	"bufio"
	"bytes"
	"fmt"
	"strconv"
	"strings"
)

// Detail is `mdadm --detail /dev/md/NAME`: the array as its superblocks describe it.
type Detail struct {
	Device        string // /dev/md/pool-always-0
	Version       string // metadata, 1.2
	RaidLevel     string // raid6
	ArraySizeKiB  int64
	UsedDevKiB    int64
	RaidDevices   int
	TotalDevices  int
	State         []string // clean, active, degraded, resyncing, recovering, FAILED, Not Started...
	ActiveDevices int
	Working       int
	Failed        int
	SpareDevices  int
	// SyncAction is resync, rebuild, reshape or check from "<X> Status : N% complete".
	SyncAction  string
	SyncPercent int
	Name        string // as stored: "any:pool-always-0"
	UUID        string // 9e9f35f0:00d2e1ab:c0cf185d:203f8bfa
	Events      int64
	Bitmap      string // Internal
	Members     []DetailMember
}

// DetailMember is one row of the device table.
type DetailMember struct {
	Number     int // -1 for "-"
	Major      int
	Minor      int
	RaidDevice int      // role; -1 for spares and faulty devices ("-")
	State      []string // active, sync, spare, rebuilding, faulty, removed, writemostly...
	Device     string   // /dev/vdb; empty for a removed slot
}

// Has reports whether the state list holds s.
func hasWord(list []string, s string) bool {
	for _, w := range list {
		if w == s {
			return true
		}
	}
	return false
}

// Degraded reports whether the array runs with members missing.
func (d Detail) Degraded() bool { return hasWord(d.State, "degraded") }

// ShortName is the array name without the homehost prefix ("any:").
func (d Detail) ShortName() string {
	if _, n, ok := strings.Cut(d.Name, ":"); ok {
		return n
	}
	return d.Name
}

// Member finds the row of a device path.
func (d Detail) Member(dev string) (DetailMember, bool) {
	for _, m := range d.Members {
		if m.Device == dev {
			return m, true
		}
	}
	return DetailMember{}, false
}

// ParseDetail reads the output of mdadm --detail for one array.
func ParseDetail(b []byte) (Detail, error) {
	var d Detail
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	inTable := false
	line := 0
	for sc.Scan() {
		line++
		text := sc.Text()
		t := strings.TrimSpace(text)
		if t == "" {
			continue
		}
		if line == 1 && strings.HasSuffix(t, ":") && !strings.Contains(t, " : ") {
			d.Device = strings.TrimSuffix(t, ":")
			continue
		}
		if strings.HasPrefix(t, "Number ") && strings.Contains(t, "RaidDevice") {
			inTable = true
			continue
		}
		if inTable {
			m, err := parseDetailRow(t)
			if err != nil {
				return Detail{}, fmt.Errorf("mdadm --detail line %d: %w", line, err)
			}
			d.Members = append(d.Members, m)
			continue
		}
		key, val, ok := strings.Cut(t, " : ")
		if !ok {
			if k, found := strings.CutSuffix(t, " :"); found {
				key, val, ok = k, "", true
			}
		}
		if !ok {
			continue // e.g. a warning line mdadm prints first
		}
		key, val = strings.TrimSpace(key), strings.TrimSpace(val)
		if err := d.set(key, val); err != nil {
			return Detail{}, fmt.Errorf("mdadm --detail line %d: %s: %w", line, key, err)
		}
	}
	if err := sc.Err(); err != nil {
		return Detail{}, fmt.Errorf("mdadm --detail: %w", err)
	}
	if d.UUID == "" && d.RaidLevel == "" {
		return Detail{}, fmt.Errorf("mdadm --detail: no array description in %d lines", line)
	}
	return d, nil
}

func (d *Detail) set(key, val string) error {
	num := func(dst *int) error {
		n, err := strconv.Atoi(val)
		if err != nil || n < 0 {
			return fmt.Errorf("%q is not a count", val)
		}
		*dst = n
		return nil
	}
	kib := func(dst *int64) error {
		f := strings.Fields(val)
		if len(f) == 0 {
			return fmt.Errorf("empty size")
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil || n < 0 {
			return fmt.Errorf("%q is not a size", val)
		}
		*dst = n
		return nil
	}
	switch key {
	case "Version":
		d.Version = val
	case "Raid Level":
		d.RaidLevel = val
	case "Array Size":
		return kib(&d.ArraySizeKiB)
	case "Used Dev Size":
		return kib(&d.UsedDevKiB)
	case "Raid Devices":
		return num(&d.RaidDevices)
	case "Total Devices":
		return num(&d.TotalDevices)
	case "State":
		d.State = nil
		for _, w := range strings.Split(val, ",") {
			if w = strings.TrimSpace(w); w != "" {
				d.State = append(d.State, w)
			}
		}
	case "Active Devices":
		return num(&d.ActiveDevices)
	case "Working Devices":
		return num(&d.Working)
	case "Failed Devices":
		return num(&d.Failed)
	case "Spare Devices":
		return num(&d.SpareDevices)
	case "Resync Status", "Rebuild Status", "Reshape Status", "Check Status":
		f := strings.Fields(val)
		if len(f) == 0 || !strings.HasSuffix(f[0], "%") {
			return fmt.Errorf("%q: no percentage", val)
		}
		n, err := strconv.Atoi(strings.TrimSuffix(f[0], "%"))
		if err != nil || n < 0 || n > 100 {
			return fmt.Errorf("%q: bad percentage", val)
		}
		d.SyncAction = strings.ToLower(strings.Fields(key)[0])
		d.SyncPercent = n
	case "Name":
		// "any:pool-always-0  (local to host any)" on some versions.
		if f := strings.Fields(val); len(f) > 0 {
			d.Name = f[0]
		}
	case "UUID":
		d.UUID = val
	case "Events":
		n, err := strconv.ParseInt(val, 10, 64)
		if err != nil {
			return fmt.Errorf("%q is not a count", val)
		}
		d.Events = n
	case "Intent Bitmap":
		d.Bitmap = val
	}
	return nil
}

// parseDetailRow reads "   4     254       64        0      spare rebuilding   /dev/vde"
// or "   -       0        0        1      removed".
func parseDetailRow(t string) (DetailMember, error) {
	f := strings.Fields(t)
	if len(f) < 5 {
		return DetailMember{}, fmt.Errorf("device row %q: too few fields", t)
	}
	var m DetailMember
	for i, dst := range []*int{&m.Number, &m.Major, &m.Minor, &m.RaidDevice} {
		if f[i] == "-" {
			*dst = -1
			continue
		}
		n, err := strconv.Atoi(f[i])
		if err != nil || n < 0 {
			return DetailMember{}, fmt.Errorf("device row %q: field %d %q", t, i+1, f[i])
		}
		*dst = n
	}
	rest := f[4:]
	if last := rest[len(rest)-1]; strings.HasPrefix(last, "/") {
		m.Device = last
		rest = rest[:len(rest)-1]
	}
	m.State = append([]string(nil), rest...)
	return m, nil
}
