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
	for _, c := range []prometheus.Collector{m.logins, m.sessions, m.commands, m.bytes} {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if errors.As(err, &are) {
				continue
			}
			return nil, fmt.Errorf("register iscsi metrics: %w", err)
		}
	}
	return m, nil
}
