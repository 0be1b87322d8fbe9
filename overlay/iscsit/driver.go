package iscsit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"

	"github.com/gostor/gotgt/pkg/config"
	"github.com/gostor/gotgt/pkg/scsi"
	"github.com/sirupsen/logrus"
)

// driverName is the name our transport is registered under as a gotgt target driver.
const driverName = "distonet-iscsi"

func init() {
	scsi.RegisterTargetDriver(driverName, func(svc *scsi.SCSITargetService) (scsi.SCSITargetDriver, error) {
		s, err := NewServer(Config{}, nil)
		if err != nil {
			return nil, err
		}
		s.svc = svc
		return &gotgtDriver{s: s}, nil
	})
}

// gotgtDriver lets gotgt's own tooling (scsi.NewTargetDriver) drive our transport. The
// appliance uses Server directly; this adapter exists so the transport is a gotgt target
// driver like gotgt's own iscsit, configured from a gotgt config.
type gotgtDriver struct {
	s      *Server
	cancel context.CancelFunc
}

var _ scsi.SCSITargetDriver = (*gotgtDriver)(nil)

// Run serves on the given port on the configured host and, unlike gotgt's port, returns an
// error instead of exiting the process when it cannot bind.
func (d *gotgtDriver) Run(port int) error {
	host, _, err := net.SplitHostPort(d.s.cfg.Addr)
	if err != nil {
		return err
	}
	d.s.cfg.Addr = net.JoinHostPort(host, strconv.Itoa(port))
	ctx, cancel := context.WithCancel(context.Background())
	d.cancel = cancel
	return d.s.Serve(ctx)
}

// NewTarget adds a target from a gotgt config: LUNs come from its storages (file: paths).
func (d *gotgtDriver) NewTarget(iqn string, cfg *config.Config) error {
	t, ok := cfg.ISCSITargets[iqn]
	if !ok {
		return fmt.Errorf("target %s not in config", iqn)
	}
	paths := map[uint64]string{}
	for _, st := range cfg.Storages {
		_, p, ok := cutPrefix(st.Path)
		if !ok {
			return fmt.Errorf("storage %d: path %q is not proto:path", st.DeviceID, st.Path)
		}
		paths[st.DeviceID] = p
	}
	spec := TargetSpec{IQN: iqn}
	for lun := 0; lun < len(t.LUNs); lun++ {
		id, ok := t.LUNs[strconv.Itoa(lun)]
		if !ok {
			return fmt.Errorf("target %s: LUNs must be numbered from 0 without gaps", iqn)
		}
		spec.LUNs = append(spec.LUNs, paths[id])
	}
	return d.s.AddTarget(spec)
}

func cutPrefix(p string) (string, string, bool) {
	for i := 0; i < len(p); i++ {
		if p[i] == ':' {
			return p[:i], p[i+1:], true
		}
	}
	return "", "", false
}

func (d *gotgtDriver) RereadTargetLUNMap() {
	d.s.svcMu.Lock()
	defer d.s.svcMu.Unlock()
	d.s.svc.RereadTargetLUNMap()
}

func (d *gotgtDriver) Close() error {
	if d.cancel != nil {
		d.cancel()
	}
	return d.s.Close()
}

func (d *gotgtDriver) Resize(uint64) error {
	return errors.New("resize: remove and re-add the target")
}

func (d *gotgtDriver) Stats() scsi.Stats {
	d.s.mu.Lock()
	defer d.s.mu.Unlock()
	return scsi.Stats{IsClientConnected: len(d.s.sessions) > 0}
}

func (d *gotgtDriver) SetClusterIP(string)           {}
func (d *gotgtDriver) EnableBlockMultipleHostLogin() {}

// quietGotgt sends gotgt's logrus output (a warning per CHECK CONDITION, errors for
// commands it cannot do) to the appliance's slog, at debug level: our transport logs what
// matters. logrus is global; nothing else in DiStoNet uses it.
func quietGotgt(log *slog.Logger) {
	gotgtLogOnce.Do(func() {
		logrus.SetLevel(logrus.ErrorLevel)
		logrus.SetFormatter(&logrus.TextFormatter{DisableTimestamp: true, DisableQuote: true})
		logrus.SetOutput(slogWriter{log.With("lib", "gotgt")})
	})
}

var gotgtLogOnce sync.Once

type slogWriter struct{ log *slog.Logger }

func (w slogWriter) Write(p []byte) (int, error) {
	w.log.Debug(strings.TrimSpace(string(p)))
	return len(p), nil
}
