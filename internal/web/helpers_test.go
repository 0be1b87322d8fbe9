package web

import (
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/distonet/distonet/internal/api"
	"github.com/distonet/distonet/internal/registry"
)

const testPassword = "correct horse battery"

func TestMain(m *testing.M) {
	bcryptCost = bcrypt.MinCost // the cost is bcrypt's business; the tests check the flows
	os.Exit(m.Run())
}

// clock is a settable time source for expiry and rate-limit tests.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// env is a UI over a temporary registry, served on 127.0.0.1.
type env struct {
	t         *testing.T
	web       *Web
	store     *registry.Store
	api       *api.Server
	dir       string
	srv       *httptest.Server
	clock     *clock
	removed   []string // volumes RemoveVolume was asked to delete
	volumeOps []string // Volume calls: "name action size"
	removeMu  sync.Mutex
	images    []ImageInfo
}

type envOpt func(*Options)

func newEnv(t *testing.T, opts ...envOpt) *env {
	t.Helper()
	dir := t.TempDir()
	st, err := registry.Open(dir, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	e := &env{t: t, store: st, dir: dir, clock: &clock{t: time.Now()}}
	e.images = []ImageInfo{
		{Name: "debian-12", Version: "v3", Kernel: "6.1.0-28-amd64", SizeBytes: 1 << 30, Imported: time.Date(2026, 11, 20, 9, 0, 0, 0, time.UTC)},
		{Name: "alpine-3.20", Version: "v1", Kernel: "6.6.58-0-lts", SizeBytes: 180 << 20, Imported: time.Date(2026, 11, 21, 9, 0, 0, 0, time.UTC)},
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(testWriter{t}, nil))
	}
	e.api = &api.Server{Store: st, AdminToken: "admintoken", Portal: "10.9.0.1:3260", Log: log}
	o := Options{
		Store: st, API: e.api, StateDir: dir, Log: log, Now: e.clock.Now,
		Images: func() ([]ImageInfo, error) { return e.images, nil },
		Volume: func(name, action string, size int64) error {
			e.removeMu.Lock()
			defer e.removeMu.Unlock()
			if action == "resize" && size < 1<<30 {
				return fmt.Errorf("resize %s: shrinking from %d to %d is not supported", name, int64(1<<30), size)
			}
			e.volumeOps = append(e.volumeOps, fmt.Sprintf("%s %s %d", name, action, size))
			return nil
		},
		RemoveVolume: func(name string) error {
			e.removeMu.Lock()
			e.removed = append(e.removed, name)
			e.removeMu.Unlock()
			return nil
		},
	}
	for _, f := range opts {
		f(&o)
	}
	w, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	e.api.Session = w.Session
	e.web = w
	e.srv = httptest.NewServer(w)
	t.Cleanup(func() {
		w.Close()
		e.srv.Close()
	})
	return e
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func (e *env) setPassword() {
	e.t.Helper()
	if err := SetPassword(e.dir, []byte(testPassword)); err != nil {
		e.t.Fatal(err)
	}
}

// client returns a browser-like client: cookie jar, no automatic redirects.
func (e *env) client() *http.Client {
	jar, _ := cookiejar.New(nil)
	return &http.Client{Jar: jar, Timeout: 30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

type resp struct {
	code int
	body string
	hdr  http.Header
}

func (e *env) do(c *http.Client, method, path string, form url.Values, hdr ...string) resp {
	e.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, e.srv.URL+path, body)
	if err != nil {
		e.t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	r, err := c.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer r.Body.Close()
	b, _ := io.ReadAll(r.Body)
	return resp{code: r.StatusCode, body: string(b), hdr: r.Header}
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// csrfOf fetches a page and returns the CSRF token of its forms.
func (e *env) csrfOf(c *http.Client, path string) string {
	e.t.Helper()
	r := e.do(c, "GET", path, nil)
	m := csrfRE.FindStringSubmatch(r.body)
	if r.code != 200 || m == nil {
		e.t.Fatalf("GET %s: %d, no csrf token in:\n%s", path, r.code, r.body)
	}
	return m[1]
}

func (e *env) tryLogin(c *http.Client, pw string) resp {
	e.t.Helper()
	tok := e.csrfOf(c, "/login")
	return e.do(c, "POST", "/login", url.Values{"csrf": {tok}, "password": {pw}, "next": {"/"}})
}

// login returns a logged-in client and its session's CSRF token.
func (e *env) login() (*http.Client, string) {
	e.t.Helper()
	c := e.client()
	if r := e.tryLogin(c, testPassword); r.code != http.StatusSeeOther {
		e.t.Fatalf("login: %d %s", r.code, r.body)
	}
	return c, e.csrfOf(c, "/")
}
