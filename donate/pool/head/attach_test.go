package head

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/distonet/distonet/donate/pool"
	"github.com/google/go-cmp/cmp"
)

func TestAoEAttachDiscoversAndWaits(t *testing.T) {
	run := &fakeRunner{script: map[string][]reply{"aoe-interfaces eth1": {ok("")}, "aoe-discover": {ok("")}, "aoe-flush e7.1": {ok("")}}}
	var checks atomic.Int32
	// The device shows up on the third look, as after the driver's discovery round trip.
	a := &AoE{Runner: run, Poll: time.Millisecond, Wait: time.Hour, Interfaces: []string{"eth1"}, Exists: func(p string) bool {
		return p == "/dev/etherd/e7.1" && checks.Add(1) >= 3
	}}
	d := pool.Disk{Node: "n7", Transport: pool.TransportAoE, Address: "e7.1"}
	dev, err := a.Attach(context.Background(), d)
	if err != nil || dev != "/dev/etherd/e7.1" {
		t.Fatalf("Attach = %q, %v", dev, err)
	}
	if err := a.Detach(context.Background(), d); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"aoe-interfaces eth1", "aoe-discover", "aoe-flush e7.1"}, run.calls); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

func TestAoEDetachOfAnAbsentDiskIsANoOp(t *testing.T) {
	// aoe-flush exits 1 on a disk the driver does not know: stopping a degraded array whose
	// missing member was never attached must not fail on it.
	run := &fakeRunner{script: map[string][]reply{"aoe-flush e2.0": {fail(1, "")}}}
	a := &AoE{Runner: run, Exists: func(string) bool { return false }}
	if err := a.Detach(context.Background(), pool.Disk{Node: "n2", Transport: pool.TransportAoE, Address: "e2.0"}); err != nil {
		t.Fatal(err)
	}
	if len(run.calls) != 0 {
		t.Errorf("ran %q for a disk that is not there", run.calls)
	}
}

func TestAoEAttachGivesUp(t *testing.T) {
	run := &fakeRunner{script: map[string][]reply{"aoe-discover": {ok("")}}}
	a := &AoE{Runner: run, Poll: time.Millisecond, Wait: 5 * time.Millisecond, Exists: func(string) bool { return false }}
	_, err := a.Attach(context.Background(), pool.Disk{Node: "n7", Transport: pool.TransportAoE, Address: "e7.1"})
	if !errors.Is(err, ErrNotFound) {
		t.Errorf("err = %v, want ErrNotFound", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	a.Wait = time.Hour
	if _, err := a.Attach(ctx, pool.Disk{Node: "n7", Transport: pool.TransportAoE, Address: "e7.1"}); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: err = %v", err)
	}
	for _, bad := range []string{"", "e1", "e1.x", "x1.0", "e1.0/../../sda"} {
		if _, err := a.Attach(context.Background(), pool.Disk{Address: bad}); err == nil {
			t.Errorf("address %q accepted", bad)
		}
	}
}

type chap struct{}

func (chap) CHAP(pool.Disk) (string, string, error) { return "n3", "s3cr3t-chap", nil }

func TestISCSIAttachLogsInWithCHAP(t *testing.T) {
	iqn, portal := "iqn.2026-01.net.distonet:n3-disk", "10.9.0.3:3260"
	node := "iscsiadm -m node -T " + iqn + " -p " + portal
	run := &fakeRunner{script: map[string][]reply{
		node + " -o new": {ok("")},
		node + " -o update -n node.session.auth.authmethod -v CHAP":      {ok("")},
		node + " -o update -n node.session.auth.username -v n3":          {ok("")},
		node + " -o update -n node.session.auth.password -v s3cr3t-chap": {fail(15, "iscsiadm: no records found")},
		node + " --logout": {ok("")},
	}}
	s := &ISCSI{Runner: run, Credentials: chap{}, Poll: time.Millisecond, Wait: time.Hour, Exists: func(p string) bool {
		return p == "/dev/disk/by-path/ip-"+portal+"-iscsi-"+iqn+"-lun-0"
	}}
	d := pool.Disk{Node: "n3", Transport: pool.TransportISCSI, Address: iqn, Portal: portal}
	// The device is already there: no login.
	if dev, err := s.Attach(context.Background(), d); err != nil || !strings.HasSuffix(dev, "-lun-0") || len(run.calls) != 0 {
		t.Fatalf("Attach = %q, %v, calls %q", dev, err, run.calls)
	}
	s.Exists = func(string) bool { return false }
	_, err := s.Attach(context.Background(), d)
	if err == nil {
		t.Fatal("password step failed but Attach succeeded")
	}
	if strings.Contains(err.Error(), "s3cr3t") {
		t.Errorf("error leaks the CHAP secret: %v", err)
	}
	want := []string{node + " -o new", node + " -o update -n node.session.auth.authmethod -v CHAP",
		node + " -o update -n node.session.auth.username -v n3", node + " -o update -n node.session.auth.password -v s3cr3t-chap"}
	if diff := cmp.Diff(want, run.calls); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	if err := s.Detach(context.Background(), d); err != nil {
		t.Fatal(err)
	}
}

func TestExecRunner(t *testing.T) {
	out, err := ExecRunner{}.Run(context.Background(), "sh", "-c", "echo out; echo oops >&2; exit 3")
	var ce *CommandError
	if !errors.As(err, &ce) || ce.ExitCode != 3 || strings.TrimSpace(ce.Stderr) != "oops" || string(out) != "out\n" {
		t.Fatalf("out %q err %#v", out, err)
	}
	if exitCode(err) != 3 || !strings.Contains(err.Error(), "exit 3: oops") {
		t.Errorf("error text %q", err)
	}
	out, err = ExecRunner{}.Run(context.Background(), "sh", "-c", "printf ok")
	if err != nil || string(out) != "ok" {
		t.Errorf("out %q err %v", out, err)
	}
	if got := Redact([]string{"iscsiadm", "-n", "node.session.auth.password", "-v", "pw", "-v", "x"}); got[4] != "REDACTED" || got[6] != "x" {
		t.Errorf("Redact = %q", got)
	}
}

func TestISCSIFindsTheLUNThroughSysfsWithoutUdev(t *testing.T) {
	sys := t.TempDir()
	iqn := "iqn.2026-01.net.distonet:n3-disk"
	mk := func(session, target, lun, disk string) {
		dir := filepath.Join(sys, "devices", "platform", "host2", session)
		if err := os.MkdirAll(filepath.Join(dir, "iscsi_session", session), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "iscsi_session", session, "targetname"), []byte(target+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(dir, filepath.Join(dir, "iscsi_session", session, "device")); err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Join(dir, "target2:0:0", "2:0:0:"+lun, "block", disk), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Join(sys, "class", "iscsi_session"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(filepath.Join(dir, "iscsi_session", session), filepath.Join(sys, "class", "iscsi_session", session)); err != nil {
			t.Fatal(err)
		}
	}
	mk("session1", "iqn.2026-01.net.distonet:other", "1", "sda")
	mk("session2", iqn, "0", "sdb") // tgt's controller LUN
	if err := os.MkdirAll(filepath.Join(sys, "devices", "platform", "host2", "session2", "target2:0:0", "2:0:0:1", "block", "sdc"), 0o755); err != nil {
		t.Fatal(err)
	}
	s := &ISCSI{LUN: 1, Sysfs: sys, Dev: "/dev"}
	if got := s.sysfsDisk(iqn); got != "/dev/sdc" {
		t.Errorf("sysfsDisk = %q, want /dev/sdc", got)
	}
	if got := s.Path(pool.Disk{Address: iqn, Portal: "10.9.0.3:3260"}); got != "/dev/sdc" {
		t.Errorf("Path = %q", got)
	}
	if got := s.sysfsDisk("iqn.2026-01.net.distonet:absent"); got != "" {
		t.Errorf("absent target found as %q", got)
	}
}
