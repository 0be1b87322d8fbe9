package web

import (
	"fmt"
	"html/template"
	"slices"
	"strings"
	"time"

	"github.com/distonet/distonet/internal/registry"
)

func (w *Web) funcs() template.FuncMap {
	return template.FuncMap{
		"bytes": humanBytes,
		"dur":   humanDuration,
		"ago":   func(t time.Time) string { return humanAgo(w.now().Sub(t)) },
		// The appliance's local time: donation windows are local times too.
		"stamp":  func(t time.Time) string { return t.Local().Format("2006-01-02 15:04:05 MST") },
		"macid":  macID,
		"failed": stageFailed,
		"badge":  badgeClass,
		"window": func(win string) string { return windowStatus(win, w.now()) },
		"hasImage": func(imgs []ImageInfo, name string) bool {
			return slices.ContainsFunc(imgs, func(i ImageInfo) bool { return i.Name == name })
		},
		"plural": func(n int, word string) string {
			if n == 1 {
				return "1 " + word
			}
			return fmt.Sprintf("%d %ss", n, word)
		},
		"dict": func(kv ...any) (map[string]any, error) {
			if len(kv)%2 != 0 {
				return nil, fmt.Errorf("dict: odd number of arguments")
			}
			m := make(map[string]any, len(kv)/2)
			for i := 0; i < len(kv); i += 2 {
				k, ok := kv[i].(string)
				if !ok {
					return nil, fmt.Errorf("dict: key %v is not a string", kv[i])
				}
				m[k] = kv[i+1]
			}
			return m, nil
		},
		"pct": func(part, total int64) string {
			if total <= 0 {
				return "0"
			}
			return fmt.Sprintf("%.1f", 100*float64(part)/float64(total))
		},
		"ptr": func(t *time.Time) time.Time {
			if t == nil {
				return time.Time{}
			}
			return *t
		},
		"lastStage": func(b *registry.Boot) string {
			if b == nil || len(b.Stages) == 0 {
				return ""
			}
			return b.Stages[len(b.Stages)-1].Stage
		},
	}
}

// humanBytes prints a size in binary units as sysadmins read them (1.5 TiB).
func humanBytes(b int64) string {
	const unit = 1024
	if b < unit {
		return fmt.Sprintf("%d B", b)
	}
	div, exp := int64(unit), 0
	for n := b / unit; n >= unit; n /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(b)/float64(div), "KMGTPE"[exp])
}

func humanDuration(d time.Duration) string {
	switch {
	case d < 0:
		return "0s"
	case d < 10*time.Second:
		return fmt.Sprintf("%.1fs", d.Seconds())
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	default:
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	}
}

func humanAgo(d time.Duration) string {
	switch {
	case d < 5*time.Second:
		return "just now"
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh ago", int(d.Hours()))
	default:
		return fmt.Sprintf("%dd ago", int(d.Hours()/24))
	}
}

// badgeClass maps a node or disk state to its badge colour.
func badgeClass(state string) string {
	switch strings.ToLower(state) {
	case "ready", "online", "running", "in_sync":
		return "ok"
	case "booting", "withdrawing", "syncing", "rebuilding", "waiting", "degraded":
		return "busy"
	case "discovered":
		return "new"
	case "failed", "stalled", "offline", "faulty", "missing":
		return "bad"
	default:
		return "idle"
	}
}

// windowStatus says whether a donation window is open at now (the appliance's local time),
// for the node page. The agent on the node decides for real; this is the admin's view.
func windowStatus(win string, now time.Time) string {
	if win == "" {
		return "always open"
	}
	wd, err := registry.ParseWindow(win)
	if err != nil {
		return "invalid window"
	}
	now = now.Local()
	tod := time.Duration(now.Hour())*time.Hour + time.Duration(now.Minute())*time.Minute + time.Duration(now.Second())*time.Second
	var open bool
	if wd.Start < wd.End {
		open = tod >= wd.Start && tod < wd.End
	} else { // crosses midnight
		open = tod >= wd.Start || tod < wd.End
	}
	clock := func(d time.Duration) string { return fmt.Sprintf("%02d:%02d", int(d.Hours()), int(d.Minutes())%60) }
	if open {
		return "open now, closes at " + clock(wd.End)
	}
	return "closed now, opens at " + clock(wd.Start)
}
