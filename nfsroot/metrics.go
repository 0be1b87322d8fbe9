package nfsroot

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the server's Prometheus series; with a nil Registerer they are kept but not
// exported.
type metrics struct {
	calls       *prometheus.CounterVec
	denied      prometheus.Counter
	mounts      *prometheus.CounterVec
	readBytes   prometheus.Counter
	connections prometheus.Gauge
	indexFiles  prometheus.Gauge
	indexBytes  prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "distonet_nfs_calls_total", Help: "RPC calls answered, by program and procedure.",
		}, []string{"program", "proc"}),
		denied: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "distonet_nfs_denied_total", Help: "Calls refused by the export policy.",
		}),
		mounts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "distonet_nfs_mounts_total", Help: "MOUNT requests by result.",
		}, []string{"result"}),
		readBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "distonet_nfs_read_bytes_total", Help: "File data bytes sent by READ.",
		}),
		connections: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "distonet_nfs_connections", Help: "Open TCP connections.",
		}),
		indexFiles: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "distonet_nfs_index_files", Help: "Files in the inode indexes built so far.",
		}),
		indexBytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "distonet_nfs_index_bytes", Help: "Memory held by the inode indexes built so far.",
		}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.calls, m.denied, m.mounts, m.readBytes, m.connections, m.indexFiles, m.indexBytes} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
