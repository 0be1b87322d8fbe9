package web

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/distonet/distonet/internal/atomicfile"
)

const (
	// PasswordFile holds the admin password's bcrypt hash inside state_dir.
	PasswordFile = "admin.passwd"
	// SetupTokenFile holds the SHA-256 of the one-time first-run token inside state_dir.
	SetupTokenFile = "setup.token"

	sessionCookie = "distonet_session"
	loginCookie   = "distonet_login" // nonce binding the login form's CSRF token to this browser
	csrfField     = "csrf"
	// CSRFHeader carries the session's CSRF token on script requests (the web UI's fetches,
	// and JSON API writes made with a session).
	CSRFHeader = "X-CSRF-Token"

	minPassword = 8
	maxPassword = 72 // bcrypt ignores bytes beyond 72: refuse rather than silently truncate
)

// bcryptCost is bcrypt's default; tests lower it to keep dozens of logins fast.
var bcryptCost = bcrypt.DefaultCost

// SetPassword stores the admin password's bcrypt hash in state_dir/admin.passwd (mode 0600,
// replaced atomically) and invalidates any pending first-run token. `distonet admin passwd`
// calls it.
func SetPassword(stateDir string, pw []byte) error {
	if err := checkPassword(pw); err != nil {
		return err
	}
	hash, err := bcrypt.GenerateFromPassword(pw, bcryptCost)
	if err != nil {
		return fmt.Errorf("hash password: %w", err)
	}
	if err := atomicfile.Write(filepath.Join(stateDir, PasswordFile), append(hash, '\n'), 0o600); err != nil {
		return fmt.Errorf("admin password: %w", err)
	}
	if err := os.Remove(filepath.Join(stateDir, SetupTokenFile)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove setup token: %w", err)
	}
	return nil
}

func checkPassword(pw []byte) error {
	switch {
	case len(pw) < minPassword:
		return fmt.Errorf("password: at least %d characters", minPassword)
	case len(pw) > maxPassword:
		return fmt.Errorf("password: at most %d bytes (bcrypt's limit)", maxPassword)
	}
	return nil
}

// HasPassword reports whether an admin password is set.
func HasPassword(stateDir string) bool {
	_, err := os.Stat(filepath.Join(stateDir, PasswordFile))
	return err == nil
}

// FirstRunToken returns a fresh one-time token that lets the admin choose a password at
// /setup, or "" when a password is already set. Only its SHA-256 is stored (state_dir/setup.token);
// the daemon prints the token once at start. Each call replaces the previous token.
func FirstRunToken(stateDir string) (string, error) {
	if HasPassword(stateDir) {
		return "", nil
	}
	tok := randomToken(18)
	sum := sha256.Sum256([]byte(tok))
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return "", fmt.Errorf("state dir %s: %w", stateDir, err)
	}
	if err := atomicfile.Write(filepath.Join(stateDir, SetupTokenFile), []byte(hex.EncodeToString(sum[:])+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("setup token: %w", err)
	}
	return tok, nil
}

// checkSetupToken compares tok with the stored first-run token in constant time.
func checkSetupToken(stateDir, tok string) bool {
	raw, err := os.ReadFile(filepath.Join(stateDir, SetupTokenFile))
	if err != nil || tok == "" {
		return false
	}
	sum := sha256.Sum256([]byte(strings.TrimSpace(tok)))
	want := strings.TrimSpace(string(raw))
	return subtle.ConstantTimeCompare([]byte(hex.EncodeToString(sum[:])), []byte(want)) == 1
}

// verifyPassword checks pw against the stored hash.
func verifyPassword(stateDir string, pw []byte) error {
	raw, err := os.ReadFile(filepath.Join(stateDir, PasswordFile))
	if err != nil {
		return fmt.Errorf("admin password: %w", err)
	}
	return bcrypt.CompareHashAndPassword([]byte(strings.TrimSpace(string(raw))), pw)
}

func randomToken(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("crypto/rand: %v", err)) // nothing safe to do without randomness
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// session is a logged-in browser, kept in memory only: a daemon restart logs everyone out.
type session struct {
	csrf    string
	pw      string // the password file's stamp at login: a new password ends the session
	created time.Time
	seen    time.Time
	flash   string   // one-shot message shown on the next page
	last    nodeForm // the last enrollment, to prefill the next discovered forms
}

// sessions is the server-side session table.
type sessions struct {
	mu   sync.Mutex
	byID map[string]*session
	ttl  time.Duration // absolute lifetime
	idle time.Duration // lifetime without requests
	now  func() time.Time
	// pwStamp identifies the current admin password (file identity and change time), so
	// `distonet admin passwd` logs out every browser even though it runs in another process.
	pwStamp func() string
}

// passwordStamp identifies the password file's current version without reading the hash.
func passwordStamp(stateDir string) string {
	st, err := os.Stat(filepath.Join(stateDir, PasswordFile))
	if err != nil {
		return "none"
	}
	ino := uint64(0)
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		ino = sys.Ino // SetPassword renames a new file in: a new inode even within one clock tick
	}
	return fmt.Sprintf("%d/%d/%d", ino, st.ModTime().UnixNano(), st.Size())
}

func (s *sessions) create() (id string, sess *session) {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, v := range s.byID { // sweep on login: the table only grows by logins
		if s.expired(v, now) {
			delete(s.byID, k)
		}
	}
	id = randomToken(32)
	sess = &session{csrf: randomToken(32), created: now, seen: now, pw: s.pwStamp()}
	s.byID[id] = sess
	return id, sess
}

func (s *sessions) expired(v *session, now time.Time) bool {
	return now.Sub(v.created) > s.ttl || now.Sub(v.seen) > s.idle || v.pw != s.pwStamp()
}

// live counts sessions not yet expired.
func (s *sessions) live() int {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, v := range s.byID {
		if !s.expired(v, now) {
			n++
		}
	}
	return n
}

// alive reports whether the request's session still exists, without counting it as activity
// (an open event stream must not keep an idle session alive).
func (s *sessions) alive(r *http.Request) bool {
	c, err := r.Cookie(sessionCookie)
	if err != nil {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.byID[c.Value]
	return ok && !s.expired(v, s.now())
}

// get returns the live session named by the request's cookie, refreshing its idle timer.
func (s *sessions) get(r *http.Request) (string, *session, bool) {
	c, err := r.Cookie(sessionCookie)
	if err != nil || c.Value == "" {
		return "", nil, false
	}
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.byID[c.Value]
	if !ok {
		return "", nil, false
	}
	if s.expired(v, now) {
		delete(s.byID, c.Value)
		return "", nil, false
	}
	v.seen = now
	return c.Value, v, true
}

func (s *sessions) delete(id string) {
	s.mu.Lock()
	delete(s.byID, id)
	s.mu.Unlock()
}

func (s *sessions) setFlash(sess *session, msg string) {
	s.mu.Lock()
	sess.flash = msg
	s.mu.Unlock()
}

func (s *sessions) takeFlash(sess *session) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	msg := sess.flash
	sess.flash = ""
	return msg
}

func (s *sessions) setLast(sess *session, f nodeForm) {
	s.mu.Lock()
	sess.last = nodeForm{Name: f.Name, Group: f.Group, Image: f.Image, Donate: f.Donate, Window: f.Window, VolumeSize: f.VolumeSize}
	s.mu.Unlock()
}

func (s *sessions) lastEnrolled(sess *session) nodeForm {
	s.mu.Lock()
	defer s.mu.Unlock()
	return sess.last
}

// validCSRF reports whether the request carries the session's CSRF token in the form field or
// the header.
func validCSRF(r *http.Request, sess *session) bool {
	tok := r.Header.Get(CSRFHeader)
	if tok == "" {
		tok = r.PostFormValue(csrfField)
	}
	return validCSRFToken(tok, sess)
}

func validCSRFToken(tok string, sess *session) bool {
	return tok != "" && subtle.ConstantTimeCompare([]byte(tok), []byte(sess.csrf)) == 1
}

// loginLimiter allows a few failed login attempts per client IP per window.
type loginLimiter struct {
	mu     sync.Mutex
	max    int
	window time.Duration
	now    func() time.Time
	tries  map[string][]time.Time
}

// blocked reports whether ip used up its failed attempts; wait says when the oldest one
// leaves the window.
func (l *loginLimiter) blocked(ip string) (bool, time.Duration) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	ts := l.prune(ip, now)
	if len(ts) >= l.max {
		return true, l.window - now.Sub(ts[0])
	}
	return false, 0
}

// fail counts a failed attempt from ip.
func (l *loginLimiter) fail(ip string) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.tries) > 4096 { // bound memory against address-spraying clients
		for k := range l.tries {
			l.prune(k, now)
		}
	}
	l.tries[ip] = append(l.prune(ip, now), now)
}

func (l *loginLimiter) prune(ip string, now time.Time) []time.Time {
	ts := l.tries[ip]
	keep := ts[:0]
	for _, t := range ts {
		if now.Sub(t) < l.window {
			keep = append(keep, t)
		}
	}
	if len(keep) == 0 {
		delete(l.tries, ip)
		return nil
	}
	l.tries[ip] = keep
	return keep
}

// clientIP is the peer address: X-Forwarded-For is not trusted (anyone can send it).
func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// loginToken binds the login form to a nonce cookie (login CSRF: there is no session yet).
func (w *Web) loginToken(nonce string) string {
	m := hmac.New(sha256.New, w.key)
	m.Write([]byte("login\x00" + nonce))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

func (w *Web) validLoginToken(r *http.Request) bool {
	c, err := r.Cookie(loginCookie)
	if err != nil || c.Value == "" {
		return false
	}
	return hmac.Equal([]byte(r.PostFormValue(csrfField)), []byte(w.loginToken(c.Value)))
}

func (w *Web) setCookie(wr http.ResponseWriter, r *http.Request, name, value string, maxAge int) {
	http.SetCookie(wr, &http.Cookie{
		Name: name, Value: value, Path: "/", MaxAge: maxAge,
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil || w.opt.SecureCookies,
	})
}
