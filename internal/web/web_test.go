package web

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"golang.org/x/crypto/bcrypt"
	"golang.org/x/net/html"

	"github.com/distonet/distonet/internal/registry"
)

func TestUnauthenticatedRequestsAreRefused(t *testing.T) {
	e := newEnv(t)
	e.setPassword()
	c := e.client()
	tests := []struct {
		method, path string
		wantCode     int
		wantLocation string
	}{
		{"GET", "/", http.StatusSeeOther, "/login?next=%2F"},
		{"GET", "/discovered", http.StatusSeeOther, "/login?next=%2Fdiscovered"},
		{"GET", "/nodes/n1", http.StatusSeeOther, "/login?next=%2Fnodes%2Fn1"},
		{"GET", "/pool", http.StatusSeeOther, "/login?next=%2Fpool"},
		{"GET", "/images", http.StatusSeeOther, "/login?next=%2Fimages"},
		{"GET", "/enroll/bulk", http.StatusSeeOther, "/login?next=%2Fenroll%2Fbulk"},
		{"GET", "/?fragment=1", http.StatusUnauthorized, ""},
		{"GET", "/events", http.StatusUnauthorized, ""},
		{"POST", "/enroll", http.StatusUnauthorized, ""},
		{"POST", "/discovered/52:54:00:00:00:01/enroll", http.StatusUnauthorized, ""},
		{"POST", "/nodes/n1/remove", http.StatusUnauthorized, ""},
		{"POST", "/enroll/bulk", http.StatusUnauthorized, ""},
		{"GET", "/api/nodes", http.StatusUnauthorized, ""},
		{"DELETE", "/api/nodes/n1", http.StatusUnauthorized, ""},
	}
	for _, tc := range tests {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			r := e.do(c, tc.method, tc.path, url.Values{"name": {"n1"}})
			if r.code != tc.wantCode || r.hdr.Get("Location") != tc.wantLocation {
				t.Errorf("got %d Location %q, want %d %q", r.code, r.hdr.Get("Location"), tc.wantCode, tc.wantLocation)
			}
		})
	}
	// A forged or stale cookie is no better.
	u, _ := url.Parse(e.srv.URL)
	c.Jar.SetCookies(u, []*http.Cookie{{Name: sessionCookie, Value: "forged"}})
	if r := e.do(c, "GET", "/?fragment=1", nil); r.code != http.StatusUnauthorized {
		t.Errorf("forged session cookie: %d", r.code)
	}
	// Static assets are public (the login page needs them).
	if r := e.do(c, "GET", "/static/style.css", nil); r.code != http.StatusOK || !strings.HasPrefix(r.hdr.Get("Content-Type"), "text/css") {
		t.Errorf("style.css: %d %q", r.code, r.hdr.Get("Content-Type"))
	}
	if r := e.do(c, "GET", "/static/", nil); r.code != http.StatusNotFound {
		t.Errorf("static directory listing: %d", r.code)
	}
}

func TestPostWithoutCSRFTokenIsRefused(t *testing.T) {
	e := newEnv(t)
	e.setPassword()
	if err := e.store.SeeMAC(registry.Discovered{MAC: "52:54:00:00:00:01"}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.store.AddNode(registry.Node{Name: "keep", MAC: "52:54:00:00:00:02", Image: "debian-12"}); err != nil {
		t.Fatal(err)
	}
	c, tok := e.login()
	other, otherTok := e.login() // another session's valid token
	_ = other
	enroll := url.Values{"name": {"n1"}, "image": {"debian-12"}}
	tests := []struct {
		name, path string
		form       url.Values
	}{
		{"enroll discovered", "/discovered/52:54:00:00:00:01/enroll", enroll},
		{"enroll by MAC", "/enroll", url.Values{"mac": {"52:54:00:00:00:03"}, "name": {"n3"}, "image": {"debian-12"}}},
		{"edit", "/nodes/keep", url.Values{"image": {"alpine-3.20"}}},
		{"remove", "/nodes/keep/remove", url.Values{"confirm": {"keep"}}},
		{"forget", "/discovered/52:54:00:00:00:01/forget", url.Values{}},
		{"bulk", "/enroll/bulk", url.Values{"csv": {"mac,name,image\n52:54:00:00:00:04,n4,debian-12\n"}}},
		{"logout", "/logout", url.Values{}},
	}
	for _, tc := range tests {
		for _, variant := range []struct {
			name string
			tok  string
		}{{"no token", ""}, {"wrong token", "x" + tok}, {"other session's token", otherTok}} {
			t.Run(tc.name+"/"+variant.name, func(t *testing.T) {
				f := url.Values{}
				for k, v := range tc.form {
					f[k] = v
				}
				if variant.tok != "" {
					f.Set("csrf", variant.tok)
				}
				r := e.do(c, "POST", tc.path, f)
				if r.code != http.StatusForbidden || !strings.Contains(r.body, "CSRF") {
					t.Errorf("got %d, want 403 naming the CSRF token:\n%s", r.code, r.body)
				}
			})
		}
	}
	// Nothing changed.
	nodes, _ := e.store.Nodes()
	if len(nodes) != 1 || nodes[0].Image != "debian-12" {
		t.Errorf("refused requests changed the registry: %+v", nodes)
	}
	if d, _ := e.store.DiscoveredMACs(); len(d) != 1 {
		t.Errorf("refused forget changed the registry: %+v", d)
	}
	// The session survived the refused logout and the right token works.
	if r := e.do(c, "POST", "/nodes/keep", url.Values{"csrf": {tok}, "image": {"alpine-3.20"}, "donate": {"none"}}); r.code != http.StatusSeeOther {
		t.Errorf("edit with the right token: %d\n%s", r.code, r.body)
	}
}

func TestAPIAcceptsSessionWritesOnlyWithCSRFHeader(t *testing.T) {
	e := newEnv(t)
	e.setPassword()
	if _, err := e.store.AddNode(registry.Node{Name: "n1", MAC: "52:54:00:00:00:01", Image: "debian-12"}); err != nil {
		t.Fatal(err)
	}
	c, tok := e.login()
	if r := e.do(c, "GET", "/api/nodes", nil); r.code != http.StatusOK || !strings.Contains(r.body, `"name": "n1"`) {
		t.Errorf("API read with session: %d %s", r.code, r.body)
	}
	if r := e.do(c, "DELETE", "/api/nodes/n1", nil); r.code != http.StatusUnauthorized {
		t.Errorf("API write with session, no CSRF header: %d, want 401", r.code)
	}
	if r := e.do(c, "DELETE", "/api/nodes/n1", nil, CSRFHeader, "wrong"); r.code != http.StatusUnauthorized {
		t.Errorf("API write with a wrong CSRF header: %d, want 401", r.code)
	}
	if _, err := e.store.Node("n1"); err != nil {
		t.Fatalf("refused API write removed the node: %v", err)
	}
	if r := e.do(c, "DELETE", "/api/nodes/n1", nil, CSRFHeader, tok, "Sec-Fetch-Site", "cross-site"); r.code != http.StatusForbidden {
		t.Errorf("cross-site API write with session and CSRF header: %d, want 403", r.code)
	}
	// Session refuses it by itself too (the daemon mounts /api/ beside the UI, not behind it).
	req := httptest.NewRequest("DELETE", "/api/nodes/n1", nil)
	for _, ck := range c.Jar.Cookies(mustURL(t, e.srv.URL)) {
		req.AddCookie(ck)
	}
	req.Header.Set(CSRFHeader, tok)
	if !e.web.Session(req) {
		t.Error("Session refuses a same-origin write with the CSRF header")
	}
	req.Header.Set("Origin", "http://evil.example")
	if e.web.Session(req) {
		t.Error("Session accepts a cross-origin write")
	}
	if r := e.do(c, "DELETE", "/api/nodes/n1", nil, CSRFHeader, tok); r.code != http.StatusOK {
		t.Errorf("API write with session and CSRF header: %d %s", r.code, r.body)
	}
	if _, err := e.store.Node("n1"); err == nil {
		t.Error("node not removed")
	}
}

func TestLoginRateLimit(t *testing.T) {
	e := newEnv(t)
	e.setPassword()
	c := e.client()
	for i := 0; i < 5; i++ {
		if r := e.tryLogin(c, "wrong"); r.code != http.StatusUnauthorized || !strings.Contains(r.body, "Wrong password") {
			t.Fatalf("attempt %d: %d", i+1, r.code)
		}
	}
	// The sixth attempt is refused before the password is even checked: the right one too.
	r := e.tryLogin(c, testPassword)
	if r.code != http.StatusTooManyRequests || !strings.Contains(r.body, "Too many failed attempts from 127.0.0.1") || r.hdr.Get("Retry-After") == "" {
		t.Fatalf("sixth attempt: %d Retry-After %q\n%s", r.code, r.hdr.Get("Retry-After"), r.body)
	}
	// Another address is not affected (the limit is per client IP).
	form := url.Values{"csrf": {e.web.loginToken("nonce-from-elsewhere")}, "password": {testPassword}}
	req := httptest.NewRequest("POST", "/login", strings.NewReader(form.Encode()))
	req.RemoteAddr = "192.0.2.7:40000"
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.AddCookie(&http.Cookie{Name: loginCookie, Value: "nonce-from-elsewhere"})
	rec := httptest.NewRecorder()
	e.web.ServeHTTP(rec, req)
	if rec.Code != http.StatusSeeOther {
		t.Errorf("login from another address: %d", rec.Code)
	}
	// A minute later the address may try again.
	e.clock.Add(61 * time.Second)
	if r := e.tryLogin(c, testPassword); r.code != http.StatusSeeOther {
		t.Errorf("after the window: %d\n%s", r.code, r.body)
	}
}

func TestLoginFormNeedsItsToken(t *testing.T) {
	e := newEnv(t)
	e.setPassword()
	c := e.client()
	e.csrfOf(c, "/login") // sets the nonce cookie
	r := e.do(c, "POST", "/login", url.Values{"password": {testPassword}})
	if r.code != http.StatusForbidden {
		t.Errorf("login without the form token: %d", r.code)
	}
	if r := e.do(c, "GET", "/?fragment=1", nil); r.code != http.StatusUnauthorized {
		t.Errorf("refused login still logged in: %d", r.code)
	}
}

func TestSessionCookie(t *testing.T) {
	for _, tlsOn := range []bool{false, true} {
		t.Run(map[bool]string{false: "http", true: "https"}[tlsOn], func(t *testing.T) {
			e := newEnv(t)
			e.setPassword()
			form := url.Values{"csrf": {e.web.loginToken("n0nce-n0nce-n0nce")}, "password": {testPassword}}
			req := httptest.NewRequest("POST", "/login", strings.NewReader(form.Encode()))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			req.AddCookie(&http.Cookie{Name: loginCookie, Value: "n0nce-n0nce-n0nce"})
			if tlsOn {
				req.TLS = &tls.ConnectionState{}
			}
			rec := httptest.NewRecorder()
			e.web.ServeHTTP(rec, req)
			var sess *http.Cookie
			for _, ck := range rec.Result().Cookies() {
				if ck.Name == sessionCookie {
					sess = ck
				}
			}
			if sess == nil {
				t.Fatalf("no session cookie: %d %v", rec.Code, rec.Result().Header)
			}
			if !sess.HttpOnly || sess.SameSite != http.SameSiteStrictMode || sess.Secure != tlsOn || len(sess.Value) < 40 {
				t.Errorf("session cookie %+v: want HttpOnly, SameSite=Strict, Secure=%v, a long random id", sess, tlsOn)
			}
		})
	}
}

func TestSessionExpires(t *testing.T) {
	e := newEnv(t)
	e.setPassword()
	c, _ := e.login()
	e.clock.Add(90 * time.Minute)
	if r := e.do(c, "GET", "/?fragment=1", nil); r.code != http.StatusOK {
		t.Fatalf("within the idle time: %d", r.code)
	}
	e.clock.Add(2*time.Hour + time.Minute)
	if r := e.do(c, "GET", "/?fragment=1", nil); r.code != http.StatusUnauthorized {
		t.Errorf("after the idle time: %d", r.code)
	}
	// Absolute lifetime: active all along, still out after 12 h.
	c, _ = e.login()
	for i := 0; i < 13; i++ {
		e.clock.Add(time.Hour)
		e.do(c, "GET", "/?fragment=1", nil)
	}
	if r := e.do(c, "GET", "/?fragment=1", nil); r.code != http.StatusUnauthorized {
		t.Errorf("after the session lifetime: %d", r.code)
	}
}

func TestLogoutEndsSession(t *testing.T) {
	e := newEnv(t)
	e.setPassword()
	c, tok := e.login()
	jar := c.Jar.Cookies(mustURL(t, e.srv.URL))
	if r := e.do(c, "POST", "/logout", url.Values{"csrf": {tok}}); r.code != http.StatusSeeOther {
		t.Fatalf("logout: %d", r.code)
	}
	// Replaying the old cookie does not work either: the session is gone server-side.
	replay := e.client()
	replay.Jar.SetCookies(mustURL(t, e.srv.URL), jar)
	if r := e.do(replay, "GET", "/?fragment=1", nil); r.code != http.StatusUnauthorized {
		t.Errorf("old session cookie after logout: %d", r.code)
	}
}

func mustURL(t *testing.T, s string) *url.URL {
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

var errDiv = regexp.MustCompile(`<div class="err" role="alert">([^<]*)</div>`)

// fieldErrors maps element ids to the error shown after the element and before the next
// element with an id: the error beside that field.
func fieldErrors(body string) map[string]string {
	out := map[string]string{}
	chunks := strings.Split(body, ` id="`)
	for _, ch := range chunks[1:] {
		id, rest, _ := strings.Cut(ch, `"`)
		if m := errDiv.FindStringSubmatch(rest); m != nil {
			out[id] = m[1]
		}
	}
	return out
}

func TestScriptNameRejectedBesideField(t *testing.T) {
	e := newEnv(t)
	e.setPassword()
	if err := e.store.SeeMAC(registry.Discovered{MAC: "52:54:00:00:00:01"}); err != nil {
		t.Fatal(err)
	}
	c, tok := e.login()
	const evil = `<script>alert(1)</script>`
	r := e.do(c, "POST", "/discovered/52:54:00:00:00:01/enroll", url.Values{"csrf": {tok}, "name": {evil}, "image": {"debian-12"}, "donate": {"none"}})
	if r.code != http.StatusUnprocessableEntity {
		t.Fatalf("got %d, want 422", r.code)
	}
	if strings.Contains(r.body, evil) {
		t.Fatalf("the name is echoed unescaped:\n%s", r.body)
	}
	errs := fieldErrors(r.body)
	got := errs["m525400000001-name"]
	want := `name &#34;&lt;script&gt;alert(1)&lt;/script&gt;&#34;: want a hostname label`
	if !strings.HasPrefix(got, want) {
		t.Errorf("error beside the name field = %q, want it to start with %q (all: %v)", got, want, errs)
	}
	if len(errs) != 1 {
		t.Errorf("errors shown beside other fields too: %v", errs)
	}
	if !strings.Contains(r.body, `value="&lt;script&gt;alert(1)&lt;/script&gt;"`) {
		t.Error("the typed name is not kept (escaped) in the field")
	}
	if nodes, _ := e.store.Nodes(); len(nodes) != 0 {
		t.Errorf("enrolled: %+v", nodes)
	}
}

func TestEnrollFieldErrors(t *testing.T) {
	e := newEnv(t)
	e.setPassword()
	if _, err := e.store.AddNode(registry.Node{Name: "taken", MAC: "52:54:00:00:00:99", Image: "debian-12"}); err != nil {
		t.Fatal(err)
	}
	c, tok := e.login()
	good := url.Values{"mac": {"52:54:00:00:00:01"}, "name": {"n1"}, "image": {"debian-12"}, "donate": {"aoe"}, "window": {"20:00-07:00"}, "volume_size": {"20G"}}
	tests := []struct {
		name string
		set  map[string]string
		want map[string]string // element id -> start of the error beside it
	}{
		{"bad mac", map[string]string{"mac": "52:54:00:01"}, map[string]string{"f-mac": "mac &#34;52:54:00:01&#34;: want an Ethernet address"}},
		{"multicast mac", map[string]string{"mac": "01:00:5e:00:00:01"}, map[string]string{"f-mac": "mac &#34;01:00:5e:00:00:01&#34;: a multicast address"}},
		{"upper-case name", map[string]string{"name": "N1"}, map[string]string{"f-name": "name &#34;N1&#34;: want a hostname label"}},
		{"taken name", map[string]string{"name": "taken"}, map[string]string{"f-name": "node taken: name already enrolled"}},
		{"taken mac", map[string]string{"mac": "52:54:00:00:00:99"}, map[string]string{"f-mac": "node n1: mac 52:54:00:00:00:99 already enrolled as taken"}},
		{"unknown image", map[string]string{"image": "nope"}, map[string]string{"f-image": "image &#34;nope&#34;: not imported"}},
		{"no image", map[string]string{"image": ""}, map[string]string{"f-image": "image: required"}},
		{"bad donate", map[string]string{"donate": "nbd"}, map[string]string{"f-donate": "donate &#34;nbd&#34;: want none, aoe or iscsi"}},
		{"bad window", map[string]string{"window": "20:00-24:00"}, map[string]string{"f-window": "window &#34;20:00-24:00&#34;: want HH:MM-HH:MM"}},
		{"bad size", map[string]string{"volume_size": "lots"}, map[string]string{"f-volume_size": "volume size &#34;lots&#34;: want a size"}},
		{"bad group and ip", map[string]string{"group": "Room 1", "ip": "10.0.0"}, map[string]string{"f-group": "group: name &#34;Room 1&#34;", "f-ip": "ip &#34;10.0.0&#34;: want an IPv4 address"}},
		{"bad role", map[string]string{"role": "king"}, map[string]string{"f-role": "role &#34;king&#34;: want pool-head or nothing"}},
		{"all at once", map[string]string{"name": "-", "window": "x", "volume_size": "-1"},
			map[string]string{"f-name": "name", "f-window": "window", "f-volume_size": "volume size"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := url.Values{"csrf": {tok}}
			for k, v := range good {
				f[k] = v
			}
			for k, v := range tc.set {
				f.Set(k, v)
			}
			r := e.do(c, "POST", "/enroll", f)
			if r.code != http.StatusUnprocessableEntity {
				t.Fatalf("got %d, want 422", r.code)
			}
			got := fieldErrors(r.body)
			for id, prefix := range tc.want {
				if !strings.HasPrefix(got[id], prefix) {
					t.Errorf("beside %s: %q, want %q…", id, got[id], prefix)
				}
			}
			if len(got) != len(tc.want) {
				t.Errorf("errors beside %d fields, want %d: %v", len(got), len(tc.want), got)
			}
		})
	}
	if nodes, _ := e.store.Nodes(); len(nodes) != 1 {
		t.Errorf("invalid forms enrolled nodes: %d", len(nodes))
	}
	f := url.Values{"csrf": {tok}}
	for k, v := range good {
		f[k] = v
	}
	if r := e.do(c, "POST", "/enroll", f); r.code != http.StatusSeeOther || r.hdr.Get("Location") != "/nodes/n1" {
		t.Fatalf("valid form: %d %q\n%s", r.code, r.hdr.Get("Location"), r.body)
	}
	n, err := e.store.Node("n1")
	if err != nil {
		t.Fatal(err)
	}
	want := registry.Node{Name: "n1", MAC: "52:54:00:00:00:01", Image: "debian-12", Donate: registry.Donate{Mode: "aoe", Window: "20:00-07:00"}, VolumeSize: 20 << 30}
	got := registry.Node{Name: n.Name, MAC: n.MAC, Image: n.Image, Donate: n.Donate, VolumeSize: n.VolumeSize}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("enrolled node (-want +got):\n%s", d)
	}
	// The flash says so on the next page, once; a live fragment fetched meanwhile (another
	// tab) leaves it for the page.
	e.do(c, "GET", "/?fragment=1", nil)
	if r := e.do(c, "GET", "/nodes/n1", nil); !strings.Contains(r.body, "Enrolled n1 (52:54:00:00:00:01)") {
		t.Error("no enrollment message on the node page")
	}
	if r := e.do(c, "GET", "/nodes/n1", nil); strings.Contains(r.body, "Enrolled n1") {
		t.Error("enrollment message shown twice")
	}
}

func TestVendorClassRenderedInert(t *testing.T) {
	e := newEnv(t)
	e.setPassword()
	const evil = `<script>alert(1)</script>`
	if err := e.store.SeeMAC(registry.Discovered{MAC: "52:54:00:00:00:01", VendorClass: evil, Arch: `"><img src=x onerror=alert(2)>`}); err != nil {
		t.Fatal(err)
	}
	c, _ := e.login()
	for _, path := range []string{"/discovered", "/discovered?fragment=1"} {
		r := e.do(c, "GET", path, nil)
		if r.code != http.StatusOK {
			t.Fatalf("%s: %d", path, r.code)
		}
		if strings.Contains(r.body, evil) || strings.Contains(r.body, "<img") {
			t.Errorf("%s renders markup from a DHCP client:\n%s", path, r.body)
		}
		if !strings.Contains(r.body, "&lt;script&gt;alert(1)&lt;/script&gt;") || !strings.Contains(r.body, "&lt;img src=x onerror=alert(2)&gt;") {
			t.Errorf("%s does not show the values as text", path)
		}
	}
	r := e.do(c, "GET", "/discovered", nil)
	if csp := r.hdr.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") {
		t.Errorf("CSP = %q", csp)
	}
}

func TestEditNode(t *testing.T) {
	e := newEnv(t)
	e.setPassword()
	if _, err := e.store.AddNode(registry.Node{Name: "n1", MAC: "52:54:00:00:00:01", Image: "debian-12"}); err != nil {
		t.Fatal(err)
	}
	c, tok := e.login()
	r := e.do(c, "POST", "/nodes/n1", url.Values{"csrf": {tok}, "image": {"debian-12"}, "donate": {"iscsi"}, "window": {"7-8"}})
	if r.code != http.StatusUnprocessableEntity || !strings.HasPrefix(fieldErrors(r.body)["f-window"], "window &#34;7-8&#34;") {
		t.Errorf("bad window: %d %v", r.code, fieldErrors(r.body))
	}
	r = e.do(c, "POST", "/nodes/n1", url.Values{"csrf": {tok}, "image": {"alpine-3.20"}, "group": {"lab"}, "donate": {"iscsi"}, "window": {"22:00-06:00"}, "ip": {"10.9.0.50"}, "role": {"pool-head"}})
	if r.code != http.StatusSeeOther {
		t.Fatalf("edit: %d\n%s", r.code, r.body)
	}
	n, _ := e.store.Node("n1")
	if n.Image != "alpine-3.20" || n.Group != "lab" || n.Donate.Mode != "iscsi" || n.Donate.Window != "22:00-06:00" || n.IP != "10.9.0.50" || n.Role != "pool-head" || n.MAC != "52:54:00:00:00:01" {
		t.Errorf("after edit: %+v", n.Redacted())
	}
	if r := e.do(c, "GET", "/nodes/nope", nil); r.code != http.StatusNotFound {
		t.Errorf("unknown node page: %d", r.code)
	}
}

func TestRemoveNodeNeedsConfirmation(t *testing.T) {
	e := newEnv(t)
	e.setPassword()
	if _, err := e.store.AddNode(registry.Node{Name: "n1", MAC: "52:54:00:00:00:01", Image: "debian-12"}); err != nil {
		t.Fatal(err)
	}
	c, tok := e.login()
	page := e.do(c, "GET", "/nodes/n1/remove", nil)
	if !strings.Contains(page.body, "deletes the node&#39;s iSCSI volume") && !strings.Contains(page.body, "deletes the node's iSCSI volume") {
		t.Errorf("confirmation page does not say the volume is deleted:\n%s", page.body)
	}
	for _, confirm := range []string{"", "n", "N1"} {
		r := e.do(c, "POST", "/nodes/n1/remove", url.Values{"csrf": {tok}, "confirm": {confirm}})
		if r.code != http.StatusUnprocessableEntity || !strings.Contains(fieldErrors(r.body)["confirm"], "type the node") {
			t.Errorf("confirm %q: %d %v", confirm, r.code, fieldErrors(r.body))
		}
	}
	if _, err := e.store.Node("n1"); err != nil {
		t.Fatal("removed without confirmation")
	}
	if r := e.do(c, "POST", "/nodes/n1/remove", url.Values{"csrf": {tok}, "confirm": {"n1"}}); r.code != http.StatusSeeOther {
		t.Fatalf("confirmed removal: %d\n%s", r.code, r.body)
	}
	if _, err := e.store.Node("n1"); err == nil {
		t.Error("node still there")
	}
	if d := cmp.Diff([]string{"n1"}, e.removed); d != "" {
		t.Errorf("volumes removed (-want +got):\n%s", d)
	}
}

func TestBulkEnrollment(t *testing.T) {
	const header = "mac,name,group,image,donate,window\n"
	tests := []struct {
		name      string
		csv       string
		wantNodes []string
		wantErrs  []string // substrings, in order, of the listed problems
	}{
		{"good", header + "52:54:00:00:10:01,pc01,room1,debian-12,aoe,20:00-07:00\n# a comment\n52-54-00-00-10-02, pc02 ,room1,alpine-3.20,,\n",
			[]string{"pc01", "pc02"}, nil},
		{"one bad line enrolls nothing", header + "52:54:00:00:10:01,pc01,room1,debian-12,aoe,\n52:54:00:00:10:02,PC02,room1,debian-12,aoe,25:00-01:00\n",
			nil, []string{"<td>3</td><td>name</td>", "<td>3</td><td>window</td>"}},
		{"duplicates in the file", header + "52:54:00:00:10:01,pc01,,debian-12,,\n52:54:00:00:10:01,pc01,,debian-12,,\n",
			nil, []string{"pc01 is also on line 2", "52:54:00:00:10:01 is also on line 2"}},
		{"already enrolled", header + "52:54:00:00:00:99,old,,debian-12,,\n",
			nil, []string{"old is already enrolled", "already enrolled as old"}},
		{"unknown column", "mac,name,image,colour\n52:54:00:00:10:01,pc01,debian-12,red\n", nil, []string{"unknown column &#34;colour&#34;"}},
		{"missing column", "mac,name\n52:54:00:00:10:01,pc01\n", nil, []string{"missing column &#34;image&#34;"}},
		{"ragged line", header + "52:54:00:00:10:01,pc01\n", nil, []string{"<td>2</td><td>—</td><td>2 fields, the header has 6"}},
		{"empty", "", nil, []string{"empty file"}},
		{"header only", header, nil, []string{"no node lines"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			e.setPassword()
			if _, err := e.store.AddNode(registry.Node{Name: "old", MAC: "52:54:00:00:00:99", Image: "debian-12"}); err != nil {
				t.Fatal(err)
			}
			c, tok := e.login()
			r := e.do(c, "POST", "/enroll/bulk", url.Values{"csrf": {tok}, "csv": {tc.csv}})
			nodes, _ := e.store.Nodes()
			var names []string
			for _, n := range nodes {
				if n.Name != "old" {
					names = append(names, n.Name)
				}
			}
			if d := cmp.Diff(tc.wantNodes, names); d != "" {
				t.Errorf("enrolled (-want +got):\n%s", d)
			}
			if tc.wantErrs == nil {
				if r.code != http.StatusSeeOther {
					t.Errorf("got %d, want 303:\n%s", r.code, r.body)
				}
				return
			}
			if r.code != http.StatusUnprocessableEntity || !strings.Contains(r.body, "Nothing was enrolled") {
				t.Fatalf("got %d, want 422 saying nothing was enrolled:\n%s", r.code, r.body)
			}
			rest := r.body
			for _, want := range tc.wantErrs {
				i := strings.Index(rest, want)
				if i < 0 {
					t.Fatalf("problem %q not listed (in order) in:\n%s", want, r.body)
				}
				rest = rest[i+len(want):]
			}
		})
	}
}

func TestBulkUploadMultipart(t *testing.T) {
	e := newEnv(t)
	e.setPassword()
	c, tok := e.login()
	var body strings.Builder
	body.WriteString("--b\r\nContent-Disposition: form-data; name=\"csrf\"\r\n\r\n" + tok + "\r\n")
	body.WriteString("--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"room.csv\"\r\nContent-Type: text/csv\r\n\r\n")
	body.WriteString("\xef\xbb\xbfmac,name,image\r\n52:54:00:00:10:01,pc01,debian-12\r\n\r\n--b--\r\n")
	req, _ := http.NewRequest("POST", e.srv.URL+"/enroll/bulk", strings.NewReader(body.String()))
	req.Header.Set("Content-Type", "multipart/form-data; boundary=b")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("upload: %d", resp.StatusCode)
	}
	if _, err := e.store.Node("pc01"); err != nil {
		t.Errorf("uploaded file not enrolled: %v", err)
	}
}

func TestForgetDiscovered(t *testing.T) {
	e := newEnv(t)
	e.setPassword()
	if err := e.store.SeeMAC(registry.Discovered{MAC: "52:54:00:00:00:01"}); err != nil {
		t.Fatal(err)
	}
	c, tok := e.login()
	if r := e.do(c, "POST", "/discovered/52:54:00:00:00:01/forget", url.Values{"csrf": {tok}}); r.code != http.StatusSeeOther {
		t.Fatalf("forget: %d", r.code)
	}
	if d, _ := e.store.DiscoveredMACs(); len(d) != 0 {
		t.Errorf("still discovered: %+v", d)
	}
}

func TestPagesRender(t *testing.T) {
	e := newEnv(t)
	e.setPassword()
	n, err := e.store.AddNode(registry.Node{Name: "n1", MAC: "52:54:00:00:00:01", Image: "debian-12", Group: "room1", Donate: registry.Donate{Mode: "aoe", Window: "20:00-07:00"}})
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now().UTC()
	e.store.RecordStage("n1", registry.Stage{Stage: "dhcp", OK: true, Time: t0}, "10.9.0.101")
	e.store.RecordStage("n1", registry.Stage{Stage: "nfs", OK: false, Message: "mount refused", Time: t0.Add(9 * time.Second)}, "")
	e.store.PutDisk(registry.DonatedDisk{Node: "n1", Device: "/dev/sda", Transport: "aoe", Address: n.AoEAddress(), SizeBytes: 250 << 30, State: "online", LastSeen: t0})
	c, _ := e.login()
	tests := []struct {
		path string
		want []string
	}{
		{"/", []string{`data-node="n1"`, "52:54:00:00:00:01", `<span class="badge bad">failed</span>`, "10.9.0.101", "250.0 GiB", "mount refused",
			`<td><span class="badge bad">nfs</span></td><td class="mono">9.0s</td><td>mount refused</td>`}},
		{"/nodes/n1", []string{"iqn.2011-06.org.distonet:node.n1", "e1.0", "/dev/sda", "mount refused"}},
		{"/pool", []string{"/dev/sda", "e1.0", "250.0 GiB", `<span class="badge ok">online</span>`}},
		{"/images", []string{"debian-12", "6.1.0-28-amd64", "1.0 GiB"}},
		{"/enroll", []string{`name="mac"`, `<option value="alpine-3.20"`}},
		{"/enroll/bulk", []string{"mac,name,group,image,donate,window,volume_size"}},
		{"/nope", []string{"There is no page at /nope"}},
	}
	for _, tc := range tests {
		t.Run(tc.path, func(t *testing.T) {
			r := e.do(c, "GET", tc.path, nil)
			if tc.path == "/nope" {
				if r.code != http.StatusNotFound {
					t.Errorf("code %d", r.code)
				}
			} else if r.code != http.StatusOK {
				t.Fatalf("code %d\n%s", r.code, r.body)
			}
			for _, w := range tc.want {
				if !strings.Contains(r.body, w) {
					t.Errorf("page lacks %q", w)
				}
			}
			for _, secret := range []string{n.Secrets.CHAPSecret, n.Secrets.BootToken, n.Secrets.AgentToken} {
				if strings.Contains(r.body, secret) {
					t.Errorf("page shows a secret")
				}
			}
		})
	}
}

func TestFirstRunSetup(t *testing.T) {
	e := newEnv(t)
	c := e.client()
	if r := e.do(c, "GET", "/", nil); r.code != http.StatusSeeOther || r.hdr.Get("Location") != "/setup" {
		t.Fatalf("no password yet: %d %q, want /setup", r.code, r.hdr.Get("Location"))
	}
	tok, err := FirstRunToken(e.dir)
	if err != nil || len(tok) < 20 {
		t.Fatalf("FirstRunToken: %q %v", tok, err)
	}
	raw, _ := os.ReadFile(filepath.Join(e.dir, SetupTokenFile))
	if strings.Contains(string(raw), tok) {
		t.Error("setup token stored in clear")
	}
	csrf := e.csrfOf(c, "/setup")
	if r := e.do(c, "GET", "/setup?token="+tok, nil); !strings.Contains(r.body, `value="`+tok+`"`) {
		t.Error("/setup?token=… does not prefill the token (the daemon prints that link)")
	}
	r := e.do(c, "POST", "/setup", url.Values{"csrf": {csrf}, "token": {"wrong"}, "password": {"short"}, "confirm": {"short"}})
	errs := fieldErrors(r.body)
	if r.code != http.StatusUnprocessableEntity || !strings.Contains(errs["token"], "Wrong setup token") || !strings.Contains(errs["password"], "at least 8") {
		t.Errorf("bad setup: %d %v", r.code, errs)
	}
	r = e.do(c, "POST", "/setup", url.Values{"csrf": {csrf}, "token": {tok}, "password": {testPassword}, "confirm": {testPassword + "x"}})
	if r.code != http.StatusUnprocessableEntity || !strings.Contains(fieldErrors(r.body)["confirm"], "differ") {
		t.Errorf("mismatched confirmation: %d %v", r.code, fieldErrors(r.body))
	}
	r = e.do(c, "POST", "/setup", url.Values{"csrf": {csrf}, "token": {tok}, "password": {testPassword}, "confirm": {testPassword}})
	if r.code != http.StatusSeeOther || r.hdr.Get("Location") != "/" {
		t.Fatalf("setup: %d %q\n%s", r.code, r.hdr.Get("Location"), r.body)
	}
	if r := e.do(c, "GET", "/?fragment=1", nil); r.code != http.StatusOK {
		t.Errorf("not logged in after setup: %d", r.code)
	}
	if _, err := os.Stat(filepath.Join(e.dir, SetupTokenFile)); !os.IsNotExist(err) {
		t.Errorf("setup token not deleted: %v", err)
	}
	st, _ := os.Stat(filepath.Join(e.dir, PasswordFile))
	if st == nil || st.Mode().Perm() != 0o600 {
		t.Errorf("password file mode: %v", st)
	}
	// The token is single use and setup is closed once a password exists.
	if r := e.do(e.client(), "GET", "/setup", nil); r.code != http.StatusSeeOther || r.hdr.Get("Location") != "/login" {
		t.Errorf("setup after password: %d %q", r.code, r.hdr.Get("Location"))
	}
	if again, err := FirstRunToken(e.dir); again != "" || err != nil {
		t.Errorf("FirstRunToken with a password set: %q %v", again, err)
	}
	if e.tryLogin(e.client(), testPassword).code != http.StatusSeeOther {
		t.Error("cannot log in with the password chosen at setup")
	}
}

func TestSetPassword(t *testing.T) {
	dir := t.TempDir()
	for _, pw := range []string{"", "1234567", strings.Repeat("x", 73)} {
		if err := SetPassword(dir, []byte(pw)); err == nil {
			t.Errorf("password of %d bytes accepted", len(pw))
		}
	}
	if err := SetPassword(dir, []byte("first password")); err != nil {
		t.Fatal(err)
	}
	if err := SetPassword(dir, []byte("second password")); err != nil {
		t.Fatal(err)
	}
	if verifyPassword(dir, []byte("first password")) == nil || verifyPassword(dir, []byte("second password")) != nil {
		t.Error("the new password does not replace the old one")
	}
	raw, _ := os.ReadFile(filepath.Join(dir, PasswordFile))
	if cost, err := bcrypt.Cost([]byte(strings.TrimSpace(string(raw)))); err != nil || cost != bcryptCost || strings.Contains(string(raw), "second") {
		t.Errorf("password file is not a bcrypt hash of cost %d: %q (%v)", bcryptCost, raw, err)
	}
}

func TestEventsStreamChanges(t *testing.T) {
	e := newEnv(t)
	e.setPassword()
	c, _ := e.login()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", e.srv.URL+"/events", nil)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); resp.StatusCode != 200 || ct != "text/event-stream" {
		t.Fatalf("events: %d %q", resp.StatusCode, ct)
	}
	rd := bufio.NewReader(resp.Body)
	readUntil := func(want string) {
		t.Helper()
		for {
			line, err := rd.ReadString('\n')
			if err != nil {
				t.Fatalf("stream ended before %q: %v", want, err)
			}
			if strings.TrimSpace(line) == want {
				return
			}
		}
	}
	readUntil(": connected")
	if err := e.store.SeeMAC(registry.Discovered{MAC: "52:54:00:00:00:01"}); err != nil {
		t.Fatal(err)
	}
	readUntil("event: change")
	// Close ends the stream (the daemon's shutdown must not wait on open dashboards).
	e.web.Close()
	if _, err := io.ReadAll(rd); err != nil {
		t.Fatalf("stream did not end cleanly after Close: %v", err)
	}
}

func TestSafeNext(t *testing.T) {
	for in, want := range map[string]string{
		"": "/", "/pool": "/pool", "/nodes/pc-01?fragment=1": "/nodes/pc-01?fragment=1", "/login?next=%2F": "/login?next=%2F",
		"//evil.example/": "/", "https://evil.example/": "/", "/\\evil": "/", "pool": "/",
		"/\t/evil.example": "/", "/\n/evil.example": "/", "/ /x": "/", "/%0a": "/%0a",
	} {
		if got := safeNext(in); got != want {
			t.Errorf("safeNext(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestTemplateOverrideFromStateDir(t *testing.T) {
	e := newEnv(t, func(o *Options) {
		dir := filepath.Join(o.StateDir, "templates", "web")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		page := `{{define "content"}}<p id="site">Campus appliance: {{.D.Heading}}</p>{{end}}`
		if err := os.WriteFile(filepath.Join(dir, "message.html"), []byte(page), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Join(dir, "static"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "static", "style.css"), []byte("body { background: #123; }"), 0o644); err != nil {
			t.Fatal(err)
		}
	})
	e.setPassword()
	c, _ := e.login()
	if r := e.do(c, "GET", "/nope", nil); r.code != http.StatusNotFound || !strings.Contains(r.body, `<p id="site">Campus appliance: Not found</p>`) {
		t.Errorf("override not used: %d\n%s", r.code, r.body)
	}
	if r := e.do(c, "GET", "/static/style.css", nil); r.body != "body { background: #123; }" {
		t.Errorf("static override not served: %q", r.body)
	}
	if r := e.do(c, "GET", "/static/app.js", nil); r.code != http.StatusOK || !strings.Contains(r.body, "EventSource") {
		t.Errorf("embedded app.js not served beside the override: %d", r.code)
	}
}

func TestBrokenTemplateOverrideFailsNew(t *testing.T) {
	dir := t.TempDir()
	st, err := registry.Open(dir, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	os.MkdirAll(filepath.Join(dir, "templates", "web"), 0o755)
	os.WriteFile(filepath.Join(dir, "templates", "web", "pool.html"), []byte(`{{define "content"}}{{.D.Oops`), 0o644)
	if _, err := New(Options{Store: st, StateDir: dir}); err == nil || !strings.Contains(err.Error(), "pool") {
		t.Errorf("New with a broken override: %v, want an error naming the page", err)
	}
}

func TestExportCSVReimports(t *testing.T) {
	src := newEnv(t)
	src.setPassword()
	for _, n := range []registry.Node{
		{Name: "pc01", MAC: "52:54:00:00:10:01", Image: "debian-12", Group: "room1", Donate: registry.Donate{Mode: "aoe", Window: "20:00-07:00"}, VolumeSize: 20 << 30},
		{Name: "pc02", MAC: "52:54:00:00:10:02", Image: "alpine-3.20"},
	} {
		if _, err := src.store.AddNode(n); err != nil {
			t.Fatal(err)
		}
	}
	c, _ := src.login()
	r := src.do(c, "GET", "/nodes.csv", nil)
	if r.code != http.StatusOK || !strings.HasPrefix(r.hdr.Get("Content-Type"), "text/csv") {
		t.Fatalf("export: %d %q", r.code, r.hdr.Get("Content-Type"))
	}
	dst := newEnv(t)
	dst.setPassword()
	c2, tok := dst.login()
	if r := dst.do(c2, "POST", "/enroll/bulk", url.Values{"csrf": {tok}, "csv": {r.body}}); r.code != http.StatusSeeOther {
		t.Fatalf("re-import: %d\n%s", r.code, r.body)
	}
	strip := func(st *registry.Store) []registry.Node {
		ns, _ := st.Nodes()
		for i := range ns {
			ns[i] = registry.Node{Name: ns[i].Name, MAC: ns[i].MAC, Image: ns[i].Image, Group: ns[i].Group, Donate: ns[i].Donate, VolumeSize: ns[i].VolumeSize}
		}
		return ns
	}
	if d := cmp.Diff(strip(src.store), strip(dst.store)); d != "" {
		t.Errorf("re-imported nodes (-exported +imported):\n%s", d)
	}
}

func TestCrossSiteBrowserPostRefused(t *testing.T) {
	e := newEnv(t)
	e.setPassword()
	if err := e.store.SeeMAC(registry.Discovered{MAC: "52:54:00:00:00:01"}); err != nil {
		t.Fatal(err)
	}
	c, tok := e.login()
	// Even with a valid session and token (say, leaked), a cross-site browser POST is refused.
	form := url.Values{"csrf": {tok}}
	for _, h := range [][]string{{"Sec-Fetch-Site", "cross-site"}, {"Origin", "http://evil.example"}} {
		if r := e.do(c, "POST", "/discovered/52:54:00:00:00:01/forget", form, h...); r.code != http.StatusForbidden {
			t.Errorf("%s: %s → %d, want 403", h[0], h[1], r.code)
		}
	}
	if d, _ := e.store.DiscoveredMACs(); len(d) != 1 {
		t.Fatal("cross-site POST changed the registry")
	}
	if r := e.do(c, "POST", "/discovered/52:54:00:00:00:01/forget", form, "Sec-Fetch-Site", "same-origin"); r.code != http.StatusSeeOther {
		t.Errorf("same-origin POST: %d", r.code)
	}
}

func TestDiscoveredCSVRoundTrip(t *testing.T) {
	e := newEnv(t)
	e.setPassword()
	for _, mac := range []string{"52:54:00:00:00:02", "52:54:00:00:00:01"} {
		if err := e.store.SeeMAC(registry.Discovered{MAC: mac}); err != nil {
			t.Fatal(err)
		}
	}
	c, tok := e.login()
	r := e.do(c, "GET", "/discovered.csv", nil)
	lines := strings.Split(strings.TrimSpace(r.body), "\n")
	if r.code != http.StatusOK || len(lines) != 3 || lines[0] != "mac,name,group,image,donate,window,volume_size" {
		t.Fatalf("discovered.csv: %d\n%s", r.code, r.body)
	}
	for _, want := range []string{"52:54:00:00:00:01,,,,none,,", "52:54:00:00:00:02,,,,none,,"} {
		if !slices.Contains(lines[1:], want) {
			t.Errorf("discovered.csv lacks %q:\n%s", want, r.body)
		}
	}
	// As downloaded, it is refused (no names, no images); filled in, it enrolls both.
	if r := e.do(c, "POST", "/enroll/bulk", url.Values{"csrf": {tok}, "csv": {r.body}}); r.code != http.StatusUnprocessableEntity {
		t.Errorf("unfilled file: %d", r.code)
	}
	filled := strings.NewReplacer(":02,,,,", ":02,pc01,room1,debian-12,", ":01,,,,", ":01,pc02,room1,debian-12,").Replace(r.body)
	if r := e.do(c, "POST", "/enroll/bulk", url.Values{"csrf": {tok}, "csv": {filled}}); r.code != http.StatusSeeOther {
		t.Fatalf("filled file: %d\n%s", r.code, r.body)
	}
	if n, ok := e.store.NodeByMAC("52:54:00:00:00:02"); !ok || n.Name != "pc01" {
		t.Errorf("first-seen MAC enrolled as %+v", n.Redacted())
	}
	if d, _ := e.store.DiscoveredMACs(); len(d) != 0 {
		t.Errorf("still discovered: %+v", d)
	}
}

func TestNodeNamesDoNotCollideWithPages(t *testing.T) {
	e := newEnv(t)
	e.setPassword()
	// Valid hostnames that are also words the UI uses.
	for i, name := range []string{"new", "bulk", "enroll", "export", "remove"} {
		if _, err := e.store.AddNode(registry.Node{Name: name, MAC: fmt.Sprintf("52:54:00:00:00:%02x", i+1), Image: "debian-12"}); err != nil {
			t.Fatal(err)
		}
	}
	c, _ := e.login()
	for _, name := range []string{"new", "bulk", "enroll", "export", "remove"} {
		r := e.do(c, "GET", "/nodes/"+name, nil)
		if r.code != http.StatusOK || !strings.Contains(r.body, `action="/nodes/`+name+`" id="edit-form"`) {
			t.Errorf("/nodes/%s is not the node's page: %d", name, r.code)
		}
	}
}

// TestEveryFormCarriesCSRFToken parses every page and checks each POST form carries the
// token its handler checks: the session's, or the login form's on the pages before login.
func TestEveryFormCarriesCSRFToken(t *testing.T) {
	e := newEnv(t)
	e.setPassword()
	if _, err := e.store.AddNode(registry.Node{Name: "n1", MAC: "52:54:00:00:00:01", Image: "debian-12"}); err != nil {
		t.Fatal(err)
	}
	if err := e.store.SeeMAC(registry.Discovered{MAC: "52:54:00:00:00:02"}); err != nil {
		t.Fatal(err)
	}
	anon := e.client()
	loginTok := e.csrfOf(anon, "/login")
	c, tok := e.login()
	pages := map[string]struct {
		c   *http.Client
		tok string
	}{"/login": {anon, loginTok}}
	for _, p := range []string{"/", "/discovered", "/discovered?fragment=1", "/enroll", "/enroll/bulk", "/nodes/n1", "/nodes/n1/remove", "/images", "/pool", "/nope"} {
		pages[p] = struct {
			c   *http.Client
			tok string
		}{c, tok}
	}
	forms := 0
	for path, p := range pages {
		r := e.do(p.c, "GET", path, nil)
		doc, err := html.Parse(strings.NewReader(r.body))
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		for f := range doc.Descendants() {
			if f.Type != html.ElementNode || f.Data != "form" || !strings.EqualFold(attr(f, "method"), "post") {
				continue
			}
			forms++
			found := false
			for in := range f.Descendants() {
				if in.Type == html.ElementNode && in.Data == "input" && attr(in, "name") == "csrf" {
					found = attr(in, "type") == "hidden" && attr(in, "value") == p.tok
				}
			}
			if !found {
				t.Errorf("%s: form action=%q lacks the CSRF token", path, attr(f, "action"))
			}
		}
	}
	if forms < 10 {
		t.Errorf("only %d POST forms found: the pages did not render what this test expects", forms)
	}
}

func attr(n *html.Node, key string) string {
	for _, a := range n.Attr {
		if a.Key == key {
			return a.Val
		}
	}
	return ""
}

func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	e := newEnv(t, func(o *Options) { o.Metrics = reg })
	e.setPassword()
	if err := e.store.SeeMAC(registry.Discovered{MAC: "52:54:00:00:00:01"}); err != nil {
		t.Fatal(err)
	}
	e.tryLogin(e.client(), "wrong")
	c, tok := e.login()
	e.do(c, "POST", "/discovered/52:54:00:00:00:01/enroll", url.Values{"csrf": {tok}, "name": {"n1"}, "image": {"debian-12"}})
	e.do(c, "POST", "/enroll/bulk", url.Values{"csrf": {tok}, "csv": {"mac,name,image\n52:54:00:00:00:02,n2,debian-12\n52:54:00:00:00:03,n3,debian-12\n"}})
	e.do(c, "GET", "/nodes/nope", nil)
	tests := []struct {
		c    prometheus.Collector
		want float64
	}{
		{e.web.m.logins.WithLabelValues(loginOK), 1},
		{e.web.m.logins.WithLabelValues(loginWrong), 1},
		{e.web.m.enrollments.WithLabelValues("form"), 1},
		{e.web.m.enrollments.WithLabelValues("bulk"), 2},
		{e.web.m.requests.WithLabelValues("POST /login", "303"), 1},
		{e.web.m.requests.WithLabelValues("POST /login", "401"), 1},
		{e.web.m.requests.WithLabelValues("GET /nodes/{name}", "404"), 1},
		{e.web.m.sessions, 1},
	}
	for _, tc := range tests {
		if got := valueOf(t, tc.c); got != tc.want {
			t.Errorf("%s = %v, want %v", tc.c.(prometheus.Metric).Desc(), got, tc.want)
		}
	}
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range fams {
		names = append(names, f.GetName())
	}
	want := []string{"distonet_web_enrollments_total", "distonet_web_event_streams", "distonet_web_logins_total", "distonet_web_requests_total", "distonet_web_sessions"}
	if d := cmp.Diff(want, names); d != "" {
		t.Errorf("registered families (-want +got):\n%s", d)
	}
}

// valueOf reads a single-series counter or gauge.
func valueOf(t *testing.T, c prometheus.Collector) float64 {
	t.Helper()
	ch := make(chan prometheus.Metric, 1)
	c.Collect(ch)
	var pb dto.Metric
	if err := (<-ch).Write(&pb); err != nil {
		t.Fatal(err)
	}
	if pb.Counter != nil {
		return pb.Counter.GetValue()
	}
	return pb.Gauge.GetValue()
}

func TestShownState(t *testing.T) {
	now := time.Date(2026, 11, 26, 8, 0, 0, 0, time.UTC)
	boot := func(age time.Duration, stages ...registry.Stage) *registry.Boot {
		for i := range stages {
			stages[i].Time = now.Add(-age)
		}
		return &registry.Boot{Stages: stages}
	}
	tests := []struct {
		name, state string
		last        *registry.Boot
		want        string
	}{
		{"never booted", "enrolled", nil, "enrolled"},
		{"booting", "booting", boot(time.Minute, registry.Stage{Stage: "dhcp", OK: true}), "booting"},
		{"stalled", "booting", boot(11*time.Minute, registry.Stage{Stage: "kernel", OK: true}), "stalled"},
		{"ready long ago", "ready", boot(48*time.Hour, registry.Stage{Stage: "ready", OK: true}), "ready"},
		{"failed", "booting", boot(time.Minute, registry.Stage{Stage: "nfs", Message: "mount refused"}), "failed"},
		{"not ok without reason", "booting", boot(time.Minute, registry.Stage{Stage: "dhcp"}), "booting"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := shownState(tc.state, tc.last, now); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestBulkCheckThenEnroll(t *testing.T) {
	e := newEnv(t)
	e.setPassword()
	c, tok := e.login()
	file := "mac,name,image,donate\n52-54-00-00-10-01,pc01,debian-12,\n"
	r := e.do(c, "POST", "/enroll/bulk", url.Values{"csrf": {tok}, "csv": {file}, "step": {"check"}})
	if r.code != http.StatusOK || !strings.Contains(r.body, `<td>pc01</td><td class="mono">52:54:00:00:10:01</td>`) || !strings.Contains(r.body, "<td>none</td>") {
		t.Fatalf("check: %d\n%s", r.code, r.body)
	}
	if nodes, _ := e.store.Nodes(); len(nodes) != 0 {
		t.Fatal("the check step enrolled nodes")
	}
	// The preview carries the file to the confirmation, escaped in an attribute.
	m := regexp.MustCompile(`name="csv" value="([^"]*)"`).FindStringSubmatch(r.body)
	if m == nil {
		t.Fatal("no file in the confirmation form")
	}
	carried := strings.NewReplacer("&#10;", "\n", "&#xA;", "\n").Replace(m[1])
	if carried != file {
		t.Fatalf("carried file %q, want %q", carried, file)
	}
	if r := e.do(c, "POST", "/enroll/bulk", url.Values{"csrf": {tok}, "csv": {file}, "step": {"enroll"}}); r.code != http.StatusSeeOther {
		t.Fatalf("enroll: %d", r.code)
	}
	// Confirming twice (a double click) enrolls once and says why the second is refused.
	r = e.do(c, "POST", "/enroll/bulk", url.Values{"csrf": {tok}, "csv": {file}, "step": {"enroll"}})
	if r.code != http.StatusUnprocessableEntity || !strings.Contains(r.body, "pc01 is already enrolled") {
		t.Errorf("second confirm: %d", r.code)
	}
}

func TestWindowStatus(t *testing.T) {
	at := func(h, m int) time.Time { return time.Date(2026, 11, 26, h, m, 0, 0, time.Local) }
	tests := []struct {
		win  string
		now  time.Time
		want string
	}{
		{"", at(12, 0), "always open"},
		{"20:00-07:00", at(23, 0), "open now, closes at 07:00"},
		{"20:00-07:00", at(6, 59), "open now, closes at 07:00"},
		{"20:00-07:00", at(7, 0), "closed now, opens at 20:00"},
		{"20:00-07:00", at(12, 0), "closed now, opens at 20:00"},
		{"08:30-17:45", at(8, 30), "open now, closes at 17:45"},
		{"08:30-17:45", at(17, 45), "closed now, opens at 08:30"},
		{"nonsense", at(12, 0), "invalid window"},
	}
	for _, tc := range tests {
		if got := windowStatus(tc.win, tc.now); got != tc.want {
			t.Errorf("windowStatus(%q, %s) = %q, want %q", tc.win, tc.now.Format("15:04"), got, tc.want)
		}
	}
}

func TestVolumeActions(t *testing.T) {
	e := newEnv(t)
	e.setPassword()
	if _, err := e.store.AddNode(registry.Node{Name: "n1", MAC: "52:54:00:00:00:01", Image: "debian-12"}); err != nil {
		t.Fatal(err)
	}
	c, tok := e.login()
	grow := func(size string) resp {
		return e.do(c, "POST", "/nodes/n1/volume", url.Values{"csrf": {tok}, "action": {"resize"}, "size": {size}})
	}
	for size, want := range map[string]string{
		"":     "volume size: required",
		"lots": "volume size &#34;lots&#34;: want a size",
		"512M": "resize n1: shrinking from 1073741824 to 536870912 is not supported",
	} {
		r := grow(size)
		if got := fieldErrors(r.body)["grow-size"]; r.code != http.StatusUnprocessableEntity || !strings.HasPrefix(got, want) {
			t.Errorf("grow to %q: %d, beside the field %q, want %q", size, r.code, got, want)
		}
	}
	if r := grow("40G"); r.code != http.StatusSeeOther {
		t.Fatalf("grow: %d\n%s", r.code, r.body)
	}
	if n, _ := e.store.Node("n1"); n.VolumeSize != 40<<30 {
		t.Errorf("registry size after grow: %d", n.VolumeSize)
	}
	r := e.do(c, "GET", "/nodes/n1/volume/reset", nil)
	if !strings.Contains(r.body, "empties the node&#39;s iSCSI volume") && !strings.Contains(r.body, "empties the node's iSCSI volume") {
		t.Errorf("reset page does not warn:\n%s", r.body)
	}
	if r := e.do(c, "POST", "/nodes/n1/volume", url.Values{"csrf": {tok}, "action": {"reset"}, "confirm": {"n2"}}); r.code != http.StatusUnprocessableEntity {
		t.Errorf("reset with a wrong confirmation: %d", r.code)
	}
	if r := e.do(c, "POST", "/nodes/n1/volume", url.Values{"csrf": {tok}, "action": {"reset"}, "confirm": {"n1"}}); r.code != http.StatusSeeOther {
		t.Errorf("reset: %d", r.code)
	}
	if d := cmp.Diff([]string{"n1 resize 42949672960", "n1 reset 0"}, e.volumeOps); d != "" {
		t.Errorf("volume calls (-want +got):\n%s", d)
	}
	// Without a volume manager the page offers no volume actions.
	e2 := newEnv(t, func(o *Options) { o.Volume = nil })
	e2.setPassword()
	e2.store.AddNode(registry.Node{Name: "n1", MAC: "52:54:00:00:00:01", Image: "debian-12"})
	c2, _ := e2.login()
	if r := e2.do(c2, "GET", "/nodes/n1", nil); strings.Contains(r.body, "grow-form") || !strings.Contains(r.body, "need the running daemon") {
		t.Error("volume actions offered without a volume manager")
	}
}

func TestDiscoveredMACTakenShownBesideIt(t *testing.T) {
	e := newEnv(t)
	e.setPassword()
	if err := e.store.SeeMAC(registry.Discovered{MAC: "52:54:00:00:00:01"}); err != nil {
		t.Fatal(err)
	}
	c, tok := e.login()
	// The CLI enrolls the MAC while the admin's form is open; the page still lists it.
	if _, err := e.store.AddNode(registry.Node{Name: "other", MAC: "52:54:00:00:00:02", Image: "debian-12"}); err != nil {
		t.Fatal(err)
	}
	if err := e.store.SeeMAC(registry.Discovered{MAC: "52:54:00:00:00:03"}); err != nil {
		t.Fatal(err)
	}
	r := e.do(c, "POST", "/discovered/52:54:00:00:00:03/enroll", url.Values{"csrf": {tok}, "name": {"other"}, "image": {"debian-12"}})
	if got := fieldErrors(r.body)["m525400000003-name"]; r.code != http.StatusUnprocessableEntity || got != "node other: name already enrolled" {
		t.Errorf("taken name: %d %q", r.code, got)
	}
	// A MAC enrolled meanwhile: the row is gone, the page says why.
	if _, err := e.store.AddNode(registry.Node{Name: "n1", MAC: "52:54:00:00:00:01", Image: "debian-12"}); err != nil {
		t.Fatal(err)
	}
	r = e.do(c, "POST", "/discovered/52:54:00:00:00:01/enroll", url.Values{"csrf": {tok}, "name": {"n9"}, "image": {"debian-12"}})
	if r.code != http.StatusUnprocessableEntity || !strings.Contains(r.body, "52:54:00:00:00:01 is no longer waiting for enrollment") || !strings.Contains(r.body, "already enrolled as n1") {
		t.Errorf("MAC enrolled meanwhile: %d\n%s", r.code, r.body)
	}
}

func TestNewPasswordEndsSessions(t *testing.T) {
	e := newEnv(t)
	e.setPassword()
	c, _ := e.login()
	if r := e.do(c, "GET", "/?fragment=1", nil); r.code != http.StatusOK {
		t.Fatalf("logged in: %d", r.code)
	}
	// `distonet admin passwd` in another process: every browser must log in again.
	if err := SetPassword(e.dir, []byte("a brand new password")); err != nil {
		t.Fatal(err)
	}
	if r := e.do(c, "GET", "/?fragment=1", nil); r.code != http.StatusUnauthorized {
		t.Errorf("session after a password change: %d, want 401", r.code)
	}
	if r := e.tryLogin(e.client(), "a brand new password"); r.code != http.StatusSeeOther {
		t.Errorf("login with the new password: %d", r.code)
	}
}

func TestOversizedUploadRefused(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.MaxUpload = 64 << 10 })
	e.setPassword()
	c, tok := e.login()
	big := "mac,name,image\n" + strings.Repeat("52:54:00:00:00:01,n,debian-12\n", 8000) // ~240 KiB
	r := e.do(c, "POST", "/enroll/bulk", url.Values{"csrf": {tok}, "csv": {big}})
	if r.code != http.StatusBadRequest || !strings.Contains(r.body, "too large") {
		t.Errorf("oversized form: %d\n%.300s", r.code, r.body)
	}
	var body strings.Builder
	body.WriteString("--b\r\nContent-Disposition: form-data; name=\"csrf\"\r\n\r\n" + tok + "\r\n")
	body.WriteString("--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.csv\"\r\n\r\n" + big + "\r\n--b--\r\n")
	req, _ := http.NewRequest("POST", e.srv.URL+"/enroll/bulk", strings.NewReader(body.String()))
	req.Header.Set("Content-Type", "multipart/form-data; boundary=b")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("oversized upload: %d", resp.StatusCode)
	}
	if nodes, _ := e.store.Nodes(); len(nodes) != 0 {
		t.Error("oversized form enrolled nodes")
	}
}

func TestEnrollDiscoveredRedirects(t *testing.T) {
	e := newEnv(t)
	e.setPassword()
	for _, mac := range []string{"52:54:00:00:00:01", "52:54:00:00:00:02"} {
		if err := e.store.SeeMAC(registry.Discovered{MAC: mac}); err != nil {
			t.Fatal(err)
		}
	}
	c, tok := e.login()
	enroll := func(mac, name string) string {
		r := e.do(c, "POST", "/discovered/"+mac+"/enroll", url.Values{"csrf": {tok}, "name": {name}, "image": {"debian-12"}})
		if r.code != http.StatusSeeOther {
			t.Fatalf("enroll %s: %d", mac, r.code)
		}
		return r.hdr.Get("Location")
	}
	if loc := enroll("52:54:00:00:00:01", "n1"); loc != "/discovered" {
		t.Errorf("with a machine still waiting: to %s, want /discovered", loc)
	}
	if r := e.do(c, "GET", "/discovered", nil); !strings.Contains(r.body, "Enrolled n1 (52:54:00:00:00:01): it boots debian-12 at its next PXE boot. 1 more waiting.") {
		t.Error("no enrollment message on the discovered page")
	}
	if loc := enroll("52:54:00:00:00:02", "n2"); loc != "/nodes/n2" {
		t.Errorf("last one: to %s, want /nodes/n2", loc)
	}
}

func TestNextName(t *testing.T) {
	tests := []struct {
		prev string
		n    int
		want string
	}{
		{"room1-pc07", 1, "room1-pc08"},
		{"room1-pc09", 1, "room1-pc10"},
		{"room1-pc99", 1, "room1-pc100"},
		{"pc7", 3, "pc10"},
		{"node", 1, ""},
		{"n001", 2, "n003"},
		{"7", 1, "8"},
	}
	for _, tc := range tests {
		if got := nextName(tc.prev, tc.n); got != tc.want {
			t.Errorf("nextName(%q, %d) = %q, want %q", tc.prev, tc.n, got, tc.want)
		}
	}
}

func TestDiscoveredFormsFollowLastEnrollment(t *testing.T) {
	e := newEnv(t)
	e.setPassword()
	if _, err := e.store.AddNode(registry.Node{Name: "pc03", MAC: "52:54:00:00:00:99", Image: "debian-12"}); err != nil {
		t.Fatal(err)
	}
	for _, mac := range []string{"52:54:00:00:00:01", "52:54:00:00:00:02", "52:54:00:00:00:03"} {
		if err := e.store.SeeMAC(registry.Discovered{MAC: mac}); err != nil {
			t.Fatal(err)
		}
	}
	c, tok := e.login()
	r := e.do(c, "POST", "/discovered/52:54:00:00:00:01/enroll", url.Values{"csrf": {tok}, "name": {"pc01"}, "group": {"room1"},
		"image": {"alpine-3.20"}, "donate": {"aoe"}, "window": {"20:00-07:00"}})
	if r.code != http.StatusSeeOther {
		t.Fatalf("enroll: %d", r.code)
	}
	page := e.do(c, "GET", "/discovered", nil).body
	// pc02 and pc04 (pc03 is taken), same group, image and policy.
	for _, want := range []string{
		`id="m525400000002-name" aria-label="name for 52:54:00:00:00:02" form="enroll-m525400000002" value="pc02"`,
		`id="m525400000003-name" aria-label="name for 52:54:00:00:00:03" form="enroll-m525400000003" value="pc04"`,
		`id="m525400000002-group" aria-label="group for 52:54:00:00:00:02" form="enroll-m525400000002" value="room1"`,
		`id="m525400000002-window" aria-label="window for 52:54:00:00:00:02" form="enroll-m525400000002" value="20:00-07:00"`,
		`<option value="alpine-3.20" selected>`,
		`<option value="aoe" selected>`,
	} {
		if !strings.Contains(page, want) {
			t.Errorf("discovered page lacks %s", want)
		}
	}
}

// BenchmarkDashboard renders the dashboard of a 48-node appliance (the founding bench) the
// way a live refresh fetches it.
func BenchmarkDashboard(b *testing.B) {
	dir := b.TempDir()
	st, err := registry.Open(dir, time.Second)
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	t0 := time.Now().UTC()
	for i := 0; i < 48; i++ {
		n, err := st.AddNode(registry.Node{Name: fmt.Sprintf("n%02d", i), MAC: fmt.Sprintf("52:54:00:00:01:%02x", i), Image: "debian-12", Donate: registry.Donate{Mode: "aoe"}})
		if err != nil {
			b.Fatal(err)
		}
		for j, s := range []string{"dhcp", "bootfile", "kernel", "nfs", "iscsi", "overlay", "ready"} {
			st.RecordStage(n.Name, registry.Stage{Stage: s, OK: true, Time: t0.Add(time.Duration(j) * time.Second)}, "10.9.0.1")
		}
		st.PutDisk(registry.DonatedDisk{Node: n.Name, Device: "/dev/sda", Transport: "aoe", Address: n.AoEAddress(), SizeBytes: 146 << 30, State: "online"})
	}
	w, err := New(Options{Store: st, StateDir: dir, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		b.Fatal(err)
	}
	if err := SetPassword(dir, []byte(testPassword)); err != nil {
		b.Fatal(err)
	}
	id, _ := w.sessions.create()
	for _, path := range []string{"/?fragment=1", "/"} {
		b.Run(strings.TrimPrefix(path, "/"), func(b *testing.B) {
			var size int
			for b.Loop() {
				req := httptest.NewRequest("GET", path, nil)
				req.AddCookie(&http.Cookie{Name: sessionCookie, Value: id})
				rec := httptest.NewRecorder()
				w.ServeHTTP(rec, req)
				if rec.Code != http.StatusOK {
					b.Fatalf("%s: %d", path, rec.Code)
				}
				size = rec.Body.Len()
			}
			b.ReportMetric(float64(size), "bytes/page")
		})
	}
}

// The daemon sets the API's volume hooks after building the UI: the UI must see them.
func TestAPIVolumeHooksReadAtCallTime(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.Volume, o.RemoveVolume = nil, nil })
	e.setPassword()
	var calls []string
	e.api.Volume = func(name, action string, size int64) error { calls = append(calls, name+" "+action); return nil }
	e.api.RemoveVolume = func(name string) error { calls = append(calls, name+" remove"); return nil }
	if _, err := e.store.AddNode(registry.Node{Name: "n1", MAC: "52:54:00:00:00:01", Image: "debian-12"}); err != nil {
		t.Fatal(err)
	}
	c, tok := e.login()
	if r := e.do(c, "GET", "/nodes/n1", nil); !strings.Contains(r.body, `id="grow-form"`) {
		t.Error("no volume actions with API.Volume set")
	}
	e.do(c, "POST", "/nodes/n1/volume", url.Values{"csrf": {tok}, "action": {"reset"}, "confirm": {"n1"}})
	e.do(c, "POST", "/nodes/n1/remove", url.Values{"csrf": {tok}, "confirm": {"n1"}})
	if d := cmp.Diff([]string{"n1 reset", "n1 remove"}, calls); d != "" {
		t.Errorf("hooks called (-want +got):\n%s", d)
	}
}
