// Package nfsrootbench measures nfsroot against nfs-ganesha 4.3 (FSAL_VFS) on the same
// machine, same data and same clients, in network namespaces, and prints ratios:
//
//	go test ./bench/nfsroot -run '^$' -bench . -benchtime 5x
//
// Scenarios: a 256 MiB sequential read with libnfs (nfs-cat), `nfs-ls -R` of a tree of
// 20,000 files, and a boot working set (every file under bin, sbin, lib of a rootfs made
// of this host's binaries and libraries, sized like a Debian minbase) read by 1 and by 32
// concurrent clients, each on its own TCP connection with 8 READs in flight (see
// bootClient: it drops READ data in the kernel so that the client, which shares the two
// cores with the server, costs as little as it can; NFSROOT_BENCH_COPY=1 copies it).
//
// The 32-client boot set runs three times: as the host is set up (its default TCP congestion
// control, BBR here, and everything on the two shared cores), with cubic on every route of
// the namespaces (see congestion), and "split", with the server pinned to one CPU and the
// clients to the other (as when the clients are other machines).
//
// Besides the ratio it prints the CPU time per operation of each server and of the
// clients: on a shared machine the wall-clock ratio moves with the load (a process with
// a hundred threads, like ganesha, gets a bigger share of busy cores than one with two),
// the CPU time per operation much less.
package nfsrootbench

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/distonet/distonet/internal/lab"
	"github.com/distonet/distonet/nfsroot"
)

func TestMain(m *testing.M) {
	if root := os.Getenv(serveEnv); root != "" {
		os.Exit(serve(root))
	}
	_ = lab.Sweep()
	os.Exit(m.Run())
}

// serveEnv makes the test binary a plain nfsroot server process (run inside the server's
// namespace), so it competes for CPU as a separate process, like ganesha and like the
// daemon, instead of sharing the Go runtime with the benchmark's clients.
const serveEnv = "NFSROOT_BENCH_SERVE_ROOT"

func serve(root string) int {
	_, allowed, _ := net.ParseCIDR("10.42.0.0/16")
	srv, err := nfsroot.NewServer(nfsroot.Config{Portmap: ":111", AllowedNets: []*net.IPNet{allowed}},
		exports{nfsroot.Export{Path: exportPath, Root: root, Version: 1}}, slog.New(slog.NewTextHandler(os.Stderr, nil)))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if p := os.Getenv("NFSROOT_BENCH_CPUPROFILE"); p != "" {
		f, err := os.Create(p)
		if err == nil {
			_ = pprof.StartCPUProfile(f)
			defer pprof.StopCPUProfile()
		}
	}
	if err := srv.Serve(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

const (
	exportPath = "/images/bench"
	oursIP     = "10.42.0.1"
	ganeshaIP  = "10.42.1.1"
	bigSize    = 256 << 20
)

type exports struct{ exp nfsroot.Export }

func (e exports) Export(p string) (nfsroot.Export, bool) { return e.exp, p == e.exp.Path }
func (e exports) Version(p string, v uint64) (nfsroot.Export, bool) {
	return e.exp, p == e.exp.Path && v == e.exp.Version
}
func (e exports) List() []nfsroot.Export { return []nfsroot.Export{e.exp} }

// copyBudget copies regular files of src (not recursing) into dst, in name order, skipping
// files over 8 MiB, until budget bytes are copied.
func copyBudget(b *testing.B, src, dst string, budget int64) (files int, bytes int64) {
	ents, err := os.ReadDir(src)
	if err != nil {
		b.Fatal(err)
	}
	if err := os.MkdirAll(dst, 0o755); err != nil {
		b.Fatal(err)
	}
	for _, e := range ents {
		info, err := e.Info()
		if err != nil || !info.Mode().IsRegular() || info.Size() > 8<<20 || bytes+info.Size() > budget {
			continue
		}
		in, err := os.Open(filepath.Join(src, e.Name()))
		if err != nil {
			continue
		}
		out, err := os.OpenFile(filepath.Join(dst, e.Name()), os.O_CREATE|os.O_WRONLY, info.Mode().Perm())
		if err != nil {
			in.Close()
			b.Fatal(err)
		}
		n, err := io.Copy(out, in)
		in.Close()
		out.Close()
		if err != nil {
			b.Fatal(err)
		}
		files, bytes = files+1, bytes+n
	}
	return files, bytes
}

// buildRootfs lays out the data every scenario reads.
func buildRootfs(b *testing.B, root string) (bootBytes int64) {
	f, err := os.Create(filepath.Join(root, "big.bin"))
	if err != nil {
		b.Fatal(err)
	}
	if _, err := io.CopyN(f, rand.Reader, bigSize); err != nil {
		b.Fatal(err)
	}
	f.Close()
	for d := range 200 {
		dir := filepath.Join(root, "tree", fmt.Sprintf("d%03d", d))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			b.Fatal(err)
		}
		for i := range 100 {
			if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%03d", i)), []byte("x"), 0o644); err != nil {
				b.Fatal(err)
			}
		}
	}
	var files int
	var bytes int64
	for _, part := range []struct {
		src, dst string
		budget   int64
	}{
		{"/usr/bin", "bin", 40 << 20},
		{"/usr/sbin", "sbin", 8 << 20},
		{"/usr/lib/x86_64-linux-gnu", "lib", 40 << 20},
	} {
		f, n := copyBudget(b, part.src, filepath.Join(root, part.dst), part.budget)
		files, bytes = files+f, bytes+n
	}
	fmt.Printf("boot working set: %d files, %.1f MiB under bin, sbin, lib\n", files, float64(bytes)/(1<<20))
	return bytes
}

const ganeshaConf = `NFS_CORE_PARAM {
	Protocols = 3;
	NFS_Port = 2049;
	MNT_Port = 20048;
	Enable_NLM = false;
	Enable_RQUOTA = false;
	Mount_Path_Pseudo = true;
}
NFSV4 { Graceless = true; }
LOG { Default_Log_Level = WARN; }
EXPORT {
	Export_Id = 1;
	Path = %s;
	Pseudo = %s;
	Access_Type = RO;
	Squash = No_Root_Squash;
	SecType = sys;
	Protocols = 3;
	Transports = TCP, UDP;
	FSAL { Name = VFS; }
}
`

// ganesha starts rpcbind and nfs-ganesha in the namespace, with a private /run so they
// do not meet any other rpcbind on the host.
func startGanesha(b *testing.B, ns *lab.Netns, dir, root string) int {
	conf := filepath.Join(dir, "ganesha.conf")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf(ganeshaConf, root, exportPath)), 0o644); err != nil {
		b.Fatal(err)
	}
	script := fmt.Sprintf(`set -e
mount -t tmpfs tmpfs /run
mkdir -p /run/ganesha /var/lib/nfs/ganesha
rpcbind -w -f &
i=0; while [ ! -S /run/rpcbind.sock ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
exec ganesha.nfsd -F -f %s -L %s -p /run/ganesha/ganesha.pid`,
		conf, filepath.Join(dir, "ganesha.log"))
	// Not ns.Start: its Pdeathsig ties the process to the OS thread that started it, and
	// the threads ns.Do locks are destroyed when their goroutine ends, so ganesha died
	// at random as soon as a client dialled from inside a namespace.
	cmd := ns.Command(context.Background(), "unshare", "-m", "--propagation", "private", "sh", "-c", script)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		_ = cmd.Wait()
	})
	// ip netns exec, unshare and sh all exec: the pid ends up being ganesha's.
	return cmd.Process.Pid
}

type env struct {
	cli       *lab.Netns
	ours, gan *lab.Netns // the servers' namespaces
	servers   []server
	bootBytes int64 // size of the boot working set
}

type server struct {
	name, ip  string
	mountAddr string
	pid       int // the server process, for its CPU time
}

// cpuTime is the user+system CPU time a process (all its threads) has used so far.
func cpuTime(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command name, which ends with ')': state is field 3, utime 14, stime 15.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	if len(f) < 13 {
		return 0
	}
	var ut, st int64
	fmt.Sscan(f[11], &ut)
	fmt.Sscan(f[12], &st)
	return time.Duration(ut+st) * 10 * time.Millisecond // USER_HZ is 100
}

func (s server) url(p string) string { return "nfs://" + s.ip + exportPath + p }

func setup(b *testing.B) *env {
	lab.Require(b, "nfs-ls", "nfs-cp", "ganesha.nfsd", "rpcbind", "unshare")
	dir, err := os.MkdirTemp("/var/tmp", "nfsroot-bench-")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(dir) })
	root := filepath.Join(dir, "rootfs")
	if err := os.MkdirAll(root, 0o755); err != nil {
		b.Fatal(err)
	}
	bootBytes := buildRootfs(b, root)

	ours, gan, cli := lab.NewNetns(b), lab.NewNetns(b), lab.NewNetns(b)
	e := &env{cli: cli, ours: ours, gan: gan}
	lab.Veth(b, ours, oursIP+"/24", cli, "10.42.0.2/24")
	lab.Veth(b, gan, ganeshaIP+"/24", cli, "10.42.1.2/24")

	self, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	cmd := ours.Command(context.Background(), self)
	cmd.Env = append(os.Environ(), serveEnv+"="+root)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		_ = cmd.Wait()
	})

	ganPid := startGanesha(b, gan, dir, root)
	e.bootBytes = bootBytes
	for _, s := range []server{{name: "distonet", ip: oursIP, pid: cmd.Process.Pid}, {name: "ganesha", ip: ganeshaIP, pid: ganPid}} {
		deadline := time.Now().Add(20 * time.Second)
		for {
			out, err := cli.Exec("nfs-ls", s.url(""))
			if err == nil && strings.Contains(out, "big.bin") {
				break
			}
			if time.Now().After(deadline) {
				log, _ := os.ReadFile(filepath.Join(dir, "ganesha.log"))
				b.Fatalf("%s never served the export: %v %s\nganesha.log:\n%s", s.name, err, out, log)
			}
			time.Sleep(500 * time.Millisecond)
		}
		port, err := mountPort(cli, s.ip)
		if err != nil {
			b.Fatal(err)
		}
		s.mountAddr = net.JoinHostPort(s.ip, fmt.Sprint(port))
		e.servers = append(e.servers, s)
	}
	return e
}

// results keeps each scenario's samples per server, for the ratios.
type results struct {
	mu    sync.Mutex
	order []string
	d     map[string]map[string][]time.Duration
	cpu   map[string]map[string]time.Duration // server CPU time summed over the samples
	ccpu  map[string]map[string]time.Duration // client CPU time (this process and the libnfs tools)
}

func (r *results) add(scenario, server string, d, cpu, ccpu time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.d[scenario] == nil {
		r.d[scenario] = map[string][]time.Duration{}
		r.cpu[scenario] = map[string]time.Duration{}
		r.ccpu[scenario] = map[string]time.Duration{}
		r.order = append(r.order, scenario)
	}
	r.d[scenario][server] = append(r.d[scenario][server], d)
	r.cpu[scenario][server] += cpu
	r.ccpu[scenario][server] += ccpu
}

// clientCPU is the CPU time used so far by the benchmark process and the client tools it
// ran to completion: if the clients saturate the cores, the servers cannot be compared.
func clientCPU() time.Duration {
	var self, kids syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &self)
	_ = syscall.Getrusage(syscall.RUSAGE_CHILDREN, &kids)
	tv := func(t syscall.Timeval) time.Duration { return time.Duration(t.Nano()) }
	return tv(self.Utime) + tv(self.Stime) + tv(kids.Utime) + tv(kids.Stime)
}

func stats(ds []time.Duration) (best, median time.Duration) {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[0], s[len(s)/2]
}

func (r *results) print() {
	fmt.Println("scenario             samples  distonet best/median    ganesha best/median   speed ratio best (median)   server CPU ms/op distonet ganesha   client CPU ms/op with distonet ganesha")
	for _, sc := range r.order {
		ours, gan := r.d[sc]["distonet"], r.d[sc]["ganesha"]
		if len(ours) == 0 || len(gan) == 0 {
			continue
		}
		ob, om := stats(ours)
		gb, gm := stats(gan)
		if os.Getenv("NFSROOT_BENCH_SAMPLES") != "" {
			fmt.Printf("  %s distonet %v\n  %s ganesha  %v\n", sc, ours, sc, gan)
		}
		n := time.Duration(len(ours))
		fmt.Printf("%-20s %7d %9.1f/%-9.1fms %9.1f/%-9.1fms   %.2fx (%.2fx)          %8.1f %8.1f   %8.1f %8.1f\n", sc, len(ours),
			ms(ob), ms(om), ms(gb), ms(gm), gb.Seconds()/ob.Seconds(), gm.Seconds()/om.Seconds(),
			ms(r.cpu[sc]["distonet"]/n), ms(r.cpu[sc]["ganesha"]/n), ms(r.ccpu[sc]["distonet"]/n), ms(r.ccpu[sc]["ganesha"]/n))
	}
}

func ms(d time.Duration) float64 { return d.Seconds() * 1000 }

// BenchmarkNFSRoot runs every scenario against both servers, alternating which goes first
// in each round, because this machine is shared and its load swings: the best of N rounds
// and the median are both printed, with the ratio ganesha time / distonet time (above 1 =
// distonet faster). ns/op is one round of both servers.
func BenchmarkNFSRoot(b *testing.B) {
	e := setup(b)
	res := &results{d: map[string]map[string][]time.Duration{}, cpu: map[string]map[string]time.Duration{}, ccpu: map[string]map[string]time.Duration{}}
	defer res.print()
	// split, when set, runs each sample with the server on one CPU and the clients on the
	// other (see splitCPUs).
	var split bool
	run := func(scenario string, bytes int64, op func(b *testing.B, s server)) {
		b.Run(scenario, func(b *testing.B) {
			for _, s := range e.servers {
				op(b, s) // warm the page cache and the server's caches
			}
			for i := range b.N {
				for k := range e.servers {
					s := e.servers[(i+k)%len(e.servers)]
					undo := func() {}
					if split {
						undo = splitCPUs(b, s.pid)
					}
					cpu0, ccpu0 := cpuTime(s.pid), clientCPU()
					start := time.Now()
					op(b, s)
					res.add(scenario, s.name, time.Since(start), cpuTime(s.pid)-cpu0, clientCPU()-ccpu0)
					undo()
				}
			}
			ob, _ := stats(res.d[scenario]["distonet"])
			gb, _ := stats(res.d[scenario]["ganesha"])
			b.ReportMetric(ms(ob), "distonet-best-ms")
			b.ReportMetric(ms(gb), "ganesha-best-ms")
			b.ReportMetric(gb.Seconds()/ob.Seconds(), "speed-ratio")
			if bytes > 0 {
				b.ReportMetric(float64(bytes)/ob.Seconds()/1e6, "distonet-best-MB/s")
				b.ReportMetric(float64(bytes)/gb.Seconds()/1e6, "ganesha-best-MB/s")
			}
		})
	}
	run("seqread-256MiB", bigSize, func(b *testing.B, s server) {
		out := e.cli.MustExec("sh", "-c", "nfs-cat "+s.url("/big.bin")+" | wc -c")
		if strings.TrimSpace(out) != fmt.Sprint(bigSize) {
			b.Fatalf("%s: nfs-cat read %s bytes, want %d", s.name, out, bigSize)
		}
	})
	run("ls-R-20000-files", 0, func(b *testing.B, s server) {
		out := e.cli.MustExec("nfs-ls", "-R", s.url("/tree"))
		if n := strings.Count(out, "\n"); n < 20000 {
			b.Fatalf("nfs-ls -R listed %d lines", n)
		}
	})
	bootset := func(clients int) func(b *testing.B, s server) {
		return func(b *testing.B, s server) {
			root, err := mount(e.cli, s.mountAddr, exportPath)
			if err != nil {
				b.Fatal(err)
			}
			var wg sync.WaitGroup
			errs := make(chan error, clients)
			var mu sync.Mutex
			var total int64
			for range clients {
				wg.Add(1)
				go func() {
					defer wg.Done()
					c, err := dialBoot(e.cli, net.JoinHostPort(s.ip, "2049"))
					if err != nil {
						errs <- err
						return
					}
					defer c.Close()
					var files []entry
					for _, dir := range []string{"bin", "sbin", "lib"} {
						fh, err := c.lookup(root, dir)
						if err == nil {
							files, err = c.listTree(fh, files)
						}
						if err != nil {
							errs <- fmt.Errorf("%s: %w", dir, err)
							return
						}
					}
					n, err := c.readFiles(files)
					if err != nil {
						errs <- err
						return
					}
					mu.Lock()
					total += n
					mu.Unlock()
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				b.Fatal(err)
			}
			if total != int64(clients)*e.bootBytes {
				b.Fatalf("%d clients read %d bytes, want %d each", clients, total, e.bootBytes)
			}
		}
	}
	run("bootset-1clients", 0, bootset(1))
	run("bootset-32clients", 0, bootset(32))
	// The same with cubic as TCP congestion control on every route of the three
	// namespaces, whatever the host's default is (BBR here; see congestion).
	restore := congestion(b, "cubic", e.cli, e.ours, e.gan)
	run("bootset-32clients-cubic", 0, bootset(32))
	restore()
	split = true
	run("bootset-32clients-split", 0, bootset(32))
}

// congestion sets the TCP congestion control of every route in the namespaces to cc (the
// route metric `congctl`) and returns a func that puts the routes back. A namespace other
// than the host's may not change its default to an algorithm outside the host's allowed
// list (EPERM), and ganesha has no per-socket setting; a route metric reaches both servers
// alike without touching the host.
func congestion(b *testing.B, cc string, nss ...*lab.Netns) (restore func()) {
	var undo []func()
	for _, ns := range nss {
		for _, line := range strings.Split(strings.TrimSpace(ns.MustExec("ip", "-4", "route", "show")), "\n") {
			route := strings.Fields(line)
			if len(route) == 0 {
				continue
			}
			ns.MustExec("ip", append(append([]string{"route", "replace"}, route...), "congctl", cc)...)
			undo = append(undo, func() { ns.MustExec("ip", append([]string{"route", "replace"}, route...)...) })
		}
	}
	return func() {
		for _, u := range undo {
			u()
		}
	}
}

// splitCPUs pins every thread of the server process to CPU 1 and every thread of this
// process (the clients) to CPU 0 until the returned func puts both back on all CPUs. On a
// real network a boot storm's clients are other machines; sharing both cores made the
// clients' own CPU time (kernel TCP receive work) part of every sample. Threads created
// meanwhile inherit their creator's mask.
func splitCPUs(b *testing.B, server int) (undo func()) {
	var all, one, zero unix.CPUSet
	if err := unix.SchedGetaffinity(0, &all); err != nil || all.Count() < 2 {
		b.Skipf("needs 2 CPUs to split server and clients (%d, %v)", all.Count(), err)
	}
	// The first two CPUs this process may use.
	var cpus []int
	for i := 0; len(cpus) < 2; i++ {
		if all.IsSet(i) {
			cpus = append(cpus, i)
		}
	}
	zero.Set(cpus[0])
	one.Set(cpus[1])
	pin(b, server, &one)
	pin(b, os.Getpid(), &zero)
	return func() {
		pin(b, server, &all)
		pin(b, os.Getpid(), &all)
	}
}

// pin sets the CPU mask of every thread of process pid.
func pin(b *testing.B, pid int, set *unix.CPUSet) {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, t := range tasks {
		tid, err := strconv.Atoi(t.Name())
		if err != nil {
			continue
		}
		if err := unix.SchedSetaffinity(tid, set); err != nil && !errors.Is(err, unix.ESRCH) {
			b.Fatalf("pin thread %d of %d: %v", tid, pid, err)
		}
	}
}
