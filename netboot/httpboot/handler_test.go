package httpboot

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/distonet/distonet/internal/lab"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

const helperEnv = "DISTONET_HTTPBOOT_HELPER_ROOT"

func TestMain(m *testing.M) {
	if root := os.Getenv(helperEnv); root != "" {
		os.Exit(runHelper(root))
	}
	_ = lab.Sweep()
	os.Exit(m.Run())
}

// runHelper is this test binary re-executed under strace: it serves root on :8181.
func runHelper(root string) int {
	h, err := NewHandler(Config{Root: root}, fakeScripts{}, nil)
	if err != nil {
		fmt.Println(err)
		return 1
	}
	l, err := net.Listen("tcp", ":8181")
	if err != nil {
		fmt.Println(err)
		return 1
	}
	fmt.Printf("ready %d\n", os.Getpid())
	_ = http.Serve(l, h)
	return 0
}

const (
	serverIP = "10.80.1.1"
	clientIP = "10.80.1.2"
	nodeMAC  = "52:54:00:12:34:56"
)

type fakeScripts struct{}

func (fakeScripts) BootScript(mac net.HardwareAddr, r *http.Request) (string, error) {
	if mac.String() == "52:54:00:00:00:99" {
		return "", errors.New("registry unavailable")
	}
	return "#!ipxe\necho node " + mac.String() + "\n", nil
}

type bed struct {
	cli   *lab.Netns
	srv   *lab.Netns
	h     *Handler
	dir   string
	root  string
	files map[string][]byte
}

func randomBytes(t testing.TB, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// newBed serves the handler in one namespace on :80 behind a ServeMux (as the daemon
// mounts it) and on :8080 bare (so paths reach it uncleaned); curl runs in another.
func newBed(t *testing.T) *bed {
	t.Helper()
	lab.Require(t, "curl")
	dir := t.TempDir()
	b := &bed{dir: dir, root: filepath.Join(dir, "root"), files: map[string][]byte{
		"debian/3/vmlinuz":   randomBytes(t, 5<<20+17),
		"debian/3/initramfs": randomBytes(t, 2<<20),
		"small.txt":          []byte("hello\n"),
	}}
	for name, content := range b.files {
		must(t, os.MkdirAll(filepath.Dir(filepath.Join(b.root, name)), 0o755))
		must(t, os.WriteFile(filepath.Join(b.root, name), content, 0o644))
	}
	must(t, os.WriteFile(filepath.Join(dir, "secret.txt"), []byte("secret outside the root\n"), 0o644))
	must(t, os.Symlink("../secret.txt", filepath.Join(b.root, "link-out")))
	must(t, os.Symlink("debian/3/initramfs", filepath.Join(b.root, "link-in")))
	b.files["link-in"] = b.files["debian/3/initramfs"]
	must(t, syscall.Mkfifo(filepath.Join(b.root, "fifo"), 0o644))

	b.srv, b.cli = lab.NewNetns(t), lab.NewNetns(t)
	lab.Veth(t, b.srv, serverIP+"/24", b.cli, clientIP+"/24")
	logger := slog.New(slog.NewTextHandler(newTlogWriter(t), &slog.HandlerOptions{Level: slog.LevelDebug}))
	h, err := NewHandler(Config{Root: b.root, Metrics: prometheus.NewRegistry()}, fakeScripts{}, logger)
	must(t, err)
	b.h = h
	t.Cleanup(func() { h.Close() })
	mux := http.NewServeMux()
	mux.Handle(BootPrefix, h)
	mux.Handle(FilesPrefix, h)
	for addr, handler := range map[string]http.Handler{":80": mux, ":8080": h} {
		l, err := b.srv.Listen("tcp", addr)
		must(t, err)
		srv := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second}
		go func() { _ = srv.Serve(l) }()
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = srv.Shutdown(ctx)
		})
	}
	return b
}

// tlogWriter sends the handler's log to the test log until the test's cleanup.
type tlogWriter struct {
	t    testing.TB
	mu   sync.Mutex
	done bool
}

func newTlogWriter(t testing.TB) *tlogWriter {
	w := &tlogWriter{t: t}
	t.Cleanup(func() {
		w.mu.Lock()
		w.done = true
		w.mu.Unlock()
	})
	return w
}

func (w *tlogWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimSpace(string(p)))
	}
	return len(p), nil
}

type reply struct {
	code    int
	headers http.Header
	body    []byte
}

// curl fetches url from the client namespace with extra curl arguments.
func (b *bed) curl(t *testing.T, url string, args ...string) reply {
	t.Helper()
	f, err := os.CreateTemp(b.dir, "body")
	must(t, err)
	f.Close()
	hdr := f.Name() + ".h"
	argv := append([]string{"-sS", "-o", f.Name(), "-D", hdr, "-w", "%{http_code}"}, args...)
	out, err := b.cli.Exec("curl", append(argv, url)...)
	if err != nil {
		t.Fatalf("curl %s: %v", url, err)
	}
	code, err := strconv.Atoi(strings.TrimSpace(out))
	must(t, err)
	body, err := os.ReadFile(f.Name())
	must(t, err)
	raw, err := os.ReadFile(hdr)
	must(t, err)
	headers := http.Header{}
	sc := bufio.NewScanner(bytes.NewReader(raw))
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok {
			headers.Add(strings.TrimSpace(k), strings.TrimSpace(v))
		}
	}
	return reply{code: code, headers: headers, body: body}
}

func TestBootScript(t *testing.T) {
	b := newBed(t)
	tests := []struct {
		name     string
		path     string
		code     int
		bodyHas  string
		noHeader bool
	}{
		{"colons", "/boot/" + nodeMAC + ".ipxe", 200, "#!ipxe\necho node " + nodeMAC, false},
		{"hyphens upper-case", "/boot/52-54-00-12-34-56.ipxe", 200, "echo node " + nodeMAC, false},
		{"malformed", "/boot/not-a-mac.ipxe", 404, "not a MAC address", true},
		{"no suffix", "/boot/" + nodeMAC, 404, "does not end in .ipxe", true},
		{"registry error", "/boot/52:54:00:00:00:99.ipxe", 500, "boot script unavailable", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := b.curl(t, "http://"+serverIP+tt.path)
			if r.code != tt.code || !bytes.Contains(r.body, []byte(tt.bodyHas)) {
				t.Fatalf("got %d %q, want %d containing %q", r.code, r.body, tt.code, tt.bodyHas)
			}
			if ct := r.headers.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
				t.Errorf("Content-Type %q", ct)
			}
			if !tt.noHeader && r.headers.Get("Cache-Control") != "no-store" {
				t.Errorf("Cache-Control %q, want no-store", r.headers.Get("Cache-Control"))
			}
		})
	}
	if r := b.curl(t, "http://"+serverIP+"/boot/"+nodeMAC+".ipxe", "-X", "POST"); r.code != 405 {
		t.Errorf("POST: %d, want 405", r.code)
	}
	if got := counter(t, b.h.metrics.requests.WithLabelValues(routeScript, "200")); got != 2 {
		t.Errorf("script 200 count %v, want 2", got)
	}
	if got := counter(t, b.h.metrics.requests.WithLabelValues(routeScript, "404")); got != 2 {
		t.Errorf("script 404 count %v, want 2", got)
	}
}

func TestFiles(t *testing.T) {
	b := newBed(t)
	kernel := b.files["debian/3/vmlinuz"]
	for _, port := range []string{"80", "8080"} {
		base := "http://" + serverIP + ":" + port + "/files/"
		t.Run("port "+port, func(t *testing.T) {
			for name, want := range b.files {
				if r := b.curl(t, base+name); r.code != 200 || !bytes.Equal(r.body, want) {
					t.Fatalf("%s: %d, %d bytes, want 200 and %d bytes bit-exact", name, r.code, len(r.body), len(want))
				}
			}
			ranges := []struct {
				arg  string
				want []byte
			}{
				{"1000-1999", kernel[1000:2000]},
				{"-100", kernel[len(kernel)-100:]},
				{"5000000-", kernel[5000000:]},
			}
			for _, rg := range ranges {
				r := b.curl(t, base+"debian/3/vmlinuz", "-r", rg.arg)
				if r.code != 206 || !bytes.Equal(r.body, rg.want) {
					t.Errorf("range %s: %d, %d bytes, want 206 and %d bytes", rg.arg, r.code, len(r.body), len(rg.want))
				}
			}
			if r := b.curl(t, base+"debian/3/vmlinuz", "-r", "0-9,20-29"); r.code != 206 ||
				!strings.HasPrefix(r.headers.Get("Content-Type"), "multipart/byteranges") {
				t.Errorf("multi-range: %d %q", r.code, r.headers.Get("Content-Type"))
			}
			if r := b.curl(t, base+"debian/3/vmlinuz", "-r", "9999999-"); r.code != 416 {
				t.Errorf("unsatisfiable range: %d, want 416", r.code)
			}
			first := b.curl(t, base+"small.txt")
			etag, lastMod := first.headers.Get("ETag"), first.headers.Get("Last-Modified")
			if etag == "" || lastMod == "" || first.headers.Get("Accept-Ranges") != "bytes" {
				t.Fatalf("missing validators: %v", first.headers)
			}
			if r := b.curl(t, base+"small.txt", "-H", "If-None-Match: "+etag); r.code != 304 {
				t.Errorf("If-None-Match: %d, want 304", r.code)
			}
			if r := b.curl(t, base+"small.txt", "-H", "If-Modified-Since: "+lastMod); r.code != 304 {
				t.Errorf("If-Modified-Since: %d, want 304", r.code)
			}
			if r := b.curl(t, base+"small.txt", "-r", "1-2", "-H", "If-Range: "+etag); r.code != 206 || string(r.body) != "el" {
				t.Errorf("If-Range matching: %d %q", r.code, r.body)
			}
			if r := b.curl(t, base+"small.txt", "-r", "1-2", "-H", `If-Range: "stale"`); r.code != 200 || string(r.body) != "hello\n" {
				t.Errorf("If-Range stale: %d %q, want the whole file", r.code, r.body)
			}
			if r := b.curl(t, base+"small.txt", "-I"); r.code != 200 || r.headers.Get("Content-Length") != "6" {
				t.Errorf("HEAD: %d %v", r.code, r.headers)
			}
		})
	}
}

func TestFilesConfined(t *testing.T) {
	b := newBed(t)
	for _, port := range []string{"80", "8080"} {
		base := "http://" + serverIP + ":" + port
		for _, p := range []string{
			"/files/../secret.txt",
			"/files/debian/../../secret.txt",
			"/files/%2e%2e/secret.txt",
			"/files/..%2fsecret.txt",
			"/files//etc/passwd",
			"/files/link-out",
			"/files/fifo",
			"/files/debian",
			"/files/",
			"/files/nope",
		} {
			t.Run(port+p, func(t *testing.T) {
				r := b.curl(t, base+p, "--path-as-is", "--max-time", "20")
				if r.code == 200 || bytes.Contains(r.body, []byte("secret outside")) || bytes.Contains(r.body, []byte("root:")) {
					t.Fatalf("%s served: %d %q", p, r.code, r.body)
				}
				if port == "8080" && r.code != 404 {
					t.Errorf("%s: %d, want 404", p, r.code)
				}
			})
		}
	}
}

// TestSendfile runs the handler in a re-executed test binary under strace and checks the
// file body leaves through sendfile(2), not through user-space copies.
func TestSendfile(t *testing.T) {
	lab.Require(t, "strace", "curl")
	b := newBed(t)
	trace := filepath.Join(b.dir, "strace.out")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cmd := b.srv.Command(ctx, "strace", "-f", "-qq", "-e", "trace=sendfile", "-o", trace, os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+b.root)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	stdout, err := cmd.StdoutPipe()
	must(t, err)
	must(t, cmd.Start())
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		_ = cmd.Wait()
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "ready ") {
		t.Fatalf("helper did not start: %q %v", line, err)
	}
	helperPID, err := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(line, "ready ")))
	must(t, err)

	kernel := b.files["debian/3/vmlinuz"]
	if r := b.curl(t, "http://"+serverIP+":8181/files/debian/3/vmlinuz"); r.code != 200 || !bytes.Equal(r.body, kernel) {
		t.Fatalf("fetch: %d, %d bytes", r.code, len(r.body))
	}
	if r := b.curl(t, "http://"+serverIP+":8181/files/debian/3/vmlinuz", "-r", "1048576-"); r.code != 206 || !bytes.Equal(r.body, kernel[1<<20:]) {
		t.Fatalf("range fetch: %d, %d bytes", r.code, len(r.body))
	}
	// End the helper; strace then exits and has written everything.
	must(t, syscall.Kill(helperPID, syscall.SIGKILL))
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("strace did not exit")
	}
	out, err := os.ReadFile(trace)
	must(t, err)
	var sent int64
	for _, m := range regexp.MustCompile(`sendfile\(.*\)\s+= (\d+)`).FindAllSubmatch(out, -1) {
		n, _ := strconv.ParseInt(string(m[1]), 10, 64)
		sent += n
	}
	// net/http writes the first 512 bytes itself (to sniff and send headers), the rest
	// must go through sendfile.
	want := int64(len(kernel)-512) + int64(len(kernel)-(1<<20)-512)
	if sent < want {
		t.Fatalf("sendfile carried %d bytes, want at least %d; trace:\n%.2000s", sent, want, out)
	}
}

func counter(t testing.TB, c prometheus.Collector) float64 {
	t.Helper()
	ch := make(chan prometheus.Metric, 1)
	c.Collect(ch)
	var m dto.Metric
	must(t, (<-ch).Write(&m))
	return m.GetCounter().GetValue()
}
