package portmap

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"

	"github.com/distonet/distonet/nfsroot/oncrpc"
)

// ErrInUse is returned by Listen when another portmapper owns the address.
var ErrInUse = errors.New("portmapper address in use")

// Procedures (v2 and rpcbind v3/v4 share numbers 0-4).
const (
	procNull        = 0
	procSet         = 1
	procUnset       = 2
	procGetport     = 3 // v2; GETADDR in v3/v4
	procDump        = 4
	procGetTime     = 6 // v3/v4
	procGetVersAddr = 9 // v4
)

// Server answers portmap v2 and rpcbind v3/v4 lookups for a fixed set of mappings. It does
// not accept registrations from others.
type Server struct {
	// Addr to listen on, TCP and UDP, e.g. ":111".
	Addr string
	// Mappings returns what the portmapper announces; called per request.
	Mappings func() []Mapping
	// Log receives errors; slog.Default when nil.
	Log *slog.Logger

	mu     sync.Mutex
	tcp    net.Listener
	udp    net.PacketConn
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

// Listen opens the TCP and UDP sockets; ErrInUse (wrapped) when the port is taken.
func (s *Server) Listen() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.tcp != nil {
		return nil
	}
	l, err := net.Listen("tcp", s.Addr)
	if err != nil {
		if errors.Is(err, unix.EADDRINUSE) {
			return fmt.Errorf("portmap %s: %w", s.Addr, ErrInUse)
		}
		return fmt.Errorf("portmap listen tcp %s: %w", s.Addr, err)
	}
	pc, err := net.ListenPacket("udp", l.Addr().String())
	if err != nil {
		l.Close()
		if errors.Is(err, unix.EADDRINUSE) {
			return fmt.Errorf("portmap %s: %w", s.Addr, ErrInUse)
		}
		return fmt.Errorf("portmap listen udp %s: %w", s.Addr, err)
	}
	s.tcp, s.udp = l, pc
	s.conns = map[net.Conn]struct{}{}
	return nil
}

// Serve answers until ctx ends or Close is called.
func (s *Server) Serve(ctx context.Context) error {
	if err := s.Listen(); err != nil {
		return err
	}
	stop := context.AfterFunc(ctx, func() { _ = s.Close() })
	defer stop()
	s.wg.Add(1)
	go func() { defer s.wg.Done(); s.serveUDP() }()
	for {
		c, err := s.tcp.Accept()
		if err != nil {
			s.mu.Lock()
			closed := s.closed
			s.mu.Unlock()
			if closed {
				return nil
			}
			if errors.Is(err, unix.EMFILE) || errors.Is(err, unix.ENFILE) {
				time.Sleep(50 * time.Millisecond)
				continue
			}
			return fmt.Errorf("portmap accept: %w", err)
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			return nil
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go s.serveConn(c)
	}
}

// Close stops the server and waits for its goroutines.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	var errs []error
	if s.tcp != nil {
		errs = append(errs, s.tcp.Close(), s.udp.Close())
	}
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return errors.Join(errs...)
}

func (s *Server) serveConn(c net.Conn) {
	defer func() {
		c.Close()
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		s.wg.Done()
	}()
	local := addrPort(c.LocalAddr())
	br := bufio.NewReader(c)
	var buf []byte
	for {
		_ = c.SetReadDeadline(time.Now().Add(2 * time.Minute))
		rec, err := oncrpc.ReadRecord(br, buf, 64<<10)
		if err != nil {
			return
		}
		buf = rec
		out := s.Handle(rec, "tcp", local.Addr())
		if out == nil {
			continue
		}
		mark := oncrpc.RecordMark(len(out))
		if _, err := c.Write(append(mark[:], out...)); err != nil {
			return
		}
	}
}

func (s *Server) serveUDP() {
	p := ipv4.NewPacketConn(s.udp)
	// The destination address of each datagram names the host in GETADDR answers.
	_ = p.SetControlMessage(ipv4.FlagDst, true)
	fallback := addrPort(s.udp.LocalAddr()).Addr()
	buf := make([]byte, 65536)
	for {
		n, cm, from, err := p.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			s.mu.Lock()
			closed := s.closed
			s.mu.Unlock()
			if closed {
				return
			}
			s.logger().Warn("portmap udp read", "stage", "nfs", "err", err)
			continue
		}
		local := fallback
		if cm != nil && cm.Dst != nil {
			if a, ok := netip.AddrFromSlice(cm.Dst); ok {
				local = a.Unmap()
			}
		}
		if out := s.Handle(buf[:n], "udp", local); out != nil {
			_, _ = s.udp.WriteTo(out, from)
		}
	}
}

func (s *Server) logger() *slog.Logger {
	if s.Log != nil {
		return s.Log
	}
	return slog.Default()
}

func addrPort(a net.Addr) netip.AddrPort {
	switch a := a.(type) {
	case *net.TCPAddr:
		return a.AddrPort()
	case *net.UDPAddr:
		return a.AddrPort()
	}
	return netip.AddrPort{}
}

// Handle answers one call received over netid ("tcp" or "udp") on the local address;
// nil means no reply is due.
func (s *Server) Handle(msg []byte, netid string, local netip.Addr) []byte {
	var c oncrpc.Call
	err := c.UnmarshalBinary(msg)
	var verr *oncrpc.VersionError
	if errors.As(err, &verr) {
		return reply(&oncrpc.Reply{XID: c.XID, Stat: oncrpc.ReplyDenied, RejectStat: oncrpc.RPCMismatch, Low: 2, High: 2})
	}
	if err != nil {
		return nil
	}
	accepted := func(stat oncrpc.AcceptStat, results []byte) []byte {
		return reply(&oncrpc.Reply{XID: c.XID, Stat: oncrpc.ReplyAccepted, AcceptStat: stat, Low: 2, High: 4, Results: results})
	}
	if c.Prog != Program {
		return accepted(oncrpc.ProgUnavail, nil)
	}
	if c.Vers < 2 || c.Vers > 4 {
		return accepted(oncrpc.ProgMismatch, nil)
	}
	d := oncrpc.NewDecoder(c.Args)
	maps := append(s.self(), s.Mappings()...)
	switch {
	case c.Proc == procNull:
		return accepted(oncrpc.Success, nil)
	case c.Proc == procSet || c.Proc == procUnset:
		return accepted(oncrpc.Success, oncrpc.AppendBool(nil, false)) // registrations are not taken
	case c.Vers == 2 && c.Proc == procGetport:
		var m Mapping
		m.decode(d)
		if d.Err != nil {
			return accepted(oncrpc.GarbageArgs, nil)
		}
		var port uint32
		for _, have := range maps {
			if have.Prog == m.Prog && have.Vers == m.Vers && have.Prot == m.Prot {
				port = have.Port
				break
			}
		}
		return accepted(oncrpc.Success, oncrpc.AppendUint32(nil, port))
	case c.Vers == 2 && c.Proc == procDump:
		var out []byte
		for _, m := range maps {
			out = m.appendTo(oncrpc.AppendBool(out, true))
		}
		return accepted(oncrpc.Success, oncrpc.AppendBool(out, false))
	case c.Proc == procGetport || (c.Vers == 4 && c.Proc == procGetVersAddr):
		var r RPCB
		r.decode(d)
		if d.Err != nil {
			return accepted(oncrpc.GarbageArgs, nil)
		}
		exact := c.Vers == 3 || c.Proc == procGetVersAddr
		addr := ""
		if m, ok := find(maps, r.Prog, r.Vers, r.Netid, exact); ok {
			addr = UniversalAddr(local, uint16(m.Port))
		}
		return accepted(oncrpc.Success, oncrpc.AppendString(nil, addr))
	case c.Proc == procDump:
		var out []byte
		for _, m := range maps {
			out = oncrpc.AppendBool(out, true)
			out = RPCB{Prog: m.Prog, Vers: m.Vers, Netid: netidOf(m.Prot), Addr: UniversalAddr(local, uint16(m.Port)), Owner: "distonet"}.appendTo(out)
		}
		return accepted(oncrpc.Success, oncrpc.AppendBool(out, false))
	case c.Proc == procGetTime:
		return accepted(oncrpc.Success, oncrpc.AppendUint32(nil, uint32(time.Now().Unix())))
	}
	return accepted(oncrpc.ProcUnavail, nil)
}

// self is the portmapper's own registration (rpcinfo looks it up before a DUMP).
func (s *Server) self() []Mapping {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.tcp == nil {
		return nil
	}
	port := uint32(addrPort(s.tcp.Addr()).Port())
	var out []Mapping
	for v := uint32(2); v <= 4; v++ {
		out = append(out, Mapping{Program, v, TCP, port}, Mapping{Program, v, UDP, port})
	}
	return out
}

func netidOf(prot uint32) string {
	if prot == UDP {
		return "udp"
	}
	return "tcp"
}

// find looks a program up by netid; without exact, any version of the program will do
// (rpcbind v4 GETADDR semantics).
func find(maps []Mapping, prog, vers uint32, netid string, exact bool) (Mapping, bool) {
	var any Mapping
	found := false
	for _, m := range maps {
		if m.Prog != prog || netidOf(m.Prot) != netid {
			continue
		}
		if m.Vers == vers {
			return m, true
		}
		if !found {
			any, found = m, true
		}
	}
	if exact || !found {
		return Mapping{}, false
	}
	return any, true
}

func reply(r *oncrpc.Reply) []byte {
	b, err := r.AppendBinary(nil)
	if err != nil {
		return nil
	}
	return b
}

// Register records the mappings with the rpcbind at addr (portmap v2 SET over UDP, after
// an UNSET of stale entries) and returns a function that removes them again.
func Register(ctx context.Context, addr string, maps []Mapping) (func(), error) {
	c, err := oncrpc.Dial(ctx, "udp", addr)
	if err != nil {
		return nil, err
	}
	c.Timeout = 3 * time.Second
	call := func(proc uint32, m Mapping) (bool, error) {
		res, _, err := c.Call(Program, 2, proc, m.appendTo(nil))
		if err != nil {
			return false, err
		}
		d := oncrpc.NewDecoder(res)
		ok := d.Bool("result")
		return ok, d.Err
	}
	for _, m := range maps {
		if _, err := call(procUnset, Mapping{Prog: m.Prog, Vers: m.Vers, Prot: m.Prot}); err != nil {
			c.Close()
			return nil, fmt.Errorf("rpcbind unset %d v%d: %w", m.Prog, m.Vers, err)
		}
	}
	for _, m := range maps {
		ok, err := call(procSet, m)
		if err != nil || !ok {
			c.Close()
			return nil, fmt.Errorf("rpcbind set %d v%d port %d: refused (%v)", m.Prog, m.Vers, m.Port, err)
		}
	}
	return func() {
		for _, m := range maps {
			_, _ = call(procUnset, Mapping{Prog: m.Prog, Vers: m.Vers, Prot: m.Prot})
		}
		c.Close()
	}, nil
}
