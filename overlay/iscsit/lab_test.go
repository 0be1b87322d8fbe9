package iscsit

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/distonet/distonet/internal/lab"
)

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		os.Exit(runChild())
	}
	_ = lab.Sweep()
	os.Exit(m.Run())
}

// testNet is a server namespace and a client namespace joined by a veth pair.
type testNet struct {
	srvNS, cliNS *lab.Netns
	srvIP        string
}

var subnetSeq = 0

func newTestNet(t *testing.T) *testNet {
	t.Helper()
	lab.Require(t, "iscsi-inq", "iscsi-ls")
	subnetSeq++
	srv, cli := lab.NewNetns(t), lab.NewNetns(t)
	ip := fmt.Sprintf("10.53.%d.1", subnetSeq)
	lab.Veth(t, srv, ip+"/24", cli, fmt.Sprintf("10.53.%d.2/24", subnetSeq))
	return &testNet{srvNS: srv, cliNS: cli, srvIP: ip}
}

// startServer runs a Server listening inside the server namespace.
func (n *testNet) startServer(t *testing.T, cfg Config) *Server {
	t.Helper()
	cfg.Addr = n.srvIP + ":3260"
	s, err := NewServer(cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := n.srvNS.Listen("tcp", cfg.Addr)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.ServeListener(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := s.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return s
}

func testLogger(t *testing.T) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// newVolume makes a sparse backing file.
func newVolume(t *testing.T, size int64) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "vol.img")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	f.Close()
	return p
}

func url(user, secret, ip, iqn string, lun int) string {
	cred := ""
	if user != "" {
		cred = user + "%" + secret + "@"
	}
	return fmt.Sprintf("iscsi://%s%s:3260/%s/%d", cred, ip, iqn, lun)
}

const (
	initA = "iqn.2026-01.org.distonet.test:node-a"
	initB = "iqn.2026-01.org.distonet.test:node-b"
)

func twoTargets(t *testing.T, s *Server) (a, b TargetSpec) {
	a = TargetSpec{IQN: IQNForNode("a"), LUNs: []string{newVolume(t, 64<<20)}, CHAPUser: "node-a",
		CHAPSecret: "secret-of-a-0123456", AllowedInitiators: []string{initA}}
	b = TargetSpec{IQN: IQNForNode("b"), LUNs: []string{newVolume(t, 32<<20)}, CHAPUser: "node-b",
		CHAPSecret: "secret-of-b-6543210", AllowedInitiators: []string{initB}}
	for _, sp := range []TargetSpec{a, b} {
		if err := s.AddTarget(sp); err != nil {
			t.Fatal(err)
		}
	}
	return a, b
}

func TestLibiscsiCHAP(t *testing.T) {
	n := newTestNet(t)
	s := n.startServer(t, Config{})
	a, b := twoTargets(t, s)
	cases := []struct {
		name      string
		initiator string
		user, pw  string
		iqn       string
		ok        bool
	}{
		{"right secret", initA, a.CHAPUser, a.CHAPSecret, a.IQN, true},
		{"right secret b", initB, b.CHAPUser, b.CHAPSecret, b.IQN, true},
		{"initiator name in another case", strings.ToUpper(initA), a.CHAPUser, a.CHAPSecret, a.IQN, true},
		{"wrong secret", initA, a.CHAPUser, "not-the-secret-000", a.IQN, false},
		{"no secret", initA, "", "", a.IQN, false},
		{"a's credentials on b", initB, a.CHAPUser, a.CHAPSecret, b.IQN, false},
		{"a's initiator name on b", initA, b.CHAPUser, b.CHAPSecret, b.IQN, false},
		{"unknown target", initA, a.CHAPUser, a.CHAPSecret, IQNForNode("nobody"), false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out, err := n.cliNS.Exec("iscsi-inq", "-i", tc.initiator, url(tc.user, tc.pw, n.srvIP, tc.iqn, 0))
			if tc.ok && err != nil {
				t.Fatalf("iscsi-inq refused: %v", err)
			}
			if !tc.ok && err == nil {
				t.Fatalf("iscsi-inq accepted: %s", out)
			}
			if tc.ok && !strings.Contains(out, "DISTONET") {
				t.Errorf("inquiry data without our vendor: %s", out)
			}
		})
	}
}

func TestDiscoveryShowsOwnTargetOnly(t *testing.T) {
	n := newTestNet(t)
	s := n.startServer(t, Config{})
	a, b := twoTargets(t, s)
	for _, tc := range []struct {
		name, initiator, user, pw, want, notWant string
	}{
		{"a with chap", initA, a.CHAPUser, a.CHAPSecret, a.IQN, b.IQN},
		{"b with chap", initB, b.CHAPUser, b.CHAPSecret, b.IQN, a.IQN},
		{"a without chap", initA, "", "", a.IQN, b.IQN},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u := fmt.Sprintf("iscsi://%s:3260", n.srvIP)
			if tc.user != "" {
				u = fmt.Sprintf("iscsi://%s%%%s@%s:3260", tc.user, tc.pw, n.srvIP)
			}
			out, err := n.cliNS.Exec("iscsi-ls", "-i", tc.initiator, u)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(out, tc.want) || strings.Contains(out, tc.notWant) {
				t.Errorf("discovery as %s: got %q, want %s and not %s", tc.initiator, out, tc.want, tc.notWant)
			}
		})
	}
	t.Run("wrong secret refused", func(t *testing.T) {
		u := fmt.Sprintf("iscsi://%s%%%s@%s:3260", a.CHAPUser, "wrong-secret-xxxxx", n.srvIP)
		if out, err := n.cliNS.Exec("iscsi-ls", "-i", initA, u); err == nil && strings.Contains(out, a.IQN) {
			t.Errorf("discovery with a wrong secret listed %q", out)
		}
	})
}

const childEnv = "ISCSIT_TEST_CHILD"

// runChild serves one target described by the environment until killed: the crash test
// runs it as a subprocess so it can kill -9 it, and it is handy to run by hand.
func runChild() int {
	spec := TargetSpec{
		IQN:        os.Getenv("ISCSIT_IQN"),
		LUNs:       []string{os.Getenv("ISCSIT_FILE")},
		CHAPUser:   os.Getenv("ISCSIT_USER"),
		CHAPSecret: os.Getenv("ISCSIT_SECRET"),
	}
	if v := os.Getenv("ISCSIT_INITIATORS"); v != "" {
		spec.AllowedInitiators = strings.Split(v, ",")
	}
	opts := &slog.HandlerOptions{}
	if os.Getenv("ISCSIT_DEBUG") != "" {
		opts.Level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, opts))
	if pf := os.Getenv("ISCSIT_PIDFILE"); pf != "" {
		if err := os.WriteFile(pf, []byte(strconv.Itoa(os.Getpid())), 0o600); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	s, err := NewServer(Config{Addr: os.Getenv("ISCSIT_ADDR")}, log)
	if err == nil {
		err = s.AddTarget(spec)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	if pf := os.Getenv("ISCSIT_CPUPROFILE"); pf != "" {
		f, perr := os.Create(pf)
		if perr == nil && pprof.StartCPUProfile(f) == nil {
			defer pprof.StopCPUProfile()
		}
	}
	if err == nil {
		err = s.Serve(ctx)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}
