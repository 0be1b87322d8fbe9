package iscsit

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/distonet/distonet/internal/lab"
	"github.com/gostor/gotgt/pkg/config"
	"github.com/gostor/gotgt/pkg/scsi"
)

// TestServeErrors: a taken address is an error returned to the caller (gotgt's port calls
// os.Exit), and a closed server refuses to serve again.
func TestServeErrors(t *testing.T) {
	ns := lab.NewNetns(t)
	if err := ns.Do(func() error {
		ln, err := net.Listen("tcp", "127.0.0.1:3260")
		if err != nil {
			return err
		}
		defer ln.Close()
		s, err := NewServer(Config{Addr: "127.0.0.1:3260"}, testLogger(t))
		if err != nil {
			return err
		}
		if err := s.Serve(context.Background()); err == nil || !strings.Contains(err.Error(), "address already in use") {
			t.Errorf("Serve on a taken address: %v", err)
		}
		if err := s.Close(); err != nil {
			return err
		}
		if err := s.Close(); err != nil {
			t.Errorf("second Close: %v", err)
		}
		if err := s.AddTarget(TargetSpec{IQN: IQNForNode("x"), LUNs: []string{"/nonexistent"}}); err == nil {
			t.Error("AddTarget after Close accepted")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := NewServer(Config{Addr: "no-port"}, nil); err == nil {
		t.Error("bad address accepted")
	}
	if _, err := NewServer(Config{MaxRecvDataSegmentLength: 100}, nil); err == nil {
		t.Error("MaxRecvDataSegmentLength 100 accepted")
	}
}

// TestGotgtDriver drives the transport the way gotgt's own tooling would: through
// scsi.NewTargetDriver and a gotgt config.
func TestGotgtDriver(t *testing.T) {
	lab.Require(t, "iscsi-inq")
	ns := lab.NewNetns(t)
	drv, err := scsi.NewTargetDriver(driverName, &scsi.SCSITargetService{})
	if err != nil {
		t.Fatal(err)
	}
	iqn := IQNForNode("gotgt")
	cfg := &config.Config{
		Storages:     []config.BackendStorage{{DeviceID: 1, Path: "file:" + newVolume(t, 16<<20), Online: true}},
		ISCSITargets: map[string]config.ISCSITarget{iqn: {LUNs: map[string]uint64{"0": 1}}},
	}
	if err := drv.NewTarget(iqn, cfg); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- ns.Do(func() error { return drv.Run(3260) }) }()
	var out string
	for range 50 {
		if out, err = ns.Exec("iscsi-inq", "iscsi://127.0.0.1:3260/"+iqn+"/0"); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil || !strings.Contains(out, "DIRECT_ACCESS") {
		t.Fatalf("iscsi-inq through the gotgt driver: %v: %s", err, out)
	}
	if err := drv.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil && !errors.Is(err, net.ErrClosed) {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after Close")
	}
}
