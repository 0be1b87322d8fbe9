// Package nfsroot serves the images' root filesystems read-only over NFSv3, the lower
// layer of every diskless node's root. MOUNT answers on the NFS port (the kernel mounts with
// port=2049,mountport=2049,nolock and needs no portmapper), a portmapper answers for
// libnfs and showmount, and file handles are computed from (export, image version, inode)
// so they survive restarts and image updates without a handle cache.
//
// It builds on github.com/willscott/go-nfs: its Handler contract (Mount, ToHandle,
// FromHandle), its XDR types and status codes, and a read-only billy filesystem of ours.
// The RPC transport and the procedures are this package's own, because go-nfs v0.0.4 cannot
// be fixed from outside there: its HandleFunc takes an unexported *response whose request
// body is unreachable, RegisterMessageHandler refuses to replace a procedure it already
// registered, and its reply codes, auth errors and per-connection serial processing are
// wired into the unexported conn. Which image versions exist is the registry's business
// (the Exports interface); who may mount is Config.AllowedNets.
package nfsroot

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	nfs "github.com/willscott/go-nfs"
	"golang.org/x/sys/unix"

	"github.com/distonet/distonet/nfsroot/oncrpc"
	"github.com/distonet/distonet/nfsroot/portmap"
)

// Config configures a Server. The zero value of each field but AllowedNets has a working
// default.
type Config struct {
	// Addr is the TCP address of NFS and MOUNT (MOUNT is also answered over UDP there).
	// Default ":2049".
	Addr string
	// Portmap is where the portmapper (rpcbind v2-v4, TCP and UDP) listens, normally
	// ":111"; "" runs none. When the port is taken (a host rpcbind runs), the server
	// registers NFS and MOUNT with that rpcbind instead.
	Portmap string
	// AllowedNets are the networks that may mount and use the exports (the boot subnet).
	// Calls from elsewhere get an RPC AUTH_ERROR. Required: an empty list is refused.
	AllowedNets []*net.IPNet
	// Metrics registers the server's Prometheus series; nil keeps them unexported.
	Metrics prometheus.Registerer
	// MaxInFlight bounds the calls executed at once per TCP connection. Default 64.
	MaxInFlight int
	// OpenFiles bounds the cached open file descriptors. Default 4096.
	OpenFiles int
	// DirEntries bounds the cached directory entries (names and attributes). Default 262144.
	DirEntries int
	// Attrs bounds the cached file attributes. Default 262144.
	Attrs int
}

// sndBuf is the socket send buffer asked for each connection (the kernel doubles it and
// caps it at net.core.wmem_max).
const sndBuf = 4 << 20

// maxRecord bounds one RPC record: a 1 MiB WRITE (refused, but read) plus headers.
const maxRecord = maxIO + 64<<10

// Server is the NFSv3 + MOUNT (+ portmapper) server.
type Server struct {
	cfg     Config
	exports Exports
	log     *slog.Logger
	h       *handler
	m       *metrics
	files   *fileCache
	dirs    *dirCache
	attrs   *attrCache

	mu        sync.Mutex
	listening bool
	closed    bool
	tcp       net.Listener
	udp       net.PacketConn
	pm        *portmap.Server
	unreg     func()
	conns     map[net.Conn]struct{}
	done      chan struct{} // closed when Close starts
	closeDone chan struct{} // closed when Close has finished
	wg        sync.WaitGroup
	bufs      sync.Pool
}

// NewServer checks the configuration and returns a server that is not yet listening.
func NewServer(cfg Config, exports Exports, logger *slog.Logger) (*Server, error) {
	if cfg.Addr == "" {
		cfg.Addr = ":2049"
	}
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = 64
	}
	if cfg.OpenFiles <= 0 {
		cfg.OpenFiles = 4096
	}
	if cfg.DirEntries <= 0 {
		cfg.DirEntries = 262144
	}
	if cfg.Attrs <= 0 {
		cfg.Attrs = 262144
	}
	if len(cfg.AllowedNets) == 0 {
		return nil, errors.New("nfsroot: allowed_nets is empty: no client could mount")
	}
	if exports == nil {
		return nil, errors.New("nfsroot: no exports")
	}
	if logger == nil {
		logger = slog.Default()
	}
	m, err := newMetrics(cfg.Metrics)
	if err != nil {
		return nil, fmt.Errorf("nfsroot metrics: %w", err)
	}
	s := &Server{
		cfg: cfg, exports: exports, log: logger, m: m,
		files: newFileCache(cfg.OpenFiles), dirs: newDirCache(cfg.DirEntries), attrs: newAttrCache(cfg.Attrs),
		conns: map[net.Conn]struct{}{}, done: make(chan struct{}), closeDone: make(chan struct{}),
	}
	s.h = newHandler(exports, s.allowed, logger)
	s.h.onBuild = func(t *tree, _ time.Duration) {
		m.indexFiles.Add(float64(len(t.inos)))
		m.indexBytes.Add(float64(t.memBytes()))
	}
	return s, nil
}

// allowed applies the export policy to a client address.
func (s *Server) allowed(a net.Addr) bool {
	var ip net.IP
	switch a := a.(type) {
	case *net.TCPAddr:
		ip = a.IP
	case *net.UDPAddr:
		ip = a.IP
	default:
		return false
	}
	for _, n := range s.cfg.AllowedNets {
		if n.Contains(ip) {
			return true
		}
	}
	return false
}

// Listen opens the sockets (so a test can open them inside a network namespace); Serve
// calls it when it has not been called.
func (s *Server) Listen() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return net.ErrClosed
	}
	if s.listening {
		return nil
	}
	l, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("nfs listen tcp %s: %w", s.cfg.Addr, err)
	}
	// MOUNT over UDP on the same port (showmount and old mount helpers try UDP).
	pc, err := net.ListenPacket("udp", l.Addr().String())
	if err != nil {
		l.Close()
		return fmt.Errorf("nfs listen udp %s: %w", l.Addr(), err)
	}
	s.tcp, s.udp = l, pc
	if s.cfg.Portmap != "" {
		if err := s.startPortmap(); err != nil {
			l.Close()
			pc.Close()
			return err
		}
	}
	s.listening = true
	return nil
}

func (s *Server) mappings() []portmap.Mapping {
	port := uint32(s.tcp.Addr().(*net.TCPAddr).Port)
	maps := []portmap.Mapping{{Prog: progNFS, Vers: 3, Prot: portmap.TCP, Port: port}}
	for v := uint32(1); v <= 3; v++ {
		maps = append(maps,
			portmap.Mapping{Prog: progMount, Vers: v, Prot: portmap.TCP, Port: port},
			portmap.Mapping{Prog: progMount, Vers: v, Prot: portmap.UDP, Port: port})
	}
	return maps
}

func (s *Server) startPortmap() error {
	pm := &portmap.Server{Addr: s.cfg.Portmap, Mappings: s.mappings, Log: s.log}
	err := pm.Listen()
	if err == nil {
		s.pm = pm
		return nil
	}
	if !errors.Is(err, portmap.ErrInUse) {
		return err
	}
	// A host rpcbind owns the port: register with it instead.
	_, port, _ := net.SplitHostPort(s.cfg.Portmap)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	unreg, rerr := portmap.Register(ctx, net.JoinHostPort("127.0.0.1", port), s.mappings())
	if rerr != nil {
		return fmt.Errorf("portmap %s in use and registering with it failed: %w", s.cfg.Portmap, rerr)
	}
	s.unreg = unreg
	s.log.Info("nfs registered with host rpcbind", "stage", "nfs", "addr", s.cfg.Portmap)
	return nil
}

// Addr returns the TCP address NFS and MOUNT listen on (after Listen).
func (s *Server) Addr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.tcp == nil {
		return nil
	}
	return s.tcp.Addr()
}

// Serve answers clients until ctx ends or Close is called; it returns nil then.
func (s *Server) Serve(ctx context.Context) error {
	if err := s.Listen(); err != nil {
		return err
	}
	s.mu.Lock()
	l, pc, pm := s.tcp, s.udp, s.pm
	s.mu.Unlock()
	s.log.Info("nfs serving", "stage", "nfs", "addr", l.Addr().String(), "portmap", s.cfg.Portmap)

	stop := context.AfterFunc(ctx, func() { _ = s.Close() })
	defer stop()
	s.wg.Add(3)
	go func() { defer s.wg.Done(); s.serveUDP(pc) }()
	go func() { defer s.wg.Done(); s.expireLoop() }()
	go func() { defer s.wg.Done(); s.warm() }()
	if pm != nil {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			if err := pm.Serve(ctx); err != nil {
				s.log.Error("portmap stopped", "stage", "nfs", "err", err)
			}
		}()
	}
	var delay time.Duration
	for {
		c, err := l.Accept()
		if err != nil {
			select {
			case <-s.done:
				<-s.closeDone
				return nil
			default:
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, unix.EMFILE) || errors.Is(err, unix.ENFILE) {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				time.Sleep(delay)
				continue
			}
			return fmt.Errorf("nfs accept: %w", err)
		}
		delay = 0
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			<-s.closeDone
			return nil
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go s.serveConn(c)
	}
}

// warm indexes the current version of every export before the first node asks, so a
// boot storm right after a (re)start does not wait on the walk of a large image.
func (s *Server) warm() {
	for _, exp := range s.exports.List() {
		select {
		case <-s.done:
			return
		default:
		}
		_, _ = s.h.tree(exp) // failures are logged and retried on use
	}
}

func (s *Server) expireLoop() {
	tick := time.NewTicker(time.Minute)
	defer tick.Stop()
	for {
		select {
		case <-s.done:
			return
		case <-tick.C:
			s.h.expire(time.Hour)
		}
	}
}

// Close stops listening, closes every connection and waits for the calls in progress.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		<-s.closeDone
		return nil
	}
	s.closed = true
	close(s.done)
	var errs []error
	if s.tcp != nil {
		errs = append(errs, s.tcp.Close())
	}
	if s.udp != nil {
		errs = append(errs, s.udp.Close())
	}
	if s.pm != nil {
		errs = append(errs, s.pm.Close())
	}
	if s.unreg != nil {
		s.unreg()
	}
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	s.files.closeAll()
	close(s.closeDone)
	return errors.Join(errs...)
}

func (s *Server) getBuf(n int) []byte {
	if b, ok := s.bufs.Get().(*[]byte); ok && cap(*b) >= n {
		return (*b)[:0]
	}
	return make([]byte, 0, max(n, 4096))
}

func (s *Server) putBuf(b []byte) {
	if cap(b) > maxRecord+4096 {
		return
	}
	s.bufs.Put(&b)
}

// serveConn reads calls off one TCP connection and runs up to MaxInFlight of them at once;
// replies go out in completion order, as RPC allows.
func (s *Server) serveConn(c net.Conn) {
	defer s.wg.Done()
	s.m.connections.Inc()
	defer s.m.connections.Dec()
	remote := c.RemoteAddr()
	allowed := s.allowed(remote)
	if !allowed {
		s.log.Warn("nfs client outside allowed networks", "stage", "nfs", "ip", addrIP(remote))
	}
	var (
		wmu         sync.Mutex
		werr        error
		deadlineSet time.Time // under wmu
		pending     sync.WaitGroup
	)
	// Calls that arrive together run on workers that live as long as the connection: a
	// goroutine per call paid for growing a fresh stack on every call (12% of the CPU of a
	// 32-client boot storm went to copystack).
	var (
		work    = make(chan []byte) // unbuffered: at most MaxInFlight calls are held
		busy    atomic.Int32        // calls handed to workers and not answered yet
		idle    atomic.Int32        // workers waiting for a call and not yet claimed, less calls queued
		workers int
	)
	defer func() {
		close(work)
		pending.Wait()
		c.Close()
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
	}()
	if tc, ok := c.(*net.TCPConn); ok {
		// Room for a whole 1 MiB READ reply and the next: fewer EAGAIN round trips through
		// the poller than the autotuned buffer, which starts at 16 KiB.
		_ = tc.SetWriteBuffer(sndBuf)
	}
	raw, _ := c.(syscall.Conn)
	var rc syscall.RawConn
	if raw != nil {
		rc, _ = raw.SyscallConn()
	}
	// send writes replies as one batch (one writev for all of them where it can) and gives
	// their buffers and file references back.
	var batch replyBatch
	send := func(b *replyBatch) {
		if len(b.iov) == 0 {
			return
		}
		wmu.Lock()
		if werr == nil {
			// A minute for a reply to leave, renewed every 10 s rather than per reply:
			// each renewal is a runtime timer update.
			if now := time.Now(); now.Sub(deadlineSet) > 10*time.Second {
				_ = c.SetWriteDeadline(now.Add(time.Minute))
				deadlineSet = now
			}
			if rc != nil {
				werr = writeAll(rc, b.iov)
			} else {
				for _, p := range b.iov {
					if _, werr = c.Write(p); werr != nil {
						break
					}
				}
			}
			if werr != nil {
				c.Close() // unblocks the reader
			}
		}
		wmu.Unlock()
		b.release(s)
	}
	respond := func(rec []byte, b *replyBatch) {
		out, tail := s.handle(rec, remote, allowed, rc != nil, s.getBuf(8192))
		s.putBuf(rec)
		if out != nil {
			b.add(out, tail)
		}
	}
	br := bufio.NewReaderSize(c, 64<<10)
	for {
		rec, err := oncrpc.ReadRecord(br, s.getBuf(4096), maxRecord)
		if err != nil {
			send(&batch) // empty unless a buffered record turned out bad
			return
		}
		// A lone call (nothing else buffered, nothing in flight) runs on this goroutine:
		// handing it to another costs a thread wake-up per call for synchronous clients.
		// So does a READ: its reply is written under wmu with the file data, so
		// READs on one connection cannot overlap anyway, and a worker would only add a
		// hand-off and a lock wait. Other calls that arrive together (the kernel pipelines
		// LOOKUPs and GETATTRs) run concurrently, so a cold stat does not hold up the rest.
		//
		// Replies of READs that arrive together leave together: while the next call is
		// already buffered, a READ's reply waits in the batch (up to batchBytes), so a
		// client with several READs in flight gets one writev, one TCP push, instead of
		// one per READ. Nothing waits across a read from the socket.
		if br.Buffered() == 0 && busy.Load() == 0 || isRead(rec) {
			respond(rec, &batch)
			if batch.size >= batchBytes || len(batch.iov) >= maxBatchIov || !oncrpc.RecordBuffered(br) {
				send(&batch)
			}
			continue
		}
		send(&batch)
		busy.Add(1)
		// Only this goroutine claims idle workers, so the check and the claim cannot race.
		// With every worker busy, the call still takes a claim: idle goes below zero by the
		// calls queued for the next worker to finish.
		if idle.Load() > 0 || workers == s.cfg.MaxInFlight {
			idle.Add(-1)
		} else {
			workers++
			pending.Add(1)
			go func() {
				defer pending.Done()
				var b replyBatch
				for rec := range work {
					respond(rec, &b)
					send(&b)
					busy.Add(-1)
					idle.Add(1)
				}
			}()
		}
		work <- rec // blocks while MaxInFlight calls run
	}
}

// isRead tells an NFSv3 READ call from its header without decoding it.
func isRead(rec []byte) bool {
	return len(rec) >= 24 && binary.BigEndian.Uint32(rec[12:]) == progNFS &&
		binary.BigEndian.Uint32(rec[16:]) == 3 && binary.BigEndian.Uint32(rec[20:]) == uint32(nfs.NFSProcedureRead)
}

// serveUDP answers MOUNT (and NULL calls of NFS) over UDP.
func (s *Server) serveUDP(pc net.PacketConn) {
	buf := make([]byte, 65536)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			select {
			case <-s.done:
				return
			default:
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		out, tail := s.handle(buf[:n], from, s.allowed(from), false, make([]byte, 0, 4096))
		s.releaseTail(tail)
		if out == nil || len(out)-4 > 65507 {
			continue
		}
		_, _ = pc.WriteTo(out[4:], from)
	}
}

// handle decodes one call and returns the reply with 4 bytes reserved in front for the
// record mark, or nil when the message deserves no reply. On a stream, READ may leave its
// data in a tail to send after the reply (the caller releases it).
func (s *Server) handle(rec []byte, remote net.Addr, allowed, stream bool, out []byte) ([]byte, *fileTail) {
	var msg oncrpc.Call
	err := msg.UnmarshalBinary(rec)
	var verr *oncrpc.VersionError
	switch {
	case errors.As(err, &verr):
		return s.reply(out, &oncrpc.Reply{XID: msg.XID, Stat: oncrpc.ReplyDenied, RejectStat: oncrpc.RPCMismatch, Low: 2, High: 2}), nil
	case err != nil:
		return nil, nil // not a call: RFC 5531 gives nothing to answer with
	}
	if !allowed && msg.Proc != 0 {
		s.m.denied.Inc()
		return s.reply(out, &oncrpc.Reply{XID: msg.XID, Stat: oncrpc.ReplyDenied, RejectStat: oncrpc.AuthError, AuthStat: oncrpc.AuthTooWeak}), nil
	}
	c := call{proc: msg.Proc, args: msg.Args, cred: nobody, stream: stream}
	switch msg.Cred.Flavor {
	case oncrpc.AuthSys:
		var p oncrpc.AuthSysParams
		if err := p.UnmarshalBinary(msg.Cred.Body); err != nil {
			return s.reply(out, &oncrpc.Reply{XID: msg.XID, Stat: oncrpc.ReplyDenied, RejectStat: oncrpc.AuthError, AuthStat: oncrpc.AuthBadCred}), nil
		}
		c.cred = cred{uid: p.UID, gid: p.GID, gids: p.GIDs}
	case oncrpc.AuthNone:
	default:
		return s.reply(out, &oncrpc.Reply{XID: msg.XID, Stat: oncrpc.ReplyDenied, RejectStat: oncrpc.AuthError, AuthStat: oncrpc.AuthRejectedCred}), nil
	}

	out = oncrpc.AppendSuccess(out[:4], msg.XID)
	var stat oncrpc.AcceptStat
	var low, high uint32
	prog := "other"
	switch {
	case msg.Prog == progNFS && msg.Vers == 3:
		prog = "nfs"
		if _, isTCP := remote.(*net.TCPAddr); !isTCP && msg.Proc != 0 {
			stat = oncrpc.ProgUnavail // NFS data only over TCP
		} else {
			out, stat = s.guard(remote, prog, msg.Proc, out, func() ([]byte, oncrpc.AcceptStat) { return s.nfs3(&c, out) })
		}
	case msg.Prog == progNFS:
		stat, low, high = oncrpc.ProgMismatch, 3, 3
	case msg.Prog == progMount && msg.Vers >= 1 && msg.Vers <= 3:
		prog = "mount"
		out, stat = s.guard(remote, prog, msg.Proc, out, func() ([]byte, oncrpc.AcceptStat) { return s.mount(msg.Vers, &c, remote, out) })
	case msg.Prog == progMount:
		stat, low, high = oncrpc.ProgMismatch, 1, 3
	default:
		stat = oncrpc.ProgUnavail
	}
	s.m.calls.WithLabelValues(prog, procName(prog, msg.Proc)).Inc()
	if stat == oncrpc.Success {
		return out, c.tail
	}
	s.releaseTail(c.tail)
	return s.reply(out[:4], &oncrpc.Reply{XID: msg.XID, Stat: oncrpc.ReplyAccepted, AcceptStat: stat, Low: low, High: high}), nil
}

// guard runs a procedure and turns a panic in it (a bug here, or in the Exports the
// daemon supplies) into an RPC SYSTEM_ERR for that call, logged with its stack, instead of
// the end of the process that serves every node's root.
func (s *Server) guard(remote net.Addr, prog string, proc uint32, out []byte, run func() ([]byte, oncrpc.AcceptStat)) (res []byte, stat oncrpc.AcceptStat) {
	defer func() {
		if p := recover(); p != nil {
			s.log.Error("nfs procedure panicked; the call gets SYSTEM_ERR", "stage", "nfs", "program", prog,
				"procedure", procName(prog, proc), "ip", addrIP(remote), "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			res, stat = out, oncrpc.SystemErr
		}
	}()
	return run()
}

func (s *Server) reply(out []byte, r *oncrpc.Reply) []byte {
	b, err := r.AppendBinary(out[:4])
	if err != nil {
		return nil
	}
	return b
}

var nfsProcNames = [...]string{"null", "getattr", "setattr", "lookup", "access", "readlink", "read", "write",
	"create", "mkdir", "symlink", "mknod", "remove", "rmdir", "rename", "link", "readdir", "readdirplus",
	"fsstat", "fsinfo", "pathconf", "commit"}

var mountProcNames = [...]string{"null", "mnt", "dump", "umnt", "umntall", "export"}

// procName keeps the metric's label set bounded.
func procName(prog string, proc uint32) string {
	switch {
	case prog == "nfs" && proc < uint32(len(nfsProcNames)):
		return nfsProcNames[proc]
	case prog == "mount" && proc < uint32(len(mountProcNames)):
		return mountProcNames[proc]
	}
	return "other"
}

func (s *Server) releaseTail(t *fileTail) {
	if t != nil {
		s.files.release(t.f)
	}
}

// replyBatch is replies waiting to be written together: for each, its header (record
// mark included) and, for a READ, the file data from the mapping and the XDR padding.
type replyBatch struct {
	iov   [][]byte
	outs  [][]byte
	tails []*fileTail
	size  int
}

// batchBytes and maxBatchIov bound a batch: a 1 MiB READ goes alone, small ones gather.
const (
	batchBytes  = 256 << 10
	maxBatchIov = 64
)

var zeroPad [3]byte

func (b *replyBatch) add(out []byte, t *fileTail) {
	size := len(out) - 4
	if t != nil {
		size += len(t.data) + t.pad
	}
	mark := oncrpc.RecordMark(size)
	copy(out, mark[:])
	b.iov = append(b.iov, out)
	b.outs = append(b.outs, out)
	if t != nil {
		b.iov = append(b.iov, t.data)
		if t.pad > 0 {
			b.iov = append(b.iov, zeroPad[:t.pad])
		}
		b.tails = append(b.tails, t)
	}
	b.size += 4 + size
}

// release gives the batch's buffers and file references back and empties it.
func (b *replyBatch) release(s *Server) {
	for _, t := range b.tails {
		s.releaseTail(t)
	}
	for _, out := range b.outs {
		s.putBuf(out)
	}
	clear(b.iov)
	clear(b.outs)
	clear(b.tails)
	b.iov, b.outs, b.tails, b.size = b.iov[:0], b.outs[:0], b.tails[:0], 0
}

// writeAll writes iov in as few writev(2) calls as the socket allows. A failed write
// leaves a partial record: the caller closes the connection.
func writeAll(rc syscall.RawConn, iov [][]byte) error {
	var opErr error
	err := rc.Write(func(fd uintptr) bool {
		for len(iov) > 0 {
			n, err := unix.Writev(int(fd), iov[:min(len(iov), 1024)]) // IOV_MAX
			if errors.Is(err, unix.EAGAIN) {
				return false
			}
			if errors.Is(err, unix.EINTR) {
				continue
			}
			if err != nil {
				opErr = err // EFAULT: an image file was truncated under its mapping
				return true
			}
			iov = consumed(iov, n)
		}
		return true
	})
	if err == nil {
		err = opErr
	}
	if err != nil {
		return fmt.Errorf("send replies: %w", err)
	}
	return nil
}

// consumed drops the first n bytes written from iov, and the buffers left empty.
func consumed(iov [][]byte, n int) [][]byte {
	for len(iov) > 0 && n >= len(iov[0]) {
		n -= len(iov[0])
		iov = iov[1:]
	}
	if n > 0 {
		iov[0] = iov[0][n:]
	}
	for len(iov) > 0 && len(iov[0]) == 0 {
		iov = iov[1:]
	}
	return iov
}
