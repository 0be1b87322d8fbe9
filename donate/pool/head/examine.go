package head

import (
	"bufio"
	"bytes"
	"fmt"
	"strconv"
	"strings"
)

// Examine is `mdadm --examine --export DEV`: what one member's superblock says.
type Examine struct {
	Level   string // raid6
	Devices int    // raid devices of its array
	Name    string // any:pool-always-0
	UUID    string // array UUID
	DevUUID string
	Events  int64
}

// ShortName is the array name without the homehost prefix.
func (e Examine) ShortName() string {
	if _, n, ok := strings.Cut(e.Name, ":"); ok {
		return n
	}
	return e.Name
}

// ParseExamineExport reads KEY=VALUE lines (mdadm --examine --export).
func ParseExamineExport(b []byte) (Examine, error) {
	var e Examine
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	line := 0
	for sc.Scan() {
		line++
		t := strings.TrimSpace(sc.Text())
		if t == "" {
			continue
		}
		k, v, ok := strings.Cut(t, "=")
		if !ok || !strings.HasPrefix(k, "MD_") {
			return Examine{}, fmt.Errorf("mdadm --examine --export line %d: %q is not MD_KEY=VALUE", line, t)
		}
		switch k {
		case "MD_LEVEL":
			e.Level = v
		case "MD_DEVICES":
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				return Examine{}, fmt.Errorf("mdadm --examine --export line %d: MD_DEVICES %q", line, v)
			}
			e.Devices = n
		case "MD_NAME":
			e.Name = v
		case "MD_UUID":
			e.UUID = v
		case "MD_DEV_UUID":
			e.DevUUID = v
		case "MD_EVENTS":
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return Examine{}, fmt.Errorf("mdadm --examine --export line %d: MD_EVENTS %q", line, v)
			}
			e.Events = n
		}
	}
	if err := sc.Err(); err != nil {
		return Examine{}, fmt.Errorf("mdadm --examine --export: %w", err)
	}
	if e.UUID == "" {
		return Examine{}, fmt.Errorf("mdadm --examine --export: no MD_UUID")
	}
	return e, nil
}
