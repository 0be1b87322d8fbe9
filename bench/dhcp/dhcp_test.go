// Package dhcpbench compares the DiStoNet DHCP server with Kea (kea-dhcp4,
// memfile leases persisted) and dnsmasq (lease file, --no-ping) on this
// machine, in the same run, with the same load generator: perfdhcp from
// Debian's kea-admin, in a client namespace, DORA exchanges. It prints
// exchanges per second, drops and latency per server, and the ratios.
//
// DiStoNet runs twice per point: with its ARP check of every new address on
// (the default: RFC 5227 probes sent ahead of demand, so offers do not wait)
// and off. perfdhcp's clients answer no ARP, so every probe runs to its
// timeout: the run shows what checking costs, and the ARP counters printed
// after it show that the probes were really sent.
//
// It is slow and noisy on shared cores, so it runs only when DISTONET_BENCH=1
// (make bench). DISTONET_DHCP_BENCH_TARGETS="1000,3000" picks the load points,
// DISTONET_DHCP_BENCH_VERBOSE=1 prints perfdhcp's output, and
// DISTONET_DHCP_BENCH_PROFILE=FILE writes a CPU profile of the DiStoNet runs
// (FILE.arp for the runs with the ARP check on).
//
// Durability differs and is part of the comparison: DiStoNet fdatasyncs each
// lease (in groups) before its ACK; Kea's memfile appends to its CSV without
// syncing (survives kill -9, not a power cut); dnsmasq rewrites its whole
// lease file on every change.
package dhcpbench

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"runtime/pprof"
	"strconv"
	"strings"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/distonet/distonet/internal/lab"
	"github.com/distonet/distonet/netboot/dhcp"
	"github.com/prometheus/client_golang/prometheus"
)

func TestMain(m *testing.M) {
	_ = lab.Sweep()
	os.Exit(m.Run())
}

// The benchmark link: 10.68.0.0/14, server .0.1, perfdhcp .0.2, pool of ~260k,
// so that no server runs out of addresses within a point (a /16 pool capped
// every server at 6400/s over 10 s).
const (
	serverIP  = "10.68.0.1"
	clientIP  = "10.68.0.2"
	poolStart = "10.68.1.0"
	poolEnd   = "10.71.250.255"
	subnet    = "10.68.0.0/14"
)

// result is what perfdhcp reports for one run.
type result struct {
	target      int     // requested exchanges/s (0: as fast as possible)
	rate        float64 // completed 4-way exchanges per second
	sent, drops int     // DISCOVERs sent, exchanges lost (both stages)
	avgMs       float64 // average DISCOVER-OFFER + REQUEST-ACK delay
	maxMs       float64
	acks        int
}

func (r result) dropPct() float64 {
	if r.sent == 0 {
		return 0
	}
	return 100 * float64(r.drops) / float64(r.sent)
}

type server struct {
	name  string
	start func(t *testing.T, ns *lab.Netns, ifname string) func()
}

var (
	period  = 10 * time.Second
	targets = []int{1000, 4000, 8000}
)

func TestBenchDORAvsKeaAndDnsmasq(t *testing.T) {
	if os.Getenv("DISTONET_BENCH") != "1" {
		t.Skip("benchmark: set DISTONET_BENCH=1 (make bench)")
	}
	lab.Require(t, "perfdhcp", "kea-dhcp4", "dnsmasq")
	// DISTONET_DHCP_BENCH_TARGETS="1000,5000" overrides the load points.
	if v := os.Getenv("DISTONET_DHCP_BENCH_TARGETS"); v != "" {
		targets = nil
		for _, f := range strings.Split(v, ",") {
			n, err := strconv.Atoi(f)
			if err != nil {
				t.Fatalf("DISTONET_DHCP_BENCH_TARGETS: %v", err)
			}
			targets = append(targets, n)
		}
	}
	servers := []server{
		{"kea (memfile)", startKea},
		{"dnsmasq (leasefile)", startDnsmasq},
		{"distonet (fdatasync, ARP check on)", func(t *testing.T, ns *lab.Netns, ifname string) func() {
			return startDistonet(t, ns, ifname, true)
		}},
		{"distonet (fdatasync, ARP check off)", func(t *testing.T, ns *lab.Netns, ifname string) func() {
			return startDistonet(t, ns, ifname, false)
		}},
	}
	// Servers take turns at each load point, and each point is run twice
	// (best kept), so a burst of load from elsewhere on the shared cores
	// hits all of them alike.
	res := map[string][]result{}
	for _, target := range targets {
		for _, s := range servers {
			var best result
			for try := 0; try < 2; try++ {
				r := run(t, s, target)
				t.Logf("%s @%d/s: %.0f/s, drops %d/%d, avg %.2f ms, max %.2f ms", s.name, target, r.rate, r.drops, r.sent, r.avgMs, r.maxMs)
				if r.acks > best.acks || (r.acks == best.acks && r.drops < best.drops) {
					best = r
				}
			}
			res[s.name] = append(res[s.name], best)
		}
	}
	var buf bytes.Buffer
	w := tabwriter.NewWriter(&buf, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "server\ttarget/s\tDORA/s\tdrops\tavg ms\tmax ms\tvs kea\tvs dnsmasq\t")
	kea, dm := res[servers[0].name], res[servers[1].name]
	for _, s := range servers {
		for i, r := range res[s.name] {
			fmt.Fprintf(w, "%s\t%d\t%.0f\t%.2f%%\t%.2f\t%.2f\t%.2fx\t%.2fx\t\n", s.name, r.target, r.rate, r.dropPct(), r.avgMs, r.maxMs, r.rate/kea[i].rate, r.rate/dm[i].rate)
		}
	}
	w.Flush()
	peak := func(rs []result) float64 {
		m := 0.0
		for _, r := range rs {
			m = max(m, r.rate)
		}
		return m
	}
	fmt.Printf("\nDHCPv4 DORA, perfdhcp %v per point, fresh server and lease file per point, same run\n%s", period, buf.String())
	fmt.Printf("peak DORA/s: kea %.0f, dnsmasq %.0f\n", peak(kea), peak(dm))
	for _, s := range servers[2:] {
		p := peak(res[s.name])
		fmt.Printf("peak DORA/s: %s %.0f -> %.2fx kea, %.2fx dnsmasq\n", s.name, p, p/peak(kea), p/peak(dm))
	}
	on, off := peak(res[servers[2].name]), peak(res[servers[3].name])
	fmt.Printf("ARP check on/off: %.2fx\n", on/off)
	fmt.Println("goals: peak >= 1.00x kea with leases fdatasync'ed before each ACK and the ARP check on; 0 drops at 1000/s")
}

// run starts a fresh server and lease file, then drives it with perfdhcp.
func run(t *testing.T, s server, target int) result {
	t.Helper()
	var r result
	t.Run(fmt.Sprintf("%s@%d", strings.Fields(s.name)[0], target), func(t *testing.T) {
		srv, cli := lab.NewNetns(t), lab.NewNetns(t)
		srvIf, cliIf := lab.Veth(t, srv, serverIP+"/14", cli, clientIP+"/14")
		stop := s.start(t, srv, srvIf)
		defer stop()
		clients := target * int(period/time.Second) * 2
		args := []string{"-4", "-l", cliIf, "-r", strconv.Itoa(target), "-p", strconv.Itoa(int(period / time.Second)),
			"-R", strconv.Itoa(clients), "-d", "2", "-W", "1500000", serverIP}
		out, err := cli.Exec("perfdhcp", args...)
		if err != nil && !strings.Contains(out, "Statistics for") {
			t.Fatalf("perfdhcp: %v\n%s", err, out)
		}
		r = parsePerfdhcp(t, out)
		r.target = target
		if r.acks == 0 || os.Getenv("DISTONET_DHCP_BENCH_VERBOSE") != "" {
			t.Logf("perfdhcp output:\n%s", out)
		}
	})
	return r
}

var (
	reStage = regexp.MustCompile(`\*\*\*Statistics for: (\S+)\*\*\*`)
	reField = regexp.MustCompile(`(?m)^(sent packets|received packets|drops|avg delay|max delay): ([0-9.]+)`)
)

func parsePerfdhcp(t *testing.T, out string) result {
	var r result
	stages := reStage.FindAllStringIndex(out, -1)
	for i, loc := range stages {
		end := len(out)
		if i+1 < len(stages) {
			end = stages[i+1][0]
		}
		name := reStage.FindStringSubmatch(out[loc[0]:loc[1]])[1]
		fields := map[string]float64{}
		for _, m := range reField.FindAllStringSubmatch(out[loc[1]:end], -1) {
			fields[m[1]], _ = strconv.ParseFloat(m[2], 64)
		}
		r.drops += int(fields["drops"])
		r.avgMs += fields["avg delay"]
		r.maxMs = max(r.maxMs, fields["max delay"])
		switch name {
		case "DISCOVER-OFFER":
			r.sent = int(fields["sent packets"])
		case "REQUEST-ACK":
			r.acks = int(fields["received packets"])
		}
	}
	r.rate = float64(r.acks) / period.Seconds()
	return r
}

func startDistonet(t *testing.T, ns *lab.Netns, ifname string, arpCheck bool) func() {
	cfg := dhcp.DefaultConfig()
	cfg.ARPProbe = arpCheck
	reg := prometheus.NewRegistry()
	cfg.Metrics = reg
	cfg.Interface = ifname
	cfg.ServerIP = net.ParseIP(serverIP)
	_, cfg.Subnet, _ = net.ParseCIDR(subnet)
	cfg.RangeStart, cfg.RangeEnd = net.ParseIP(poolStart), net.ParseIP(poolEnd)
	cfg.LeaseTime = time.Hour
	cfg.LeaseFile = filepath.Join(t.TempDir(), "leases.log")
	cfg.IgnoreOtherServers = true
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	srv, err := dhcp.New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- ns.Do(func() error { return srv.Serve(ctx) }) }()
	select {
	case <-srv.Ready():
	case err := <-errc:
		t.Fatal(err)
	}
	if p := os.Getenv("DISTONET_DHCP_BENCH_PROFILE"); p != "" {
		if arpCheck {
			p += ".arp"
		}
		f, err := os.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		pprof.StartCPUProfile(f)
		t.Cleanup(func() { pprof.StopCPUProfile(); f.Close() })
	}
	return func() {
		// Read before Close: the server unregisters its collectors.
		if arpCheck {
			t.Logf("distonet ARP checks: %s", counters(t, reg, "distonet_dhcp_arp_checks_total"))
		}
		t.Logf("distonet requests not answered normally: %s", counters(t, reg, "distonet_dhcp_errors_total"))
		cancel()
		srv.Close()
		recs, syncs := srv.LeaseLogStats()
		t.Logf("distonet lease log: %d records in %d fdatasyncs (%.1f per sync)", recs, syncs, float64(recs)/max(1, float64(syncs)))
	}
}

// counters reads a counter vector of the server, "label/label=n ...".
func counters(t *testing.T, reg *prometheus.Registry, name string) string {
	mf, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var parts []string
	for _, f := range mf {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			var l []string
			for _, p := range m.GetLabel() {
				l = append(l, p.GetValue())
			}
			parts = append(parts, fmt.Sprintf("%s=%.0f", strings.Join(l, "/"), m.GetCounter().GetValue()))
		}
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, " ")
}

func startKea(t *testing.T, ns *lab.Netns, ifname string) func() {
	dir := t.TempDir()
	conf := fmt.Sprintf(`{"Dhcp4": {
  "interfaces-config": {"interfaces": [%q]},
  "lease-database": {"type": "memfile", "persist": true, "name": %q, "lfc-interval": 0},
  "valid-lifetime": 3600,
  "subnet4": [{"id": 1, "subnet": %q, "pools": [{"pool": "%s - %s"}]}],
  "loggers": [{"name": "kea-dhcp4", "output_options": [{"output": "stdout"}], "severity": "WARN"}]
}}`, ifname, filepath.Join(dir, "kea-leases4.csv"), subnet, poolStart, poolEnd)
	path := filepath.Join(dir, "kea.json")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := ns.Start("env", "KEA_LOCKFILE_DIR="+dir, "KEA_PIDFILE_DIR="+dir, "kea-dhcp4", "-c", path)
	waitUDP(t, ns, 67)
	return func() { _ = cmd.Process.Kill() }
}

func startDnsmasq(t *testing.T, ns *lab.Netns, ifname string) func() {
	dir := t.TempDir()
	cmd := ns.Start("dnsmasq", "--no-daemon", "--conf-file=/dev/null", "--port=0", "--user=root",
		"--interface="+ifname, "--bind-interfaces", "--no-ping", "--dhcp-lease-max=400000",
		"--dhcp-range="+poolStart+","+poolEnd+",1h", "--dhcp-leasefile="+filepath.Join(dir, "leases"),
		"--pid-file="+filepath.Join(dir, "pid"))
	waitUDP(t, ns, 67)
	return func() { _ = cmd.Process.Kill() }
}

// waitUDP waits until something in ns listens on the UDP port.
func waitUDP(t *testing.T, ns *lab.Netns, port int) {
	t.Helper()
	for i := 0; i < 100; i++ {
		out, _ := ns.Exec("ss", "-Hlun", fmt.Sprintf("sport = :%d", port))
		if strings.TrimSpace(out) != "" {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("nothing listens on udp/%d", port)
}
