// Package web is the appliance's admin web UI: login, the dashboard of nodes and boots, the
// enrollment of discovered machines (one by one or from a CSV file), node edit and removal,
// images and the donated-disk pool, with live updates over server-sent events. Pages are
// server-rendered from html/template files under templates/web (overridable from
// state_dir/templates/web, read at start); a little vanilla JavaScript only refreshes live
// regions and filters the node table.
//
// Routes (all but /login, /setup and /static/ need a session; POSTs need its CSRF token):
//
//	GET  /                          dashboard (?fragment=1: its live region only)
//	GET  /discovered                MACs seen at DHCP, each with an enrollment form
//	POST /discovered/{mac}/enroll   enroll one; /discovered/{mac}/forget drops it
//	GET  /discovered.csv            discovered MACs as a bulk file to fill in
//	GET  /enroll, POST /enroll      enroll by MAC
//	GET  /enroll/bulk, POST         bulk CSV: step=check previews, step=enroll (default) enrolls
//	GET  /nodes.csv                 enrolled nodes as a bulk file
//	GET  /nodes/{name}, POST        node page, edit
//	GET  /nodes/{name}/remove, POST confirm (type the name) and remove, deleting the volume
//	POST /nodes/{name}/volume       action=resize (size) or reset (confirm=name)
//	GET  /images, /pool             lists
//	GET  /events                    server-sent "change" events after each registry change
//	GET  /login, POST /login, POST /logout, GET /setup, POST /setup (first-run token)
//	/api/                           internal/api, when Options.API is set
//
// It leaves the JSON API to internal/api and the state to internal/registry. Security: a
// bcrypt admin password in state_dir (a new one ends every session), server-side sessions in
// HttpOnly SameSite=Strict cookies (Secure on TLS), a per-session CSRF token checked on every
// POST plus Go's cross-origin check, a per-IP limit on failed logins, html/template escaping
// and a Content-Security-Policy that allows scripts and styles from /static/ only. Sessions
// live in memory: a daemon restart logs everyone out.
package web

import (
	"bytes"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/distonet/distonet/donate/pool"
	"github.com/distonet/distonet/internal/api"
	"github.com/distonet/distonet/internal/registry"
	"github.com/distonet/distonet/templates"
)

// ImageInfo is an imported image as the UI lists it and offers it in enrollment forms.
type ImageInfo struct {
	Name      string
	Version   string    // current version (what /images/NAME exports)
	Kernel    string    // kernel release or file name
	SizeBytes int64     // rootfs size, 0 when unknown
	Imported  time.Time // when the current version was imported
}

// Options configure the web UI. Store is required; everything else has a default.
type Options struct {
	Store *registry.Store
	// API, when set, is mounted under /api/ and its Portal is shown on node pages.
	// The caller sets API.Session = (*Web).Session so the API accepts a logged-in browser.
	API *api.Server
	// StateDir holds admin.passwd, setup.token and templates/ overrides.
	StateDir string
	// Images lists imported images; nil means any image name is accepted as typed.
	Images func() ([]ImageInfo, error)
	// RemoveVolume deletes a removed node's overlay volume; nil falls back to API.RemoveVolume.
	RemoveVolume func(name string) error
	// Volume resets ("reset") or grows ("resize", to size bytes) a node's volume; nil falls
	// back to API.Volume, and without either the node page offers no volume actions.
	Volume func(name, action string, size int64) error
	// Pool, when set, gives the arrays (the plan joined with the pool head's last reports)
	// and the inventory as the pool head sees it; without it the pool page lists the
	// registry's disks only.
	Pool func() (pool.Status, error)
	Log  *slog.Logger     // default slog.Default()
	Now  func() time.Time // default time.Now

	// SessionTTL is a session's absolute lifetime (default 12h); SessionIdle its lifetime
	// without requests (default 2h).
	SessionTTL, SessionIdle time.Duration
	// LoginAttempts per LoginWindow per client IP (default 5 per minute).
	LoginAttempts int
	LoginWindow   time.Duration
	// MaxUpload bounds a bulk-enrollment CSV file (default 1 MiB).
	MaxUpload int64
	// Metrics registers the UI's Prometheus collectors (distonet_web_*) when set.
	Metrics prometheus.Registerer
	// SecureCookies marks cookies Secure even on plain HTTP requests (the UI behind a
	// TLS-terminating proxy); they are always Secure on a TLS connection.
	SecureCookies bool
}

// Web is the UI's HTTP handler.
type Web struct {
	opt      Options
	log      *slog.Logger
	now      func() time.Time
	key      []byte // HMAC key of login-form tokens, random per process
	sessions *sessions
	limiter  *loginLimiter
	pages    map[string]*template.Template
	static   http.Handler
	mux      *http.ServeMux
	handler  http.Handler // mux behind the cross-origin check
	cop      *http.CrossOriginProtection
	m        *metrics
	setupMu  sync.Mutex // one first-run setup at a time

	closeOnce sync.Once
	done      chan struct{} // closed by Close: ends event streams
}

// pageFiles are the page templates; each is parsed with layout.html and parts.html.
var pageFiles = []string{"dashboard", "discovered", "node", "nodenew", "remove", "bulk", "images", "pool", "login", "setup", "message"}

// New builds the UI. It fails when a template does not parse.
func New(opt Options) (*Web, error) {
	if opt.Store == nil {
		return nil, errors.New("web: Options.Store is required")
	}
	if opt.Log == nil {
		opt.Log = slog.Default()
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	if opt.SessionTTL <= 0 {
		opt.SessionTTL = 12 * time.Hour
	}
	if opt.SessionIdle <= 0 {
		opt.SessionIdle = 2 * time.Hour
	}
	if opt.LoginAttempts <= 0 {
		opt.LoginAttempts = 5
	}
	if opt.LoginWindow <= 0 {
		opt.LoginWindow = time.Minute
	}
	if opt.MaxUpload <= 0 {
		opt.MaxUpload = 1 << 20
	}
	w := &Web{
		opt: opt, log: opt.Log, now: opt.Now, key: []byte(randomToken(32)),
		sessions: &sessions{byID: map[string]*session{}, ttl: opt.SessionTTL, idle: opt.SessionIdle, now: opt.Now,
			pwStamp: func() string { return passwordStamp(opt.StateDir) }},
		limiter: &loginLimiter{max: opt.LoginAttempts, window: opt.LoginWindow, now: opt.Now, tries: map[string][]time.Time{}},
		pages:   map[string]*template.Template{},
		done:    make(chan struct{}),
	}
	m, err := newMetrics(opt.Metrics, w.sessions)
	if err != nil {
		return nil, fmt.Errorf("web metrics: %w", err)
	}
	w.m = m
	tfs := templates.Load(opt.StateDir)
	for _, p := range pageFiles {
		t, err := template.New(p).Funcs(w.funcs()).ParseFS(tfs, "web/layout.html", "web/parts.html", "web/"+p+".html")
		if err != nil {
			return nil, fmt.Errorf("web template %s: %w", p, err)
		}
		w.pages[p] = t
	}
	static, err := fs.Sub(tfs, "web/static")
	if err != nil {
		return nil, fmt.Errorf("web static assets: %w", err)
	}
	w.static = http.StripPrefix("/static/", http.FileServerFS(static))
	w.routes()
	return w, nil
}

// volumeFn and removeVolumeFn read the API's hooks at call time: the daemon may set them
// after building the UI.
func (w *Web) volumeFn() func(name, action string, size int64) error {
	if w.opt.Volume == nil && w.opt.API != nil {
		return w.opt.API.Volume
	}
	return w.opt.Volume
}

func (w *Web) removeVolumeFn() func(name string) error {
	if w.opt.RemoveVolume == nil && w.opt.API != nil {
		return w.opt.API.RemoveVolume
	}
	return w.opt.RemoveVolume
}

// Close ends the live event streams (an http.Server's Shutdown waits for them otherwise).
func (w *Web) Close() error {
	w.closeOnce.Do(func() { close(w.done) })
	return nil
}

func (w *Web) routes() {
	m := http.NewServeMux()
	m.HandleFunc("GET /login", w.loginPage)
	m.HandleFunc("POST /login", w.login)
	m.HandleFunc("POST /logout", w.authed(w.logout))
	m.HandleFunc("GET /setup", w.setupPage)
	m.HandleFunc("POST /setup", w.setup)
	m.HandleFunc("GET /static/", func(wr http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/") {
			http.NotFound(wr, r) // files only, no listings
			return
		}
		wr.Header().Set("Cache-Control", "max-age=300")
		w.static.ServeHTTP(wr, r)
	})

	m.HandleFunc("GET /favicon.ico", func(wr http.ResponseWriter, r *http.Request) {
		http.Redirect(wr, r, "/static/favicon.svg", http.StatusMovedPermanently)
	})

	m.HandleFunc("GET /{$}", w.authed(w.dashboard))
	m.HandleFunc("GET /discovered", w.authed(w.discovered))
	m.HandleFunc("GET /discovered.csv", w.authed(w.discoveredCSV))
	m.HandleFunc("POST /discovered/{mac}/enroll", w.authed(w.enrollDiscovered))
	m.HandleFunc("POST /discovered/{mac}/forget", w.authed(w.forgetDiscovered))
	m.HandleFunc("GET /nodes", func(wr http.ResponseWriter, r *http.Request) { http.Redirect(wr, r, "/", http.StatusSeeOther) })
	m.HandleFunc("GET /enroll", w.authed(w.newNodePage))
	m.HandleFunc("POST /enroll", w.authed(w.newNode))
	m.HandleFunc("GET /enroll/bulk", w.authed(w.bulkPage))
	m.HandleFunc("GET /nodes.csv", w.authed(w.exportCSV))
	m.HandleFunc("POST /enroll/bulk", w.authed(w.bulk))
	m.HandleFunc("GET /nodes/{name}", w.authed(w.nodePage))
	m.HandleFunc("POST /nodes/{name}", w.authed(w.editNode))
	m.HandleFunc("GET /nodes/{name}/remove", w.authed(w.removePage))
	m.HandleFunc("POST /nodes/{name}/remove", w.authed(w.removeNode))
	m.HandleFunc("GET /nodes/{name}/volume/reset", w.authed(w.resetPage))
	m.HandleFunc("POST /nodes/{name}/volume", w.authed(w.volume))
	m.HandleFunc("GET /images", w.authed(w.imagesPage))
	m.HandleFunc("GET /pool", w.authed(w.poolPage))
	m.HandleFunc("GET /events", w.authed(w.events))
	if w.opt.API != nil {
		m.Handle("/api/", w.opt.API.Handler())
	}
	m.HandleFunc("/", w.authed(func(wr http.ResponseWriter, r *http.Request, c *reqCtx) {
		w.message(wr, r, c, http.StatusNotFound, "Not found", "There is no page at "+r.URL.Path+".")
	}))
	w.mux = m
	// Defence in depth beside the tokens: a browser's cross-site POST (Sec-Fetch-Site or an
	// Origin that is not this host) is refused before any handler runs.
	cop := http.NewCrossOriginProtection()
	w.cop = cop
	cop.SetDenyHandler(http.HandlerFunc(func(wr http.ResponseWriter, r *http.Request) {
		w.log.Warn("web: cross-origin request refused", "path", r.URL.Path, "ip", clientIP(r), "origin", r.Header.Get("Origin"))
		http.Error(wr, "403 forbidden: cross-origin request", http.StatusForbidden)
	}))
	w.handler = cop.Handler(m)
}

// ServeHTTP serves every route with the UI's security headers.
func (w *Web) ServeHTTP(wr http.ResponseWriter, r *http.Request) {
	h := wr.Header()
	// Scripts and styles only from /static/: an injected tag would not run even if escaping failed.
	h.Set("Content-Security-Policy", "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "same-origin")
	if r.Method != http.MethodGet && r.Method != http.MethodHead && r.Body != nil {
		r.Body = http.MaxBytesReader(wr, r.Body, w.opt.MaxUpload+64<<10)
	}
	sw := &statusWriter{ResponseWriter: wr}
	w.handler.ServeHTTP(sw, r)
	w.m.observe(r, sw.code)
}

// Session reports whether r comes from a logged-in browser; for anything but GET/HEAD it also
// requires the session's CSRF token in the X-CSRF-Token header. Plug it into api.Server.Session.
func (w *Web) Session(r *http.Request) bool {
	_, sess, ok := w.sessions.get(r)
	if !ok {
		return false
	}
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		return true
	}
	if w.cop.Check(r) != nil {
		return false // a cross-site browser request, whatever it carries
	}
	tok := r.Header.Get(CSRFHeader)
	return tok != "" && validCSRFToken(tok, sess)
}

// reqCtx is what an authenticated handler knows about the request.
type reqCtx struct {
	id   string
	sess *session
}

// authed lets logged-in requests through: pages send others to /login, scripts get 401;
// every non-GET must carry the session's CSRF token (403 otherwise).
func (w *Web) authed(h func(http.ResponseWriter, *http.Request, *reqCtx)) http.HandlerFunc {
	return func(wr http.ResponseWriter, r *http.Request) {
		id, sess, ok := w.sessions.get(r)
		if !ok {
			if r.Method == http.MethodGet && r.URL.Query().Get("fragment") == "" && r.URL.Path != "/events" {
				if !HasPassword(w.opt.StateDir) {
					http.Redirect(wr, r, "/setup", http.StatusSeeOther)
					return
				}
				http.Redirect(wr, r, "/login?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
				return
			}
			wr.Header().Set("Cache-Control", "no-store")
			http.Error(wr, "401 unauthorized: log in at /login", http.StatusUnauthorized)
			return
		}
		c := &reqCtx{id: id, sess: sess}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			// ParseForm first: ParseMultipartForm hides its error behind ErrNotMultipart.
			err := r.ParseForm()
			if err == nil {
				err = r.ParseMultipartForm(w.opt.MaxUpload)
			}
			if err != nil && !errors.Is(err, http.ErrNotMultipart) {
				w.message(wr, r, c, http.StatusBadRequest, "Bad request", "The form could not be read: "+err.Error())
				return
			}
			if !validCSRF(r, sess) {
				w.log.Warn("web: request without a valid CSRF token refused", "path", r.URL.Path, "ip", clientIP(r))
				w.message(wr, r, c, http.StatusForbidden, "Request refused",
					"This form was not sent from a page of this session (missing or stale CSRF token). Reload the page and try again.")
				return
			}
		}
		h(wr, r, c)
	}
}

// nextRE is what a post-login redirect may look like: a path on this site. Browsers drop
// tabs and newlines and read '\\' as '/', so "/\t/evil.example" would leave the site.
var nextRE = regexp.MustCompile(`^/[A-Za-z0-9._~%/?=&:+-]*$`)

// safeNext keeps a post-login redirect on this site.
func safeNext(next string) string {
	if !nextRE.MatchString(next) || strings.HasPrefix(next, "//") {
		return "/"
	}
	return next
}

// page is what every template gets.
type page struct {
	Title    string
	Nav      string // highlighted menu entry
	CSRF     string
	Flash    string
	LoggedIn bool
	Waiting  int // discovered MACs, shown in the menu
	Now      time.Time
	D        any // the page's own data

	sess *session // whose flash the full page shows (a fragment leaves it for the page)
}

func (w *Web) newPage(c *reqCtx, title, nav string, d any) page {
	p := page{Title: title, Nav: nav, Now: w.now(), D: d}
	if c != nil {
		p.CSRF, p.LoggedIn = c.sess.csrf, true
		p.sess = c.sess
		if d, err := w.opt.Store.DiscoveredMACs(); err == nil {
			p.Waiting = len(d)
		}
	}
	return p
}

// render executes a page, or only its "live" block when ?fragment=1 (the live-update fetch).
func (w *Web) render(wr http.ResponseWriter, r *http.Request, status int, name string, p page) {
	t := w.pages[name]
	block := "layout"
	if r.URL.Query().Get("fragment") != "" && t.Lookup("live") != nil {
		block = "live"
	} else if p.sess != nil {
		p.Flash = w.sessions.takeFlash(p.sess)
	}
	var buf bytes.Buffer
	if err := t.ExecuteTemplate(&buf, block, p); err != nil {
		w.log.Error("web: render", "page", name, "err", err)
		http.Error(wr, "500 internal error: page could not be rendered (see the daemon's log)", http.StatusInternalServerError)
		return
	}
	wr.Header().Set("Content-Type", "text/html; charset=utf-8")
	wr.Header().Set("Cache-Control", "no-store")
	wr.WriteHeader(status)
	_, _ = wr.Write(buf.Bytes())
}

type messageData struct {
	Heading, Text string
}

func (w *Web) message(wr http.ResponseWriter, r *http.Request, c *reqCtx, status int, heading, text string) {
	w.render(wr, r, status, "message", w.newPage(c, heading, "", messageData{heading, text}))
}
