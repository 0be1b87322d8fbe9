// Package aoebench compares the DiStoNet AoE target with Debian's vblade on this machine, in
// the same run, through the same user-space initiator (donate/aoe's, 16 tags): sequential
// read and write MB/s at MTU 1500 and 9000, vblade in its default mode and with -s (O_SYNC,
// the fair peer for our durable default). It prints a table of figures and ratios.
//
// It is slow and noisy on shared cores, so it runs only when DISTONET_BENCH=1 (make bench).
// Beside MB/s it prints the CPU time each target process and the initiator spent per MB
// (from schedstat and getrusage), the steadier figure on a busy machine. Knobs:
//
//	DISTONET_BENCH_ONLY=9000/distonet   runs whose "MTU/target" contains this
//	DISTONET_BENCH_OPS=read|write       one direction only (default both)
//	DISTONET_BENCH_ROUNDS=N             rounds (default 5; the median is reported)
//	DISTONET_BENCH_COLD=1               evict the file from the page cache before reads
//	DISTONET_BENCH_VARIANTS="a:K=V,K=V;b:K=V"   more runs of our target with extra environment
//	DISTONET_BENCH_AOE_CPUPROFILE=FILE  CPU profile of our target (last run)
//	DISTONET_BENCH_AOE_STATS=FILE       our target's counters, appended per run
package aoebench

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"text/tabwriter"
	"time"

	"golang.org/x/sys/unix"

	"github.com/distonet/distonet/donate/aoe"
	"github.com/distonet/distonet/internal/lab"
)

func TestMain(m *testing.M) {
	if os.Getenv(targetEnv) != "" {
		serveTarget()
		return
	}
	_ = lab.Sweep()
	os.Exit(m.Run())
}

// targetEnv makes the test binary serve our target as its own process, so that both targets
// are separate processes and their CPU time can be read from /proc the same way.
const targetEnv = "DISTONET_BENCH_AOE_TARGET"

func serveTarget() {
	var ifname, file string
	var shelf, slot int
	if _, err := fmt.Sscan(os.Getenv(targetEnv), &ifname, &file, &shelf, &slot); err != nil {
		fmt.Fprintln(os.Stderr, "bad", targetEnv, err)
		os.Exit(2)
	}
	tg, err := aoe.NewTarget(aoe.TargetConfig{Interface: ifname, Shelf: uint16(shelf), Slot: uint8(slot), Device: file}, slog.New(slog.DiscardHandler))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	if p := os.Getenv("DISTONET_BENCH_AOE_CPUPROFILE"); p != "" { // to see where the target's CPU goes
		f, err := os.Create(p)
		if err == nil && pprof.StartCPUProfile(f) == nil {
			defer pprof.StopCPUProfile()
		}
	}
	if err := tg.Serve(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if p := os.Getenv("DISTONET_BENCH_AOE_STATS"); p != "" { // frames per receive call, etc.
		s := tg.Stats()
		line := fmt.Sprintf("%+v frames/batch=%.2f\n", s, float64(s.Frames)/float64(max(s.Batches, 1)))
		if f, err := os.OpenFile(p, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644); err == nil {
			_, _ = f.WriteString(line)
			f.Close()
		}
	}
}

const (
	diskSize    = 256 << 20
	writeBudget = 64 << 20 // bytes written per run, unless the time cap hits first
	readBudget  = 128 << 20
	timeCap     = 4 * time.Second
	rounds      = 5       // interleaved rounds; the median is reported (the cores are shared)
	chunk       = 4 << 20 // bytes per ReadAt/WriteAt call: many frames, 16 in flight
)

type result struct {
	readMBs, writeMBs   float64
	readCPU, writeCPU   float64 // target CPU milliseconds per MB moved
	readICPU, writeICPU float64 // the same for the initiator (this process)
}

func TestBenchAoEVsVblade(t *testing.T) {
	if os.Getenv("DISTONET_BENCH") != "1" {
		t.Skip("benchmark: set DISTONET_BENCH=1 (make bench)")
	}
	lab.Require(t, "vblade")
	type peer struct {
		name string
		args []string // nil: our target
		env  []string // extra environment for our target
	}
	peers := []peer{
		{"vblade", []string{}, nil},
		{"vblade -s", []string{"-s"}, nil},
		{"distonet (durable)", nil, nil},
	}
	// DISTONET_BENCH_VARIANTS="name:K=V,K=V;name2:K=V" adds runs of our target with extra
	// environment, to compare tunings in the same run.
	if v := os.Getenv("DISTONET_BENCH_VARIANTS"); v != "" {
		for _, spec := range strings.Split(v, ";") {
			name, env, _ := strings.Cut(spec, ":")
			peers = append(peers, peer{"distonet " + name, nil, strings.Split(env, ",")})
		}
	}
	file := diskFile(t)
	all := map[string][]result{}
	rounds := rounds
	if v := os.Getenv("DISTONET_BENCH_ROUNDS"); v != "" { // e.g. 1 while profiling
		if _, err := fmt.Sscan(v, &rounds); err != nil || rounds < 1 {
			t.Fatalf("DISTONET_BENCH_ROUNDS=%q: want a positive number", v)
		}
	}
	for round := range rounds {
		for _, mtu := range []int{1500, 9000} {
			for _, p := range peers {
				key := fmt.Sprintf("%d/%s", mtu, p.name)
				if only := os.Getenv("DISTONET_BENCH_ONLY"); only != "" && !strings.Contains(key, only) {
					continue
				}
				r := run(t, mtu, file, p.args, p.env)
				all[key] = append(all[key], r)
				t.Logf("round %d %s: read %.1f MB/s (%.2f cpu-ms/MB, initiator %.2f), write %.1f MB/s (%.2f cpu-ms/MB, initiator %.2f)",
					round+1, key, r.readMBs, r.readCPU, r.readICPU, r.writeMBs, r.writeCPU, r.writeICPU)
			}
		}
	}
	res := map[string]result{}
	for k, rs := range all {
		res[k] = median(rs)
	}
	var buf bytes.Buffer
	w := tabwriter.NewWriter(&buf, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "MTU\ttarget\tread MB/s\twrite MB/s\tread vs vblade\twrite vs vblade -s\tread cpu-ms/MB\twrite cpu-ms/MB\tinitiator read/write cpu-ms/MB\t")
	for _, mtu := range []int{1500, 9000} {
		v, vs := res[fmt.Sprintf("%d/vblade", mtu)], res[fmt.Sprintf("%d/vblade -s", mtu)]
		for _, p := range peers {
			r := res[fmt.Sprintf("%d/%s", mtu, p.name)]
			fmt.Fprintf(w, "%d\t%s\t%.1f\t%.1f\t%.2fx\t%.2fx\t%.2f\t%.2f\t%.2f / %.2f\t\n", mtu, p.name, r.readMBs, r.writeMBs, r.readMBs/v.readMBs, r.writeMBs/vs.writeMBs, r.readCPU, r.writeCPU, r.readICPU, r.writeICPU)
		}
	}
	w.Flush()
	fmt.Printf("\nAoE sequential throughput, same initiator (16 tags), same file, same run, median of %d\n%s", rounds, buf.String())
	fmt.Println("goals: read >= 1.00x vblade, write >= 1.50x vblade -s (durable against O_SYNC)")
	fmt.Println("cpu-ms/MB is the target process's own CPU time per MB: steadier than MB/s on shared cores")
}

// run measures one target: vblade with args, or ours when args is nil.
func run(t *testing.T, mtu int, file string, vbladeArgs, extraEnv []string) result {
	ns1, ns2 := lab.NewNetns(t), lab.NewNetns(t)
	iIf, tIf := lab.Veth(t, ns1, "", ns2, "")
	ns1.SetMTU(iIf, mtu)
	ns2.SetMTU(tIf, mtu)
	tMAC := ns2.HardwareAddr(tIf)
	const shelf, slot = 10, 1
	var pid int
	var stop func()
	if vbladeArgs != nil {
		pid, stop = startPeer(t, ns2, nil, "vblade", append(vbladeArgs, fmt.Sprint(shelf), fmt.Sprint(slot), tIf, file)...)
	} else {
		self, err := os.Executable()
		if err != nil {
			t.Fatal(err)
		}
		env := append([]string{fmt.Sprintf("%s=%s %s %d %d", targetEnv, tIf, file, shelf, slot)}, extraEnv...)
		if p := os.Getenv("DISTONET_BENCH_TARGET_GOMAXPROCS"); p != "" {
			env = append(env, "GOMAXPROCS="+p)
		}
		pid, stop = startPeer(t, ns2, env, self)
	}
	defer stop()
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
	self := os.Getpid()
	measure := func(budget int, op func([]byte, int64) (int, error)) (mbs, cpuPerMB, icpuPerMB float64) {
		cpu0, icpu0 := cpuMillis(t, pid), cpuMillis(t, self)
		start := time.Now()
		var done int
		for done < budget && time.Since(start) < timeCap {
			if _, err := op(data, int64(done%diskSize)); err != nil {
				t.Fatal(err)
			}
			done += chunk
		}
		mb := float64(done) / 1e6
		return mb / time.Since(start).Seconds(), (cpuMillis(t, pid) - cpu0) / mb, (cpuMillis(t, self) - icpu0) / mb
	}
	var r result
	ops := os.Getenv("DISTONET_BENCH_OPS") // "read" or "write" alone, to profile one path
	if ops != "read" {
		r.writeMBs, r.writeCPU, r.writeICPU = measure(writeBudget, c.WriteAt)
	}
	if ops != "write" {
		if os.Getenv("DISTONET_BENCH_COLD") == "1" {
			evict(t, file) // reads then come from the disk, as on a donor, not the page cache
		}
		r.readMBs, r.readCPU, r.readICPU = measure(readBudget, c.ReadAt)
	}
	return r
}

// evict drops the file's pages from the page cache (after writing back what is dirty).
func evict(t *testing.T, file string) {
	f, err := os.OpenFile(file, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		t.Fatal(err)
	}
}

func median(rs []result) result {
	med := func(get func(result) float64) float64 {
		v := make([]float64, len(rs))
		for i, x := range rs {
			v[i] = get(x)
		}
		slices.Sort(v)
		return v[len(v)/2]
	}
	return result{
		readMBs: med(func(r result) float64 { return r.readMBs }), writeMBs: med(func(r result) float64 { return r.writeMBs }),
		readCPU: med(func(r result) float64 { return r.readCPU }), writeCPU: med(func(r result) float64 { return r.writeCPU }),
		readICPU: med(func(r result) float64 { return r.readICPU }), writeICPU: med(func(r result) float64 { return r.writeICPU }),
	}
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

// cpuMillis is the CPU time a process has used so far, in milliseconds: for another process
// the sum of its threads' on-CPU time from /proc/<pid>/task/*/schedstat (nanoseconds; the
// clock-tick counts in /proc/<pid>/stat are too coarse for a run of a few hundred
// milliseconds), for this one getrusage (which also counts threads that have exited).
func cpuMillis(t *testing.T, pid int) float64 {
	if pid == os.Getpid() {
		var ru syscall.Rusage
		if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
			t.Fatal(err)
		}
		return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e6
	}
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", pid))
	if err != nil || len(tasks) == 0 {
		t.Fatalf("threads of %d: %v", pid, err)
	}
	var ns float64
	for _, p := range tasks {
		b, err := os.ReadFile(p)
		if err != nil {
			continue // the thread just exited
		}
		var v float64
		if _, err := fmt.Sscan(string(b), &v); err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		ns += v
	}
	return ns / 1e6
}

// startPeer runs a peer in ns, killed by the returned stop (lab.Netns.Start's Pdeathsig fires
// when the forking OS thread exits, which lab.Netns.Do threads do). `ip netns exec` execs the
// peer, so the pid is the peer's own.
func startPeer(t *testing.T, ns *lab.Netns, env []string, name string, args ...string) (int, func()) {
	c := ns.Command(context.Background(), name, args...)
	c.Env = append(os.Environ(), env...)
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
			_ = syscall.Kill(c.Process.Pid, syscall.SIGTERM)
			exited := make(chan struct{})
			go func() { _ = c.Wait(); close(exited) }()
			select {
			case <-exited:
			case <-time.After(2 * time.Second):
				_ = syscall.Kill(-c.Process.Pid, syscall.SIGKILL)
				<-exited
			}
		})
	}
	t.Cleanup(stop)
	return c.Process.Pid, stop
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
