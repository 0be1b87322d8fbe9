package nfsroot

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/distonet/distonet/internal/lab"
	"github.com/distonet/distonet/nfsroot/oncrpc"
)

func TestMain(m *testing.M) {
	_ = lab.Sweep()
	os.Exit(m.Run())
}

// fakeExports is the registry seam: exports and their versions, changeable by the test.
type fakeExports struct {
	mu       sync.Mutex
	current  map[string]uint64
	versions map[string]map[uint64]Export
}

func newFakeExports() *fakeExports {
	return &fakeExports{current: map[string]uint64{}, versions: map[string]map[uint64]Export{}}
}

// publish makes exp the current version of its path.
func (f *fakeExports) publish(exp Export) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.versions[exp.Path] == nil {
		f.versions[exp.Path] = map[uint64]Export{}
	}
	f.versions[exp.Path][exp.Version] = exp
	f.current[exp.Path] = exp.Version
}

func (f *fakeExports) Export(path string) (Export, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	v, ok := f.current[path]
	if !ok {
		return Export{}, false
	}
	return f.versions[path][v], true
}

func (f *fakeExports) Version(path string, version uint64) (Export, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	e, ok := f.versions[path][version]
	return e, ok
}

func (f *fakeExports) List() []Export {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []Export
	for p, v := range f.current {
		out = append(out, f.versions[p][v])
	}
	return out
}

// image is a small rootfs on disk with the cases the tests look at.
type image struct {
	root    string // the rootfs
	outside string // a file next to the rootfs, outside the export
	secret  string // its content, which must never be served
	sums    map[string]string
}

func writeFile(t testing.TB, path string, data []byte, mode os.FileMode, uid, gid int) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Lchown(path, uid, gid); err != nil {
		t.Fatal(err)
	}
	// chmod after chown: chown clears setuid bits.
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

func randomBytes(t testing.TB, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func sum(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

// newImage builds a rootfs: an issue file, a binary of a few MiB, setuid/setgid/sticky
// files, a root-only file, a user's file, a big directory, and symlinks that point inside
// and outside the image.
func newImage(t testing.TB, issue string) *image {
	t.Helper()
	dir := t.TempDir()
	im := &image{root: filepath.Join(dir, "rootfs"), outside: filepath.Join(dir, "outside-secret"), sums: map[string]string{}}
	im.secret = "host secret " + sum(randomBytes(t, 16))
	writeFile(t, im.outside, []byte(im.secret), 0o644, 0, 0)
	files := map[string][]byte{
		"etc/issue":     []byte(issue),
		"etc/hostname":  []byte("node\n"),
		"bin/busybox":   randomBytes(t, 3<<20+12345),
		"lib/libc.so.6": randomBytes(t, 1<<20),
		"usr/bin/su":    []byte("#!/bin/sh\necho su\n"),
		"usr/bin/wall":  []byte("#!/bin/sh\necho wall\n"),
		"root/secret":   []byte("root only\n"),
		"home/user/f":   []byte("user file\n"),
	}
	modes := map[string]os.FileMode{
		"usr/bin/su": 0o755 | os.ModeSetuid, "usr/bin/wall": 0o755 | os.ModeSetgid, "root/secret": 0o600,
		"bin/busybox": 0o755,
	}
	for name, data := range files {
		mode, ok := modes[name]
		if !ok {
			mode = 0o644
		}
		uid := 0
		if name == "home/user/f" {
			uid = 1000
		}
		writeFile(t, filepath.Join(im.root, name), data, mode, uid, uid)
		im.sums[name] = sum(data)
	}
	if err := os.Chmod(filepath.Join(im.root, "root"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(im.root, "tmp"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(im.root, "tmp"), 0o777|os.ModeSticky); err != nil {
		t.Fatal(err)
	}
	big := filepath.Join(im.root, "usr/share/many")
	if err := os.MkdirAll(big, 0o755); err != nil {
		t.Fatal(err)
	}
	for i := range 1500 {
		if err := os.WriteFile(filepath.Join(big, "file-"+itoa(i)), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for link, target := range map[string]string{
		"lib64":             "lib",
		"etc/escape-rel":    "../../outside-secret",
		"etc/escape-abs":    im.outside,
		"etc/escape-dotdot": "../../../../../../../../../../" + im.outside[1:],
		"etc/motd":          "issue",
	} {
		p := filepath.Join(im.root, link)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(target, p); err != nil {
			t.Fatal(err)
		}
	}
	return im
}

func itoa(i int) string {
	if i == 0 {
		return "0"
	}
	var b [20]byte
	n := len(b)
	for ; i > 0; i /= 10 {
		n--
		b[n] = byte('0' + i%10)
	}
	return string(b[n:])
}

// testNet is a server namespace reachable from an allowed client namespace
// (10.41.0.0/24) and from an outsider namespace (10.41.1.0/24, not allowed).
type testNet struct {
	srv, cli, out *lab.Netns
}

const (
	srvIP      = "10.41.0.1"
	cliIP      = "10.41.0.2"
	srvOutIP   = "10.41.1.1"
	outsiderIP = "10.41.1.2"
)

func newTestNet(t *testing.T) *testNet {
	t.Helper()
	lab.Require(t, "nfs-ls", "nfs-cat", "nfs-cp")
	n := &testNet{srv: lab.NewNetns(t), cli: lab.NewNetns(t), out: lab.NewNetns(t)}
	lab.Veth(t, n.srv, srvIP+"/24", n.cli, cliIP+"/24")
	lab.Veth(t, n.srv, srvOutIP+"/24", n.out, outsiderIP+"/24")
	return n
}

func allowedNets(t testing.TB, cidrs ...string) []*net.IPNet {
	var out []*net.IPNet
	for _, c := range cidrs {
		_, n, err := net.ParseCIDR(c)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, n)
	}
	return out
}

// startServer runs a Server inside the namespace (NFS on 2049, portmapper on 111) until
// the test ends or the returned stop is called.
func startServer(t *testing.T, ns *lab.Netns, exports Exports) (stop func()) {
	t.Helper()
	s, err := NewServer(Config{Portmap: ":111", AllowedNets: allowedNets(t, "10.41.0.0/24", "10.41.9.0/24", "127.0.0.0/8")}, exports, slog.New(slog.NewTextHandler(testWriter{t}, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if err := ns.Do(s.Listen); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Serve: %v", err)
				}
			case <-time.After(30 * time.Second):
				t.Errorf("Serve did not return after cancel")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(string(p))
	return len(p), nil
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

var netTCPAddr = net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 700}

// seedCalls are well-formed calls of every procedure on the root handle.
func seedCalls(root []byte) [][]byte {
	fh := oncrpc.AppendOpaque(nil, root)
	name := func(n string) []byte { return oncrpc.AppendString(append([]byte(nil), fh...), n) }
	args := map[uint32][]byte{
		0: nil, 1: fh, 3: name("etc"), 4: oncrpc.AppendUint32(append([]byte(nil), fh...), 0x3f), 5: fh,
		6:  oncrpc.AppendUint32(oncrpc.AppendUint64(append([]byte(nil), fh...), 0), 4096),
		16: oncrpc.AppendUint32(oncrpc.AppendUint64(oncrpc.AppendUint64(append([]byte(nil), fh...), 0), 0), 4096),
		17: oncrpc.AppendUint32(oncrpc.AppendUint32(oncrpc.AppendUint64(oncrpc.AppendUint64(append([]byte(nil), fh...), 0), 0), 512), 4096),
		18: fh, 19: fh, 20: fh, 12: name("etc"),
	}
	var out [][]byte
	for proc, a := range args {
		c := oncrpc.Call{XID: proc + 1, Prog: progNFS, Vers: 3, Proc: proc, Cred: oncrpc.SysCred("fuzz", 0, 0), Args: a}
		b, _ := c.MarshalBinary()
		out = append(out, b)
	}
	for proc, a := range map[uint32][]byte{1: oncrpc.AppendString(nil, exportPath), 5: nil, 3: oncrpc.AppendString(nil, "/x")} {
		c := oncrpc.Call{XID: 100 + proc, Prog: progMount, Vers: 3, Proc: proc, Args: a}
		b, _ := c.MarshalBinary()
		out = append(out, b)
	}
	return out
}

// waitFor polls cond for up to 20 s.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatal("condition not met within 20 s")
}

// startDaemon runs a long-lived process in the namespace until the test ends. Not
// ns.Start: its Pdeathsig ties the process to the OS thread that started it, and threads
// locked by ns.Do die with their goroutine, which killed daemons at random.
func startDaemon(t *testing.T, ns *lab.Netns, name string, args ...string) {
	t.Helper()
	cmd := ns.Command(context.Background(), name, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("output of %s: %s", name, out.String())
		}
	})
}

// serveLoopback runs a server for ex on a free 127.0.0.1 port until the test ends (Addr
// and AllowedNets default to that) and returns it.
func serveLoopback(t *testing.T, cfg Config, ex Exports) *Server {
	t.Helper()
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:0"
	}
	if cfg.AllowedNets == nil {
		cfg.AllowedNets = allowedNets(t, "127.0.0.0/8")
	}
	s, err := NewServer(cfg, ex, discardLogger())
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return s
}
