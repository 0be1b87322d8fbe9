package api

import (
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/distonet/distonet/internal/bootconfig"
	"github.com/distonet/distonet/internal/registry"
)

// BootConfigs renders the document a node fetches at boot (the appliance wiring knows the
// addresses and image paths).
type BootConfigs interface {
	BootConfig(n registry.Node) (bootconfig.Config, error)
}

var errNoPool = errors.New("the pool is not available on this appliance")

// Server serves /api/.
type Server struct {
	Store *registry.Store
	Boot  BootConfigs
	// AdminToken is the content of state_dir/admin.token.
	AdminToken string
	// Session, when set, accepts a logged-in web session (the web UI's cookie) for admin
	// routes that are safe from CSRF by construction: reads, and writes that carry the CSRF
	// header the web UI sends.
	Session func(r *http.Request) bool
	// Portal is the iSCSI portal (A.B.C.D:3260) shown with a node's secrets.
	Portal string
	// RemoveVolume deletes a node's overlay volume when the node is removed.
	RemoveVolume func(name string) error
	// Volume resets ("reset") or grows ("resize", size in bytes) a node's volume.
	Volume func(name, action string, size int64) error
	// Images lists the image store (name, current version, versions); nil answers 503.
	Images func() (any, error)
	// Pool connects the pool routes; unset answers 503.
	Pool PoolHooks
	// InUse reports whether an assembled pool array still uses a node's donated disk, so a
	// withdrawing agent waits for the pool head to release it. nil: nothing is in use.
	InUse func(node, address string) bool
	// OnEvent is told of every boot stage a node reports (metrics, live UI).
	OnEvent func(node string, ev bootconfig.Event)
	Log     *slog.Logger
}

// Handler returns the routes.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/nodes", s.admin(s.listNodes))
	mux.HandleFunc("POST /api/nodes", s.admin(s.addNode))
	mux.HandleFunc("GET /api/nodes/{name}", s.admin(s.showNode))
	mux.HandleFunc("PUT /api/nodes/{name}", s.admin(s.editNode))
	mux.HandleFunc("DELETE /api/nodes/{name}", s.admin(s.removeNode))
	mux.HandleFunc("GET /api/nodes/{name}/timeline", s.admin(s.timeline))
	mux.HandleFunc("POST /api/nodes/{name}/volume", s.admin(s.changeVolume))
	mux.HandleFunc("GET /api/discovered", s.admin(s.listDiscovered))
	mux.HandleFunc("GET /api/images", s.admin(s.listImages))
	mux.HandleFunc("DELETE /api/discovered/{mac}", s.admin(s.forgetDiscovered))
	mux.HandleFunc("GET "+bootconfig.ConfigPath, s.nodeAuth(s.bootConfig))
	mux.HandleFunc("POST "+bootconfig.EventPath, s.nodeAuth(s.bootEvent))
	s.agentRoutes(mux)
	s.poolRoutes(mux)
	mux.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		writeErr(w, http.StatusNotFound, "", fmt.Errorf("no route %s %s", r.Method, r.URL.Path))
	})
	return mux
}

func bearer(r *http.Request) string {
	h := r.Header.Get("Authorization")
	if tok, ok := strings.CutPrefix(h, "Bearer "); ok {
		return strings.TrimSpace(tok)
	}
	return ""
}

// IsAdmin reports whether the request carries the admin token or a web session.
func (s *Server) IsAdmin(r *http.Request) bool {
	if tok := bearer(r); tok != "" && s.AdminToken != "" {
		return subtle.ConstantTimeCompare([]byte(tok), []byte(s.AdminToken)) == 1
	}
	return s.Session != nil && s.Session(r)
}

func (s *Server) admin(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !s.IsAdmin(r) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="distonet"`)
			writeErr(w, http.StatusUnauthorized, "", errors.New("log in, or send Authorization: Bearer <state_dir/admin.token>"))
			return
		}
		h(w, r)
	}
}

func (s *Server) nodeAuth(h func(http.ResponseWriter, *http.Request, registry.Node)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		n, ok := s.Store.NodeByToken(bearer(r))
		if !ok {
			writeErr(w, http.StatusUnauthorized, "", errors.New("unknown or expired node token"))
			return
		}
		h(w, r, n)
	}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func writeErr(w http.ResponseWriter, code int, field string, err error) {
	writeJSON(w, code, Error{Error: err.Error(), Field: field})
}

// statusOf maps registry errors to HTTP codes.
func statusOf(err error) int {
	switch {
	case errors.Is(err, registry.ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, registry.ErrExists):
		return http.StatusConflict
	default:
		return http.StatusBadRequest
	}
}

// FieldOf names the form field an enrollment error is about, so the UI can show it beside it;
// "" when no single field owns it.
func FieldOf(err error) string {
	var fe *registry.FieldError
	if errors.As(err, &fe) {
		return fe.Field
	}
	return ""
}

func (s *Server) listNodes(w http.ResponseWriter, r *http.Request) {
	views, err := ListViews(s.Store, s.Portal)
	if err != nil {
		writeErr(w, http.StatusInternalServerError, "", err)
		return
	}
	writeJSON(w, http.StatusOK, views)
}

// ListViews lists enrolled nodes then discovered MACs (the CLI's local path uses it too).
func ListViews(st *registry.Store, portal string) ([]NodeView, error) {
	nodes, err := st.Nodes()
	if err != nil {
		return nil, err
	}
	views := make([]NodeView, 0, len(nodes))
	for _, n := range nodes {
		tl, err := st.Timeline(n.Name)
		if err != nil {
			return nil, err
		}
		views = append(views, ViewOf(n, tl, portal, false))
	}
	disc, err := st.DiscoveredMACs()
	if err != nil {
		return nil, err
	}
	for _, d := range disc {
		views = append(views, ViewOfDiscovered(d))
	}
	return views, nil
}

func (s *Server) addNode(w http.ResponseWriter, r *http.Request) {
	var req NodeRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&req); err != nil {
		writeErr(w, http.StatusBadRequest, "", fmt.Errorf("body: %w", err))
		return
	}
	n, err := s.Store.AddNode(req.Node())
	if err != nil {
		writeErr(w, statusOf(err), FieldOf(err), err)
		return
	}
	s.Log.Info("node enrolled", "node", n.Name, "mac", n.MAC, "image", n.Image, "via", "api")
	writeJSON(w, http.StatusCreated, ViewOf(n, registry.Timeline{}, s.Portal, false))
}

func (s *Server) showNode(w http.ResponseWriter, r *http.Request) {
	n, err := s.Store.Node(r.PathValue("name"))
	if err != nil {
		writeErr(w, statusOf(err), "", err)
		return
	}
	tl, _ := s.Store.Timeline(n.Name)
	// Secrets only for the admin token: a browser session never needs them.
	secrets := r.URL.Query().Get("secrets") == "1" && bearer(r) != ""
	writeJSON(w, http.StatusOK, ViewOf(n, tl, s.Portal, secrets))
}

func (s *Server) editNode(w http.ResponseWriter, r *http.Request) {
	var req NodeRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&req); err != nil {
		writeErr(w, http.StatusBadRequest, "", fmt.Errorf("body: %w", err))
		return
	}
	n, err := s.Store.UpdateNode(r.PathValue("name"), func(n *registry.Node) error {
		n.Image, n.Group, n.Role, n.Donate, n.VolumeSize, n.IP = req.Image, req.Group, req.Role, req.Donate, req.VolumeSize, req.IP
		return nil
	})
	if err != nil {
		writeErr(w, statusOf(err), FieldOf(err), err)
		return
	}
	writeJSON(w, http.StatusOK, ViewOf(n, registry.Timeline{}, s.Portal, false))
}

func (s *Server) removeNode(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if err := RemoveNode(s.Store, name, s.RemoveVolume); err != nil {
		writeErr(w, statusOf(err), "", err)
		return
	}
	s.Log.Info("node removed", "node", name, "via", "api")
	writeJSON(w, http.StatusOK, map[string]string{"removed": name})
}

// RemoveNode removes a node from the registry, then its volume (whose data is gone).
func RemoveNode(st *registry.Store, name string, removeVolume func(string) error) error {
	if _, err := st.RemoveNode(name); err != nil {
		return err
	}
	if removeVolume != nil {
		if err := removeVolume(name); err != nil {
			return fmt.Errorf("node %s removed, but its volume was not: %w", name, err)
		}
	}
	return nil
}

func (s *Server) timeline(w http.ResponseWriter, r *http.Request) {
	tl, err := s.Store.Timeline(r.PathValue("name"))
	if err != nil {
		writeErr(w, http.StatusInternalServerError, "", err)
		return
	}
	writeJSON(w, http.StatusOK, tl)
}

func (s *Server) listDiscovered(w http.ResponseWriter, r *http.Request) {
	d, err := s.Store.DiscoveredMACs()
	if err != nil {
		writeErr(w, http.StatusInternalServerError, "", err)
		return
	}
	out := make([]NodeView, 0, len(d))
	for _, x := range d {
		out = append(out, ViewOfDiscovered(x))
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) forgetDiscovered(w http.ResponseWriter, r *http.Request) {
	if err := s.Store.ForgetDiscovered(r.PathValue("mac")); err != nil {
		writeErr(w, http.StatusBadRequest, "mac", err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"forgotten": r.PathValue("mac")})
}

func (s *Server) bootConfig(w http.ResponseWriter, r *http.Request, n registry.Node) {
	if s.Boot == nil {
		writeErr(w, http.StatusServiceUnavailable, "", errors.New("boot configs not available"))
		return
	}
	cfg, err := s.Boot.BootConfig(n)
	if err != nil {
		s.Log.Error("boot config", "node", n.Name, "err", err)
		writeErr(w, http.StatusInternalServerError, "", err)
		return
	}
	writeJSON(w, http.StatusOK, cfg)
}

func (s *Server) bootEvent(w http.ResponseWriter, r *http.Request, n registry.Node) {
	var ev bootconfig.Event
	if err := json.NewDecoder(io.LimitReader(r.Body, 64<<10)).Decode(&ev); err != nil {
		writeErr(w, http.StatusBadRequest, "", fmt.Errorf("event: %w", err))
		return
	}
	if ev.Stage == "" || len(ev.Stage) > 32 || len(ev.Message) > 1024 {
		writeErr(w, http.StatusBadRequest, "stage", errors.New("event: stage required (≤ 32 bytes), message ≤ 1024 bytes"))
		return
	}
	// The appliance's clock times the stages: a node's clock may be anything at boot.
	ev.Time = time.Now().UTC()
	// The node's address as the appliance sees it: the event comes from the booted node.
	ip, _, _ := net.SplitHostPort(r.RemoteAddr)
	if err := s.Store.RecordStage(n.Name, registry.Stage{Stage: ev.Stage, OK: ev.OK, Message: ev.Message, Time: ev.Time}, ip); err != nil {
		writeErr(w, http.StatusInternalServerError, "", err)
		return
	}
	s.Log.Info("boot stage", "node", n.Name, "stage", ev.Stage, "ok", ev.OK, "msg", ev.Message)
	if s.OnEvent != nil {
		s.OnEvent(n.Name, ev)
	}
	w.WriteHeader(http.StatusNoContent)
}

// VolumeRequest is the body of POST /api/nodes/{name}/volume.
type VolumeRequest struct {
	Action string `json:"action"` // reset | resize
	Size   int64  `json:"size,omitempty"`
}

func (s *Server) changeVolume(w http.ResponseWriter, r *http.Request) {
	var req VolumeRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, 4096)).Decode(&req); err != nil {
		writeErr(w, http.StatusBadRequest, "", fmt.Errorf("body: %w", err))
		return
	}
	if s.Volume == nil {
		writeErr(w, http.StatusServiceUnavailable, "", errors.New("volumes are not managed here"))
		return
	}
	if err := s.Volume(r.PathValue("name"), req.Action, req.Size); err != nil {
		writeErr(w, statusOf(err), "", err)
		return
	}
	s.Log.Info("node volume changed", "node", r.PathValue("name"), "action", req.Action, "size", req.Size)
	writeJSON(w, http.StatusOK, map[string]string{"volume": req.Action})
}

func (s *Server) listImages(w http.ResponseWriter, r *http.Request) {
	if s.Images == nil {
		writeErr(w, http.StatusServiceUnavailable, "", errors.New("no image store"))
		return
	}
	v, err := s.Images()
	if err != nil {
		writeErr(w, http.StatusInternalServerError, "", err)
		return
	}
	writeJSON(w, http.StatusOK, v)
}
