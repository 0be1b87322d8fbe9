package dhcp

import (
	"context"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// BenchmarkDORA measures the server's own work for one DISCOVER/OFFER/
// REQUEST/ACK exchange without sockets: parse, allocate, build and encode the
// replies, and (with-log) append the lease and wait for its group commit.
// Run in parallel (-cpu) it shows how group commit batches fdatasyncs.
func BenchmarkDORA(b *testing.B) {
	for _, withLog := range []bool{false, true} {
		name := "memory"
		if withLog {
			name = "with-log"
		}
		b.Run(name, func(b *testing.B) {
			_, subnet, _ := net.ParseCIDR("10.0.0.0/8")
			cfg := DefaultConfig()
			cfg.Interface, cfg.ServerIP, cfg.Subnet = "bench0", net.IPv4(10, 0, 0, 1), subnet
			cfg.RangeStart, cfg.RangeEnd = net.IPv4(10, 1, 0, 0), net.IPv4(10, 254, 255, 255)
			cfg.BootHTTPBase = "http://10.0.0.1"
			cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
			cfg.ARPProbe = false // no sockets here
			if withLog {
				cfg.LeaseFile = filepath.Join(b.TempDir(), "leases.log")
			}
			s, err := New(cfg, nil)
			if err != nil {
				b.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { s.table.runWriter(ctx); close(done) }()
			defer func() { cancel(); <-done; s.closeLog() }()

			var seq atomic.Uint64
			// One DISCOVER on the wire; each exchange patches its chaddr (offset 28).
			tmpl, _ := dhcpv4.NewDiscovery(net.HardwareAddr{2, 0, 0, 0, 0, 0}, dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient:Arch:00000:UNDI:002001")))
			wire := tmpl.ToBytes()
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					n := seq.Add(1)
					pkt := append([]byte(nil), wire...)
					copy(pkt[28:34], []byte{2, byte(n >> 32), byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)})
					req, err := dhcpv4.FromBytes(pkt)
					if err != nil {
						b.Fatal(err)
					}
					now := time.Now()
					ci := classify(req, now)
					ip, _, err := s.table.offer(s.key(req), req.ClientHWAddr, nil, nil, nil, time.Minute, now)
					if err != nil {
						b.Fatal(err)
					}
					offer := s.newReply(req, dhcpv4.MessageTypeOffer)
					offer.YourIPAddr = ip
					s.addLeaseOptions(offer, Host{})
					if bi, ok := s.bootFor(ci); ok {
						s.addBootOptions(offer, req, bi, false)
					}
					_ = offer.ToBytes()
					c, err := s.table.bind(s.key(req), req.ClientHWAddr, nil, ip, nil, "", time.Hour, now)
					if err != nil {
						b.Fatal(err)
					}
					if err := wait(ctx, c); err != nil {
						b.Fatal(err)
					}
					ack := s.newReply(req, dhcpv4.MessageTypeAck)
					ack.YourIPAddr = ip
					s.addLeaseOptions(ack, Host{})
					_ = ack.ToBytes()
				}
			})
			b.StopTimer()
			if withLog {
				recs, syncs := s.LeaseLogStats()
				b.ReportMetric(float64(recs)/max(1, float64(syncs)), "records/sync")
			}
		})
	}
}
