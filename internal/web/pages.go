package web

import (
	"cmp"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/distonet/distonet/donate/pool"
	"github.com/distonet/distonet/internal/api"
	"github.com/distonet/distonet/internal/registry"
)

// nodeRow is a node as the dashboard lists it.
type nodeRow struct {
	api.NodeView
	Shown string // the state badge: the API's state, or failed / stalled
}

// stageFailed: a node reports a failed stage with ok=false and a reason.
func stageFailed(s registry.Stage) bool { return !s.OK && s.Message != "" }

// stallAfter is how long a boot may go without a new stage before the UI calls it stalled
// (a node powered off mid-boot would otherwise show "booting" forever).
const stallAfter = 10 * time.Minute

// shownState refines the API's state with what the last boot says.
func shownState(state string, last *registry.Boot, now time.Time) string {
	if last == nil || len(last.Stages) == 0 {
		return state
	}
	if slices.ContainsFunc(last.Stages, stageFailed) {
		return "failed"
	}
	if state == "booting" && now.Sub(last.Stages[len(last.Stages)-1].Time) > stallAfter {
		return "stalled"
	}
	return state
}

func (w *Web) portal() string {
	if w.opt.API != nil {
		return w.opt.API.Portal
	}
	return ""
}

func (w *Web) nodeRows() ([]nodeRow, error) {
	nodes, err := w.opt.Store.Nodes()
	if err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	rows := make([]nodeRow, 0, len(nodes))
	for _, n := range nodes {
		tl, err := w.opt.Store.Timeline(n.Name)
		if err != nil {
			return nil, fmt.Errorf("timeline of %s: %w", n.Name, err)
		}
		row := nodeRow{NodeView: api.ViewOf(n, tl, w.portal(), false)}
		row.Shown = shownState(row.State, row.LastBoot, w.now())
		rows = append(rows, row)
	}
	return rows, nil
}

// poolSum is pool capacity grouped one way.
type poolSum struct {
	Key   string
	Disks int
	Bytes int64
}

type poolData struct {
	Disks    []registry.DonatedDisk
	Total    poolSum
	ByState  []poolSum
	ByWindow []poolSum
	// Arrays are the planned md arrays with the head's last report; Usable sums their
	// capacity; Reasons say what the planner left out.
	Arrays  []pool.ArrayStatus
	Usable  int64
	Reasons []string
}

func (w *Web) poolData() (poolData, error) {
	disks, err := w.opt.Store.Disks()
	if err != nil {
		return poolData{}, fmt.Errorf("pool inventory: %w", err)
	}
	slices.SortFunc(disks, func(a, b registry.DonatedDisk) int {
		return cmp.Or(cmp.Compare(a.Node, b.Node), cmp.Compare(a.Device, b.Device))
	})
	d := poolData{Disks: disks, Total: poolSum{Key: "all"}}
	if w.opt.Pool != nil {
		st, err := w.opt.Pool()
		if err != nil {
			return poolData{}, fmt.Errorf("pool status: %w", err)
		}
		d.Arrays, d.Reasons = st.Arrays, st.Reasons
		for _, a := range st.Arrays {
			d.Usable += a.UsableBytes
		}
		// The head's view of each disk's state (a silent donor is offline there).
		state := map[string]string{}
		for _, ds := range st.Disks {
			state[ds.Node+"/"+ds.Address] = ds.State
		}
		for i, x := range disks {
			if s, ok := state[x.Node+"/"+x.Address]; ok {
				disks[i].State = s
			}
		}
	}
	byState, byWindow := map[string]*poolSum{}, map[string]*poolSum{}
	add := func(m map[string]*poolSum, k string, x registry.DonatedDisk) {
		s, ok := m[k]
		if !ok {
			s = &poolSum{Key: k}
			m[k] = s
		}
		s.Disks++
		s.Bytes += x.SizeBytes
	}
	for _, x := range disks {
		d.Total.Disks++
		d.Total.Bytes += x.SizeBytes
		add(byState, cmp.Or(x.State, "unknown"), x)
		add(byWindow, cmp.Or(x.Window, "always"), x)
	}
	flat := func(m map[string]*poolSum) []poolSum {
		out := make([]poolSum, 0, len(m))
		for _, s := range m {
			out = append(out, *s)
		}
		slices.SortFunc(out, func(a, b poolSum) int { return cmp.Compare(a.Key, b.Key) })
		return out
	}
	d.ByState, d.ByWindow = flat(byState), flat(byWindow)
	return d, nil
}

// recentEvent is one boot stage in the dashboard's activity list.
type recentEvent struct {
	Node  string
	Stage registry.Stage
}

// recentEvents is how many boot stages the dashboard lists, newest first.
const recentEvents = 25

type dashData struct {
	Recent     []recentEvent
	Nodes      []nodeRow
	Counts     map[string]int
	Discovered int
	Pool       poolData
	Err        string
}

func (w *Web) dashboard(wr http.ResponseWriter, r *http.Request, c *reqCtx) {
	var d dashData
	var errs []error
	rows, err := w.nodeRows()
	errs = append(errs, err)
	d.Nodes = rows
	d.Counts = map[string]int{}
	for _, n := range rows {
		d.Counts[n.Shown]++
		if n.LastBoot != nil {
			for _, st := range n.LastBoot.Stages {
				d.Recent = append(d.Recent, recentEvent{Node: n.Name, Stage: st})
			}
		}
	}
	slices.SortFunc(d.Recent, func(a, b recentEvent) int {
		return cmp.Or(b.Stage.Time.Compare(a.Stage.Time), cmp.Compare(a.Node, b.Node))
	})
	d.Recent = d.Recent[:min(len(d.Recent), recentEvents)]
	disc, err := w.opt.Store.DiscoveredMACs()
	errs = append(errs, err)
	d.Discovered = len(disc)
	d.Pool, err = w.poolData()
	errs = append(errs, err)
	if err := errors.Join(errs...); err != nil {
		w.log.Error("web: dashboard", "err", err)
		d.Err = err.Error()
	}
	w.render(wr, r, http.StatusOK, "dashboard", w.newPage(c, "Dashboard", "dashboard", d))
}

// discoveredRow is a MAC waiting for enrollment with its own form.
type discoveredRow struct {
	registry.Discovered
	ID   string // the MAC without colons, for element ids
	Form nodeForm
}

type discoveredData struct {
	Rows   []discoveredRow
	Images []ImageInfo
	Free   bool // no image list: image is typed
	Err    string
}

// macID names a MAC in element ids (a CSS id selector cannot start with a digit).
func macID(mac string) string { return "m" + strings.ReplaceAll(mac, ":", "") }

// images returns the image list, nil when the UI has none to offer (any name accepted).
func (w *Web) images() ([]ImageInfo, error) {
	if w.opt.Images == nil {
		return nil, nil
	}
	imgs, err := w.opt.Images()
	if err != nil {
		return nil, fmt.Errorf("list images: %w", err)
	}
	if imgs == nil {
		imgs = []ImageInfo{}
	}
	slices.SortFunc(imgs, func(a, b ImageInfo) int { return cmp.Compare(a.Name, b.Name) })
	return imgs, nil
}

// renderDiscovered shows the discovered MACs; failed, when set, keeps one MAC's typed form
// and its errors.
func (w *Web) renderDiscovered(wr http.ResponseWriter, r *http.Request, c *reqCtx, status int, failed *nodeForm) {
	d := discoveredData{}
	var errs []error
	disc, err := w.opt.Store.DiscoveredMACs()
	errs = append(errs, err)
	imgs, err := w.images()
	errs = append(errs, err)
	d.Images, d.Free = imgs, w.opt.Images == nil
	// Prefill from the session's last enrollment (a room is enrolled machine after machine):
	// same group, image and policy, and the next names in power-on order.
	last := w.sessions.lastEnrolled(c.sess)
	if last.Image != "" && imgs != nil && !slices.ContainsFunc(imgs, func(i ImageInfo) bool { return i.Name == last.Image }) {
		last.Image = ""
	}
	if last.Image == "" && len(imgs) == 1 {
		last.Image = imgs[0].Name
	}
	suggested := map[string]string{}
	if last.Name != "" {
		byPowerOn := slices.Clone(disc)
		slices.SortFunc(byPowerOn, func(a, b registry.Discovered) int {
			return cmp.Or(a.FirstSeen.Compare(b.FirstSeen), cmp.Compare(a.MAC, b.MAC))
		})
		k := 1
		for _, x := range byPowerOn {
			for ; k < 1000; k++ {
				name := nextName(last.Name, k)
				if name == "" {
					break
				}
				if _, err := w.opt.Store.Node(name); err != nil { // free
					suggested[x.MAC] = name
					k++
					break
				}
			}
		}
	}
	for _, x := range disc {
		row := discoveredRow{Discovered: x, ID: macID(x.MAC), Form: nodeForm{MAC: x.MAC, Name: suggested[x.MAC],
			Group: last.Group, Image: last.Image, Donate: cmp.Or(last.Donate, "none"), Window: last.Window, VolumeSize: last.VolumeSize}}
		if failed != nil && failed.MAC == x.MAC {
			row.Form = *failed
		}
		d.Rows = append(d.Rows, row)
	}
	if failed != nil && !slices.ContainsFunc(d.Rows, func(x discoveredRow) bool { return x.MAC == failed.MAC }) {
		// The MAC was enrolled or forgotten meanwhile: say so rather than lose the message.
		why := []string{failed.General}
		for _, k := range slices.Sorted(maps.Keys(failed.Errors)) {
			why = append(why, failed.Errors[k])
		}
		d.Err = fmt.Sprintf("%s is no longer waiting for enrollment (enrolled or forgotten meanwhile?): %s", failed.MAC,
			cmp.Or(strings.Trim(strings.Join(why, "; "), "; "), "see the dashboard"))
	}
	if err := errors.Join(errs...); err != nil {
		w.log.Error("web: discovered", "err", err)
		d.Err = err.Error()
	}
	w.render(wr, r, status, "discovered", w.newPage(c, "Discovered machines", "discovered", d))
}

func (w *Web) discovered(wr http.ResponseWriter, r *http.Request, c *reqCtx) {
	w.renderDiscovered(wr, r, c, http.StatusOK, nil)
}

// enroll validates a form and enrolls the node; on failure the form carries the reasons.
func (w *Web) enroll(f *nodeForm) (registry.Node, bool) {
	imgs, err := w.images()
	if err != nil {
		f.fail("", err)
		return registry.Node{}, false
	}
	n := f.check(imgs, true)
	// Say a name or MAC is taken along with the other problems; AddNode checks again.
	if f.Errors["name"] == "" {
		if _, err := w.opt.Store.Node(n.Name); err == nil {
			f.fail("name", fmt.Errorf("node %s: name %w", n.Name, registry.ErrExists))
		}
	}
	if f.Errors["mac"] == "" {
		if other, ok := w.opt.Store.NodeByMAC(n.MAC); ok {
			f.fail("mac", fmt.Errorf("node %s: mac %s %w as %s", n.Name, n.MAC, registry.ErrExists, other.Name))
		}
	}
	if f.failed() {
		return registry.Node{}, false
	}
	added, err := w.opt.Store.AddNode(n)
	if err != nil {
		f.failErr(err)
		return registry.Node{}, false
	}
	w.m.enrollments.WithLabelValues("form").Inc()
	return added, true
}

func (w *Web) enrollDiscovered(wr http.ResponseWriter, r *http.Request, c *reqCtx) {
	f := formFromRequest(r)
	mac, err := registry.NormalizeMAC(r.PathValue("mac"))
	if err != nil {
		w.message(wr, r, c, http.StatusBadRequest, "Bad request", err.Error())
		return
	}
	f.MAC = mac
	n, ok := w.enroll(&f)
	if !ok {
		w.renderDiscovered(wr, r, c, http.StatusUnprocessableEntity, &f)
		return
	}
	w.log.Info("node enrolled", "node", n.Name, "mac", n.MAC, "image", n.Image, "via", "web")
	w.sessions.setLast(c.sess, f)
	// Back to the list while machines wait (a room is enrolled one after another), else to
	// the new node.
	if waiting, err := w.opt.Store.DiscoveredMACs(); err == nil && len(waiting) > 0 {
		w.sessions.setFlash(c.sess, fmt.Sprintf("Enrolled %s (%s): it boots %s at its next PXE boot. %d more waiting.", n.Name, n.MAC, n.Image, len(waiting)))
		http.Redirect(wr, r, "/discovered", http.StatusSeeOther)
		return
	}
	w.sessions.setFlash(c.sess, fmt.Sprintf("Enrolled %s (%s): it boots %s at its next PXE boot.", n.Name, n.MAC, n.Image))
	http.Redirect(wr, r, "/nodes/"+n.Name, http.StatusSeeOther)
}

func (w *Web) forgetDiscovered(wr http.ResponseWriter, r *http.Request, c *reqCtx) {
	mac := r.PathValue("mac")
	if err := w.opt.Store.ForgetDiscovered(mac); err != nil {
		w.message(wr, r, c, http.StatusBadRequest, "Bad request", err.Error())
		return
	}
	w.log.Info("discovered MAC forgotten", "mac", mac, "via", "web")
	w.sessions.setFlash(c.sess, "Forgot "+mac+". It reappears here if it boots again.")
	http.Redirect(wr, r, "/discovered", http.StatusSeeOther)
}

type nodeNewData struct {
	Form   nodeForm
	Images []ImageInfo
	Free   bool
	Err    string
}

func (w *Web) renderNewNode(wr http.ResponseWriter, r *http.Request, c *reqCtx, status int, f nodeForm) {
	imgs, err := w.images()
	d := nodeNewData{Form: f, Images: imgs, Free: w.opt.Images == nil}
	if err != nil {
		d.Err = err.Error()
	}
	w.render(wr, r, status, "nodenew", w.newPage(c, "Enroll a node", "new", d))
}

func (w *Web) newNodePage(wr http.ResponseWriter, r *http.Request, c *reqCtx) {
	w.renderNewNode(wr, r, c, http.StatusOK, nodeForm{Donate: "none", MAC: r.URL.Query().Get("mac")})
}

func (w *Web) newNode(wr http.ResponseWriter, r *http.Request, c *reqCtx) {
	f := formFromRequest(r)
	n, ok := w.enroll(&f)
	if !ok {
		w.renderNewNode(wr, r, c, http.StatusUnprocessableEntity, f)
		return
	}
	w.log.Info("node enrolled", "node", n.Name, "mac", n.MAC, "image", n.Image, "via", "web")
	w.sessions.setFlash(c.sess, fmt.Sprintf("Enrolled %s (%s).", n.Name, n.MAC))
	http.Redirect(wr, r, "/nodes/"+n.Name, http.StatusSeeOther)
}

type nodeData struct {
	View   api.NodeView
	Node   registry.Node // redacted
	Boots  []registry.Boot
	Disks  []registry.DonatedDisk
	Form   nodeForm
	Images []ImageInfo
	Free   bool
	Target string
	AoE    string
	Shown  string // the state badge (see shownState)
	// Volume actions are offered when the daemon manages volumes (Options.Volume).
	VolumeActions bool
	GrowErr       string
	GrowTo        string
	Err           string
}

func (w *Web) renderNode(wr http.ResponseWriter, r *http.Request, c *reqCtx, status int, name string, form *nodeForm) {
	w.renderNodeVol(wr, r, c, status, name, form, "", "")
}

func (w *Web) renderNodeVol(wr http.ResponseWriter, r *http.Request, c *reqCtx, status int, name string, form *nodeForm, growTo, growErr string) {
	n, err := w.opt.Store.Node(name)
	if errors.Is(err, registry.ErrNotFound) {
		w.message(wr, r, c, http.StatusNotFound, "No such node", fmt.Sprintf("No node is enrolled as %q.", name))
		return
	}
	if err != nil {
		w.message(wr, r, c, http.StatusInternalServerError, "Error", err.Error())
		return
	}
	n = n.Redacted()
	tl, err := w.opt.Store.Timeline(n.Name)
	var errs []error
	errs = append(errs, err)
	d := nodeData{View: api.ViewOf(n, tl, w.portal(), false), Node: n, Target: n.TargetIQN(), Free: w.opt.Images == nil}
	if n.Donate.Mode == "aoe" {
		d.AoE = n.AoEAddress()
	}
	d.Shown = shownState(d.View.State, d.View.LastBoot, w.now())
	d.VolumeActions = w.volumeFn() != nil
	d.Boots = slices.Clone(tl.Boots)
	slices.Reverse(d.Boots) // newest first
	disks, err := w.opt.Store.Disks()
	errs = append(errs, err)
	for _, x := range disks {
		if x.Node == n.Name {
			d.Disks = append(d.Disks, x)
		}
	}
	d.Images, err = w.images()
	errs = append(errs, err)
	d.Form = formOf(n)
	if form != nil {
		d.Form = *form
	}
	d.GrowTo, d.GrowErr = growTo, growErr
	if err := errors.Join(errs...); err != nil {
		d.Err = err.Error()
	}
	w.render(wr, r, status, "node", w.newPage(c, "Node "+n.Name, "dashboard", d))
}

func (w *Web) nodePage(wr http.ResponseWriter, r *http.Request, c *reqCtx) {
	w.renderNode(wr, r, c, http.StatusOK, r.PathValue("name"), nil)
}

func (w *Web) editNode(wr http.ResponseWriter, r *http.Request, c *reqCtx) {
	name := r.PathValue("name")
	f := formFromRequest(r)
	f.Name = name
	imgs, err := w.images()
	if err != nil {
		f.fail("", err)
	}
	edited := f.check(imgs, false)
	if !f.failed() {
		_, err = w.opt.Store.UpdateNode(name, func(n *registry.Node) error {
			// The volume size changes only through the volume actions (grow, reset).
			n.Group, n.Image, n.Role, n.IP = edited.Group, edited.Image, edited.Role, edited.IP
			n.Donate.Mode, n.Donate.Window = edited.Donate.Mode, edited.Donate.Window
			return nil
		})
		if err != nil {
			f.failErr(err)
		}
	}
	if f.failed() {
		w.renderNode(wr, r, c, http.StatusUnprocessableEntity, name, &f)
		return
	}
	w.log.Info("node edited", "node", name, "via", "web")
	w.sessions.setFlash(c.sess, "Saved "+name+". Changes apply at its next boot.")
	http.Redirect(wr, r, "/nodes/"+name, http.StatusSeeOther)
}

// volume grows or resets a node's overlay volume through the daemon (Options.Volume).
func (w *Web) volume(wr http.ResponseWriter, r *http.Request, c *reqCtx) {
	name := r.PathValue("name")
	volume := w.volumeFn()
	if volume == nil {
		w.message(wr, r, c, http.StatusServiceUnavailable, "Not available", "Volumes are not managed by this appliance process.")
		return
	}
	switch r.PostFormValue("action") {
	case "resize":
		growTo := strings.TrimSpace(r.PostFormValue("size"))
		size, err := parseSize(growTo)
		if err == nil && size == 0 {
			err = errors.New("volume size: required")
		}
		if err == nil {
			err = volume(name, "resize", size)
		}
		if err == nil {
			// Record the new size, so the node page and a later re-creation agree with the file.
			_, err = w.opt.Store.UpdateNode(name, func(n *registry.Node) error { n.VolumeSize = size; return nil })
		}
		if err != nil {
			w.log.Warn("web: grow volume", "node", name, "err", err)
			w.renderNodeVol(wr, r, c, http.StatusUnprocessableEntity, name, nil, growTo, err.Error())
			return
		}
		w.log.Info("node volume grown", "node", name, "size", size, "via", "web")
		w.sessions.setFlash(c.sess, fmt.Sprintf("Grew the volume of %s to %s.", name, humanBytes(size)))
	case "reset":
		if r.PostFormValue("confirm") != name {
			w.renderConfirm(wr, r, c, http.StatusUnprocessableEntity, name, "reset", "type the node's name exactly to confirm")
			return
		}
		if err := volume(name, "reset", 0); err != nil {
			w.log.Error("web: reset volume", "node", name, "err", err)
			w.message(wr, r, c, http.StatusInternalServerError, "Reset failed", err.Error())
			return
		}
		w.log.Info("node volume reset", "node", name, "via", "web")
		w.sessions.setFlash(c.sess, "Reset the volume of "+name+": it starts from its image at its next boot.")
	default:
		w.message(wr, r, c, http.StatusBadRequest, "Bad request", "volume action: want resize or reset")
		return
	}
	http.Redirect(wr, r, "/nodes/"+name, http.StatusSeeOther)
}

func (w *Web) resetPage(wr http.ResponseWriter, r *http.Request, c *reqCtx) {
	w.renderConfirm(wr, r, c, http.StatusOK, r.PathValue("name"), "reset", "")
}

type removeData struct {
	Node   registry.Node
	Disks  int
	Error  string
	Action string // remove (the node) or reset (its volume)
}

func (w *Web) renderRemove(wr http.ResponseWriter, r *http.Request, c *reqCtx, status int, name, problem string) {
	w.renderConfirm(wr, r, c, status, name, "remove", problem)
}

// renderConfirm asks to type the node's name before an action that deletes its data.
func (w *Web) renderConfirm(wr http.ResponseWriter, r *http.Request, c *reqCtx, status int, name, action, problem string) {
	n, err := w.opt.Store.Node(name)
	if errors.Is(err, registry.ErrNotFound) {
		w.message(wr, r, c, http.StatusNotFound, "No such node", fmt.Sprintf("No node is enrolled as %q.", name))
		return
	}
	if err != nil {
		w.message(wr, r, c, http.StatusInternalServerError, "Error", err.Error())
		return
	}
	d := removeData{Node: n.Redacted(), Error: problem, Action: action}
	if disks, err := w.opt.Store.Disks(); err == nil {
		for _, x := range disks {
			if x.Node == name {
				d.Disks++
			}
		}
	}
	title := "Remove " + name
	if action == "reset" {
		title = "Reset the volume of " + name
	}
	w.render(wr, r, status, "remove", w.newPage(c, title, "dashboard", d))
}

func (w *Web) removePage(wr http.ResponseWriter, r *http.Request, c *reqCtx) {
	w.renderRemove(wr, r, c, http.StatusOK, r.PathValue("name"), "")
}

func (w *Web) removeNode(wr http.ResponseWriter, r *http.Request, c *reqCtx) {
	name := r.PathValue("name")
	// Typing the name is the confirmation: the volume's data cannot be brought back.
	if r.PostFormValue("confirm") != name {
		w.renderRemove(wr, r, c, http.StatusUnprocessableEntity, name, "type the node's name exactly to confirm")
		return
	}
	if err := api.RemoveNode(w.opt.Store, name, w.removeVolumeFn()); err != nil {
		if errors.Is(err, registry.ErrNotFound) {
			w.message(wr, r, c, http.StatusNotFound, "No such node", fmt.Sprintf("No node is enrolled as %q.", name))
			return
		}
		w.log.Error("web: remove node", "node", name, "err", err)
		w.message(wr, r, c, http.StatusInternalServerError, "Removal incomplete", err.Error())
		return
	}
	w.log.Info("node removed", "node", name, "via", "web")
	w.sessions.setFlash(c.sess, "Removed "+name+" and deleted its volume.")
	http.Redirect(wr, r, "/", http.StatusSeeOther)
}

type bulkData struct {
	Errors  []LineError
	CSV     string
	Columns string
	Preview []bulkPreview // a checked file, waiting for confirmation
}

// bulkPreview is one node of a checked file as it will be enrolled.
type bulkPreview struct {
	Line int
	Node registry.Node
}

func (w *Web) bulkPage(wr http.ResponseWriter, r *http.Request, c *reqCtx) {
	w.render(wr, r, http.StatusOK, "bulk", w.newPage(c, "Bulk enrollment", "bulk", bulkData{Columns: strings.Join(BulkColumns, ",")}))
}

// bulk checks a CSV file and shows what it would enroll (step=check, the form's button), or
// enrolls it (step=enroll, the preview's button; also the default, for scripts). Both steps
// check the whole file: nothing is enrolled from a file with a problem.
func (w *Web) bulk(wr http.ResponseWriter, r *http.Request, c *reqCtx) {
	d := bulkData{Columns: strings.Join(BulkColumns, ",")}
	if f, _, err := r.FormFile("file"); err == nil {
		raw, err := io.ReadAll(io.LimitReader(f, w.opt.MaxUpload))
		f.Close()
		if err != nil {
			w.message(wr, r, c, http.StatusBadRequest, "Bad request", "The file could not be read: "+err.Error())
			return
		}
		d.CSV = string(raw)
	} else {
		d.CSV = r.PostFormValue("csv")
	}
	nodes, rows, errs := w.bulkCheck(strings.NewReader(d.CSV))
	if len(errs) > 0 {
		d.Errors = errs
		w.render(wr, r, http.StatusUnprocessableEntity, "bulk", w.newPage(c, "Bulk enrollment", "bulk", d))
		return
	}
	if r.PostFormValue("step") == "check" {
		for i, n := range nodes {
			if err := n.Validate(); err != nil { // fills defaults (donate none) as AddNode will
				w.log.Error("web: bulk preview", "node", n.Name, "err", err)
			}
			d.Preview = append(d.Preview, bulkPreview{Line: rows[i].Line, Node: n})
		}
		w.render(wr, r, http.StatusOK, "bulk", w.newPage(c, "Bulk enrollment", "bulk", d))
		return
	}
	added, errs := w.bulkApply(nodes, rows)
	if len(errs) > 0 {
		d.Errors = errs
		w.render(wr, r, http.StatusUnprocessableEntity, "bulk", w.newPage(c, "Bulk enrollment", "bulk", d))
		return
	}
	w.m.enrollments.WithLabelValues("bulk").Add(float64(len(added)))
	w.log.Info("nodes enrolled in bulk", "count", len(added), "via", "web")
	w.sessions.setFlash(c.sess, fmt.Sprintf("Enrolled %d nodes: %s.", len(added), strings.Join(added, ", ")))
	http.Redirect(wr, r, "/", http.StatusSeeOther)
}

// bulkCheck validates every line of a CSV file as an enrollment, against the file itself and
// the registry, and returns the nodes to add or every problem found.
func (w *Web) bulkCheck(src io.Reader) (nodes []registry.Node, rows []BulkRow, errs []LineError) {
	rows, errs = ParseBulk(src)
	if len(errs) > 0 {
		return nil, nil, errs
	}
	imgs, err := w.images()
	if err != nil {
		return nil, nil, []LineError{{Message: err.Error()}}
	}
	names, macs := map[string]int{}, map[string]int{}
	nodes = make([]registry.Node, 0, len(rows))
	for _, row := range rows {
		f := row.form()
		n := f.check(imgs, true)
		for _, k := range slices.Sorted(maps.Keys(f.Errors)) {
			errs = append(errs, LineError{Line: row.Line, Field: k, Message: f.Errors[k]})
		}
		if f.Errors["name"] == "" {
			if prev, dup := names[n.Name]; dup {
				errs = append(errs, LineError{Line: row.Line, Field: "name", Message: fmt.Sprintf("%s is also on line %d", n.Name, prev)})
			} else if _, err := w.opt.Store.Node(n.Name); err == nil {
				errs = append(errs, LineError{Line: row.Line, Field: "name", Message: n.Name + " is already enrolled"})
			}
			names[n.Name] = row.Line
		}
		if f.Errors["mac"] == "" {
			if prev, dup := macs[n.MAC]; dup {
				errs = append(errs, LineError{Line: row.Line, Field: "mac", Message: fmt.Sprintf("%s is also on line %d", n.MAC, prev)})
			} else if other, ok := w.opt.Store.NodeByMAC(n.MAC); ok {
				errs = append(errs, LineError{Line: row.Line, Field: "mac", Message: fmt.Sprintf("%s is already enrolled as %s", n.MAC, other.Name)})
			}
			macs[n.MAC] = row.Line
		}
		nodes = append(nodes, n)
	}
	if len(errs) > 0 {
		return nil, nil, errs
	}
	return nodes, rows, nil
}

// bulkApply enrolls checked nodes; if one fails (the registry changed since the check), it
// removes those this file added and reports the line.
func (w *Web) bulkApply(nodes []registry.Node, rows []BulkRow) (added []string, errs []LineError) {
	for i, n := range nodes {
		if _, err := w.opt.Store.AddNode(n); err != nil {
			for _, done := range added {
				if _, rerr := w.opt.Store.RemoveNode(done); rerr != nil {
					w.log.Error("web: bulk rollback", "node", done, "err", rerr)
				}
			}
			return nil, []LineError{{Line: rows[i].Line, Field: api.FieldOf(err), Message: err.Error() + " (nothing from this file was enrolled)"}}
		}
		added = append(added, n.Name)
	}
	return added, nil
}

// exportCSV writes the enrolled nodes in the bulk-enrollment format, so a file exported
// from one appliance enrolls the same nodes on another.
func (w *Web) exportCSV(wr http.ResponseWriter, r *http.Request, c *reqCtx) {
	nodes, err := w.opt.Store.Nodes()
	if err != nil {
		w.message(wr, r, c, http.StatusInternalServerError, "Error", err.Error())
		return
	}
	wr.Header().Set("Content-Type", "text/csv; charset=utf-8")
	wr.Header().Set("Content-Disposition", `attachment; filename="distonet-nodes.csv"`)
	wr.Header().Set("Cache-Control", "no-store")
	cw := csv.NewWriter(wr)
	_ = cw.Write(BulkColumns)
	for _, n := range nodes {
		size := ""
		if n.VolumeSize > 0 {
			size = formatSize(n.VolumeSize)
		}
		_ = cw.Write([]string{n.MAC, n.Name, n.Group, n.Image, n.Donate.Mode, n.Donate.Window, size})
	}
	cw.Flush()
}

// discoveredCSV writes the discovered MACs as a bulk-enrollment file with the other columns
// empty: fill names and images in a spreadsheet, then upload it on the bulk page.
func (w *Web) discoveredCSV(wr http.ResponseWriter, r *http.Request, c *reqCtx) {
	disc, err := w.opt.Store.DiscoveredMACs()
	if err != nil {
		w.message(wr, r, c, http.StatusInternalServerError, "Error", err.Error())
		return
	}
	// Power-on order (to the second the registry keeps), then by MAC.
	slices.SortFunc(disc, func(a, b registry.Discovered) int {
		return cmp.Or(a.FirstSeen.Compare(b.FirstSeen), cmp.Compare(a.MAC, b.MAC))
	})
	wr.Header().Set("Content-Type", "text/csv; charset=utf-8")
	wr.Header().Set("Content-Disposition", `attachment; filename="distonet-discovered.csv"`)
	wr.Header().Set("Cache-Control", "no-store")
	cw := csv.NewWriter(wr)
	_ = cw.Write(BulkColumns)
	for _, d := range disc {
		_ = cw.Write([]string{d.MAC, "", "", "", "none", "", ""})
	}
	cw.Flush()
}

type imageRow struct {
	ImageInfo
	Nodes int
}

type imagesData struct {
	Images    []imageRow
	Available bool
	Err       string
}

func (w *Web) imagesPage(wr http.ResponseWriter, r *http.Request, c *reqCtx) {
	d := imagesData{Available: w.opt.Images != nil}
	imgs, err := w.images()
	if err != nil {
		d.Err = err.Error()
	}
	use := map[string]int{}
	if nodes, err := w.opt.Store.Nodes(); err == nil {
		for _, n := range nodes {
			use[n.Image]++
		}
	}
	for _, i := range imgs {
		d.Images = append(d.Images, imageRow{ImageInfo: i, Nodes: use[i.Name]})
	}
	w.render(wr, r, http.StatusOK, "images", w.newPage(c, "Images", "images", d))
}

func (w *Web) poolPage(wr http.ResponseWriter, r *http.Request, c *reqCtx) {
	d, err := w.poolData()
	p := w.newPage(c, "Pool", "pool", struct {
		poolData
		Err string
	}{d, errString(err)})
	w.render(wr, r, http.StatusOK, "pool", p)
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
