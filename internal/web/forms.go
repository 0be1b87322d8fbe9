package web

import (
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/distonet/distonet/internal/api"
	"github.com/distonet/distonet/internal/registry"
)

// nodeForm is an enrollment or edit form as typed, with the reason for each refused field.
type nodeForm struct {
	MAC, Name, Group, Image, Donate, Window, VolumeSize, IP, Role string

	Errors  map[string]string // field -> reason, shown beside the field
	General string            // a problem no single field owns
}

func formFromRequest(r *http.Request) nodeForm {
	v := func(k string) string { return strings.TrimSpace(r.PostFormValue(k)) }
	return nodeForm{
		MAC: v("mac"), Name: v("name"), Group: v("group"), Image: v("image"), Donate: v("donate"),
		Window: v("window"), VolumeSize: v("volume_size"), IP: v("ip"), Role: v("role"),
	}
}

// formOf fills an edit form from a node.
func formOf(n registry.Node) nodeForm {
	f := nodeForm{MAC: n.MAC, Name: n.Name, Group: n.Group, Image: n.Image, Donate: n.Donate.Mode,
		Window: n.Donate.Window, IP: n.IP, Role: n.Role}
	if n.VolumeSize > 0 {
		f.VolumeSize = formatSize(n.VolumeSize)
	}
	return f
}

func (f *nodeForm) fail(field string, err error) {
	if f.Errors == nil {
		f.Errors = map[string]string{}
	}
	if field == "" {
		f.General = err.Error()
		return
	}
	if _, dup := f.Errors[field]; !dup {
		f.Errors[field] = err.Error()
	}
}

// failed reports whether any problem was recorded.
func (f *nodeForm) failed() bool { return len(f.Errors) > 0 || f.General != "" }

// failErr records a registry or API error beside the field it names.
func (f *nodeForm) failErr(err error) {
	f.fail(api.FieldOf(err), err)
}

// check validates every field it can on its own, so the admin sees all problems at once
// (the registry stops at the first). images nil means any image name is accepted.
func (f *nodeForm) check(images []ImageInfo, withIdentity bool) registry.Node {
	n := registry.Node{Name: f.Name, MAC: f.MAC, Group: f.Group, Image: f.Image, IP: f.IP, Role: f.Role,
		Donate: registry.Donate{Mode: f.Donate, Window: f.Window}}
	if withIdentity {
		if err := registry.ValidateName(f.Name); err != nil {
			f.fail("name", err)
		}
		if mac, err := registry.NormalizeMAC(f.MAC); err != nil {
			f.fail("mac", err)
		} else {
			n.MAC = mac
		}
	}
	if f.Group != "" {
		if err := registry.ValidateName(f.Group); err != nil {
			f.fail("group", fmt.Errorf("group: %w", err))
		}
	}
	switch {
	case f.Image == "":
		f.fail("image", errors.New("image: required"))
	case images != nil && !slices.ContainsFunc(images, func(i ImageInfo) bool { return i.Name == f.Image }):
		f.fail("image", fmt.Errorf("image %q: not imported (see the Images page)", f.Image))
	}
	switch f.Donate {
	case "", "none", "aoe", "iscsi":
	default:
		f.fail("donate", fmt.Errorf("donate %q: want none, aoe or iscsi", f.Donate))
	}
	if f.Window != "" {
		if _, err := registry.ParseWindow(f.Window); err != nil {
			f.fail("window", err)
		}
	}
	if f.IP != "" && net.ParseIP(f.IP).To4() == nil {
		f.fail("ip", fmt.Errorf("ip %q: want an IPv4 address", f.IP))
	}
	switch f.Role {
	case "", "pool-head":
	default:
		f.fail("role", fmt.Errorf("role %q: want pool-head or nothing", f.Role))
	}
	size, err := parseSize(f.VolumeSize)
	if err != nil {
		f.fail("volume_size", err)
	}
	n.VolumeSize = size
	return n
}

// parseSize reads a volume size: empty (the group's default), bytes, or a number with a
// binary unit K, M, G, T (optionally followed by "iB" or "B").
func parseSize(s string) (int64, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, nil
	}
	bad := fmt.Errorf("volume size %q: want a size such as 20G, 512M or a number of bytes", s)
	u := strings.ToUpper(s)
	u = strings.TrimSuffix(strings.TrimSuffix(u, "IB"), "B")
	mult := int64(1)
	if u != "" {
		switch u[len(u)-1] {
		case 'K':
			mult = 1 << 10
		case 'M':
			mult = 1 << 20
		case 'G':
			mult = 1 << 30
		case 'T':
			mult = 1 << 40
		}
		if mult != 1 {
			u = strings.TrimSpace(u[:len(u)-1])
		}
	}
	n, err := strconv.ParseFloat(u, 64)
	if err != nil || math.IsNaN(n) || n <= 0 || n*float64(mult) > 1<<62 {
		return 0, bad
	}
	size := int64(n * float64(mult))
	if size < 1<<20 {
		return 0, fmt.Errorf("volume size %q: at least 1M", s)
	}
	return size, nil
}

// formatSize prints bytes the way parseSize reads them back.
func formatSize(b int64) string {
	for _, u := range []struct {
		s string
		m int64
	}{{"T", 1 << 40}, {"G", 1 << 30}, {"M", 1 << 20}, {"K", 1 << 10}} {
		if b >= u.m && b%u.m == 0 {
			return strconv.FormatInt(b/u.m, 10) + u.s
		}
	}
	return strconv.FormatInt(b, 10)
}

// nextName suggests the n-th name after prev by its trailing number, keeping its width
// (room1-pc07 → room1-pc08); "" when prev has no trailing number.
func nextName(prev string, n int) string {
	i := len(prev)
	for i > 0 && prev[i-1] >= '0' && prev[i-1] <= '9' {
		i--
	}
	if i == len(prev) || len(prev)-i > 9 {
		return ""
	}
	num, _ := strconv.Atoi(prev[i:])
	next := fmt.Sprintf("%0*d", len(prev)-i, num+n)
	if registry.ValidateName(prev[:i]+next) != nil {
		return ""
	}
	return prev[:i] + next
}
