package oncrpc

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"
)

// Client is a small synchronous RPC client over TCP (record marked) or UDP. It serves the
// tests, the benchmarks and the registration with a host rpcbind; it is not a general
// purpose client: one call at a time per Client.
type Client struct {
	mu   sync.Mutex
	conn net.Conn
	r    *bufio.Reader
	udp  bool
	xid  uint32
	buf  []byte
	// Cred is sent with every call; AUTH_NONE when zero.
	Cred OpaqueAuth
	// Timeout bounds each call; 10 s when zero.
	Timeout time.Duration
}

// Dial connects to addr over network "tcp" or "udp".
func Dial(ctx context.Context, network, addr string) (*Client, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, fmt.Errorf("rpc dial %s %s: %w", network, addr, err)
	}
	return NewClient(c), nil
}

// NewClient wraps an established connection; a net.PacketConn-backed conn speaks UDP.
func NewClient(c net.Conn) *Client {
	_, udp := c.(*net.UDPConn)
	return &Client{conn: c, r: bufio.NewReader(c), udp: udp, xid: uint32(time.Now().UnixNano())}
}

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }

// ErrNotAccepted wraps a reply that was denied or not successful.
var ErrNotAccepted = errors.New("rpc call not accepted")

// Call sends one call and returns the results of a successful reply. Any other reply is an
// error wrapping ErrNotAccepted; the full reply is still returned for inspection. The
// results alias the client's receive buffer: they are valid until the next call.
func (c *Client) Call(prog, vers, proc uint32, args []byte) ([]byte, *Reply, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.xid++
	call := Call{XID: c.xid, Prog: prog, Vers: vers, Proc: proc, Cred: c.Cred, Args: args}
	msg, err := call.AppendBinary(make([]byte, 4, 4+64+len(args)))
	if err != nil {
		return nil, nil, err
	}
	timeout := c.Timeout
	if timeout == 0 {
		timeout = 10 * time.Second
	}
	if err := c.conn.SetDeadline(time.Now().Add(timeout)); err != nil {
		return nil, nil, err
	}
	if c.udp {
		msg = msg[4:]
	} else {
		h := RecordMark(len(msg) - 4)
		copy(msg, h[:])
	}
	if _, err := c.conn.Write(msg); err != nil {
		return nil, nil, fmt.Errorf("rpc send: %w", err)
	}
	for {
		var raw []byte
		if c.udp {
			if cap(c.buf) < 65536 {
				c.buf = make([]byte, 65536)
			}
			n, err := c.conn.Read(c.buf[:65536])
			if err != nil {
				return nil, nil, fmt.Errorf("rpc receive: %w", err)
			}
			raw = c.buf[:n]
		} else {
			raw, err = ReadRecord(c.r, c.buf, 64<<20)
			if err != nil {
				return nil, nil, fmt.Errorf("rpc receive: %w", err)
			}
			c.buf = raw
		}
		var rep Reply
		if err := rep.UnmarshalBinary(raw); err != nil {
			return nil, nil, err
		}
		if rep.XID != c.xid {
			continue // a late reply to an earlier call
		}
		if rep.Stat != ReplyAccepted || rep.AcceptStat != Success {
			return nil, &rep, fmt.Errorf("%w: stat %d accept %d reject %d auth %d", ErrNotAccepted, rep.Stat, rep.AcceptStat, rep.RejectStat, rep.AuthStat)
		}
		return rep.Results, &rep, nil
	}
}

// SysCred builds an AUTH_SYS credential.
func SysCred(machine string, uid, gid uint32, gids ...uint32) OpaqueAuth {
	p := AuthSysParams{Machine: machine, UID: uid, GID: gid, GIDs: gids}
	body, err := p.MarshalBinary()
	if err != nil {
		return OpaqueAuth{}
	}
	return OpaqueAuth{Flavor: AuthSys, Body: body}
}
