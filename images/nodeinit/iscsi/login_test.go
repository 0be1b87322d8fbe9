package iscsi

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/distonet/distonet/internal/lab"
)

func TestMain(m *testing.M) {
	_ = lab.Sweep()
	os.Exit(m.Run())
}

// tgtStack runs tgtd inside a fresh namespace with one CHAP-protected file-backed LUN.
type tgtStack struct {
	ns     *lab.Netns
	portal string
	target string
	dial   chan chan dialResult
}

type dialResult struct {
	c   net.Conn
	err error
}

// nsDialer keeps one OS thread inside the namespace for the whole test and dials from it.
// lab.Netns.Do ends its thread when fn returns, and a daemon forked from that thread would
// get its parent-death SIGKILL; this thread ends only at cleanup.
func nsDialer(t *testing.T, ns *lab.Netns, addr string) chan chan dialResult {
	reqs := make(chan chan dialResult)
	done := make(chan struct{})
	started := make(chan struct{})
	go func() {
		_ = ns.Do(func() error {
			close(started)
			for {
				select {
				case r := <-reqs:
					c, err := net.DialTimeout("tcp", addr, 5*time.Second)
					r <- dialResult{c, err}
				case <-done:
					return nil
				}
			}
		})
	}()
	<-started
	t.Cleanup(func() { close(done) })
	return reqs
}

func startTgt(t *testing.T, user, secret string) *tgtStack {
	t.Helper()
	lab.Require(t, "tgtd", "tgtadm")
	ns := lab.NewNetns(t)
	dial := nsDialer(t, ns, "127.0.0.1:3260")
	ctl := fmt.Sprint(os.Getpid()%1000 + 100)
	ns.Start("tgtd", "-f", "-C", ctl, "--iscsi", "portal=127.0.0.1:3260")
	adm := func(args ...string) {
		t.Helper()
		ns.MustExec("tgtadm", append([]string{"-C", ctl, "--lld", "iscsi"}, args...)...)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := ns.Exec("tgtadm", "-C", ctl, "--lld", "iscsi", "--op", "show", "--mode", "target"); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("tgtd did not come up")
		}
		time.Sleep(100 * time.Millisecond)
	}
	img := filepath.Join(t.TempDir(), "vol.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 64<<20); err != nil {
		t.Fatal(err)
	}
	s := &tgtStack{ns: ns, portal: "127.0.0.1:3260", target: "iqn.2026-01.net.distonet.test:node1", dial: dial}
	adm("--op", "new", "--mode", "target", "--tid", "1", "-T", s.target)
	adm("--op", "new", "--mode", "logicalunit", "--tid", "1", "--lun", "1", "-b", img)
	adm("--op", "bind", "--mode", "target", "--tid", "1", "-I", "ALL")
	if user != "" {
		adm("--op", "new", "--mode", "account", "--user", user, "--password", secret)
		adm("--op", "bind", "--mode", "account", "--tid", "1", "--user", user)
	}
	return s
}

func (s *tgtStack) login(t *testing.T, tgt Target) (Params, error) {
	t.Helper()
	r := make(chan dialResult)
	s.dial <- r
	res := <-r
	if res.err != nil {
		t.Fatal(res.err)
	}
	t.Cleanup(func() { res.c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	return Login(ctx, TCPTransport{Conn: res.c}, tgt, 0)
}

// TestLoginTgt logs in to tgt, the reference target, with and without the right secret.
func TestLoginTgt(t *testing.T) {
	const user, secret = "node1", "s3cret-chap-pass"
	tests := []struct {
		name     string
		user     string
		secret   string
		wantAuth bool
	}{
		{"right secret", user, secret, false},
		{"wrong secret", user, "not-the-secret!!", true},
		{"wrong user", "node2", secret, true},
		{"no secret", "", "", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := startTgt(t, user, secret)
			tgt := Target{Portal: s.portal, Name: s.target, LUN: 1, Initiator: "iqn.2026-01.net.distonet:node1"}
			tgt.CHAPUser, tgt.CHAPSecret = tc.user, tc.secret
			p, err := s.login(t, tgt)
			if tc.wantAuth {
				var le *LoginError
				if !errors.As(err, &le) || !le.Auth() {
					t.Fatalf("login error = %v, want an authentication refusal", err)
				}
				if !strings.Contains(err.Error(), "iSCSI login refused") {
					t.Errorf("error %q does not say the login was refused", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("login: %v", err)
			}
			if p.TSIH == 0 {
				t.Error("target assigned no TSIH")
			}
			if p.MaxXmitDSL < 512 || p.ERL != 0 || p.HeaderDigest || p.DataDigest {
				t.Errorf("negotiated %+v", p)
			}
		})
	}
}

func TestLoginWrongTarget(t *testing.T) {
	s := startTgt(t, "", "")
	_, err := s.login(t, Target{Portal: s.portal, Name: "iqn.2026-01.none:x", Initiator: "iqn.2026-01.net.distonet:node1"})
	var le *LoginError
	if !errors.As(err, &le) || le.Class != 2 || le.Detail != 3 {
		t.Fatalf("login to unknown target: %v, want status 0x0203", err)
	}
}

// TestLoginOpenTarget logs in without CHAP.
func TestLoginOpenTarget(t *testing.T) {
	s := startTgt(t, "", "")
	p, err := s.login(t, Target{Portal: s.portal, Name: s.target, Initiator: "iqn.2026-01.net.distonet:node1"})
	if err != nil || p.TSIH == 0 {
		t.Fatalf("login without CHAP to an open target: %+v %v", p, err)
	}
}
