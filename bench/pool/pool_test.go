// Package poolbench measures the pooled volume against its members, in the same run: inside a
// QEMU pool-head guest (package poolvm; md and aoe exist only there), sequential write and
// read MB/s of each AoE member alone (/dev/etherd/eN.0, vblade donors on the host), then of
// the md RAID6 the head builds over them. It prints the figures and the ratio of the array to
// the sum of its members (the founding talk's RAID6 over AoE ran at ~60-110 MB/s on GigE).
//
// The guest runs under TCG: absolute figures are far below real hardware, the ratio is the
// number to read. It runs only when DISTONET_BENCH=1 (make bench).
package poolbench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/distonet/distonet/donate/pool"
	"github.com/distonet/distonet/donate/pool/head"
	"github.com/distonet/distonet/donate/pool/poolvm"
	"github.com/distonet/distonet/internal/lab"
	"golang.org/x/sys/unix"
)

const guestEnv = "DISTONET_POOL_BENCH_GUEST"

// Sizes: each donor file, what is moved per member, what is moved through the array.
const (
	donorBytes  = 160 << 20
	memberBytes = 64 << 20
	arrayBytes  = 128 << 20
	members     = 4
)

func TestMain(m *testing.M) {
	if os.Getenv(guestEnv) != "" {
		os.Exit(guestBench())
	}
	if os.Geteuid() == 0 {
		_ = lab.Sweep()
	}
	os.Exit(m.Run())
}

func BenchmarkPoolSequential(b *testing.B) {
	if os.Getenv("DISTONET_BENCH") == "" {
		b.Skip("boots a QEMU guest: set DISTONET_BENCH=1 (make bench)")
	}
	wd, err := os.Getwd()
	if err != nil {
		b.Fatal(err)
	}
	metrics := map[string]float64{}
	for i := 0; i < b.N; i++ {
		res := poolvm.Run(b, poolvm.Config{Package: wd, GuestEnv: guestEnv, Donors: members, DonorBytes: donorBytes, MemoryMB: 1024,
			OnLine: func(line string) {
				f := strings.Fields(line)
				if len(f) == 3 && f[0] == "METRIC" {
					if v, err := strconv.ParseFloat(f[2], 64); err == nil {
						metrics[f[1]] = v
					}
				}
			}})
		if res != "ok" {
			b.Fatalf("guest: %s", res)
		}
	}
	var sumW, sumR float64
	for s := 1; s <= members; s++ {
		sumW += metrics[fmt.Sprintf("member%d_write_MBps", s)]
		sumR += metrics[fmt.Sprintf("member%d_read_MBps", s)]
	}
	mdW, mdR := metrics["md_write_MBps"], metrics["md_read_MBps"]
	if sumW == 0 || sumR == 0 || mdW == 0 || mdR == 0 || metrics["parallel_write_MBps"] == 0 || metrics["parallel_read_MBps"] == 0 {
		b.Fatalf("missing measurements: %v", metrics)
	}
	fmt.Printf("\npool (RAID6 over %d AoE members, QEMU TCG guest, vblade donors)\n", members)
	fmt.Printf("%-34s %10s %10s\n", "", "write MB/s", "read MB/s")
	for s := 1; s <= members; s++ {
		fmt.Printf("%-34s %10.1f %10.1f\n", fmt.Sprintf("member e%d.0 alone", s), metrics[fmt.Sprintf("member%d_write_MBps", s)], metrics[fmt.Sprintf("member%d_read_MBps", s)])
	}
	fmt.Printf("%-34s %10.1f %10.1f\n", "sum of members", sumW, sumR)
	pW, pR := metrics["parallel_write_MBps"], metrics["parallel_read_MBps"]
	fmt.Printf("%-34s %10.1f %10.1f\n", "all members at once", pW, pR)
	fmt.Printf("%-34s %10.1f %10.1f\n", "md RAID6 (/dev/md, 4 members)", mdW, mdR)
	fmt.Printf("%-34s %10.2f %10.2f\n", "ratio array / sum of members", mdW/sumW, mdR/sumR)
	fmt.Printf("%-34s %10.2f %10.2f\n", "ratio array / all members at once", mdW/pW, mdR/pR)
	fmt.Printf("%-34s %10.2f %10.2f\n", "ratio array / (members-2) x mean", mdW/(sumW/members*(members-2)), mdR/(sumR/members*(members-2)))
	b.ReportMetric(mdW, "md_write_MB/s")
	b.ReportMetric(mdR, "md_read_MB/s")
	b.ReportMetric(mdR/sumR, "read_ratio")
	b.ReportMetric(mdW/sumW, "write_ratio")
}

// guestBench runs inside the guest.
func guestBench() int {
	ctl, err := poolvm.OpenControl()
	if err != nil {
		fmt.Println(err)
		return 1
	}
	err = measure(ctl)
	ctl.Result(err)
	if err != nil {
		return 1
	}
	return 0
}

func measure(ctl *poolvm.Control) error {
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Minute)
	defer cancel()
	run := head.ExecRunner{}
	at := &head.AoE{Runner: run, Wait: 30 * time.Second}
	var disks []pool.Disk
	for s := 1; s <= members; s++ {
		d := pool.Disk{Node: fmt.Sprintf("n%d", s), Group: fmt.Sprintf("room%d", s), Transport: pool.TransportAoE, Address: fmt.Sprintf("e%d.0", s), SizeBytes: donorBytes}
		dev, err := at.Attach(ctx, d)
		if err != nil {
			return err
		}
		w, err := seqWrite(dev, memberBytes)
		if err != nil {
			return err
		}
		r, err := seqRead(dev, memberBytes)
		if err != nil {
			return err
		}
		ctl.Say(fmt.Sprintf("METRIC member%d_write_MBps %.2f", s, w))
		ctl.Say(fmt.Sprintf("METRIC member%d_read_MBps %.2f", s, r))
		disks = append(disks, d)
	}
	// All members at once: what the array could get if md were free.
	for _, op := range []string{"write", "read"} {
		var wg sync.WaitGroup
		errs := make(chan error, len(disks))
		start := time.Now()
		for _, d := range disks {
			wg.Add(1)
			go func(dev string) {
				defer wg.Done()
				var err error
				if op == "write" {
					_, err = seqWrite(dev, memberBytes)
				} else {
					_, err = seqRead(dev, memberBytes)
				}
				errs <- err
			}(filepath.Join("/dev/etherd", d.Address))
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				return err
			}
		}
		ctl.Say(fmt.Sprintf("METRIC parallel_%s_MBps %.2f", op, float64(len(disks)*memberBytes)/1e6/time.Since(start).Seconds()))
	}
	// Blank the superblock area the member writes filled, then build the array as the head does.
	for _, d := range disks {
		if err := zero(filepath.Join("/dev/etherd", d.Address), 8<<20); err != nil {
			return err
		}
	}
	h := head.New(head.Config{Runner: run, Filesystem: "none", Attachers: map[string]head.Attacher{pool.TransportAoE: at}})
	a := pool.Array{Name: "bench", Level: 6, MemberSizeBytes: donorBytes, Members: disks}
	st, err := h.Up(ctx, a, nil)
	if err != nil {
		return err
	}
	ctl.Say("STEP array " + st.State)
	if _, err := run.Run(ctx, "mdadm", "--wait", h.Device(a.Name)); err != nil && !strings.Contains(err.Error(), "exit 1") {
		return fmt.Errorf("wait for resync: %w", err)
	}
	w, err := seqWrite(h.Device(a.Name), arrayBytes)
	if err != nil {
		return err
	}
	r, err := seqRead(h.Device(a.Name), arrayBytes)
	if err != nil {
		return err
	}
	ctl.Say(fmt.Sprintf("METRIC md_write_MBps %.2f", w))
	ctl.Say(fmt.Sprintf("METRIC md_read_MBps %.2f", r))
	return h.Stop(ctx, a)
}

// seqWrite writes n bytes in 1 MiB blocks with O_DIRECT (no page cache on either side of
// the measure) and returns MB/s.
func seqWrite(dev string, n int) (float64, error) {
	f, err := os.OpenFile(dev, os.O_WRONLY|unix.O_DIRECT, 0)
	if err != nil {
		return 0, fmt.Errorf("open %s: %w", dev, err)
	}
	defer f.Close()
	buf := aligned(1 << 20)
	for i := range buf {
		buf[i] = byte(i*7 + i>>12)
	}
	start := time.Now()
	for off := 0; off < n; off += len(buf) {
		if _, err := f.Write(buf); err != nil {
			return 0, fmt.Errorf("write %s at %d: %w", dev, off, err)
		}
	}
	if err := f.Sync(); err != nil {
		return 0, err
	}
	return float64(n) / 1e6 / time.Since(start).Seconds(), nil
}

func seqRead(dev string, n int) (float64, error) {
	f, err := os.OpenFile(dev, os.O_RDONLY|unix.O_DIRECT, 0)
	if err != nil {
		return 0, fmt.Errorf("open %s: %w", dev, err)
	}
	defer f.Close()
	buf := aligned(1 << 20)
	start := time.Now()
	for off := 0; off < n; off += len(buf) {
		if _, err := f.Read(buf); err != nil {
			return 0, fmt.Errorf("read %s at %d: %w", dev, off, err)
		}
	}
	return float64(n) / 1e6 / time.Since(start).Seconds(), nil
}

func zero(dev string, n int) error {
	f, err := os.OpenFile(dev, os.O_WRONLY|unix.O_DIRECT, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	buf := aligned(1 << 20)
	for off := 0; off < n; off += len(buf) {
		if _, err := f.Write(buf); err != nil {
			return err
		}
	}
	return f.Sync()
}

// aligned returns a page-aligned buffer (anonymous mmap), as O_DIRECT wants.
func aligned(n int) []byte {
	b, err := unix.Mmap(-1, 0, n, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
	if err != nil {
		panic(fmt.Sprintf("mmap %d: %v", n, err))
	}
	return b
}
