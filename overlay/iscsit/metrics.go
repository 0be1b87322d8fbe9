package iscsit

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the target's Prometheus collectors. Labels are bounded: target IQNs are the
// enrolled nodes, results a fixed set.
type metrics struct {
	logins   *prometheus.CounterVec
	sessions prometheus.Gauge
	commands *prometheus.CounterVec
	bytes    *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		logins: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "distonet", Subsystem: "iscsi", Name: "logins_total",
			Help: "iSCSI logins by result (ok, auth_failed, not_found, not_allowed, error).",
		}, []string{"result"}),
		sessions: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "distonet", Subsystem: "iscsi", Name: "sessions",
			Help: "Logged-in iSCSI sessions.",
		}),
		commands: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "distonet", Subsystem: "iscsi", Name: "commands_total",
			Help: "SCSI commands by kind (read, write, sync, other) and status (good, check).",
		}, []string{"kind", "status"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "distonet", Subsystem: "iscsi", Name: "bytes_total",
			Help: "Bytes moved by READ and WRITE commands.",
		}, []string{"direction"}),
	}
	if reg == nil {
		return m, nil
	}
	var err error
	if m.logins, err = register(reg, m.logins); err != nil {
		return nil, err
	}
	if m.sessions, err = register(reg, m.sessions); err != nil {
		return nil, err
	}
	if m.commands, err = register(reg, m.commands); err != nil {
		return nil, err
	}
	if m.bytes, err = register(reg, m.bytes); err != nil {
		return nil, err
	}
	return m, nil
}

// register adds c to reg, or returns the collector already registered under its name (a
// second Server in the same process, e.g. after a reload).
func register[T prometheus.Collector](reg prometheus.Registerer, c T) (T, error) {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(T); ok {
				return existing, nil
			}
		}
		return c, fmt.Errorf("register iscsi metrics: %w", err)
	}
	return c, nil
}
