package appliance

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/distonet/distonet/internal/bootconfig"
	"github.com/distonet/distonet/internal/registry"
)

// bootMetrics observes how long each stage of a boot takes to be reached from the firmware's
// DHCP request, the figure the web UI's timelines show.
type bootMetrics struct {
	stage *prometheus.HistogramVec
}

func newBootMetrics(reg prometheus.Registerer) *bootMetrics {
	m := &bootMetrics{stage: prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "distonet_boot_stage_seconds",
		Help:    "Time from a node's firmware DHCP request to each boot stage it reached.",
		Buckets: []float64{1, 2, 5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 300},
	}, []string{"stage"})}
	reg.MustRegister(m.stage)
	return m
}

// observe records the stage the node just reported, from its timeline.
func (m *bootMetrics) observe(st *registry.Store, node string, ev bootconfig.Event) {
	tl, err := st.Timeline(node)
	if err != nil {
		return
	}
	b, ok := tl.LastBoot()
	if !ok {
		return
	}
	for i := len(b.Stages) - 1; i >= 0; i-- {
		if b.Stages[i].Stage == ev.Stage {
			m.stage.WithLabelValues(ev.Stage).Observe(b.Stages[i].Since.Seconds())
			return
		}
	}
}

// inventoryCollector reports nodes and pool capacity from the registry at each scrape.
type inventoryCollector struct {
	st    *registry.Store
	nodes *prometheus.Desc
	disks *prometheus.Desc
	bytes *prometheus.Desc
	disc  *prometheus.Desc
}

func newInventoryCollector(st *registry.Store) *inventoryCollector {
	return &inventoryCollector{
		st:    st,
		nodes: prometheus.NewDesc("distonet_nodes", "Enrolled nodes by donation mode.", []string{"donate"}, nil),
		disc:  prometheus.NewDesc("distonet_discovered_macs", "MACs seen at DHCP but not enrolled.", nil, nil),
		disks: prometheus.NewDesc("distonet_pool_disks", "Donated disks by state and transport.", []string{"state", "transport"}, nil),
		bytes: prometheus.NewDesc("distonet_pool_capacity_bytes", "Raw capacity of donated disks by state and window (\"always\" for always-on).", []string{"state", "window"}, nil),
	}
}

func (c *inventoryCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.nodes
	ch <- c.disc
	ch <- c.disks
	ch <- c.bytes
}

func (c *inventoryCollector) Collect(ch chan<- prometheus.Metric) {
	if nodes, err := c.st.Nodes(); err == nil {
		by := map[string]int{"none": 0, "aoe": 0, "iscsi": 0}
		for _, n := range nodes {
			by[n.Donate.Mode]++
		}
		for mode, n := range by {
			ch <- prometheus.MustNewConstMetric(c.nodes, prometheus.GaugeValue, float64(n), mode)
		}
	}
	if d, err := c.st.DiscoveredMACs(); err == nil {
		ch <- prometheus.MustNewConstMetric(c.disc, prometheus.GaugeValue, float64(len(d)))
	}
	disks, err := c.st.Disks()
	if err != nil {
		return
	}
	count := map[[2]string]int{}
	size := map[[2]string]int64{}
	for _, d := range disks {
		count[[2]string{d.State, d.Transport}]++
		w := d.Window
		if w == "" {
			w = "always"
		}
		size[[2]string{d.State, w}] += d.SizeBytes
	}
	for k, n := range count {
		ch <- prometheus.MustNewConstMetric(c.disks, prometheus.GaugeValue, float64(n), k[0], k[1])
	}
	for k, n := range size {
		ch <- prometheus.MustNewConstMetric(c.bytes, prometheus.GaugeValue, float64(n), k[0], k[1])
	}
}
