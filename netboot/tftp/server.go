// Package tftp serves the first file a PXE ROM fetches (the iPXE binary) and per-node
// generated files, read-only, from one directory.
//
// We own the well-known port: each request is parsed (option names folded to lower case,
// RFC 2347), its name confined to the root (no "..", no absolute name, no symlink out),
// the file opened and the options negotiated (blksize capped by the interface MTU, tsize,
// timeout, windowsize) before any transfer starts. Each transfer is then carried by our
// sender on a socket of its own: lock-step in one netpoller round per block, send-ahead
// and windowsize windows as UDP GSO sends. github.com/pin/tftp/v3 used to carry plain
// lock-step transfers; measured, its engine lost to tftpd-hpa and cannot be tuned from
// outside, so only its netascii encoder is still used (see sender and README.md).
// Close is bounded even with dead clients. Rendering per-node files is left to the
// Generated implementation the daemon passes in.
package tftp

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pin/tftp/v3/netascii"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// Generated serves files that do not exist on disk, such as a node's iPXE or pxelinux
// configuration. path is the requested name, already cleaned and confined (relative, no
// ".."). ok=false falls through to the files under Config.Root.
type Generated interface {
	File(remote net.Addr, path string) ([]byte, bool)
}

// Config configures the server. Zero values take the documented defaults.
type Config struct {
	Addr string // listen address; default ":69" (IPv4)
	// Interface, when set, binds the listener to that interface (SO_BINDTODEVICE):
	// requests arriving on any other network are never seen. Default: all interfaces.
	Interface string
	Root      string // directory served read-only; "" serves generated files only
	// Anticipate is the send-ahead window in blocks for clients that do not negotiate
	// windowsize: up to that many blocks are in flight before their ACKs (PXE ROMs ACK
	// each block, which works unchanged). 0 or 1 = lockstep. Served by our own sender, not
	// pin/tftp's SetAnticipate, which cannot recover from a lost block (see sender).
	Anticipate uint
	Timeout    time.Duration // retransmission timeout unless the client negotiates one; default 1s
	Retries    int           // retransmissions before a transfer is abandoned; default 5
	// MaxBlockSize caps blksize (RFC 2348); default 65464. The interface MTU caps it too,
	// so blocks are never fragmented (1468 on a 1500-byte MTU).
	MaxBlockSize int
	// MaxWindow caps windowsize (RFC 7440); default 64; a negative value refuses the option.
	MaxWindow int
	// MaxTransfers caps concurrent transfers (each holds an open file, a socket and
	// buffers); requests beyond it get an ERROR and the client retries. Default 1000.
	MaxTransfers int
	// ShutdownGrace bounds Close: transfers still running after it are abandoned (a dead
	// client would otherwise hold a transfer for Timeout×Retries). Default 1s.
	ShutdownGrace time.Duration
	Metrics       prometheus.Registerer // nil: metrics are kept but not registered
}

func (c *Config) setDefaults() {
	if c.Addr == "" {
		c.Addr = ":69"
	}
	if c.Timeout <= 0 {
		c.Timeout = time.Second
	}
	if c.Retries <= 0 {
		c.Retries = 5
	}
	if c.MaxBlockSize <= 0 || c.MaxBlockSize > maxBlockSize {
		c.MaxBlockSize = maxBlockSize
	}
	c.MaxBlockSize = max(c.MaxBlockSize, defaultBlockSize)
	if c.MaxWindow == 0 {
		c.MaxWindow = 64
	}
	if c.MaxTransfers <= 0 {
		c.MaxTransfers = 1000
	}
	if c.ShutdownGrace <= 0 {
		c.ShutdownGrace = time.Second
	}
}

// ErrServerClosed is returned by Serve after Close.
var ErrServerClosed = errors.New("tftp: server closed")

var errShuttingDown = errors.New("server shutting down")

// Server is a read-only TFTP server.
type Server struct {
	cfg     Config
	gen     Generated
	log     *slog.Logger
	root    *os.Root
	metrics *metrics

	serving   atomic.Bool
	closing   atomic.Bool
	closeOnce sync.Once
	closed    chan struct{} // closed when Close has finished
	ready     chan struct{} // closed when Serve listens (or gives up)
	wg        sync.WaitGroup

	mu      sync.Mutex
	l       *listener
	busy    map[string]*transfer // by client address: a retransmitted RRQ is not a new transfer
	senders map[*net.UDPConn]struct{}
}

// transfer is one accepted read request.
type transfer struct {
	peer  *net.UDPAddr
	name  string
	size  int64
	src   io.Reader
	close func()
	start time.Time
}

// NewServer checks the configuration and builds a server; Serve starts it. gen may be nil.
func NewServer(cfg Config, gen Generated, logger *slog.Logger) (*Server, error) {
	cfg.setDefaults()
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{
		cfg:     cfg,
		gen:     gen,
		log:     logger.With("stage", "tftp"),
		closed:  make(chan struct{}),
		ready:   make(chan struct{}),
		busy:    make(map[string]*transfer),
		senders: make(map[*net.UDPConn]struct{}),
	}
	if cfg.Root != "" {
		root, err := os.OpenRoot(cfg.Root)
		if err != nil {
			return nil, fmt.Errorf("tftp root: %w", err)
		}
		s.root = root
	}
	m, err := newMetrics(cfg.Metrics)
	if err != nil {
		if s.root != nil {
			s.root.Close()
		}
		return nil, err
	}
	s.metrics = m
	return s, nil
}

// Addr waits until Serve listens and returns the bound address (nil if Serve failed or
// the server closed first).
func (s *Server) Addr() net.Addr {
	select {
	case <-s.ready:
	case <-s.closed:
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.l == nil {
		return nil
	}
	return s.l.conn.LocalAddr()
}

// Serve listens on Config.Addr and serves until ctx is done or Close is called; it then
// returns ErrServerClosed once Close has finished. It may be called once. Sockets are opened in the network
// namespace of the calling thread, also those of each transfer.
func (s *Server) Serve(ctx context.Context) error {
	if !s.serving.CompareAndSwap(false, true) {
		return errors.New("tftp: Serve called twice")
	}
	if s.closing.Load() {
		close(s.ready)
		return ErrServerClosed
	}
	l, err := listen(s.cfg.Addr, s.cfg.Interface)
	if err != nil {
		close(s.ready)
		return err
	}
	s.mu.Lock()
	if s.closing.Load() {
		s.mu.Unlock()
		l.conn.Close()
		close(s.ready)
		return ErrServerClosed
	}
	s.l = l
	s.mu.Unlock()
	close(s.ready)
	s.log.Info("tftp serving", "addr", l.conn.LocalAddr().String(), "root", s.cfg.Root)

	go func() {
		select {
		case <-ctx.Done():
			s.Close()
		case <-s.closed:
		}
	}()

	buf := make([]byte, 65536)
	for {
		n, peer, dst, ifIndex, err := l.read(buf)
		if err != nil {
			if s.closing.Load() {
				break
			}
			s.log.Warn("tftp read", "err", err)
			time.Sleep(10 * time.Millisecond) // no busy loop on a persistent error
			continue
		}
		s.handle(buf[:n], peer, dst, ifIndex)
	}
	<-s.closed
	return ErrServerClosed
}

// Close stops the server: no new transfers; running ones end with an ERROR packet at
// their next block; it returns within about Config.ShutdownGrace even if a client is dead.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closing.Store(true)
		l := s.l
		conns := make([]*net.UDPConn, 0, len(s.senders))
		for c := range s.senders {
			conns = append(conns, c)
		}
		s.mu.Unlock()
		if l != nil {
			l.conn.Close()
		}
		bye, _ := (&ErrorPacket{Code: ErrUndefined, Message: errShuttingDown.Error()}).MarshalBinary()
		for _, c := range conns {
			_, _ = c.Write(bye)
			c.Close()
		}
		done := make(chan struct{})
		go func() {
			// A transfer blocked on a dead client's socket ends when its socket closes
			// (above); the bound below is for one still reading its file.
			s.wg.Wait()
			close(done)
		}()
		select {
		case <-done:
		case <-time.After(s.cfg.ShutdownGrace):
			s.mu.Lock()
			n := len(s.busy)
			s.mu.Unlock()
			s.log.Warn("tftp shutdown: abandoning transfers to unresponsive clients", "transfers", n)
		}
		if s.root != nil {
			s.root.Close() // open files stay valid for abandoned transfers
		}
		close(s.closed)
	})
	return nil
}

// handle answers one datagram sent to the well-known port.
func (s *Server) handle(pkt []byte, peer *net.UDPAddr, dst net.IP, ifIndex int) {
	src := replyAddr(dst)
	if op := PacketOpcode(pkt); op != OpRRQ && op != OpWRQ {
		return // a stray DATA/ACK for a finished transfer: nothing to answer
	}
	var req Request
	if err := req.UnmarshalBinary(pkt); err != nil {
		s.refuse(peer, src, "", ErrorPacket{Code: ErrIllegalOp, Message: "malformed request"}, resultBadRequest, err)
		return
	}
	if req.Op == OpWRQ {
		s.refuse(peer, src, req.Filename, ErrorPacket{Code: ErrAccess, Message: "read-only server"}, resultDenied, nil)
		return
	}
	if req.Mode == "mail" {
		s.refuse(peer, src, req.Filename, ErrorPacket{Code: ErrIllegalOp, Message: "mail mode not supported"}, resultBadRequest, nil)
		return
	}
	key := peer.String()
	s.mu.Lock()
	_, dup := s.busy[key]
	full := len(s.busy) >= s.cfg.MaxTransfers
	s.mu.Unlock()
	if dup || s.closing.Load() {
		return // a retransmitted RRQ: the transfer already answers it
	}
	if full {
		s.refuse(peer, src, req.Filename, ErrorPacket{Code: ErrUndefined, Message: "server busy, retry later"}, resultBusy, nil)
		return
	}
	t, err := s.resolve(peer, req.Filename)
	if err != nil {
		s.refuse(peer, src, req.Filename, errorFor(err), resultFor(err), err)
		return
	}
	capBlock := min(s.cfg.MaxBlockSize, maxPayload(ifIndex, peer.IP.To4() == nil)-4)
	p, oack := negotiate(req.Options, t.size, limits{maxBlockSize: capBlock, maxWindow: s.cfg.MaxWindow})
	if p.timeout == 0 {
		p.timeout = s.cfg.Timeout
	}
	adaptive := false
	if p.window == 1 && s.cfg.Anticipate > 1 {
		p.window = min(int(s.cfg.Anticipate), max(1, windowBytes/p.blockSize))
		adaptive = true
	}

	s.mu.Lock()
	s.busy[key] = t
	s.mu.Unlock()
	s.metrics.active.Inc()

	conn, err := net.DialUDP("udp", &net.UDPAddr{IP: src}, peer)
	if err != nil {
		s.finish(t, 0, fmt.Errorf("open transfer socket: %w", err))
		return
	}
	var ob []byte
	if len(oack) > 0 {
		ob, _ = oack.MarshalBinary()
	}
	data := t.src
	if req.Mode == "netascii" {
		data = netascii.ToReader(data)
	}
	_, negotiatedTimeout := oack.option("timeout")
	snd := &sender{conn: conn, src: data, oack: ob, p: p, retries: s.cfg.Retries,
		adaptive: adaptive, estimateRTO: p.window > 1 && !negotiatedTimeout}
	if p.window > 1 {
		if peer.IP.To4() != nil {
			snd.batch = ipv4.NewPacketConn(conn)
		} else {
			snd.batch = ipv6.NewPacketConn(conn)
		}
	}
	s.mu.Lock()
	s.senders[conn] = struct{}{}
	s.mu.Unlock()
	if p.window > 1 {
		s.metrics.engines.WithLabelValues(engineWindow).Inc()
	} else {
		s.metrics.engines.WithLabelValues(engineLockstep).Inc()
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		n, err := snd.run()
		s.mu.Lock()
		delete(s.senders, conn)
		s.mu.Unlock()
		conn.Close()
		s.finish(t, n, err)
	}()
}

// resolve finds the file for a requested name: generated first, then under the root.
func (s *Server) resolve(peer *net.UDPAddr, requested string) (*transfer, error) {
	name, err := cleanName(requested)
	if err != nil {
		return nil, err
	}
	t := &transfer{peer: peer, name: name, start: time.Now(), close: func() {}}
	if s.gen != nil {
		if b, ok := s.gen.File(peer, name); ok {
			t.size, t.src = int64(len(b)), s.abortable(bytes.NewReader(b))
			return t, nil
		}
	}
	if s.root == nil {
		return nil, fmt.Errorf("%s: no root directory: %w", name, os.ErrNotExist)
	}
	f, size, err := openRegular(s.root, name)
	if err != nil {
		return nil, err
	}
	// Read ahead in 64 KiB chunks: blocks are small and each read would be a syscall; no
	// more, as a boot storm runs hundreds of transfers at once.
	buf := int(min(max(size, 4096), 64<<10))
	t.size, t.src, t.close = size, s.abortable(bufio.NewReaderSize(f, buf)), func() { f.Close() }
	return t, nil
}

// finish records the end of a transfer.
func (s *Server) finish(t *transfer, n int64, err error) {
	t.close()
	s.mu.Lock()
	if s.busy[t.peer.String()] == t {
		delete(s.busy, t.peer.String())
	}
	s.mu.Unlock()
	s.metrics.active.Dec()
	s.metrics.bytes.Add(float64(n))
	log := s.log.With("ip", t.peer.IP.String(), "file", t.name, "bytes", n, "duration", time.Since(t.start).Round(time.Millisecond))
	switch {
	case err == nil:
		s.metrics.transfers.WithLabelValues(resultOK).Inc()
		log.Debug("tftp sent")
	case s.closing.Load():
		s.metrics.transfers.WithLabelValues(resultShutdown).Inc()
		log.Info("tftp transfer cut by shutdown", "err", err)
	default:
		s.metrics.transfers.WithLabelValues(resultFailed).Inc()
		log.Warn("tftp transfer failed", "err", err)
	}
}

// refuse answers a request with an ERROR packet from the address the client wrote to.
func (s *Server) refuse(peer *net.UDPAddr, src net.IP, name string, e ErrorPacket, result string, err error) {
	s.metrics.transfers.WithLabelValues(result).Inc()
	// PXE ROMs and pxelinux probe many names that do not exist: that is routine. A
	// refusal for leaving the root is worth an operator's attention.
	level := slog.LevelInfo
	switch result {
	case resultNotFound:
		level = slog.LevelDebug
	case resultDenied:
		level = slog.LevelWarn
	}
	s.log.Log(context.Background(), level, "tftp refused", "ip", peer.IP.String(), "file", name, "code", int(e.Code), "reason", e.Message, "err", err)
	b, merr := e.MarshalBinary()
	if merr != nil {
		return
	}
	s.mu.Lock()
	l := s.l
	s.mu.Unlock()
	if l != nil {
		_ = l.writeFrom(b, peer, src)
	}
}

func resultFor(err error) string {
	switch errorFor(err).Code {
	case ErrNotFound:
		return resultNotFound
	case ErrAccess:
		return resultDenied
	default:
		return resultFailed
	}
}

// abortable makes a transfer's reads fail once the server closes, so a transfer to a live
// client ends at its next block with an ERROR packet.
func (s *Server) abortable(r io.Reader) io.Reader {
	return &abortReader{r: r, closing: &s.closing}
}

type abortReader struct {
	r       io.Reader
	closing *atomic.Bool
}

func (a *abortReader) Read(p []byte) (int, error) {
	if a.closing.Load() {
		return 0, errShuttingDown
	}
	return a.r.Read(p)
}
