package tftp

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/distonet/distonet/internal/lab"
	"github.com/google/go-cmp/cmp"
)

func TestMain(m *testing.M) {
	_ = lab.Sweep()
	os.Exit(m.Run())
}

const (
	serverIP = "10.69.1.1"
	clientIP = "10.69.1.2"
)

// bed is a server in one namespace and a client namespace linked to it by a veth pair
// (MTU 1500, so blksize is capped at 1468).
type bed struct {
	srv   *Server
	srvNS *lab.Netns
	cli   *lab.Netns
	root  string            // served directory
	out   string            // where clients write
	files map[string][]byte // content of the files under root
	gen   *fakeGenerated
}

// tlogWriter sends the server's log to the test log until the test's cleanup: transfers
// abandoned by a bounded shutdown may still log after it, and t.Log would then panic.
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

// fakeGenerated serves fixed content and records what it was asked.
type fakeGenerated struct {
	files map[string][]byte
	mu    sync.Mutex
	asked []string // "ip path"
}

func (g *fakeGenerated) File(remote net.Addr, path string) ([]byte, bool) {
	g.mu.Lock()
	g.asked = append(g.asked, remote.(*net.UDPAddr).IP.String()+" "+path)
	g.mu.Unlock()
	b, ok := g.files[path]
	return b, ok
}

func randomBytes(t testing.TB, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func newBed(t *testing.T, cfg Config) *bed {
	t.Helper()
	lab.Require(t, "tftp", "atftp", "curl")
	dir := t.TempDir()
	b := &bed{root: filepath.Join(dir, "root"), out: filepath.Join(dir, "out"), files: map[string][]byte{
		"small.bin":      randomBytes(t, 1000),
		"big.bin":        randomBytes(t, 3<<20+123),
		"exact.bin":      randomBytes(t, 512*40), // ends with an empty block at 512
		"empty.bin":      {},
		"sub/nested.bin": randomBytes(t, 70000),
	}}
	must(t, os.MkdirAll(filepath.Join(b.root, "sub"), 0o755))
	must(t, os.MkdirAll(b.out, 0o755))
	for name, content := range b.files {
		must(t, os.WriteFile(filepath.Join(b.root, name), content, 0o644))
	}
	must(t, os.WriteFile(filepath.Join(dir, "secret.txt"), []byte("secret outside the root\n"), 0o644))
	must(t, os.Symlink("small.bin", filepath.Join(b.root, "link-in")))
	must(t, os.Symlink("../secret.txt", filepath.Join(b.root, "link-out")))
	b.files["link-in"] = b.files["small.bin"]
	gen := &fakeGenerated{files: map[string][]byte{"pxelinux.cfg/01-52-54-00-12-34-56": []byte("DEFAULT node\n")}}
	b.gen = gen
	b.files["pxelinux.cfg/01-52-54-00-12-34-56"] = gen.files["pxelinux.cfg/01-52-54-00-12-34-56"]
	must(t, os.WriteFile(filepath.Join(b.root, "text.cfg"), []byte("line one\nline two\r\nbare\rcr\n"), 0o644))
	b.files["text.cfg"] = []byte("line one\nline two\r\nbare\rcr\n")

	srvNS, cli := lab.NewNetns(t), lab.NewNetns(t)
	lab.Veth(t, srvNS, serverIP+"/24", cli, clientIP+"/24")
	b.cli, b.srvNS = cli, srvNS
	cfg.Root = b.root
	if cfg.Addr == "" {
		cfg.Addr = ":69"
	}
	srv, err := NewServer(cfg, gen, slog.New(slog.NewTextHandler(newTlogWriter(t), &slog.HandlerOptions{Level: slog.LevelDebug})))
	must(t, err)
	b.srv = srv
	served := make(chan error, 1)
	go func() { served <- srvNS.Do(func() error { return srv.Serve(context.Background()) }) }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-served; !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve returned %v", err)
		}
	})
	if srv.Addr() == nil {
		t.Fatalf("server did not start: %v", <-served)
	}
	return b
}

func (b *bed) check(t *testing.T, name, local string) {
	t.Helper()
	got, err := os.ReadFile(local)
	if err != nil {
		t.Fatal(err)
	}
	if want := b.files[name]; !bytes.Equal(got, want) {
		t.Fatalf("%s: got %d bytes, want %d bytes (bit-exact)", name, len(got), len(want))
	}
}

func TestRealClientsFetchBitExact(t *testing.T) {
	for _, mode := range []struct {
		name string
		cfg  Config
	}{{"lockstep", Config{}}, {"send-ahead", Config{Anticipate: 8}}} {
		t.Run(mode.name, func(t *testing.T) {
			b := newBed(t, mode.cfg)
			clients := []struct {
				name string
				argv func(remote, local string) []string
			}{
				{"tftp-hpa", func(r, l string) []string {
					return []string{"tftp", serverIP, "-m", "binary", "-c", "get", r, l}
				}},
				{"atftp", func(r, l string) []string { return []string{"atftp", "-g", "-r", r, "-l", l, serverIP} }},
				{"atftp blksize tsize", func(r, l string) []string {
					return []string{"atftp", "--option", "blksize 1468", "--option", "tsize 0", "-g", "-r", r, "-l", l, serverIP}
				}},
				{"atftp timeout", func(r, l string) []string {
					return []string{"atftp", "--option", "timeout 2", "--option", "blksize 1024", "-g", "-r", r, "-l", l, serverIP}
				}},
				{"atftp windowsize", func(r, l string) []string {
					return []string{"atftp", "--option", "windowsize 8", "--option", "blksize 1468", "-g", "-r", r, "-l", l, serverIP}
				}},
				{"curl", func(r, l string) []string {
					return []string{"curl", "-sS", "--fail", "-o", l, "tftp://" + serverIP + "/" + r}
				}},
				{"curl blksize", func(r, l string) []string {
					return []string{"curl", "-sS", "--fail", "--tftp-blksize", "1468", "-o", l, "tftp://" + serverIP + "/" + r}
				}},
				{"curl no options", func(r, l string) []string {
					return []string{"curl", "-sS", "--fail", "--tftp-no-options", "-o", l, "tftp://" + serverIP + "/" + r}
				}},
			}
			for _, c := range clients {
				t.Run(c.name, func(t *testing.T) {
					for _, name := range []string{"small.bin", "big.bin", "exact.bin", "empty.bin", "sub/nested.bin", "link-in", "pxelinux.cfg/01-52-54-00-12-34-56"} {
						local := filepath.Join(b.out, strings.NewReplacer("/", "_", " ", "_").Replace(c.name+"-"+name))
						argv := c.argv(name, local)
						if out, err := b.cli.Exec(argv[0], argv[1:]...); err != nil {
							t.Fatalf("%s: %v\n%s", name, err, out)
						}
						b.check(t, name, local)
					}
				})
			}
			if got := value(t, b.srv.metrics.transfers.WithLabelValues(resultOK)); got != float64(7*len(clients)) {
				t.Errorf("ok transfers = %v, want %d", got, 7*len(clients))
			}
			if got := value(t, b.srv.metrics.active); got != 0 {
				t.Errorf("active transfers = %v after all ended", got)
			}
			// Only "atftp windowsize" asks for a window; send-ahead gives every transfer one.
			lockstep, window := value(t, b.srv.metrics.engines.WithLabelValues(engineLockstep)), value(t, b.srv.metrics.engines.WithLabelValues(engineWindow))
			wantWindow := float64(7)
			if mode.cfg.Anticipate > 1 {
				wantWindow = float64(7 * len(clients))
			}
			if lockstep != float64(7*len(clients))-wantWindow || window != wantWindow {
				t.Errorf("lockstep %v, window %v transfers; want %v, %v", lockstep, window, float64(7*len(clients))-wantWindow, wantWindow)
			}
		})
	}
}

// rawClient speaks TFTP from the client namespace, to see the exact packets.
type rawClient struct {
	t    *testing.T
	conn net.PacketConn
	srv  *net.UDPAddr // the transfer's address once the server answered
}

func newRawClient(t *testing.T, b *bed) *rawClient {
	t.Helper()
	conn, err := b.cli.ListenPacket("udp4", clientIP+":0")
	must(t, err)
	t.Cleanup(func() { conn.Close() })
	return &rawClient{t: t, conn: conn}
}

func (c *rawClient) send(p []byte, to *net.UDPAddr) {
	c.t.Helper()
	if _, err := c.conn.WriteTo(p, to); err != nil {
		c.t.Fatal(err)
	}
}

func (c *rawClient) request(fields ...string) {
	c.t.Helper()
	c.send(rq(1, fields...), &net.UDPAddr{IP: net.ParseIP(serverIP), Port: 69})
}

func (c *rawClient) recv() []byte {
	c.t.Helper()
	buf := make([]byte, 65536)
	must(c.t, c.conn.SetReadDeadline(time.Now().Add(10*time.Second)))
	n, from, err := c.conn.ReadFrom(buf)
	if err != nil {
		c.t.Fatalf("no answer: %v", err)
	}
	c.srv = from.(*net.UDPAddr)
	return buf[:n]
}

func (c *rawClient) ack(block uint16) {
	c.t.Helper()
	c.send(binary.BigEndian.AppendUint16([]byte{0, 4}, block), c.srv)
}

// fetch receives DATA blocks, acknowledging each, and returns the file.
func (c *rawClient) fetch(blksize int, first []byte) []byte {
	c.t.Helper()
	var file []byte
	next := uint16(1)
	p := first
	for {
		if p == nil {
			p = c.recv()
		}
		if PacketOpcode(p) != OpDATA {
			c.t.Fatalf("expected DATA %d, got %q", next, p)
		}
		if blk := binary.BigEndian.Uint16(p[2:]); blk == next {
			file = append(file, p[4:]...)
			c.ack(next)
			next++
			if len(p)-4 < blksize {
				return file
			}
		}
		p = nil
	}
}

func TestOptionsAcknowledged(t *testing.T) {
	b := newBed(t, Config{})
	size := fmt.Sprint(len(b.files["big.bin"]))
	tests := []struct {
		name    string
		opts    []string
		want    OACK
		blksize int
		file    string // default big.bin
	}{
		{name: "blksize tsize", opts: []string{"blksize", "1468", "tsize", "0"},
			want: OACK{{"blksize", "1468"}, {"tsize", size}}, blksize: 1468},
		{name: "upper-case names", opts: []string{"BLKSIZE", "1024", "TSize", "0"},
			want: OACK{{"blksize", "1024"}, {"tsize", size}}, blksize: 1024},
		{name: "blksize above MTU lowered", opts: []string{"blksize", "9000"},
			want: OACK{{"blksize", "1468"}}, blksize: 1468},
		{name: "timeout", opts: []string{"Timeout", "3", "blksize", "1400", "tsize", "0"},
			want: OACK{{"timeout", "3"}, {"blksize", "1400"}, {"tsize", size}}, blksize: 1400},
		{name: "windowsize", opts: []string{"windowsize", "16", "blksize", "1468"},
			want: OACK{{"windowsize", "16"}, {"blksize", "1468"}}, blksize: 1468},
		{name: "tiny blksize", opts: []string{"blksize", "8", "tsize", "0"},
			want: OACK{{"blksize", "8"}, {"tsize", "1000"}}, blksize: 8, file: "small.bin"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.file == "" {
				tt.file = "big.bin"
			}
			c := newRawClient(t, b)
			c.request(append([]string{tt.file, "octet"}, tt.opts...)...)
			var got OACK
			if err := got.UnmarshalBinary(c.recv()); err != nil {
				t.Fatal(err)
			}
			// RFC 2347 does not fix the order of the OACK: compare as sets.
			sortOpts := cmp.Transformer("sort", func(o OACK) map[string]string {
				m := map[string]string{}
				for _, x := range o {
					m[x.Name] = x.Value
				}
				return m
			})
			if d := cmp.Diff(tt.want, got, sortOpts); d != "" {
				t.Fatalf("OACK (-want +got):\n%s", d)
			}
			c.ack(0)
			if file := c.fetch(tt.blksize, nil); !bytes.Equal(file, b.files[tt.file]) {
				t.Fatalf("got %d bytes, want %d", len(file), len(b.files[tt.file]))
			}
		})
	}
	t.Run("no options, no OACK", func(t *testing.T) {
		c := newRawClient(t, b)
		c.request("small.bin", "octet")
		if file := c.fetch(512, nil); !bytes.Equal(file, b.files["small.bin"]) {
			t.Fatalf("got %d bytes", len(file))
		}
	})
}

func TestRefusals(t *testing.T) {
	b := newBed(t, Config{})
	tests := []struct {
		name   string
		packet []byte
		code   ErrorCode
	}{
		{"parent", rq(1, "../secret.txt", "octet"), ErrAccess},
		{"parent deeper", rq(1, "sub/../../secret.txt", "octet"), ErrAccess},
		{"absolute", rq(1, "/etc/passwd", "octet"), ErrAccess},
		{"symlink out", rq(1, "link-out", "octet"), ErrAccess},
		{"missing", rq(1, "nope.bin", "octet"), ErrNotFound},
		{"directory", rq(1, "sub", "octet"), ErrNotFound},
		{"write", rq(2, "new.bin", "octet"), ErrAccess},
		{"mail", rq(1, "small.bin", "mail"), ErrIllegalOp},
		{"malformed", []byte{0, 1, 'x'}, ErrIllegalOp},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newRawClient(t, b)
			c.send(tt.packet, &net.UDPAddr{IP: net.ParseIP(serverIP), Port: 69})
			var e ErrorPacket
			if err := e.UnmarshalBinary(c.recv()); err != nil {
				t.Fatal(err)
			}
			if e.Code != tt.code {
				t.Errorf("error %d %q, want code %d", e.Code, e.Message, tt.code)
			}
			if strings.Contains(e.Message, "secret") || strings.Contains(e.Message, b.root) {
				t.Errorf("error message leaks a path: %q", e.Message)
			}
		})
	}
	// Real clients see the refusals too, and write nothing from outside the root.
	for _, tc := range []struct {
		name string
		argv []string
	}{
		{"tftp-hpa parent", []string{"tftp", serverIP, "-m", "binary", "-c", "get", "../secret.txt", filepath.Join(b.out, "hpa")}},
		{"atftp absolute", []string{"atftp", "-g", "-r", "/etc/passwd", "-l", filepath.Join(b.out, "atftp"), serverIP}},
		{"curl path-as-is", []string{"curl", "-sS", "--fail", "--path-as-is", "-o", filepath.Join(b.out, "curl"), "tftp://" + serverIP + "/../secret.txt"}},
		{"curl symlink out", []string{"curl", "-sS", "--fail", "-o", filepath.Join(b.out, "curl2"), "tftp://" + serverIP + "/link-out"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := b.cli.Exec(tc.argv[0], tc.argv[1:]...)
			if tc.argv[0] == "curl" {
				// curl 7.88 prints a stale getpeername errno; its exit code 69 is
				// CURLE_TFTP_PERM, the access violation.
				if !strings.Contains(fmt.Sprint(err), "exit status 69") {
					t.Errorf("curl: %v, want exit status 69 (TFTP permission): %q", err, out)
				}
			} else if !strings.Contains(strings.ToLower(out), "access violation") {
				t.Errorf("client output does not show the refusal: %q", out)
			}
			local := tc.argv[len(tc.argv)-1]
			if tc.argv[0] != "tftp" {
				local = tc.argv[indexOf(tc.argv, "-o", "-l")+1]
			}
			if got, err := os.ReadFile(local); err == nil && bytes.Contains(got, []byte("secret")) {
				t.Errorf("secret content written to %s", local)
			}
		})
	}
	if got := value(t, b.srv.metrics.transfers.WithLabelValues(resultDenied)); got < 7 {
		t.Errorf("denied requests counted %v, want at least 7", got)
	}
}

func indexOf(ss []string, want ...string) int {
	for i, s := range ss {
		for _, w := range want {
			if s == w {
				return i
			}
		}
	}
	return -1
}

// TestShutdownBoundedWithDeadClient starts transfers whose client never acknowledges (with
// and without options) and checks Close returns near ShutdownGrace, not after
// Timeout×Retries (here 5 s × 5).
func TestShutdownBoundedWithDeadClient(t *testing.T) {
	b := newBed(t, Config{Timeout: 5 * time.Second, Retries: 5, ShutdownGrace: 300 * time.Millisecond})
	for _, opts := range [][]string{nil, {"timeout", "5"}} {
		c := newRawClient(t, b)
		c.request(append([]string{"big.bin", "octet"}, opts...)...)
		c.recv() // first block or OACK; never acknowledged
	}
	start := time.Now()
	b.srv.Close()
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("Close took %v with dead clients (grace 300ms)", d)
	}
}

// TestShutdownEndsLiveTransfer checks a live client is told the server is going away.
func TestShutdownEndsLiveTransfer(t *testing.T) {
	for _, opts := range [][]string{nil, {"timeout", "2"}} {
		t.Run(fmt.Sprint(opts), func(t *testing.T) {
			b := newBed(t, Config{})
			c := newRawClient(t, b)
			c.request(append([]string{"big.bin", "octet"}, opts...)...)
			p := c.recv()
			if PacketOpcode(p) == OpOACK {
				c.ack(0)
				p = c.recv()
			}
			if PacketOpcode(p) != OpDATA {
				t.Fatalf("want DATA 1, got %q", p)
			}
			c.ack(1)
			b.srv.Close()
			for range 100 {
				p = c.recv()
				if PacketOpcode(p) == OpERROR {
					return
				}
				c.ack(binary.BigEndian.Uint16(p[2:]))
			}
			t.Fatal("no ERROR packet after Close")
		})
	}
}

// TestBlockNumberRollover fetches a file of more than 65535 blocks of 512 bytes: block
// numbers wrap to 0, as tftp-hpa, atftp and iPXE expect.
func TestBlockNumberRollover(t *testing.T) {
	b := newBed(t, Config{})
	big := randomBytes(t, 512*65536+100)
	must(t, os.WriteFile(filepath.Join(b.root, "huge.bin"), big, 0o644))
	b.files["huge.bin"] = big
	for _, c := range []struct {
		name string
		argv []string
	}{
		{"tftp-hpa", []string{"tftp", serverIP, "-m", "binary", "-c", "get", "huge.bin", filepath.Join(b.out, "hpa-huge")}},
		{"atftp timeout windowsize", []string{"atftp", "--option", "timeout 2", "--option", "windowsize 4", "-g", "-r", "huge.bin", "-l", filepath.Join(b.out, "atftp-huge"), serverIP}},
	} {
		t.Run(c.name, func(t *testing.T) {
			if out, err := b.cli.Exec(c.argv[0], c.argv[1:]...); err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			b.check(t, "huge.bin", c.argv[len(c.argv)-1-boolInt(c.argv[0] == "atftp")])
		})
	}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// TestLostBlocks drops DATA packets on the client side (the kernel here has no netem) and
// checks lock-step and windows retransmit and the file arrives whole. A dropped block is neither
// stored nor acknowledged, the client keeps acknowledging the last block it has in order
// (RFC 7440's rule for a gap).
func TestLostBlocks(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		opts []string
	}{
		{"lockstep", Config{Timeout: 200 * time.Millisecond}, []string{"blksize", "1468"}},
		{"send-ahead", Config{Timeout: 200 * time.Millisecond, Anticipate: 8}, []string{"blksize", "1468"}},
		{"lockstep timeout option", Config{}, []string{"blksize", "1468", "timeout", "1"}},
		{"windowsize", Config{}, []string{"blksize", "1468", "timeout", "1", "windowsize", "8"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newBed(t, tc.cfg)
			c := newRawClient(t, b)
			c.request(append([]string{"sub/nested.bin", "octet"}, tc.opts...)...)
			drop := map[uint16]bool{3: true, 10: true, 11: true, 48: true} // 48 is the last block
			var file []byte
			next := uint16(1)
			for range 10000 {
				p := c.recv()
				switch PacketOpcode(p) {
				case OpOACK:
					c.ack(0)
					continue
				case OpDATA:
				default:
					t.Fatalf("unexpected %q", p)
				}
				blk := binary.BigEndian.Uint16(p[2:])
				if drop[blk] {
					delete(drop, blk)
					continue
				}
				if blk != next {
					c.ack(next - 1)
					continue
				}
				file = append(file, p[4:]...)
				c.ack(blk)
				next++
				if len(p)-4 < 1468 {
					break
				}
			}
			if !bytes.Equal(file, b.files["sub/nested.bin"]) {
				t.Fatalf("got %d bytes, want %d", len(file), len(b.files["sub/nested.bin"]))
			}
			if len(drop) != 0 {
				t.Fatalf("blocks never sent: %v", drop)
			}
		})
	}
}

func TestGeneratedFiles(t *testing.T) {
	b := newBed(t, Config{})
	local := filepath.Join(b.out, "gen")
	// A name with "./" and a doubled slash reaches Generated cleaned.
	b.cli.MustExec("tftp", serverIP, "-m", "binary", "-c", "get", "./pxelinux.cfg//01-52-54-00-12-34-56", local)
	b.check(t, "pxelinux.cfg/01-52-54-00-12-34-56", local)
	b.gen.mu.Lock()
	defer b.gen.mu.Unlock()
	if d := cmp.Diff([]string{clientIP + " pxelinux.cfg/01-52-54-00-12-34-56"}, b.gen.asked); d != "" {
		t.Errorf("Generated asked (-want +got):\n%s", d)
	}
}

// TestNetascii fetches a text file in netascii mode: the server converts to CR LF and
// CR NUL, the client back, so the file arrives unchanged, with and without options.
func TestNetascii(t *testing.T) {
	b := newBed(t, Config{})
	hpa := filepath.Join(b.out, "hpa-text")
	b.cli.MustExec("tftp", serverIP, "-m", "ascii", "-c", "get", "text.cfg", hpa)
	b.check(t, "text.cfg", hpa)
	c := newRawClient(t, b) // with an option: the OACK comes first
	c.request("text.cfg", "netascii", "timeout", "2")
	if PacketOpcode(c.recv()) != OpOACK {
		t.Fatal("no OACK")
	}
	c.ack(0)
	if got, want := string(c.fetch(512, nil)), "line one\r\nline two\r\x00\r\nbare\r\x00cr\r\n"; got != want {
		t.Errorf("netascii on the wire %q, want %q", got, want)
	}
}

func TestServeStopsWithContext(t *testing.T) {
	lab.Require(t)
	ns := lab.NewNetns(t)
	srv, err := NewServer(Config{Addr: "127.0.0.1:69", Root: t.TempDir()}, nil, nil)
	must(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- ns.Do(func() error { return srv.Serve(ctx) }) }()
	if srv.Addr() == nil {
		t.Fatalf("not serving: %v", <-served)
	}
	cancel()
	if err := <-served; !errors.Is(err, ErrServerClosed) {
		t.Fatalf("Serve: %v, want ErrServerClosed", err)
	}
	if err := srv.Serve(context.Background()); err == nil || errors.Is(err, ErrServerClosed) {
		t.Fatalf("second Serve: %v, want a refusal", err)
	}
}

// TestRetransmittedRequest sends the same RRQ twice, as a client does when the first
// answer is slow: one transfer only.
func TestRetransmittedRequest(t *testing.T) {
	b := newBed(t, Config{})
	c := newRawClient(t, b)
	c.request("big.bin", "octet")
	c.request("big.bin", "octet")
	if file := c.fetch(512, nil); !bytes.Equal(file, b.files["big.bin"]) {
		t.Fatalf("got %d bytes", len(file))
	}
	// A second transfer would have sent block 1 from another port by now.
	must(t, c.conn.SetReadDeadline(time.Now().Add(1500*time.Millisecond)))
	buf := make([]byte, 2048)
	if n, from, err := c.conn.ReadFrom(buf); err == nil {
		t.Fatalf("extra packet %q from %v", buf[:n], from)
	}
	if got := value(t, b.srv.metrics.transfers.WithLabelValues(resultOK)); got != 1 {
		t.Errorf("%v transfers, want 1", got)
	}
}

func TestMaxTransfers(t *testing.T) {
	b := newBed(t, Config{MaxTransfers: 1})
	first := newRawClient(t, b)
	first.request("big.bin", "octet")
	first.recv() // block 1, not acknowledged: the transfer stays open
	second := newRawClient(t, b)
	second.request("small.bin", "octet")
	var e ErrorPacket
	if err := e.UnmarshalBinary(second.recv()); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(e.Message, "busy") {
		t.Errorf("got %+v, want a busy refusal", e)
	}
	if got := value(t, b.srv.metrics.transfers.WithLabelValues(resultBusy)); got != 1 {
		t.Errorf("busy count %v, want 1", got)
	}
}

// TestReplyFromRequestedAddress serves a request sent to a secondary address: every packet
// of the transfer must come from that address, or clients that check the server's address
// (tftp-hpa does) drop them.
func TestReplyFromRequestedAddress(t *testing.T) {
	b := newBed(t, Config{})
	const secondary = "10.69.1.3"
	srvIf := strings.TrimSpace(b.srvNS.MustExec("sh", "-c", "ip -o link show type veth | cut -d: -f2 | cut -d@ -f1"))
	b.srvNS.MustExec("ip", "addr", "add", secondary+"/24", "dev", srvIf)
	for _, opts := range [][]string{nil, {"timeout", "2"}} {
		t.Run(fmt.Sprint(opts), func(t *testing.T) {
			c := newRawClient(t, b)
			c.send(rq(1, append([]string{"small.bin", "octet"}, opts...)...), &net.UDPAddr{IP: net.ParseIP(secondary), Port: 69})
			p := c.recv()
			if got := c.srv.IP.String(); got != secondary {
				t.Fatalf("answer from %s, want %s", got, secondary)
			}
			if PacketOpcode(p) == OpOACK {
				c.ack(0)
				p = nil
			}
			if file := c.fetch(512, p); !bytes.Equal(file, b.files["small.bin"]) {
				t.Fatalf("got %d bytes", len(file))
			}
		})
	}
	local := filepath.Join(b.out, "hpa-secondary")
	b.cli.MustExec("tftp", secondary, "-m", "binary", "-c", "get", "small.bin", local)
	b.check(t, "small.bin", local)
}

// TestInterfaceBinding serves on one interface only: a client on another network the
// server's host is on gets no answer, the boot network's client is served.
func TestInterfaceBinding(t *testing.T) {
	lab.Require(t, "tftp")
	srvNS, boot, other := lab.NewNetns(t), lab.NewNetns(t), lab.NewNetns(t)
	bootIf, _ := lab.Veth(t, srvNS, "10.69.2.1/24", boot, "10.69.2.2/24")
	lab.Veth(t, srvNS, "10.69.3.1/24", other, "10.69.3.2/24")
	root := t.TempDir()
	must(t, os.WriteFile(filepath.Join(root, "f"), []byte("boot file\n"), 0o644))
	srv, err := NewServer(Config{Root: root, Interface: bootIf}, nil, nil)
	must(t, err)
	go func() { _ = srvNS.Do(func() error { return srv.Serve(context.Background()) }) }()
	t.Cleanup(func() { srv.Close() })
	if srv.Addr() == nil {
		t.Fatal("not serving")
	}
	out := t.TempDir()
	boot.MustExec("tftp", "10.69.2.1", "-m", "binary", "-c", "get", "f", filepath.Join(out, "boot"))
	if got, _ := os.ReadFile(filepath.Join(out, "boot")); string(got) != "boot file\n" {
		t.Fatalf("boot network got %q", got)
	}
	conn, err := other.ListenPacket("udp4", "10.69.3.2:0")
	must(t, err)
	defer conn.Close()
	_, err = conn.WriteTo(rq(1, "f", "octet"), &net.UDPAddr{IP: net.ParseIP("10.69.3.1"), Port: 69})
	must(t, err)
	must(t, conn.SetReadDeadline(time.Now().Add(2*time.Second)))
	buf := make([]byte, 600)
	if n, _, err := conn.ReadFrom(buf); err == nil {
		t.Fatalf("answered on another interface: %q", buf[:n])
	}
}

// TestDuplicateACKNotAnswered checks lock-step never answers a duplicate ACK (the
// Sorcerer's Apprentice bug, RFC 1123 4.2.3.1): each block goes out once per ACK of its
// predecessor, and only a timeout resends it. With an option, the OACK's duplicate ACK 0
// must not bring block 1 twice either.
func TestDuplicateACKNotAnswered(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts []string
	}{{"no options", nil}, {"timeout option", []string{"timeout", "2"}}} {
		t.Run(tc.name, func(t *testing.T) {
			b := newBed(t, Config{Timeout: 2 * time.Second})
			c := newRawClient(t, b)
			c.request(append([]string{"big.bin", "octet"}, tc.opts...)...)
			if tc.opts != nil {
				if p := c.recv(); PacketOpcode(p) != OpOACK {
					t.Fatalf("want OACK, got %q", p)
				}
				c.ack(0)
				c.ack(0)
			}
			blocks := map[uint16]int{}
			for blk := uint16(1); blk <= 3; blk++ {
				p := c.recv()
				if PacketOpcode(p) != OpDATA || binary.BigEndian.Uint16(p[2:]) != blk {
					t.Fatalf("want DATA %d, got %q", blk, p[:4])
				}
				blocks[blk]++
				c.ack(blk)
				c.ack(blk) // the duplicate: must not bring block blk+1 twice
			}
			// Within the 2 s timeout only block 4 may come, once.
			must(t, c.conn.SetReadDeadline(time.Now().Add(time.Second)))
			buf := make([]byte, 2048)
			for {
				n, _, err := c.conn.ReadFrom(buf)
				if err != nil {
					break
				}
				blocks[binary.BigEndian.Uint16(buf[2:n])]++
			}
			if d := cmp.Diff(map[uint16]int{1: 1, 2: 1, 3: 1, 4: 1}, blocks); d != "" {
				t.Errorf("DATA packets per block (-want +got):\n%s", d)
			}
		})
	}
}
