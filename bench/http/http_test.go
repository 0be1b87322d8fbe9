// Package httpbench measures netboot/httpboot against nginx (sendfile, keep-alive) on this
// machine, in the same run: 32 parallel clients each fetch a kernel and an initramfs
// (8 + 56 MiB) over a veth pair between two network namespaces, with the same Go client.
// Rounds alternate between the servers; the best and the median round of each are
// printed, as the machine is shared. Our server runs in its own process, as nginx does. Run it with
//
//	go test -run '^$' -bench . -benchtime 1x -timeout 30m ./bench/http
package httpbench

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/distonet/distonet/internal/lab"
	"github.com/distonet/distonet/netboot/httpboot"
)

// serveEnv makes the re-executed test binary our server: "port,root". It runs in a
// process of its own, as nginx does, not in the client's Go runtime.
const serveEnv = "DISTONET_HTTP_BENCH_SERVE"

func TestMain(m *testing.M) {
	if spec := os.Getenv(serveEnv); spec != "" {
		os.Exit(serve(spec))
	}
	_ = lab.Sweep()
	os.Exit(m.Run())
}

func serve(spec string) int {
	port, root, _ := strings.Cut(spec, ",")
	h, err := httpboot.NewHandler(httpboot.Config{Root: root}, noScripts{}, nil)
	if err != nil {
		fmt.Println(err)
		return 1
	}
	mux := http.NewServeMux()
	mux.Handle(httpboot.FilesPrefix, h)
	srv := &http.Server{Addr: ":" + port, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	fmt.Println(srv.ListenAndServe())
	return 1
}

const (
	serverIP = "10.71.1.1"
	clientIP = "10.71.1.2"
	clients  = 32
	rounds   = 5
)

var bootFiles = []struct {
	name string
	size int
}{{"img/1/vmlinuz", 8 << 20}, {"img/1/initramfs", 56 << 20}}

type noScripts struct{}

func (noScripts) BootScript(net.HardwareAddr, *http.Request) (string, error) {
	return "", errors.New("not used")
}

// BenchmarkHTTPBoot prints MB/s for ours and nginx and their ratio.
func BenchmarkHTTPBoot(b *testing.B) {
	lab.Require(b, "nginx")
	srvNS, cli := lab.NewNetns(b), lab.NewNetns(b)
	lab.Veth(b, srvNS, serverIP+"/24", cli, clientIP+"/24")
	dir := b.TempDir()
	root := filepath.Join(dir, "root")
	for _, f := range bootFiles {
		p := filepath.Join(root, f.name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			b.Fatal(err)
		}
		content := make([]byte, f.size)
		if _, err := rand.Read(content); err != nil {
			b.Fatal(err)
		}
		if err := os.WriteFile(p, content, 0o644); err != nil {
			b.Fatal(err)
		}
	}

	startPeer(b, srvNS, []string{serveEnv + "=8080," + root}, os.Args[0], "-test.run=^$")

	conf := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf(`user root;
daemon off;
worker_processes auto;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log;
events { worker_connections 1024; }
http {
	access_log off;
	sendfile on;
	tcp_nopush on;
	keepalive_timeout 65;
	keepalive_requests 100000;
	client_body_temp_path %[1]s;
	proxy_temp_path %[1]s;
	server {
		listen 8081;
		location /files/ { alias %[2]s/; }
	}
}
`, dir, root)), 0o644); err != nil {
		b.Fatal(err)
	}
	startPeer(b, srvNS, nil, "nginx", "-c", conf, "-p", dir)

	servers := []struct{ name, base string }{
		{"ours", "http://" + serverIP + ":8080/files/"},
		{"nginx", "http://" + serverIP + ":8081/files/"},
	}
	best := map[string]float64{}
	all := map[string][]float64{}
	for _, s := range servers {
		waitReady(b, cli, s.base+bootFiles[0].name)
	}
	for round := range rounds {
		for _, s := range servers {
			b.Run(fmt.Sprintf("%s/round%d", s.name, round), func(b *testing.B) {
				var total int64
				start := time.Now()
				for range b.N {
					n, err := fetchAll(cli, s.base)
					if err != nil {
						b.Fatal(err)
					}
					total += n
				}
				b.SetBytes(total / int64(b.N))
				mbps := float64(total) / time.Since(start).Seconds() / 1e6
				best[s.name] = max(best[s.name], mbps)
				all[s.name] = append(all[s.name], mbps)
			})
		}
	}
	median := func(v []float64) float64 { sort.Float64s(v); return v[len(v)/2] }
	mo, mn := median(all["ours"]), median(all["nginx"])
	fmt.Printf("\nHTTP boot: %d clients × (8 MiB kernel + 56 MiB initramfs), %d alternating rounds, MB/s\n", clients, rounds)
	fmt.Printf("%8s %10s %10s %12s\n", "", "ours", "nginx", "ours/nginx")
	fmt.Printf("%8s %10.0f %10.0f %12.2f\n", "best", best["ours"], best["nginx"], best["ours"]/best["nginx"])
	fmt.Printf("%8s %10.0f %10.0f %12.2f\n", "median", mo, mn, mo/mn)
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

// client dials from the client namespace; connections are kept alive between files.
func client(cli *lab.Netns) *http.Client {
	return &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var c net.Conn
			err := cli.Do(func() (err error) {
				c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
				return err
			})
			return c, err
		},
		MaxIdleConnsPerHost: clients,
		ReadBufferSize:      256 << 10,
		DisableCompression:  true,
	}}
}

func waitReady(b *testing.B, cli *lab.Netns, url string) {
	b.Helper()
	c := client(cli)
	var err error
	for range 50 {
		var resp *http.Response
		if resp, err = c.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
			err = fmt.Errorf("status %s", resp.Status)
		}
		time.Sleep(100 * time.Millisecond)
	}
	b.Fatalf("%s: %v", url, err)
}

// writerOnly hides io.Discard's ReaderFrom so the copy uses our large buffer.
type writerOnly struct{ io.Writer }

func fetchAll(cli *lab.Netns, base string) (int64, error) {
	c := client(cli)
	defer c.CloseIdleConnections()
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		total int64
		errs  []error
	)
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 256<<10)
			for _, f := range bootFiles {
				resp, err := c.Get(base + f.name)
				if err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
					return
				}
				n, err := io.CopyBuffer(writerOnly{io.Discard}, resp.Body, buf)
				resp.Body.Close()
				mu.Lock()
				total += n
				if err == nil && (resp.StatusCode != 200 || n != int64(f.size)) {
					err = fmt.Errorf("%s: %s, %d bytes", f.name, resp.Status, n)
				}
				if err != nil {
					errs = append(errs, err)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(errs) > 0 {
		return total, fmt.Errorf("%d errors, first: %w", len(errs), errs[0])
	}
	return total, nil
}
