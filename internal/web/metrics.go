package web

import (
	"net/http"
	"strconv"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the UI's Prometheus collectors; they count even when none is registered.
type metrics struct {
	requests    *prometheus.CounterVec // by route pattern and status code
	logins      *prometheus.CounterVec // by result
	enrollments *prometheus.CounterVec // by way (form, bulk)
	sessions    prometheus.GaugeFunc
	streams     prometheus.GaugeFunc
	openStreams atomic.Int64
}

// Login results counted in logins_total.
const (
	loginOK          = "ok"
	loginWrong       = "wrong_password"
	loginLimited     = "rate_limited"
	loginBadToken    = "bad_form_token"
	loginSetup       = "setup"
	loginSetupFailed = "setup_failed"
)

func newMetrics(reg prometheus.Registerer, s *sessions) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "distonet", Subsystem: "web", Name: "requests_total",
			Help: "Web UI requests, by route pattern and HTTP status code.",
		}, []string{"route", "code"}),
		logins: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "distonet", Subsystem: "web", Name: "logins_total",
			Help: "Login and first-run setup attempts, by result.",
		}, []string{"result"}),
		enrollments: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "distonet", Subsystem: "web", Name: "enrollments_total",
			Help: "Nodes enrolled from the web UI, by way (form, bulk).",
		}, []string{"via"}),
	}
	m.sessions = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: "distonet", Subsystem: "web", Name: "sessions",
		Help: "Logged-in sessions not yet expired.",
	}, func() float64 { return float64(s.live()) })
	m.streams = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: "distonet", Subsystem: "web", Name: "event_streams",
		Help: "Open live-update (server-sent events) streams.",
	}, func() float64 { return float64(m.openStreams.Load()) })
	if reg != nil {
		for _, c := range m.collectors() {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}

func (m *metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.requests, m.logins, m.enrollments, m.sessions, m.streams}
}

// statusWriter remembers the status code; Unwrap keeps http.ResponseController (Flush for
// the event stream) working through it.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (s *statusWriter) WriteHeader(code int) {
	if s.code == 0 {
		s.code = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(b []byte) (int, error) {
	if s.code == 0 {
		s.code = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

func (m *metrics) observe(r *http.Request, code int) {
	route := r.Pattern // the mux pattern: bounded, unlike the path
	if route == "" {
		route = "other"
	}
	if code == 0 {
		code = http.StatusOK
	}
	m.requests.WithLabelValues(route, strconv.Itoa(code)).Inc()
}
