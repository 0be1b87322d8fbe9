package httpboot

import (
	"fmt"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

// Values of the "route" label.
const (
	routeScript = "script"
	routeFile   = "file"
	routeOther  = "other"
)

type metrics struct {
	requests *prometheus.CounterVec // route, code
	bytes    *prometheus.CounterVec // route
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "distonet", Subsystem: "httpboot", Name: "requests_total",
			Help: "HTTP boot requests by route (script, file) and status code.",
		}, []string{"route", "code"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "distonet", Subsystem: "httpboot", Name: "sent_bytes_total",
			Help: "Response body bytes sent by route.",
		}, []string{"route"}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.requests, m.bytes} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("register httpboot metrics: %w", err)
			}
		}
	}
	return m, nil
}

func (m *metrics) observe(route string, code int, n int64) {
	m.requests.WithLabelValues(route, strconv.Itoa(code)).Inc()
	m.bytes.WithLabelValues(route).Add(float64(n))
}
