package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/distonet/distonet/internal/registry"
)

var distonet string // path of the binary under test

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "distonet-cli")
	if err != nil {
		panic(err)
	}
	distonet = filepath.Join(dir, "distonet")
	// Static, as `make build` makes it: the same binary goes into node initramfs images.
	build := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", distonet, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// freePort returns a loopback TCP port nobody listens on now.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// lab writes a config that keeps every server on loopback with free ports and DHCP off.
func writeConfig(t *testing.T) (path, stateDir string, httpPort int) {
	t.Helper()
	dir := t.TempDir()
	stateDir = filepath.Join(dir, "state")
	httpPort = freePort(t)
	cfg := fmt.Sprintf(`interface: lo
address: 127.0.0.1/8
state_dir: %s
dhcp:
  mode: off
http:
  listen: 127.0.0.1:%d
tftp:
  listen: 127.0.0.1:%d
nfs:
  listen: 127.0.0.1:%d
  portmap: ""
iscsi:
  listen: 127.0.0.1:%d
`, stateDir, httpPort, freePort(t), freePort(t), freePort(t))
	path = filepath.Join(dir, "distonet.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path, stateDir, httpPort
}

func run(t *testing.T, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, distonet, args...).CombinedOutput()
	return string(out), err
}

// startDaemon runs `distonet serve` and waits for /healthz.
func startDaemon(t *testing.T, cfgPath string, httpPort int) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(distonet, "serve", "--config", cfgPath)
	logf, err := os.Create(filepath.Join(t.TempDir(), "serve.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			raw, _ := os.ReadFile(logf.Name())
			t.Logf("serve log:\n%s", raw)
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/healthz", httpPort))
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return cmd
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatal("daemon did not become healthy in 30s")
	return nil
}

type listed struct {
	Name  string `json:"name"`
	MAC   string `json:"mac"`
	State string `json:"state"`
	Image string `json:"image"`
}

func listNodes(t *testing.T, cfgPath string) []listed {
	t.Helper()
	out, err := run(t, "node", "list", "--json", "--config", cfgPath)
	if err != nil {
		t.Fatalf("node list: %v: %s", err, out)
	}
	var ls []listed
	if err := json.Unmarshal([]byte(out), &ls); err != nil {
		t.Fatalf("node list output is not JSON: %v: %s", err, out)
	}
	return ls
}

func TestVersion(t *testing.T) {
	out, err := run(t, "version")
	if err != nil || !strings.HasPrefix(out, "distonet ") {
		t.Fatalf("version: %v %q", err, out)
	}
}

func TestNodeRoundTripDaemonStoppedAndRunning(t *testing.T) {
	cfgPath, _, httpPort := writeConfig(t)

	// Daemon stopped: the CLI opens the registry itself.
	if out, err := run(t, "node", "add", "sun01", "--mac", "00:03:BA:12:34:56", "--image", "demo", "--donate", "aoe", "--config", cfgPath); err != nil {
		t.Fatalf("add (stopped): %v: %s", err, out)
	}
	ls := listNodes(t, cfgPath)
	if len(ls) != 1 || ls[0].Name != "sun01" || ls[0].MAC != "00:03:ba:12:34:56" || ls[0].State != "enrolled" {
		t.Fatalf("list (stopped) = %+v", ls)
	}

	// Daemon running: the same commands go through its API and it sees the change at once.
	startDaemon(t, cfgPath, httpPort)
	if out, err := run(t, "node", "add", "pc-b12", "--mac", "52:54:00:aa:bb:cc", "--image", "demo", "--window", "20:00-07:00", "--donate", "aoe", "--config", cfgPath); err != nil {
		t.Fatalf("add (running): %v: %s", err, out)
	}
	ls = listNodes(t, cfgPath)
	if len(ls) != 2 {
		t.Fatalf("list (running) = %+v", ls)
	}
	out, err := run(t, "node", "show", "pc-b12", "--json", "--secrets", "--config", cfgPath)
	if err != nil {
		t.Fatalf("show: %v: %s", err, out)
	}
	var shown struct {
		ISCSI struct {
			Portal, Target, Initiator string
			LUN                       int
			CHAPUser                  string `json:"chap_user"`
			CHAPSecret                string `json:"chap_secret"`
		} `json:"iscsi"`
		AoE struct{ Shelf, Slot int } `json:"aoe"`
	}
	if err := json.Unmarshal([]byte(out), &shown); err != nil {
		t.Fatalf("show output: %v: %s", err, out)
	}
	if shown.ISCSI.CHAPSecret == "" || shown.ISCSI.Target != "iqn.2011-06.org.distonet:node.pc-b12" || shown.AoE.Shelf != 1 || shown.AoE.Slot != 1 {
		t.Errorf("show --secrets = %s", out)
	}
	if out, err := run(t, "node", "rm", "sun01", "--yes", "--config", cfgPath); err != nil {
		t.Fatalf("rm (running): %v: %s", err, out)
	}
	if ls = listNodes(t, cfgPath); len(ls) != 1 || ls[0].Name != "pc-b12" {
		t.Fatalf("after rm = %+v", ls)
	}
	// Without the admin token the API refuses.
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/api/nodes", httpPort))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("unauthenticated GET /api/nodes = %d, want 401", resp.StatusCode)
	}
}

func TestBadInputGivesOneClearLine(t *testing.T) {
	cfgPath, _, _ := writeConfig(t)
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(bad, []byte("interface: eth0\ndhcp:\n  mode: relay\n"), 0o600)
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"bad config value", []string{"serve", "--config", bad}, `dhcp.mode: "relay" is invalid: want server, proxy or off`},
		{"missing config", []string{"serve", "--config", "/nonexistent/distonet.yaml"}, "no such file"},
		{"bad mac", []string{"node", "add", "n1", "--mac", "zz:00", "--image", "demo", "--config", cfgPath}, "Ethernet address"},
		{"bad name", []string{"node", "add", "Bad_Name", "--mac", "52:54:00:00:00:01", "--image", "demo", "--config", cfgPath}, "hostname label"},
		{"bad window", []string{"node", "add", "n1", "--mac", "52:54:00:00:00:01", "--image", "demo", "--window", "8pm-7am", "--config", cfgPath}, "HH:MM-HH:MM"},
		{"missing image", []string{"node", "add", "n1", "--mac", "52:54:00:00:00:01", "--config", cfgPath}, `"image" not set`},
		{"unknown node", []string{"node", "rm", "ghost", "--yes", "--config", cfgPath}, "not found"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, err := run(t, tc.args...)
			if err == nil {
				t.Fatalf("exit 0, want non-zero; output %q", out)
			}
			lines := strings.Split(strings.TrimSpace(out), "\n")
			if len(lines) != 1 || !strings.Contains(out, tc.want) {
				t.Fatalf("want one line containing %q, got:\n%s", tc.want, out)
			}
		})
	}
}

// Every acknowledged add survives a kill -9 of the daemon in the middle of a burst of 1,000,
// and the store opens again without repair.
func TestRegistrySurvivesKill9DuringBurst(t *testing.T) {
	cfgPath, stateDir, httpPort := writeConfig(t)
	daemon := startDaemon(t, cfgPath, httpPort)
	tokRaw, err := os.ReadFile(filepath.Join(stateDir, "admin.token"))
	if err != nil {
		t.Fatal(err)
	}
	token := strings.TrimSpace(string(tokRaw))
	client := &http.Client{Timeout: 10 * time.Second}

	var acked sync.Map
	var sent atomic.Int32
	killed := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := w; i < 1000; i += 8 {
				body := fmt.Sprintf(`{"name":"n%d","mac":"52:54:01:00:%02x:%02x","image":"demo"}`, i, i/256, i%256)
				req, _ := http.NewRequest("POST", fmt.Sprintf("http://127.0.0.1:%d/api/nodes", httpPort), strings.NewReader(body))
				req.Header.Set("Authorization", "Bearer "+token)
				if sent.Add(1) == 300 {
					go func() { daemon.Process.Signal(syscall.SIGKILL); close(killed) }()
				}
				resp, err := client.Do(req)
				if err != nil {
					return // the daemon is gone
				}
				resp.Body.Close()
				if resp.StatusCode == http.StatusCreated {
					acked.Store(fmt.Sprintf("n%d", i), true)
				}
			}
		}(w)
	}
	wg.Wait()
	<-killed
	daemon.Wait()

	var ackedCount int
	acked.Range(func(_, _ any) bool { ackedCount++; return true })
	if ackedCount == 0 || ackedCount >= 1000 {
		t.Fatalf("acked %d adds: the kill did not land mid-burst", ackedCount)
	}
	present := map[string]bool{}
	for _, n := range listNodes(t, cfgPath) { // opens the store directly: no repair step exists
		present[n.Name] = true
	}
	var lost []string
	acked.Range(func(k, _ any) bool {
		if !present[k.(string)] {
			lost = append(lost, k.(string))
		}
		return true
	})
	if len(lost) > 0 {
		t.Fatalf("%d acknowledged adds lost after kill -9: %v", len(lost), lost)
	}
	t.Logf("%d adds acknowledged before kill -9, all present after restart (%d present)", ackedCount, len(present))
}

// Agents register their donated disks through the agent API; the daemon plans a RAID6 array
// over them at once, and `pool status --json` lists the disks and the array.
func TestPoolInventoryFromAgents(t *testing.T) {
	cfgPath, stateDir, httpPort := writeConfig(t)
	for i := 1; i <= 5; i++ {
		args := []string{"node", "add", fmt.Sprintf("sun%02d", i), "--mac", fmt.Sprintf("00:03:ba:00:00:%02x", i), "--image", "demo",
			"--donate", "aoe", "--group", fmt.Sprintf("rack%d", (i+1)/2), "--config", cfgPath}
		if out, err := run(t, args...); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
	}
	st, err := registry.Open(stateDir, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	nodes, _ := st.Nodes()
	st.Close()
	startDaemon(t, cfgPath, httpPort)
	for _, n := range nodes {
		body := fmt.Sprintf(`{"device":"/dev/sdb","transport":"aoe","address":"%s","size_bytes":146000000000,"mac":"%s"}`, n.AoEAddress(), n.MAC)
		req, _ := http.NewRequest("POST", fmt.Sprintf("http://127.0.0.1:%d/api/agent/register", httpPort), strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+n.Secrets.AgentToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNoContent {
			t.Fatalf("register %s: %s", n.Name, resp.Status)
		}
	}
	// A wrong token is refused.
	req, _ := http.NewRequest("POST", fmt.Sprintf("http://127.0.0.1:%d/api/agent/register", httpPort), strings.NewReader(`{}`))
	req.Header.Set("Authorization", "Bearer not-a-token")
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("register with a wrong token: %v %v", resp.Status, err)
	}

	var status struct {
		Disks []struct {
			Node, Transport, Address, State, Array, Role string
			SizeBytes                                    int64 `json:"size_bytes"`
		} `json:"disks"`
		Arrays []struct {
			Name        string
			RaidDevices int   `json:"raid_devices"`
			UsableBytes int64 `json:"usable_bytes"`
		} `json:"arrays"`
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		out, err := run(t, "pool", "status", "--json", "--config", cfgPath)
		if err != nil {
			t.Fatalf("pool status: %v: %s", err, out)
		}
		if err := json.Unmarshal([]byte(out), &status); err != nil {
			t.Fatalf("pool status is not JSON: %v: %s", err, out)
		}
		if len(status.Arrays) > 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if len(status.Disks) != 5 {
		t.Fatalf("disks = %+v", status.Disks)
	}
	for _, d := range status.Disks {
		if d.Transport != "aoe" || !strings.HasPrefix(d.Address, "e1.") || d.SizeBytes != 146000000000 || d.State != "online" {
			t.Errorf("disk = %+v", d)
		}
	}
	if len(status.Arrays) != 1 || status.Arrays[0].RaidDevices < 4 {
		t.Fatalf("arrays = %+v", status.Arrays)
	}
	// The head's report shows in the text output: state, sync, and its message on a line.
	tok, err := os.ReadFile(filepath.Join(stateDir, "admin.token"))
	if err != nil {
		t.Fatal(err)
	}
	report := fmt.Sprintf(`{"name":%q,"state":"failed","degraded":true,"raid_devices":4,"active_devices":3,"message":"cannot start dirty degraded array: run mdadm --assemble --force"}`, status.Arrays[0].Name)
	req, _ = http.NewRequest("POST", fmt.Sprintf("http://127.0.0.1:%d/api/pool/report", httpPort), strings.NewReader(report))
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(tok)))
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode/100 != 2 {
		t.Fatalf("pool report: %v %v", resp, err)
	}
	text, err := run(t, "pool", "status", "--config", cfgPath)
	if err != nil {
		t.Fatalf("pool status: %v: %s", err, text)
	}
	for _, want := range []string{"ARRAY", "failed,degraded", "3/4", status.Arrays[0].Name + ": cannot start dirty degraded array: run mdadm --assemble --force"} {
		if !strings.Contains(text, want) {
			t.Errorf("pool status text lacks %q:\n%s", want, text)
		}
	}
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", httpPort))
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`distonet_pool_capacity_bytes{state="online",window="always"} 7.3e+11`, `distonet_nodes{donate="aoe"} 5`,
		`distonet_pool_disks{state="online",transport="aoe"} 5`, "iscsi", "nfs"} {
		if !strings.Contains(string(raw), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

// `donate export` refuses a device that carries a filesystem unless --wipe is given.
func TestDonateExportRefusesAFilesystem(t *testing.T) {
	img := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 64<<20); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", img).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v: %s", err, out)
	}
	out, err := run(t, "donate", "export", "--device", img, "--interface", "lo", "--aoe", "1.0")
	if err == nil {
		t.Fatalf("a disk holding ext4 was exported:\n%s", out)
	}
	if !strings.Contains(out, "ext4") || len(strings.Split(strings.TrimSpace(out), "\n")) != 1 {
		t.Fatalf("want one line naming the ext4 signature, got:\n%s", out)
	}
	raw := make([]byte, 2)
	f, _ := os.Open(img)
	f.ReadAt(raw, 1024+0x38)
	f.Close()
	if raw[0] != 0x53 || raw[1] != 0xef {
		t.Fatalf("the refused disk's superblock was touched: magic %x", raw)
	}
}

// A node's volume is created by the running daemon, reset to an empty file system and grown
// on request, through the daemon's API.
func TestNodeVolumeResetAndResize(t *testing.T) {
	cfgPath, stateDir, httpPort := writeConfig(t)
	startDaemon(t, cfgPath, httpPort)
	if out, err := run(t, "node", "add", "v1", "--mac", "52:54:00:00:0e:01", "--image", "demo", "--volume-size", "256MiB", "--config", cfgPath); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	vol := filepath.Join(stateDir, "volumes", "v1.img")
	uuid := func() string {
		out, err := exec.Command("dumpe2fs", "-h", vol).CombinedOutput()
		if err != nil {
			t.Fatalf("dumpe2fs: %v: %s", err, out)
		}
		for _, l := range strings.Split(string(out), "\n") {
			if strings.HasPrefix(l, "Filesystem UUID:") {
				return strings.TrimSpace(strings.TrimPrefix(l, "Filesystem UUID:"))
			}
		}
		t.Fatalf("no UUID in dumpe2fs output:\n%s", out)
		return ""
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		if st, err := os.Stat(vol); err == nil && st.Size() == 256<<20 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the daemon did not create the node's volume")
		}
		time.Sleep(100 * time.Millisecond)
	}
	before := uuid()
	if out, err := run(t, "node", "reset", "v1", "--yes", "--config", cfgPath); err != nil {
		t.Fatalf("reset: %v: %s", err, out)
	}
	if after := uuid(); after == before {
		t.Fatal("reset kept the old file system")
	}
	if out, err := run(t, "node", "resize", "v1", "512MiB", "--config", cfgPath); err != nil {
		t.Fatalf("resize: %v: %s", err, out)
	}
	if st, _ := os.Stat(vol); st.Size() != 512<<20 {
		t.Fatalf("volume is %d bytes after resize", st.Size())
	}
	if out, err := run(t, "node", "resize", "v1", "128MiB", "--config", cfgPath); err == nil || !strings.Contains(out, "shrink") {
		t.Fatalf("shrinking was not refused: %v: %s", err, out)
	}
}

func TestUnitNamesThisBinaryAndConfig(t *testing.T) {
	out, err := run(t, "unit", "--config", "/etc/distonet/lab.yaml")
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if !strings.Contains(out, "ExecStart="+distonet+" serve --config /etc/distonet/lab.yaml") || !strings.Contains(out, "[Install]") {
		t.Fatalf("unit:\n%s", out)
	}
}

// UEFI HTTP boot clients fetch the iPXE binary over HTTP; a symlink out of the root is refused.
func TestIPXEBinariesOverHTTP(t *testing.T) {
	cfgPath, _, httpPort := writeConfig(t)
	startDaemon(t, cfgPath, httpPort)
	want, err := os.ReadFile("/usr/lib/ipxe/snponly.efi")
	if err != nil {
		t.Fatalf("Debian's ipxe package: %v", err)
	}
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/ipxe/snponly.efi", httpPort))
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !bytes.Equal(got, want) {
		t.Fatalf("GET /ipxe/snponly.efi: %s, %d bytes, want %d identical bytes", resp.Status, len(got), len(want))
	}
	for _, p := range []string{"/ipxe/ipxe.efi", "/ipxe/../../etc/passwd", "/ipxe/%2e%2e/%2e%2e/etc/passwd"} {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d%s", httpPort, p))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == 200 && (bytes.Contains(body, []byte("root:")) || p == "/ipxe/ipxe.efi") {
			t.Errorf("GET %s escaped the root: %s", p, resp.Status)
		}
	}
}
