// Package tftpbench measures netboot/tftp against tftpd-hpa and dnsmasq on this machine,
// in the same run, over a veth pair (MTU 1500) between two network namespaces, with the
// same Go client for every server: 8 MiB and 64 MiB files, 1 client and 32 in parallel,
// blksize 1468. Run it with
//
//	go test -run '^$' -bench . -benchtime 1x -timeout 30m ./bench/tftp
//
// DISTONET_BENCH_QUICK=1 drops the 64 MiB × 32 case. "ours" is lockstep (pin/tftp carries
// it), "ours-send-ahead" is Config.Anticipate=16 (our sender, the client still ACKs every
// block), "ours-timeout" adds the timeout option (our sender, lockstep) and
// "ours-windowsize" negotiates RFC 7440 windowsize 16, which neither peer accepts.
package tftpbench

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/distonet/distonet/internal/lab"
	"github.com/distonet/distonet/netboot/tftp"
)

// serveEnv makes the re-executed test binary a server: "port,anticipate,root". Our server
// runs in a process of its own, as the peers do, not in the client's Go runtime.
const serveEnv = "DISTONET_TFTP_BENCH_SERVE"

func TestMain(m *testing.M) {
	if spec := os.Getenv(serveEnv); spec != "" {
		os.Exit(serve(spec))
	}
	_ = lab.Sweep()
	os.Exit(m.Run())
}

func serve(spec string) int {
	parts := strings.SplitN(spec, ",", 3)
	if len(parts) != 3 {
		fmt.Println("bad spec", spec)
		return 2
	}
	anticipate, _ := strconv.Atoi(parts[1])
	cfg := tftp.Config{Addr: ":" + parts[0], Root: parts[2], Anticipate: uint(anticipate)}
	if d, err := time.ParseDuration(os.Getenv("DISTONET_TFTP_BENCH_BUSYPOLL")); err == nil {
		cfg.BusyPoll = d
	}
	srv, err := tftp.NewServer(cfg, nil, nil)
	if err != nil {
		fmt.Println(err)
		return 1
	}
	fmt.Println(srv.Serve(context.Background()))
	return 1
}

const (
	serverIP  = "10.70.1.1"
	clientIP  = "10.70.1.2"
	blockSize = 1468
	window    = 16 // send-ahead window for the "ours-send-ahead" server
)

type target struct {
	name string
	port int
	opts []tftp.Option // beyond blksize and tsize
}

type file struct {
	name string
	size int
	crc  uint32
}

// BenchmarkTFTP prints MB/s per server and the ratio of ours to the best peer.
func BenchmarkTFTP(b *testing.B) {
	lab.Require(b, "in.tftpd", "dnsmasq")
	srvNS, cli := lab.NewNetns(b), lab.NewNetns(b)
	lab.Veth(b, srvNS, serverIP+"/24", cli, clientIP+"/24")

	dir := b.TempDir()
	root := filepath.Join(dir, "root")
	if err := os.MkdirAll(root, 0o755); err != nil {
		b.Fatal(err)
	}
	var files []file
	for _, mib := range []int{8, 64} {
		f := file{name: fmt.Sprintf("%dMiB.bin", mib), size: mib << 20}
		content := make([]byte, f.size)
		if _, err := rand.Read(content); err != nil {
			b.Fatal(err)
		}
		f.crc = crc32.ChecksumIEEE(content)
		if err := os.WriteFile(filepath.Join(root, f.name), content, 0o644); err != nil {
			b.Fatal(err)
		}
		files = append(files, f)
	}

	// Ours, twice: lockstep and with send-ahead.
	for port, anticipate := range map[int]int{6901: 0, 6902: window} {
		startPeer(b, srvNS, []string{fmt.Sprintf("%s=%d,%d,%s", serveEnv, port, anticipate, root)}, os.Args[0], "-test.run=^$")
	}
	// tftpd-hpa: foreground, standalone, chrooted to root, same blksize cap and 1 s timeout.
	startPeer(b, srvNS, nil, "in.tftpd", "-L", "-l", "-a", ":6903", "-s", "-u", "root", "-B", strconv.Itoa(blockSize), "-T", "1000000", root)
	// dnsmasq: TFTP only (DNS off, no DHCP range), on the fixed port 69.
	startPeer(b, srvNS, nil, "dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--port=0", "--user=root",
		"--pid-file="+filepath.Join(dir, "dnsmasq.pid"), "--enable-tftp", "--tftp-root="+root, "--tftp-max=100", "--quiet-tftp",
		"--log-facility="+filepath.Join(dir, "dnsmasq.log"))
	targets := []target{{"ours", 6901, nil}, {"ours-send-ahead", 6902, nil}, {"tftpd-hpa", 6903, nil}, {"dnsmasq", 69, nil},
		{"ours-timeout", 6901, []tftp.Option{{Name: "timeout", Value: "1"}}},
		{"ours-windowsize", 6901, []tftp.Option{{Name: "windowsize", Value: strconv.Itoa(window)}}}}
	// Variants of ours for experiments: DISTONET_BENCH_VARIANTS="name:K=V;K=V,name2:..." runs
	// one more lockstep server per entry with that environment.
	if v := os.Getenv("DISTONET_BENCH_VARIANTS"); v != "" {
		for i, spec := range strings.Split(v, ",") {
			name, envs, _ := strings.Cut(spec, ":")
			port := 6910 + i
			env := append(strings.Split(envs, ";"), fmt.Sprintf("%s=%d,%d,%s", serveEnv, port, 0, root))
			bin := os.Args[0]
			for _, e := range env {
				if v, ok := strings.CutPrefix(e, "BIN="); ok {
					bin = v // another build of this benchmark, e.g. an older commit's
				}
			}
			startPeer(b, srvNS, env, bin, "-test.run=^$")
			targets = append(targets, target{name, port, nil})
		}
	}
	if only := os.Getenv("DISTONET_BENCH_TARGETS"); only != "" {
		keep := targets[:0]
		for _, tg := range targets {
			if slices.Contains(strings.Split(only, ","), tg.name) {
				keep = append(keep, tg)
			}
		}
		targets = keep
	}
	for _, tg := range targets {
		waitReady(b, cli, tg, files[0].name)
	}

	type key struct {
		file    string
		clients int
		server  string
	}
	results := map[key]float64{} // median MB/s
	for _, f := range files {
		for _, clients := range []int{1, 32} {
			if f.size == 64<<20 && clients == 32 && os.Getenv("DISTONET_BENCH_QUICK") != "" {
				continue
			}
			if c := os.Getenv("DISTONET_BENCH_CASES"); c != "" && !slices.Contains(strings.Split(c, ","), fmt.Sprintf("%dx%d", f.size>>20, clients)) {
				continue
			}
			// Rounds alternate between the servers (the machine is shared); the median
			// is reported. The 2 GiB case runs once.
			rounds := 3
			if f.size*clients > 1<<30 {
				rounds = 1
			}
			if r, err := strconv.Atoi(os.Getenv("DISTONET_BENCH_ROUNDS")); err == nil && r > 0 {
				rounds = r
			}
			runs := map[string][]float64{}
			for round := range rounds {
				for _, tg := range targets {
					b.Run(fmt.Sprintf("%s/%dx/%s/round%d", f.name, clients, tg.name, round), func(b *testing.B) {
						b.SetBytes(int64(f.size * clients))
						var total time.Duration
						for range b.N {
							start := time.Now()
							if err := fetchParallel(cli, tg, f, clients); err != nil {
								b.Fatal(err)
							}
							total += time.Since(start)
						}
						runs[tg.name] = append(runs[tg.name], float64(f.size*clients*b.N)/total.Seconds()/1e6)
					})
				}
			}
			for name, v := range runs {
				sort.Float64s(v)
				results[key{f.name, clients, name}] = v[len(v)/2]
				fmt.Printf("%s x%d %s: %v\n", f.name, clients, name, v)
			}
		}
	}

	var report strings.Builder
	fmt.Fprintf(&report, "\nTFTP, blksize %d, MTU 1500 veth, median MB/s (ratio = ours / best peer)\n", blockSize)
	fmt.Fprintf(&report, "%-10s %4s %10s %16s %10s %10s %12s %15s %13s %15s\n", "file", "cli", "ours", "ours-send-ahead", "tftpd-hpa", "dnsmasq", "ours/best", "send-ahead/hpa", "ours-timeout", "ours-windowsize")
	var keys []key
	for k := range results {
		if k.server == "ours" {
			keys = append(keys, k)
		}
	}
	sort.Slice(keys, func(i, j int) bool {
		if keys[i].file != keys[j].file {
			return len(keys[i].file) < len(keys[j].file) || keys[i].file < keys[j].file
		}
		return keys[i].clients < keys[j].clients
	})
	for _, k := range keys {
		get := func(s string) float64 { return results[key{k.file, k.clients, s}] }
		best := max(get("tftpd-hpa"), get("dnsmasq"))
		fmt.Fprintf(&report, "%-10s %4d %10.1f %16.1f %10.1f %10.1f %12.2f %15.2f %13.1f %15.1f\n", k.file, k.clients,
			get("ours"), get("ours-send-ahead"), get("tftpd-hpa"), get("dnsmasq"), get("ours")/best, get("ours-send-ahead")/get("tftpd-hpa"),
			get("ours-timeout"), get("ours-windowsize"))
	}
	fmt.Print(report.String())
}

// startPeer runs a peer server in the namespace until the benchmark ends. Not ns.Start:
// its Pdeathsig fires when the forking OS thread exits, and threads that ran ns.Do exit.
func startPeer(b *testing.B, ns *lab.Netns, env []string, name string, args ...string) {
	b.Helper()
	var out bytes.Buffer
	cmd := ns.Command(context.Background(), name, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		b.Fatalf("start %s: %v", name, err)
	}
	b.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		_ = cmd.Wait()
		if b.Failed() {
			b.Logf("%s output:\n%s", name, out.String())
		}
	})
}

func waitReady(b *testing.B, cli *lab.Netns, tg target, name string) {
	b.Helper()
	var err error
	for range 20 {
		if err = fetch(cli, tg, file{name: name}, false); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	b.Fatalf("%s not answering: %v", tg.name, err)
}

func fetchParallel(cli *lab.Netns, tg target, f file, clients int) error {
	var wg sync.WaitGroup
	errs := make([]error, clients)
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = fetch(cli, tg, f, true)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// fetch downloads one file with blksize 1468 and tsize, acknowledging every block (what
// PXE ROMs and iPXE do), and checks its length and CRC.
func fetch(cli *lab.Netns, tg target, f file, check bool) error {
	pc, err := cli.ListenPacket("udp4", clientIP+":0")
	if err != nil {
		return err
	}
	conn := pc.(*net.UDPConn)
	defer conn.Close()
	_ = conn.SetReadBuffer(4 << 20)
	req, _ := (&tftp.Request{Op: tftp.OpRRQ, Filename: f.name, Mode: "octet",
		Options: append([]tftp.Option{{Name: "blksize", Value: strconv.Itoa(blockSize)}, {Name: "tsize", Value: "0"}}, tg.opts...)}).MarshalBinary()
	srvAddr := &net.UDPAddr{IP: net.ParseIP(serverIP), Port: tg.port}
	if _, err := conn.WriteToUDP(req, srvAddr); err != nil {
		return err
	}
	var (
		buf      = make([]byte, 65536)
		ack      = []byte{0, 4, 0, 0}
		peer     *net.UDPAddr
		next     = uint16(1)
		got      int
		crc      uint32
		blk      = 512
		timeouts int
	)
	send := func() error {
		if peer == nil {
			_, err := conn.WriteToUDP(req, srvAddr)
			return err
		}
		_, err := conn.WriteToUDP(ack, peer)
		return err
	}
	for {
		_ = conn.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		n, from, err := conn.ReadFromUDP(buf)
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) && timeouts < 10 {
				timeouts++
				if err := send(); err != nil {
					return err
				}
				continue
			}
			return fmt.Errorf("%s %s: after %d bytes: %w", tg.name, f.name, got, err)
		}
		if peer == nil {
			peer = from
		} else if !from.IP.Equal(peer.IP) || from.Port != peer.Port {
			continue
		}
		p := buf[:n]
		switch tftp.PacketOpcode(p) {
		case tftp.OpOACK:
			var o tftp.OACK
			if err := o.UnmarshalBinary(p); err != nil {
				return err
			}
			for _, opt := range o {
				if strings.EqualFold(opt.Name, "blksize") {
					blk, _ = strconv.Atoi(opt.Value)
				}
			}
			binary.BigEndian.PutUint16(ack[2:], 0)
			if err := send(); err != nil {
				return err
			}
		case tftp.OpDATA:
			if binary.BigEndian.Uint16(p[2:]) != next {
				continue // a duplicate or one ahead of a loss: the server resends on timeout
			}
			data := p[4:]
			got += len(data)
			if check {
				crc = crc32.Update(crc, crc32.IEEETable, data)
			}
			binary.BigEndian.PutUint16(ack[2:], next)
			if err := send(); err != nil {
				return err
			}
			next++
			timeouts = 0 // give up after 10 silent timeouts in a row, not in total
			if len(data) < blk {
				if check && (got != f.size || crc != f.crc) {
					return fmt.Errorf("%s %s: got %d bytes crc %08x, want %d crc %08x", tg.name, f.name, got, crc, f.size, f.crc)
				}
				return nil
			}
		case tftp.OpERROR:
			var e tftp.ErrorPacket
			_ = e.UnmarshalBinary(p)
			return fmt.Errorf("%s %s: error %d %q", tg.name, f.name, e.Code, e.Message)
		}
	}
}
