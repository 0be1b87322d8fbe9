// Package boot measures a node's boot, from QEMU start to the image's init, stage by stage,
// from the timestamps of its serial console lines. The classic stack (dnsmasq, nfs-ganesha,
// tgt) is measured here; the appliance's own run goes beside it with the same Stages.
package boot

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/distonet/distonet/images/qemu"
)

// Marker is console text whose first line ends a stage.
type Marker struct {
	Stage  string
	Prefix string
}

// Markers are the stages of one boot, in order. Firmware stages only appear in a network boot.
var Markers = []Marker{
	{"firmware: iPXE starts", "iPXE "},
	{"firmware: kernel fetched", "http://"},
	// The kernel's first line reaches the serial port only when its console driver starts
	// (earlier messages are replayed then), so this marks "console up", a little after start.
	{"kernel console up", "Linux version"},
	{"node init starts", "distonet-init: init:"},
	{"modules", "distonet-init: modules:"},
	{"network (DHCP)", "distonet-init: network:"},
	{"boot config", "distonet-init: config:"},
	{"nfs", "distonet-init: nfs:"},
	{"iscsi", "distonet-init: iscsi:"},
	{"overlay", "distonet-init: overlay:"},
	{"runtime files", "distonet-init: root:"},
	{"switch_root", "distonet-init: ready:"},
	{"image init", "DISTONET-IMAGE-INIT"},
}

// Stage is when a stage ended, since QEMU started.
type Stage struct {
	Name string
	At   time.Duration
}

// Stages finds each marker's first line at or after from (the console of a guest that
// reboots holds several boots), in order.
func Stages(lines []qemu.Line, from time.Duration) []Stage {
	var out []Stage
	next := 0
	for _, l := range lines {
		if l.At < from {
			continue
		}
		if strings.Contains(l.Text, "FAILED") || strings.Contains(l.Text, "retrying in") || strings.Contains(l.Text, "still working") {
			continue // a stage ends on its success line
		}
		for j := next; j < len(Markers); j++ {
			// Contains, not HasPrefix: kernel timestamps and firmware escape sequences
			// may precede a marker on its line.
			if strings.Contains(l.Text, Markers[j].Prefix) {
				out = append(out, Stage{Markers[j].Stage, l.At})
				next = j + 1
				break
			}
		}
	}
	return out
}

// Print writes a table of stages with the time each took.
func Print(w io.Writer, title string, stages []Stage, start time.Duration) {
	fmt.Fprintf(w, "%s\n", title)
	prev := start
	for _, s := range stages {
		fmt.Fprintf(w, "  %-26s at %6.1fs  (+%5.1fs)\n", s.Name, (s.At - start).Seconds(), (s.At - prev).Seconds())
		prev = s.At
	}
}

// Total is the time from start to the image's init, or 0 if it was not reached.
func Total(stages []Stage, start time.Duration) time.Duration {
	for _, s := range stages {
		if s.Name == "image init" {
			return s.At - start
		}
	}
	return 0
}
