package iscsit

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/gostor/gotgt/pkg/api"
	"github.com/gostor/gotgt/pkg/config"
	"github.com/gostor/gotgt/pkg/scsi"
	"github.com/prometheus/client_golang/prometheus"
)

// Config configures the iSCSI target server. The zero value works: defaults are filled in by
// NewServer.
type Config struct {
	// Addr is the TCP address Serve listens on. Default "0.0.0.0:3260"; the daemon sets the
	// appliance's address so the target is not exposed on other networks.
	Addr string
	// PortalAddr is the "ip:port" advertised in SendTargets answers. Default: the local
	// address of the connection that asked.
	PortalAddr string
	// MaxRecvDataSegmentLength is the largest data segment we accept. Default 262144.
	MaxRecvDataSegmentLength uint32
	// QueueDepth is how many commands one session may have outstanding (CmdSN window).
	// Default 128.
	QueueDepth int
	// LoginTimeout bounds the whole login phase of a connection. Default 15s.
	LoginTimeout time.Duration
	// StartupGrace is how long after Serve starts a login to an unknown target is answered
	// "service unavailable" (retry later) rather than "not found": after an appliance
	// restart the nodes log back in while the targets are still being added, and
	// initiators give up on "not found". Default 30s; negative disables it.
	StartupGrace time.Duration
	// Metrics, when set, receives the server's Prometheus collectors.
	Metrics prometheus.Registerer
}

func (c *Config) setDefaults() {
	if c.Addr == "" {
		c.Addr = "0.0.0.0:3260"
	}
	if c.MaxRecvDataSegmentLength == 0 {
		c.MaxRecvDataSegmentLength = 262144
	}
	if c.QueueDepth <= 0 {
		c.QueueDepth = 128
	}
	if c.LoginTimeout <= 0 {
		c.LoginTimeout = 15 * time.Second
	}
	if c.StartupGrace == 0 {
		c.StartupGrace = 30 * time.Second
	}
}

func (c *Config) validate() error {
	var errs []error
	if _, _, err := net.SplitHostPort(c.Addr); err != nil {
		errs = append(errs, fmt.Errorf("addr %q: %w", c.Addr, err))
	}
	if c.PortalAddr != "" {
		if _, _, err := net.SplitHostPort(c.PortalAddr); err != nil {
			errs = append(errs, fmt.Errorf("portal_addr %q: %w", c.PortalAddr, err))
		}
	}
	if c.MaxRecvDataSegmentLength < 512 || c.MaxRecvDataSegmentLength > 1<<24-1 {
		errs = append(errs, fmt.Errorf("max_recv_data_segment_length %d: must be 512..16777215", c.MaxRecvDataSegmentLength))
	}
	return errors.Join(errs...)
}

// TargetSpec describes one target: a node's volume, or a donated disk.
type TargetSpec struct {
	// IQN is the target name, e.g. IQNForNode("n1").
	IQN string
	// LUNs are the backing files or block devices, LUN 0 first. A node volume has one.
	LUNs []string
	// CHAPUser and CHAPSecret authenticate the initiator (one-way CHAP). Both empty means
	// no authentication, which only tests and trusted labs should use.
	CHAPUser, CHAPSecret string
	// MutualUser and MutualSecret, when set, let the initiator authenticate the target too.
	MutualUser, MutualSecret string
	// AllowedInitiators lists initiator IQNs that may log in; empty allows any initiator
	// that passes CHAP.
	AllowedInitiators []string
}

const minSecretLen = 12

func (s TargetSpec) validate() error {
	var errs []error
	if err := ValidIQN(s.IQN); err != nil {
		errs = append(errs, err)
	}
	if len(s.LUNs) == 0 {
		errs = append(errs, fmt.Errorf("target %s: no LUN", s.IQN))
	}
	if (s.CHAPUser == "") != (s.CHAPSecret == "") {
		errs = append(errs, fmt.Errorf("target %s: CHAP user and secret must be set together", s.IQN))
	}
	if (s.MutualUser == "") != (s.MutualSecret == "") {
		errs = append(errs, fmt.Errorf("target %s: mutual CHAP user and secret must be set together", s.IQN))
	}
	// RFC 7143 §12.1.3: CHAP secrets of at least 96 bits, or MD5 falls to brute force.
	if s.CHAPSecret != "" && len(s.CHAPSecret) < minSecretLen {
		errs = append(errs, fmt.Errorf("target %s: CHAP secret shorter than %d bytes", s.IQN, minSecretLen))
	}
	if s.MutualSecret != "" && len(s.MutualSecret) < minSecretLen {
		errs = append(errs, fmt.Errorf("target %s: mutual CHAP secret shorter than %d bytes", s.IQN, minSecretLen))
	}
	if s.MutualUser != "" && s.CHAPUser == "" {
		errs = append(errs, fmt.Errorf("target %s: mutual CHAP needs one-way CHAP", s.IQN))
	}
	if s.MutualSecret != "" && s.MutualSecret == s.CHAPSecret {
		// RFC 7143 §12.1.3: the two directions must not share a secret.
		errs = append(errs, fmt.Errorf("target %s: mutual CHAP secret equals the initiator's", s.IQN))
	}
	return errors.Join(errs...)
}

func (s TargetSpec) allows(initiator string) bool {
	return len(s.AllowedInitiators) == 0 || s.lists(initiator)
}

// lists reports whether the ACL names the initiator. iSCSI names compare case-insensitively
// (RFC 3722 folds them to lower case).
func (s TargetSpec) lists(initiator string) bool {
	return slices.ContainsFunc(s.AllowedInitiators, func(a string) bool { return strings.EqualFold(a, initiator) })
}

// Server is the iSCSI target: our RFC 7143 transport in front of gotgt's SCSI core.
type Server struct {
	cfg     Config
	log     *slog.Logger
	metrics *metrics
	svc     *scsi.SCSITargetService
	// svcMu makes gotgt's shared state safe: AddCommandQueue reads the target list and
	// LUN maps that NewSCSITarget and the LUN mapping calls change without locking.
	// Commands hold it for reading, target changes for writing.
	svcMu sync.RWMutex

	mu       sync.Mutex
	targets  map[string]*target
	gotgt    map[string]*api.SCSITarget // gotgt keeps targets forever; re-adding reuses them
	nextTID  int
	sessions map[sessionKey]*session
	nextTSIH uint16
	conns    map[*conn]struct{}
	lns      map[net.Listener]struct{}
	started  time.Time // first ServeListener
	closed   bool
	wg       sync.WaitGroup
}

type sessionKey struct {
	target, initiator string
	isid              [6]byte
}

// NewServer checks cfg and returns a server with no targets.
func NewServer(cfg Config, logger *slog.Logger) (*Server, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("iscsi config: %w", err)
	}
	if logger == nil {
		logger = slog.Default()
	}
	quietGotgt(logger)
	s := &Server{
		cfg:      cfg,
		log:      logger,
		svc:      &scsi.SCSITargetService{},
		targets:  map[string]*target{},
		gotgt:    map[string]*api.SCSITarget{},
		nextTID:  1,
		sessions: map[sessionKey]*session{},
		conns:    map[*conn]struct{}{},
		lns:      map[net.Listener]struct{}{},
	}
	m, err := newMetrics(cfg.Metrics)
	if err != nil {
		return nil, err
	}
	s.metrics = m
	return s, nil
}

// target is a served TargetSpec with its gotgt objects.
type target struct {
	srv  *Server
	spec TargetSpec
	st   *api.SCSITarget
	luns []*lunit

	mu       sync.Mutex
	sessions map[*session]struct{}
}

// lunit is one logical unit: gotgt's LU (which runs the SCSI commands we pass on) and our
// store (which serves the data path directly).
type lunit struct {
	atomic sync.Mutex // COMPARE AND WRITE and ORWRITE read-modify-write
	res    reservations
	lu     *api.SCSILu
	store  *fileStore
	devID  uint64
	blocks uint64
}

const blockShift = 9
const blockSize = 1 << blockShift

// AddTarget starts serving a target. It is reachable as soon as AddTarget returns.
func (s *Server) AddTarget(spec TargetSpec) error {
	if err := spec.validate(); err != nil {
		return err
	}
	spec.AllowedInitiators = slices.Clone(spec.AllowedInitiators)
	spec.LUNs = slices.Clone(spec.LUNs)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("iscsi server closed")
	}
	if _, ok := s.targets[spec.IQN]; ok {
		return fmt.Errorf("target %s already exists", spec.IQN)
	}
	t := &target{spec: spec, sessions: map[*session]struct{}{}, srv: s}
	s.svcMu.Lock()
	defer s.svcMu.Unlock()
	for i, path := range spec.LUNs {
		lu, err := s.addLU(spec.IQN, uint64(i), path)
		if err != nil {
			t.releaseLUNs()
			return fmt.Errorf("target %s LUN %d: %w", spec.IQN, i, err)
		}
		t.luns = append(t.luns, lu)
	}
	st := s.gotgt[spec.IQN]
	if st == nil {
		var err error
		// gotgt's NewSCSITarget picks up the LUN map registered above under the target name.
		st, err = s.svc.NewSCSITarget(s.nextTID, driverName, spec.IQN)
		if err != nil {
			t.releaseLUNs()
			return fmt.Errorf("target %s: %w", spec.IQN, err)
		}
		s.nextTID++
		st.TargetPortGroups[0].TargetPortGroup = append(st.TargetPortGroups[0].TargetPortGroup,
			&api.SCSITargetPort{RelativeTargetPortID: 1, TargetPortName: spec.IQN + ",t,0x1"})
		s.gotgt[spec.IQN] = st
	}
	t.st = st
	s.targets[spec.IQN] = t
	s.log.Info("iscsi target added", "target", spec.IQN, "luns", len(spec.LUNs))
	return nil
}

// addLU registers a backing file with gotgt and maps it to the target.
func (s *Server) addLU(iqn string, lun uint64, path string) (*lunit, error) {
	h := fnv.New64a()
	fmt.Fprintf(h, "%s/%d", iqn, lun)
	devID := h.Sum64() >> 4 // gotgt puts the NAA type in the top nibble
	var err error
	for range 8 {
		err = scsi.AddBackendStorage(config.BackendStorage{
			DeviceID: devID, Path: storeName + ":" + path, Online: true,
			ThinProvisioning: true, BlockShift: blockShift,
		})
		if err == nil || !strings.Contains(err.Error(), "already exists") {
			break
		}
		devID++
	}
	if err != nil {
		return nil, err
	}
	if err := scsi.AddLUNMapping(scsi.LUNMapping{TargetName: iqn, LUN: lun, DeviceID: devID}); err != nil {
		scsi.DelBackendStorage(devID)
		return nil, err
	}
	lu := scsi.GetLU(iqn, lun)
	st, ok := lu.Storage.(*fileStore)
	if !ok {
		return nil, fmt.Errorf("LU %d has backing store %T", devID, lu.Storage)
	}
	lu.Attrs.VendorID = "DISTONET"
	lu.Attrs.ProductID = "VOLUME"
	lu.Attrs.ProductRev = "1"
	lu.Attrs.SCSIID = iqn
	lu.Attrs.SCSISN = fmt.Sprintf("%016x", devID)
	lu.Attrs.Lbppbe = 0
	// Claim SBC-3: our block limits page has the SBC-3 length.
	lu.Attrs.VersionDesction = [8]uint16{0x04c0, 0x0960, 0x0300, 0x0060}
	lu.Path = path
	return &lunit{lu: lu, store: st, devID: devID, blocks: st.size >> blockShift}, nil
}

// releaseLUNs unmaps, flushes and closes the LUNs; the caller holds srv.svcMu for writing.
// The flush makes a clean shutdown durable even for writes the initiator never synced.
func (t *target) releaseLUNs() error {
	var errs []error
	for i, l := range t.luns {
		scsi.DelLUNMapping(scsi.LUNMapping{TargetName: t.spec.IQN, LUN: uint64(i), DeviceID: l.devID})
		scsi.DelBackendStorage(l.devID)
		if err := l.store.DataSync(0, 0); err != nil {
			errs = append(errs, fmt.Errorf("target %s LUN %d: flush: %w", t.spec.IQN, i, err))
		}
		if err := l.store.Close(nil); err != nil {
			errs = append(errs, fmt.Errorf("target %s LUN %d: close: %w", t.spec.IQN, i, err))
		}
	}
	t.luns = nil
	return errors.Join(errs...)
}

// RemoveTarget stops serving a target: its sessions end (their connections are closed) and
// its backing files are flushed to stable storage and closed.
func (s *Server) RemoveTarget(iqn string) error {
	s.mu.Lock()
	t, ok := s.targets[iqn]
	if ok {
		delete(s.targets, iqn)
	}
	s.mu.Unlock()
	if !ok {
		return fmt.Errorf("target %s: not found", iqn)
	}
	t.mu.Lock()
	sessions := make([]*session, 0, len(t.sessions))
	for ss := range t.sessions {
		sessions = append(sessions, ss)
	}
	t.mu.Unlock()
	for _, ss := range sessions {
		ss.close()
	}
	for _, ss := range sessions {
		ss.wait()
	}
	s.svcMu.Lock()
	err := t.releaseLUNs()
	s.svcMu.Unlock()
	s.log.Info("iscsi target removed", "target", iqn, "sessions_ended", len(sessions))
	return err
}

// Targets lists the IQNs being served.
func (s *Server) Targets() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, 0, len(s.targets))
	for k := range s.targets {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// starting reports whether the server is within its StartupGrace.
func (s *Server) starting() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cfg.StartupGrace > 0 && time.Since(s.started) < s.cfg.StartupGrace
}

func (s *Server) lookup(iqn string) *target {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.targets[strings.ToLower(iqn)]
}

// Serve listens on Config.Addr and serves until ctx ends or Close is called.
func (s *Server) Serve(ctx context.Context) error {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("iscsi listen %s: %w", s.cfg.Addr, err)
	}
	return s.ServeListener(ctx, ln)
}

// ServeListener serves connections from ln (which it closes) until ctx ends or Close is
// called. Tests use it with a listener opened inside a network namespace.
func (s *Server) ServeListener(ctx context.Context, ln net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		ln.Close()
		return errors.New("iscsi server closed")
	}
	s.lns[ln] = struct{}{}
	if s.started.IsZero() {
		s.started = time.Now()
	}
	s.mu.Unlock()
	s.log.Info("iscsi target listening", "addr", ln.Addr().String())
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	defer func() {
		s.mu.Lock()
		delete(s.lns, ln)
		s.mu.Unlock()
		ln.Close()
	}()
	var delay time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil || s.isClosed() {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				delay = min(max(delay*2, 5*time.Millisecond), time.Second)
				time.Sleep(delay)
				continue
			}
			return fmt.Errorf("iscsi accept: %w", err)
		}
		delay = 0
		c := newConn(s, nc)
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			nc.Close()
			return nil
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			c.serve(ctx)
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
		}()
	}
}

func (s *Server) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// Close stops listening, ends every connection and waits for running commands, then closes
// the backing files. Data already acknowledged with SYNCHRONIZE CACHE or FUA is on disk.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	for ln := range s.lns {
		ln.Close()
	}
	for c := range s.conns {
		c.nc.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	var errs []error
	for _, iqn := range s.Targets() {
		if err := s.RemoveTarget(iqn); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// registerSession makes a fully logged-in session visible, ending an older session with
// the same initiator and ISID (session reinstatement, RFC 7143 §6.3.5).
func (s *Server) registerSession(ss *session) (uint16, error) {
	s.mu.Lock()
	key := sessionKey{initiator: ss.initiator, isid: ss.isid}
	if ss.tgt != nil {
		key.target = ss.tgt.spec.IQN
	}
	old := s.sessions[key]
	s.mu.Unlock()
	if old != nil {
		old.close()
		old.wait()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if ss.tgt != nil && s.targets[ss.tgt.spec.IQN] != ss.tgt {
		return 0, fmt.Errorf("target %s removed during login", ss.tgt.spec.IQN)
	}
	for {
		s.nextTSIH++
		if s.nextTSIH == 0 {
			continue
		}
		taken := false
		for _, o := range s.sessions {
			if o.tsih == s.nextTSIH {
				taken = true
				break
			}
		}
		if !taken {
			break
		}
	}
	ss.tsih = s.nextTSIH
	s.sessions[key] = ss
	ss.key = key
	if ss.tgt != nil {
		ss.tgt.mu.Lock()
		ss.tgt.sessions[ss] = struct{}{}
		ss.tgt.mu.Unlock()
	}
	return ss.tsih, nil
}

func (s *Server) unregisterSession(ss *session) {
	s.mu.Lock()
	if s.sessions[ss.key] == ss {
		delete(s.sessions, ss.key)
	}
	s.mu.Unlock()
	if ss.tgt != nil {
		ss.tgt.mu.Lock()
		delete(ss.tgt.sessions, ss)
		ss.tgt.mu.Unlock()
	}
}

// sessionByTSIH reports whether a session with that TSIH exists.
func (s *Server) sessionByTSIH(tsih uint16) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, o := range s.sessions {
		if o.tsih == tsih {
			return true
		}
	}
	return false
}

// visibleTargets returns the targets an initiator may discover: those whose ACL names it
// and, when it authenticated with CHAP, whose CHAP user it used.
func (s *Server) visibleTargets(initiator, chapUser string) []*target {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*target
	for _, t := range s.targets {
		if chapUser != "" {
			if t.spec.CHAPUser == chapUser && t.spec.allows(initiator) {
				out = append(out, t)
			}
			continue
		}
		// Without authentication only an explicit ACL entry reveals a target.
		if t.spec.lists(initiator) {
			out = append(out, t)
		}
	}
	slices.SortFunc(out, func(a, b *target) int { return strings.Compare(a.spec.IQN, b.spec.IQN) })
	return out
}

// chapTargets returns the targets using this CHAP user name.
func (s *Server) chapTargets(user string) []*target {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*target
	for _, t := range s.targets {
		if t.spec.CHAPUser != "" && t.spec.CHAPUser == user {
			out = append(out, t)
		}
	}
	return out
}

func (s *Server) anyCHAP() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, t := range s.targets {
		if t.spec.CHAPUser != "" {
			return true
		}
	}
	return false
}
