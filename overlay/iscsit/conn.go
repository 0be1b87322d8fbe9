package iscsit

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime/debug"
	"sync"
	"time"
)

// conn is one TCP connection: a login phase, then (for MaxConnections=1) the whole life of
// its session. One goroutine reads PDUs; commands run on their own goroutines and their
// responses are serialised by wmu, which also orders StatSN.
type conn struct {
	srv *Server
	nc  net.Conn
	br  *bufio.Reader
	log *slog.Logger

	wmu    sync.Mutex // orders writes and StatSN
	statSN uint32

	p    params
	sess *session

	// Reader-goroutine state: write commands waiting for Data-Out.
	pending map[uint32]*task // by ITT
	byTTT   map[uint32]*task
	nextTTT uint32
	sem     chan struct{}
	runMu   sync.Mutex
	running map[uint32]chan struct{} // executing commands by ITT, closed when answered
}

func newConn(s *Server, nc net.Conn) *conn {
	if tc, ok := nc.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
		_ = tc.SetKeepAlive(true)
		_ = tc.SetKeepAlivePeriod(15 * time.Second)
	}
	return &conn{
		srv:     s,
		nc:      nc,
		br:      bufio.NewReaderSize(nc, 256<<10),
		log:     s.log.With("remote", nc.RemoteAddr().String()),
		pending: map[uint32]*task{},
		byTTT:   map[uint32]*task{},
		sem:     make(chan struct{}, s.cfg.QueueDepth),
		running: map[uint32]chan struct{}{},
	}
}

// writeNow writes and flushes one PDU.
func (c *conn) writeNow(p *PDU) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	bufs, err := appendPDU(nil, p, c.p.digests)
	if err != nil {
		return err
	}
	_, err = bufs.WriteTo(c.nc)
	return err
}

func (c *conn) serve(ctx context.Context) {
	defer c.nc.Close()
	// One initiator's bad PDU must never take the appliance down: a bug on this path ends
	// this connection only.
	defer func() {
		if p := recover(); p != nil {
			c.log.Error("iscsi connection panicked", "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
		}
	}()
	stop := context.AfterFunc(ctx, func() { c.nc.Close() })
	defer stop()
	_ = c.nc.SetDeadline(time.Now().Add(c.srv.cfg.LoginTimeout))
	l := &login{c: c}
	ss, err := l.run()
	if err != nil {
		c.srv.metrics.logins.WithLabelValues(loginResult(err)).Inc()
		c.log.Warn("iscsi login refused", "initiator", l.initiator, "target", targetName(l.tgt), "err", err)
		return
	}
	_ = c.nc.SetDeadline(time.Time{})
	c.srv.metrics.logins.WithLabelValues("ok").Inc()
	c.srv.metrics.sessions.Inc()
	defer c.srv.metrics.sessions.Dec()
	c.log = c.log.With("initiator", ss.initiator, "target", targetName(ss.tgt))
	c.log.Info("iscsi session started", "tsih", ss.tsih, "chap_user", ss.chapUser, "discovery", ss.tgt == nil)
	err = c.fullFeature()
	ss.finish()
	c.srv.unregisterSession(ss)
	if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) && !errors.Is(err, errLogout) {
		c.log.Warn("iscsi connection ended", "err", err)
		return
	}
	c.log.Info("iscsi session ended", "tsih", ss.tsih)
}

func targetName(t *target) string {
	if t == nil {
		return ""
	}
	return t.spec.IQN
}

func loginResult(err error) string {
	var le *loginError
	if !errors.As(err, &le) {
		return "error"
	}
	switch le.status {
	case statusAuthFailed:
		return "auth_failed"
	case statusNotFound, statusServiceUnavailable:
		return "not_found"
	case statusNotAuthorized:
		return "not_allowed"
	}
	return "error"
}

var errLogout = errors.New("logout")

// session is a logged-in session with its single connection.
type session struct {
	srv       *Server
	c         *conn
	tgt       *target
	initiator string
	isid      [6]byte
	tsih      uint16
	chapUser  string
	key       sessionKey
	itnID     [16]byte // gotgt's I_T nexus identifier (a UUID-sized value)

	mu       sync.Mutex
	expCmdSN uint32
	inflight int
	wg       sync.WaitGroup // running commands
	done     chan struct{}
}

func newSession(c *conn, l *login) *session {
	ss := &session{
		srv: c.srv, c: c, tgt: l.tgt, initiator: l.initiator, isid: l.isid,
		chapUser: l.chapUser, done: make(chan struct{}),
	}
	return ss
}

// start is called once the final login response is built: commands numbered from cmdSN on.
func (ss *session) start(cmdSN uint32) {
	ss.expCmdSN = cmdSN
	// The I_T nexus ID gotgt's core sees on each command. It is deliberately not added to
	// the gotgt target's ITNexus map: AddCommandQueue iterates that map without its lock,
	// so adding or removing a nexus while another session runs a command is a fatal
	// concurrent map access; nothing in gotgt's core reads the entries.
	ss.itnID[0] = byte(ss.tsih >> 8)
	ss.itnID[1] = byte(ss.tsih)
	copy(ss.itnID[2:8], ss.isid[:])
}

// close ends the session's connection; wait waits until its commands are answered.
func (ss *session) close() { ss.c.nc.Close() }
func (ss *session) wait()  { <-ss.done }

func (ss *session) nexus() nexus { return nexus{initiator: ss.initiator, isid: ss.isid} }

// finish runs when the connection's reader stops.
func (ss *session) finish() {
	ss.wg.Wait()
	if ss.tgt != nil {
		for _, lu := range ss.tgt.luns {
			lu.res.nexusLost(ss.nexus())
		}
	}
	close(ss.done)
}

// accept applies CmdSN rules (RFC 7143 §4.2.2.1) to a request. Non-immediate requests
// must carry ExpCmdSN; anything else is dropped, as the RFC asks.
func (ss *session) accept(cmdSN uint32, immediate, counts bool) bool {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if !immediate {
		if cmdSN != ss.expCmdSN {
			return false
		}
		ss.expCmdSN++
	}
	if counts {
		ss.inflight++
	}
	return true
}

// done1 marks one counted command as answered.
func (ss *session) release() {
	ss.mu.Lock()
	ss.inflight--
	ss.mu.Unlock()
}

// window returns ExpCmdSN and MaxCmdSN for a response: the window shrinks with the
// commands still running so a fast initiator cannot queue without bound.
func (ss *session) window() (uint32, uint32) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	free := max(ss.srv.cfg.QueueDepth-ss.inflight, 0)
	return ss.expCmdSN, ss.expCmdSN + uint32(free) - 1
}
