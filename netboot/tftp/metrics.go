package tftp

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Transfer results, the values of the "result" label.
const (
	resultOK         = "ok"          // file sent and acknowledged
	resultNotFound   = "not_found"   // no such file (or not a regular file)
	resultDenied     = "denied"      // traversal, absolute path, symlink out, write request
	resultBadRequest = "bad_request" // malformed request
	resultFailed     = "failed"      // started but did not finish (client gone, client error)
	resultShutdown   = "shutdown"    // aborted because the server closed
	resultBusy       = "busy"        // refused: Config.MaxTransfers reached
)

// Values of the "engine" label.
const (
	engineLockstep = "lockstep" // one block in flight (RFC 1350)
	engineWindow   = "window"   // send-ahead or RFC 7440 windowsize
)

type metrics struct {
	engines   *prometheus.CounterVec
	transfers *prometheus.CounterVec
	bytes     prometheus.Counter
	active    prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		engines: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "distonet", Subsystem: "tftp", Name: "transfers_started_total",
			Help: "TFTP transfers started, by engine: lockstep (one block in flight) or window (send-ahead, windowsize).",
		}, []string{"engine"}),
		transfers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "distonet", Subsystem: "tftp", Name: "requests_total",
			Help: "TFTP read requests by result.",
		}, []string{"result"}),
		bytes: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "distonet", Subsystem: "tftp", Name: "sent_bytes_total",
			Help: "File bytes sent over TFTP.",
		}),
		active: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "distonet", Subsystem: "tftp", Name: "transfers_active",
			Help: "TFTP transfers in progress.",
		}),
	}
	// Pre-create every label so dashboards show zeroes rather than gaps.
	m.engines.WithLabelValues(engineLockstep)
	m.engines.WithLabelValues(engineWindow)
	for _, r := range []string{resultOK, resultNotFound, resultDenied, resultBadRequest, resultFailed, resultShutdown, resultBusy} {
		m.transfers.WithLabelValues(r)
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.engines, m.transfers, m.bytes, m.active} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("register tftp metrics: %w", err)
			}
		}
	}
	return m, nil
}
