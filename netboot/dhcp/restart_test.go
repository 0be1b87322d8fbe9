package dhcp_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/distonet/distonet/internal/lab"
	"github.com/distonet/distonet/netboot/dhcp"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
)

// The test binary doubles as a stand-alone server process (helper-process
// pattern), so a test can kill -9 a real server and start another.
const helperEnv = "DISTONET_DHCP_TEST_HELPER"

type helperConfig struct {
	Interface, ServerIP, Subnet, RangeStart, RangeEnd, LeaseFile string
}

func helperMain() int {
	var hc helperConfig
	if err := json.Unmarshal([]byte(os.Getenv(helperEnv)), &hc); err != nil {
		fmt.Fprintln(os.Stderr, "helper config:", err)
		return 2
	}
	cfg := dhcp.DefaultConfig()
	cfg.Interface = hc.Interface
	cfg.ServerIP = net.ParseIP(hc.ServerIP)
	_, cfg.Subnet, _ = net.ParseCIDR(hc.Subnet)
	cfg.RangeStart, cfg.RangeEnd = net.ParseIP(hc.RangeStart), net.ParseIP(hc.RangeEnd)
	cfg.LeaseFile = hc.LeaseFile
	cfg.LeaseTime = 10 * time.Minute
	cfg.IgnoreOtherServers = true
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	srv, err := dhcp.New(cfg, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	go func() {
		<-srv.Ready()
		fmt.Println("READY")
	}()
	if err := srv.Serve(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "helper serve:", err)
		return 1
	}
	return 0
}

// startHelper runs a server process inside the namespace and waits until it listens.
func startHelper(t *testing.T, tn *testNet, leaseFile string) *exec.Cmd {
	t.Helper()
	hc, _ := json.Marshal(helperConfig{
		Interface: tn.srvIf, ServerIP: tn.serverIP.String(), Subnet: tn.subnet.String(),
		RangeStart: tn.rangeLo.String(), RangeEnd: tn.rngHi.String(), LeaseFile: leaseFile,
	})
	cmd := exec.Command("ip", "netns", "exec", tn.srv.Name(), os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+string(hc))
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	// Pdeathsig follows the forking thread: fork from one that stays locked
	// (and alive) until the test is done with the helper (see startKept).
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	startErr := make(chan error, 1)
	release := make(chan struct{})
	go func() {
		runtime.LockOSThread()
		startErr <- cmd.Start()
		<-release
	}()
	if err := <-startErr; err != nil {
		close(release)
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		close(release)
		if t.Failed() {
			t.Logf("helper stderr:\n%s", stderr.String())
		}
	})
	ready := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if sc.Text() == "READY" {
				ready <- true
			}
		}
		ready <- false
	}()
	select {
	case ok := <-ready:
		if !ok {
			t.Fatalf("helper exited before ready: %s", stderr.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("helper not ready: %s", stderr.String())
	}
	return cmd
}

// macvlans adds n macvlan ports on parent inside ns, each a separate client.
func macvlans(t *testing.T, ns *lab.Netns, parent string, n int) []string {
	t.Helper()
	var out []string
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("mv%d", i)
		ns.MustExec("ip", "link", "add", "link", parent, "name", name, "type", "macvlan", "mode", "bridge")
		ns.MustExec("ip", "link", "set", name, "up")
		out = append(out, name)
	}
	return out
}

// udhcpcLease runs udhcpc once on ifname and returns the address it bound.
func udhcpcLease(t *testing.T, ns *lab.Netns, ifname string, extra ...string) (net.IP, error) {
	script, dir := envScript(t)
	args := append([]string{"-i", ifname, "-f", "-q", "-n", "-t", "6", "-T", "1", "-s", script}, extra...)
	if out, err := ns.Exec("udhcpc", args...); err != nil {
		return nil, fmt.Errorf("udhcpc on %s: %w: %s", ifname, err, out)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "env.*.bound"))
	if len(files) == 0 {
		return nil, fmt.Errorf("udhcpc on %s: no bound event", ifname)
	}
	env := readEnv(t, dir, "bound")
	return net.ParseIP(env["ip"]).To4(), nil
}

// Leases acknowledged before a kill -9 are still there after restart: the
// same clients get the same addresses, new clients get other ones, and a
// clean restart (SIGTERM) keeps them too.
func TestLeasesSurviveKillAndRestart(t *testing.T) {
	lab.Require(t, "udhcpc")
	tn := newTestNet(t)
	leaseFile := filepath.Join(t.TempDir(), "leases.log")
	ports := macvlans(t, tn.cli, tn.cliIf, 6)
	clients, newcomer := ports[:5], ports[5]

	first := map[string]net.IP{}
	srv := startHelper(t, tn, leaseFile)
	for _, p := range clients {
		ip, err := udhcpcLease(t, tn.cli, p)
		if err != nil {
			t.Fatal(err)
		}
		first[p] = ip
	}
	// kill -9: no shutdown path runs.
	if err := srv.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = srv.Wait()

	for round, how := range []string{"after kill -9", "after SIGTERM restart"} {
		srv = startHelper(t, tn, leaseFile)
		// A newcomer must not get any address held by the others.
		if round == 0 {
			ip, err := udhcpcLease(t, tn.cli, newcomer)
			if err != nil {
				t.Fatal(err)
			}
			for p, held := range first {
				if ip.Equal(held) {
					t.Errorf("%s: newcomer got %v, still leased to %s", how, ip, p)
				}
			}
			first[newcomer] = ip
		}
		// Each client asks again without remembering its address (a fresh
		// DISCOVER): the server must give back the same one from its log.
		for _, p := range append(clients, newcomer) {
			ip, err := udhcpcLease(t, tn.cli, p)
			if err != nil {
				t.Fatal(err)
			}
			if !ip.Equal(first[p]) {
				t.Errorf("%s: %s got %v, had %v", how, p, ip, first[p])
			}
		}
		if err := srv.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if err := srv.Wait(); err != nil {
			t.Errorf("%s: server exit after SIGTERM: %v", how, err)
		}
	}
	data, err := os.ReadFile(leaseFile)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(data), "# distonet dhcp lease log v1\n") {
		t.Errorf("lease file does not start with its header: %q", firstLine(data))
	}
}

func firstLine(b []byte) string {
	s, _, _ := strings.Cut(string(b), "\n")
	return s
}

// Under load, kill -9 at a random moment: every lease a client received an
// ACK for is in the log afterwards (the ACK leaves only after fdatasync), and
// a restarted server gives each such client the same address.
func TestAckedLeasesSurviveKillUnderLoad(t *testing.T) {
	tn := newTestNet(t)
	tn.rangeLo, tn.rngHi = net.ParseIP(tn.prefix+"10").To4(), net.ParseIP(tn.prefix+"250").To4()
	leaseFile := filepath.Join(t.TempDir(), "leases.log")
	srv := startHelper(t, tn, leaseFile)

	type ack struct {
		hw net.HardwareAddr
		ip net.IP
	}
	var mu sync.Mutex
	var acked []ack
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = tn.cli.Do(func() error {
				for i := 0; ; i++ {
					select {
					case <-stop:
						return nil
					default:
					}
					hw := net.HardwareAddr{2, 0x67, 0x99, byte(w), byte(i >> 8), byte(i)}
					c, err := nclient4.New(tn.cliIf, nclient4.WithHWAddr(hw), nclient4.WithTimeout(300*time.Millisecond), nclient4.WithRetry(1))
					if err != nil {
						return err
					}
					l, err := c.Request(context.Background())
					c.Close()
					if err == nil {
						mu.Lock()
						acked = append(acked, ack{hw, l.ACK.YourIPAddr})
						mu.Unlock()
					}
				}
			})
		}()
	}
	time.Sleep(1500 * time.Millisecond)
	if err := srv.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = srv.Wait()
	close(stop)
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	if len(acked) < 10 {
		t.Fatalf("only %d ACKs before the kill; load too light to mean anything", len(acked))
	}
	leases, err := dhcp.LoadLeases(leaseFile)
	if err != nil {
		t.Fatal(err)
	}
	held := map[string]string{}
	for _, l := range leases {
		if l.State == dhcp.StateBound {
			held[l.MAC.String()] = l.IP.String()
		}
	}
	lost := 0
	for _, a := range acked {
		if held[a.hw.String()] != a.ip.String() {
			lost++
			if lost < 5 {
				t.Errorf("ACKed %v -> %v, log has %q", a.hw, a.ip, held[a.hw.String()])
			}
		}
	}
	t.Logf("%d ACKs before kill -9, %d bound in the log, %d lost", len(acked), len(held), lost)

	// A restarted server offers each of a sample of them its address again.
	startHelper(t, tn, leaseFile)
	for i := 0; i < len(acked); i += max(1, len(acked)/10) {
		a := acked[i]
		offer, _ := exchange(t, tn.cli, tn.cliIf, a.hw)
		if !offer.YourIPAddr.Equal(a.ip) {
			t.Errorf("after restart %v offered %v, had %v", a.hw, offer.YourIPAddr, a.ip)
		}
	}
}
