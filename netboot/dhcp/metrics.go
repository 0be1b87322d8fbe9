package dhcp

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the server's Prometheus collectors. They exist (and count) even
// when no registerer is configured, so tests can read them.
type metrics struct {
	requests *prometheus.CounterVec // by message type
	replies  *prometheus.CounterVec // by message type
	errors   *prometheus.CounterVec // by reason
	leases   prometheus.GaugeFunc
	records  prometheus.CounterFunc
	syncs    prometheus.CounterFunc
	arp      *prometheus.CounterVec // ARP checks, by kind and result
	verified prometheus.GaugeFunc
}

func newMetrics(reg prometheus.Registerer, t *leaseTable) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "distonet", Subsystem: "dhcp", Name: "requests_total",
			Help: "DHCP requests received, by message type.",
		}, []string{"type"}),
		replies: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "distonet", Subsystem: "dhcp", Name: "replies_total",
			Help: "DHCP replies sent, by message type.",
		}, []string{"type"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "distonet", Subsystem: "dhcp", Name: "errors_total",
			Help: "DHCP requests not answered normally, by reason.",
		}, []string{"reason"}),
		leases: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: "distonet", Subsystem: "dhcp", Name: "leases_in_use",
			Help: "Addresses bound to a client and not expired.",
		}, func() float64 { return float64(t.active(time.Now())) }),
		records: prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: "distonet", Subsystem: "dhcp", Name: "lease_log_records_total",
			Help: "Lease records appended to the lease log.",
		}, func() float64 { return float64(t.written.Load()) }),
		syncs: prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: "distonet", Subsystem: "dhcp", Name: "lease_log_syncs_total",
			Help: "fdatasync calls on the lease log; records/syncs is the group-commit batch size.",
		}, func() float64 { return float64(t.syncs.Load()) }),
		arp: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "distonet", Subsystem: "dhcp", Name: "arp_checks_total",
			Help: "Addresses checked for use by another host: kind ahead (background probe), inline (probe while a client waits) or seen (claimed in ARP traffic); result free or in_use.",
		}, []string{"kind", "result"}),
		verified: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: "distonet", Subsystem: "dhcp", Name: "arp_verified_addresses",
			Help: "Addresses of the range verified free by ARP and ready to offer.",
		}, func() float64 { return float64(t.verifiedCount()) }),
	}
	if reg != nil {
		for _, c := range m.collectors() {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}

// unregister removes the collectors, so a new Server can register its own
// (the daemon restarts DHCP on a configuration change).
func (m *metrics) unregister(reg prometheus.Registerer) {
	if reg == nil {
		return
	}
	for _, c := range m.collectors() {
		reg.Unregister(c)
	}
}

func (m *metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.requests, m.replies, m.errors, m.leases, m.records, m.syncs, m.arp, m.verified}
}

// Reasons counted in errors_total.
const (
	errMalformed     = "malformed"
	errExhaustedMsg  = "exhausted"
	errNak           = "nak"
	errForeignRelay  = "foreign_relay"
	errSend          = "send"
	errLeaseLog      = "lease_log"
	errNoBootFile    = "no_boot_file"
	errStale         = "stale"       // queued longer than staleAfter under overload
	errNoFreeChecked = "in_use"      // every address tried for a DISCOVER was in use on the link
	errParkFull      = "arp_backlog" // too many DISCOVERs already waiting for an ARP check
)

// Kinds and results of ARP checks (arp_checks_total).
const (
	probeAhead  = "ahead"
	probeInline = "inline"
	probeSeen   = "seen"
	probeFree   = "free"
	probeInUse  = "in_use"
)
