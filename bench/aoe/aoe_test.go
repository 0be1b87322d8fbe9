// Package aoebench compares the DiStoNet AoE target with Debian's vblade on this machine, in
// the same run, through the same user-space initiator (donate/aoe's, 16 tags): sequential
// read and write MB/s at MTU 1500 and 9000, vblade in its default mode and with -s (O_SYNC,
// the fair peer for our durable default). It prints a table of figures and ratios.
//
// It is slow and noisy on shared cores, so it runs only when DISTONET_BENCH=1 (make bench).
package aoebench

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/distonet/distonet/donate/aoe"
	"github.com/distonet/distonet/internal/lab"
)

func TestMain(m *testing.M) {
	_ = lab.Sweep()
	os.Exit(m.Run())
}

const (
	diskSize    = 256 << 20
	writeBudget = 64 << 20 // bytes written per run, unless the time cap hits first
	readBudget  = 128 << 20
	timeCap     = 4 * time.Second
	rounds      = 3       // interleaved rounds; the median is reported (the cores are shared)
	chunk       = 4 << 20 // bytes per ReadAt/WriteAt call: many frames, 16 in flight
)

type result struct{ readMBs, writeMBs float64 }

func TestCompareWithVblade(t *testing.T) {
	if os.Getenv("DISTONET_BENCH") != "1" {
		t.Skip("benchmark: set DISTONET_BENCH=1 (make bench)")
	}
	lab.Require(t, "vblade")
	peers := []struct {
		name string
		args []string // nil: our target
	}{
		{"vblade", []string{}},
		{"vblade -s", []string{"-s"}},
		{"distonet (durable)", nil},
	}
	file := diskFile(t)
	all := map[string][]result{}
	for round := range rounds {
		for _, mtu := range []int{1500, 9000} {
			for _, p := range peers {
				key := fmt.Sprintf("%d/%s", mtu, p.name)
				if only := os.Getenv("DISTONET_BENCH_ONLY"); only != "" && !strings.Contains(key, only) {
					continue
				}
				r := run(t, mtu, file, p.args)
				all[key] = append(all[key], r)
				t.Logf("round %d %s: read %.1f MB/s, write %.1f MB/s", round+1, key, r.readMBs, r.writeMBs)
			}
		}
	}
	res := map[string]result{}
	for k, rs := range all {
		res[k] = median(rs)
	}
	var buf bytes.Buffer
	w := tabwriter.NewWriter(&buf, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "MTU\ttarget\tread MB/s\twrite MB/s\tread vs vblade\twrite vs vblade -s\t")
	for _, mtu := range []int{1500, 9000} {
		v, vs := res[fmt.Sprintf("%d/vblade", mtu)], res[fmt.Sprintf("%d/vblade -s", mtu)]
		for _, p := range peers {
			r := res[fmt.Sprintf("%d/%s", mtu, p.name)]
			fmt.Fprintf(w, "%d\t%s\t%.1f\t%.1f\t%.2fx\t%.2fx\t\n", mtu, p.name, r.readMBs, r.writeMBs, r.readMBs/v.readMBs, r.writeMBs/vs.writeMBs)
		}
	}
	w.Flush()
	fmt.Printf("\nAoE sequential throughput, same initiator (16 tags), same file, same run, median of %d\n%s", rounds, buf.String())
	fmt.Println("goals: read >= 1.00x vblade, write >= 1.50x vblade -s (durable against O_SYNC)")
}

// run measures one target: vblade with args, or ours when args is nil.
func run(t *testing.T, mtu int, file string, vbladeArgs []string) result {
	ns1, ns2 := lab.NewNetns(t), lab.NewNetns(t)
	iIf, tIf := lab.Veth(t, ns1, "", ns2, "")
	ns1.SetMTU(iIf, mtu)
	ns2.SetMTU(tIf, mtu)
	tMAC := ns2.HardwareAddr(tIf)
	const shelf, slot = 10, 1
	if vbladeArgs != nil {
		stop := startPeer(t, ns2, "vblade", append(vbladeArgs, fmt.Sprint(shelf), fmt.Sprint(slot), tIf, file)...)
		defer stop()
	} else {
		var tg *aoe.Target
		if err := ns2.Do(func() (err error) {
			tg, err = aoe.NewTarget(aoe.TargetConfig{Interface: tIf, Shelf: shelf, Slot: slot, Device: file}, slog.New(slog.DiscardHandler))
			return
		}); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- tg.Serve(ctx) }()
		defer func() {
			cancel()
			<-done
			tg.Close()
		}()
	}
	var c *aoe.Client
	var err error
	for range 50 { // the peer needs a moment to open its socket
		err = ns1.Do(func() (err error) {
			c, err = aoe.DialConfig(context.Background(), iIf, tMAC, shelf, slot, aoe.ClientConfig{Outstanding: 16, Timeout: 500 * time.Millisecond, Retries: 4})
			return
		})
		if err == nil {
			break
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	data := make([]byte, chunk)
	if _, err := rand.Read(data); err != nil {
		t.Fatal(err)
	}
	measure := func(budget int, op func([]byte, int64) (int, error)) float64 {
		start := time.Now()
		var done int
		for done < budget && time.Since(start) < timeCap {
			if _, err := op(data, int64(done%diskSize)); err != nil {
				t.Fatal(err)
			}
			done += chunk
		}
		return float64(done) / 1e6 / time.Since(start).Seconds()
	}
	var r result
	r.writeMBs = measure(writeBudget, c.WriteAt)
	r.readMBs = measure(readBudget, c.ReadAt)
	return r
}

func median(rs []result) result {
	r, w := make([]float64, len(rs)), make([]float64, len(rs))
	for i, x := range rs {
		r[i], w[i] = x.readMBs, x.writeMBs
	}
	slices.Sort(r)
	slices.Sort(w)
	return result{readMBs: r[len(r)/2], writeMBs: w[len(w)/2]}
}

// diskFile is the one backing file every run uses, fully written once so that fdatasync
// flushes data only (as on the block device a donor exports), not block allocations.
func diskFile(t *testing.T) string {
	file := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(file, make([]byte, diskSize), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	return file
}

// startPeer runs a peer in ns, killed by the returned stop (lab.Netns.Start's Pdeathsig fires
// when the forking OS thread exits, which lab.Netns.Do threads do).
func startPeer(t *testing.T, ns *lab.Netns, name string, args ...string) func() {
	c := ns.Command(context.Background(), name, args...)
	var out strings.Builder
	var mu sync.Mutex
	c.Stdout = writerFunc(func(p []byte) (int, error) { mu.Lock(); defer mu.Unlock(); return out.Write(p) })
	c.Stderr = c.Stdout
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := c.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	var once sync.Once
	stop := func() {
		once.Do(func() {
			_ = syscall.Kill(-c.Process.Pid, syscall.SIGKILL)
			_ = c.Wait()
		})
	}
	t.Cleanup(stop)
	return stop
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
