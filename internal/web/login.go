package web

import (
	"fmt"
	"net/http"
	"time"
)

type loginData struct {
	Next  string
	Error string
}

func (w *Web) loginPage(wr http.ResponseWriter, r *http.Request) {
	if !HasPassword(w.opt.StateDir) {
		http.Redirect(wr, r, "/setup", http.StatusSeeOther)
		return
	}
	if _, _, ok := w.sessions.get(r); ok {
		http.Redirect(wr, r, safeNext(r.URL.Query().Get("next")), http.StatusSeeOther)
		return
	}
	w.renderLogin(wr, r, http.StatusOK, "login", "Log in", loginData{Next: safeNext(r.URL.Query().Get("next"))})
}

// renderLogin renders a page that has no session yet, with a form token bound to a fresh
// nonce cookie.
func (w *Web) renderLogin(wr http.ResponseWriter, r *http.Request, status int, name, title string, d any) {
	// Keep an existing nonce: a second login page load (another tab, a stray request) must
	// not invalidate a form already on screen.
	nonce := randomToken(18)
	if c, err := r.Cookie(loginCookie); err == nil && len(c.Value) >= 16 && len(c.Value) <= 64 {
		nonce = c.Value
	}
	w.setCookie(wr, r, loginCookie, nonce, 3600)
	p := w.newPage(nil, title, "", d)
	p.CSRF = w.loginToken(nonce)
	w.render(wr, r, status, name, p)
}

func (w *Web) tooMany(wr http.ResponseWriter, r *http.Request, name, title string, d loginData, wait time.Duration) {
	d.Error = fmt.Sprintf("Too many failed attempts from %s: wait %d s before trying again.", clientIP(r), int(wait.Seconds()+0.999))
	wr.Header().Set("Retry-After", fmt.Sprint(int(wait.Seconds()+0.999)))
	w.renderLogin(wr, r, http.StatusTooManyRequests, name, title, d)
}

func (w *Web) login(wr http.ResponseWriter, r *http.Request) {
	ip := clientIP(r)
	d := loginData{Next: safeNext(r.PostFormValue("next"))}
	if blocked, wait := w.limiter.blocked(ip); blocked {
		w.log.Warn("web: login rate-limited", "ip", ip)
		w.m.logins.WithLabelValues(loginLimited).Inc()
		w.tooMany(wr, r, "login", "Log in", d, wait)
		return
	}
	if !w.validLoginToken(r) {
		w.m.logins.WithLabelValues(loginBadToken).Inc()
		d.Error = "The login form expired (or cookies are off): try again."
		w.renderLogin(wr, r, http.StatusForbidden, "login", "Log in", d)
		return
	}
	if err := verifyPassword(w.opt.StateDir, []byte(r.PostFormValue("password"))); err != nil {
		w.limiter.fail(ip)
		w.m.logins.WithLabelValues(loginWrong).Inc()
		w.log.Warn("web: login failed", "ip", ip)
		d.Error = "Wrong password."
		w.renderLogin(wr, r, http.StatusUnauthorized, "login", "Log in", d)
		return
	}
	w.startSession(wr, r)
	w.m.logins.WithLabelValues(loginOK).Inc()
	w.log.Info("web: admin logged in", "ip", ip)
	http.Redirect(wr, r, d.Next, http.StatusSeeOther)
}

func (w *Web) startSession(wr http.ResponseWriter, r *http.Request) {
	if old, err := r.Cookie(sessionCookie); err == nil {
		w.sessions.delete(old.Value) // never keep a pre-login id (session fixation)
	}
	id, _ := w.sessions.create()
	w.setCookie(wr, r, sessionCookie, id, int(w.opt.SessionTTL.Seconds()))
	w.setCookie(wr, r, loginCookie, "", -1)
}

func (w *Web) logout(wr http.ResponseWriter, r *http.Request, c *reqCtx) {
	w.sessions.delete(c.id)
	w.setCookie(wr, r, sessionCookie, "", -1)
	w.log.Info("web: admin logged out", "ip", clientIP(r))
	http.Redirect(wr, r, "/login", http.StatusSeeOther)
}

type setupData struct {
	Errors map[string]string
	Error  string
	Token  string // prefilled from /setup?token=… (the link the daemon prints)
}

func (w *Web) setupPage(wr http.ResponseWriter, r *http.Request) {
	if HasPassword(w.opt.StateDir) {
		http.Redirect(wr, r, "/login", http.StatusSeeOther)
		return
	}
	w.renderLogin(wr, r, http.StatusOK, "setup", "First-run setup", setupData{Token: r.URL.Query().Get("token")})
}

func (w *Web) setup(wr http.ResponseWriter, r *http.Request) {
	w.setupMu.Lock()
	defer w.setupMu.Unlock()
	if HasPassword(w.opt.StateDir) {
		http.Redirect(wr, r, "/login", http.StatusSeeOther)
		return
	}
	ip := clientIP(r)
	if blocked, wait := w.limiter.blocked(ip); blocked {
		d := setupData{Error: fmt.Sprintf("Too many failed attempts from %s: wait %d s before trying again.", ip, int(wait.Seconds()+0.999))}
		wr.Header().Set("Retry-After", fmt.Sprint(int(wait.Seconds()+0.999)))
		w.renderLogin(wr, r, http.StatusTooManyRequests, "setup", "First-run setup", d)
		return
	}
	d := setupData{Errors: map[string]string{}, Token: r.PostFormValue("token")}
	if !w.validLoginToken(r) {
		d.Error = "The form expired (or cookies are off): try again."
		w.renderLogin(wr, r, http.StatusForbidden, "setup", "First-run setup", d)
		return
	}
	if !checkSetupToken(w.opt.StateDir, r.PostFormValue("token")) {
		w.limiter.fail(ip)
		w.log.Warn("web: wrong first-run setup token", "ip", ip)
		d.Errors["token"] = "Wrong setup token: use the one the daemon printed at its latest start."
	}
	pw := []byte(r.PostFormValue("password"))
	if err := checkPassword(pw); err != nil {
		d.Errors["password"] = err.Error()
	} else if r.PostFormValue("confirm") != string(pw) {
		d.Errors["confirm"] = "the two passwords differ"
	}
	if len(d.Errors) > 0 {
		w.m.logins.WithLabelValues(loginSetupFailed).Inc()
		w.renderLogin(wr, r, http.StatusUnprocessableEntity, "setup", "First-run setup", d)
		return
	}
	if err := SetPassword(w.opt.StateDir, pw); err != nil {
		w.log.Error("web: set admin password", "err", err)
		d.Error = err.Error()
		w.renderLogin(wr, r, http.StatusInternalServerError, "setup", "First-run setup", d)
		return
	}
	w.m.logins.WithLabelValues(loginSetup).Inc()
	w.log.Info("web: admin password set at first-run setup", "ip", ip)
	w.startSession(wr, r)
	http.Redirect(wr, r, "/", http.StatusSeeOther)
}
