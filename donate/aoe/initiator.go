package aoe

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/distonet/distonet/internal/mmsg"
	"github.com/mdlayher/packet"
)

// Config is one target's answer to Query Config Information.
type Config struct {
	MAC             net.HardwareAddr
	Shelf           uint16
	Slot            uint8
	BufferCount     uint16
	FirmwareVersion uint16
	SectorsPerFrame uint8
	Version         uint8
	String          string
}

// Address is the target's name as the Linux driver shows it (e<shelf>.<slot>).
func (c Config) Address() string { return fmt.Sprintf("e%d.%d", c.Shelf, c.Slot) }

func configFrom(h *Header, c *ConfigArg) Config {
	return Config{
		MAC: slices.Clone(h.Src), Shelf: h.Shelf, Slot: h.Slot, BufferCount: c.BufferCount,
		FirmwareVersion: c.FirmwareVersion, SectorsPerFrame: c.SectorCount, Version: c.Version,
		String: string(c.String),
	}
}

var broadcastMAC = net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

// Discover broadcasts Query Config on the interface and returns every target that answers
// within timeout (or before ctx ends), one entry per MAC and address.
func Discover(ctx context.Context, ifname string, timeout time.Duration) ([]Config, error) {
	conn, ifi, err := listen(ifname)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	tag := uint32(time.Now().UnixNano())
	req := make([]byte, MinFrameLen)
	h := Header{Dst: broadcastMAC, Src: ifi.HardwareAddr, Version: Version, Shelf: BroadcastShelf, Slot: BroadcastSlot, Command: CommandQueryConfig, Tag: tag}
	if err := h.MarshalTo(req); err != nil {
		return nil, err
	}
	if _, err := (&ConfigArg{}).MarshalTo(req[HeaderLen:]); err != nil {
		return nil, err
	}
	if _, err := conn.WriteTo(req, &packet.Addr{HardwareAddr: broadcastMAC}); err != nil {
		return nil, fmt.Errorf("aoe discover on %s: %w", ifname, err)
	}
	deadline := time.Now().Add(timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	if err := conn.SetReadDeadline(deadline); err != nil {
		return nil, fmt.Errorf("aoe discover on %s: %w", ifname, err)
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.SetReadDeadline(time.Now()) })
	defer stop()
	var out []Config
	buf := make([]byte, 14+max(ifi.MTU, 1500))
	for {
		n, _, err := conn.ReadFrom(buf)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return out, ctx.Err()
			}
			return out, fmt.Errorf("aoe discover on %s: %w", ifname, err)
		}
		var rh Header
		var c ConfigArg
		if rh.UnmarshalBinary(buf[:n]) != nil || !rh.Response || rh.Error || rh.Command != CommandQueryConfig {
			continue
		}
		// Answers to our broadcast carry our tag; unsolicited announcements carry 0.
		if rh.Tag != tag && rh.Tag != 0 {
			continue
		}
		if c.UnmarshalBinary(buf[HeaderLen:n]) != nil {
			continue
		}
		cfg := configFrom(&rh, &c)
		if !slices.ContainsFunc(out, func(x Config) bool {
			return bytes.Equal(x.MAC, cfg.MAC) && x.Shelf == cfg.Shelf && x.Slot == cfg.Slot
		}) {
			out = append(out, cfg)
		}
	}
}

// ATAError is an ATA command that completed with the ERR or DF status bit.
type ATAError struct {
	Command, Status, Err uint8
	LBA                  uint64
}

func (e *ATAError) Error() string {
	return fmt.Sprintf("aoe: ata command %#02x at lba %d: status %#02x error %#02x", e.Command, e.LBA, e.Status, e.Err)
}

// ErrTimeout reports a request that got no answer after every retransmission.
var ErrTimeout = errors.New("aoe: no response from target")

// ClientConfig tunes a Client. Zero values are the defaults.
type ClientConfig struct {
	Outstanding int           // tags in flight per call; default 16, capped by the target's buffer count
	Timeout     time.Duration // first retransmission timeout; default 200ms, doubled per retry
	Retries     int           // retransmissions before ErrTimeout; default 6
}

// Client is a user-space AoE initiator bound to one target.
type Client struct {
	conn       *packet.Conn
	local      net.HardwareAddr
	target     net.HardwareAddr
	shelf      uint16
	slot       uint8
	cfg        ClientConfig
	maxSectors int
	sectors    uint64
	config     Config

	tag       atomic.Uint32
	tagPrefix uint32
	mu        sync.Mutex
	pending   map[uint32]*request
	closed    chan struct{}
	once      sync.Once
	wg        sync.WaitGroup
	bufs      sync.Pool
	txMu      sync.Mutex // guards tx and txClosed
	tx        *sender
	txClosed  bool
}

type request struct {
	tag     uint32
	cmd     Command
	ataCmd  uint8  // ATA command, for error reports
	lba     uint64 // ATA LBA, for error reports
	frame   []byte // the request as sent, for retransmission
	into    []byte // read data lands here
	data    []byte // read data received, in the receive buffer until copied to into
	sent    time.Time
	tries   int
	h       Header
	arg     []byte // response argument (copied) for control commands
	ata     ATAArg // response registers
	err     error
	w       *window // the call it belongs to
	keepArg bool
}

// window is one call's requests: at most Outstanding in flight. The receiving goroutine
// completes requests and sends the next ones itself, in one sendmmsg per received batch, so
// a streaming call costs no goroutine hand-off per frame; the caller only waits for the end
// and retransmits what times out.
type window struct {
	mu        sync.Mutex
	reqs      []*request
	next      int                 // reqs[next:] not sent yet
	live      map[uint32]*request // sent, unanswered
	remaining int                 // not answered yet
	err       error               // the first error; nothing new is sent after it
	closed    bool                // the caller has returned: touch nothing
	finished  chan struct{}       // closed once remaining is 0 or err is set
	toSend    []*request          // refills collected by the receiver for its next sendmmsg
}

// finishLocked signals the caller once the call is over.
func (w *window) finishLocked() {
	if w.finished != nil && (w.remaining == 0 || w.err != nil) {
		close(w.finished)
		w.finished = nil
	}
}

// Dial opens a client for the target at shelf.slot reachable at mac through ifname, with the
// default ClientConfig. It learns the frame size from Query Config and the capacity from IDENTIFY.
func Dial(ifname string, target net.HardwareAddr, shelf uint16, slot uint8) (*Client, error) {
	return DialConfig(context.Background(), ifname, target, shelf, slot, ClientConfig{})
}

// DialConfig is Dial with tuning.
func DialConfig(ctx context.Context, ifname string, target net.HardwareAddr, shelf uint16, slot uint8, cfg ClientConfig) (*Client, error) {
	if cfg.Outstanding <= 0 {
		cfg.Outstanding = 16
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 200 * time.Millisecond
	}
	if cfg.Retries <= 0 {
		cfg.Retries = 6
	}
	conn, ifi, err := listen(ifname)
	if err != nil {
		return nil, err
	}
	if SectorsPerFrame(ifi.MTU) < 1 {
		conn.Close()
		return nil, fmt.Errorf("aoe dial: mtu %d of %s cannot carry one sector", ifi.MTU, ifname)
	}
	txs, err := openTxSocket(ifi.Index)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("aoe dial on %s: %w", ifname, err)
	}
	c := &Client{
		conn: conn, local: ifi.HardwareAddr, target: slices.Clone(target), shelf: shelf, slot: slot,
		cfg: cfg, maxSectors: SectorsPerFrame(ifi.MTU), pending: map[uint32]*request{},
		closed: make(chan struct{}),
	}
	frameSize := 14 + max(ifi.MTU, 1500)
	c.bufs.New = func() any { b := make([]byte, frameSize); return &b }
	// Tags are a random 15-bit prefix per client and a 16-bit counter: several clients (and
	// the kernel's aoe driver) on one interface all see every response, and must not take
	// another's answer for their own.
	var rnd [2]byte
	_, _ = rand.Read(rnd[:])
	c.tagPrefix = uint32(binary.BigEndian.Uint16(rnd[:])&0x7fff) << 16
	rc, err := conn.SyscallConn()
	if err != nil {
		conn.Close()
		txs.Close()
		return nil, fmt.Errorf("aoe dial: %w", err)
	}
	c.tx = newSender(txs)
	c.wg.Add(1)
	go c.receive(frameSize, mmsg.NewReceiver(rc, batchSize))
	qc, err := c.QueryConfig(ctx, ConfigRead, "")
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("aoe dial e%d.%d at %s: %w", shelf, slot, target, err)
	}
	c.config = qc
	if qc.SectorsPerFrame > 0 && int(qc.SectorsPerFrame) < c.maxSectors {
		c.maxSectors = int(qc.SectorsPerFrame)
	} else if qc.SectorsPerFrame == 0 {
		c.maxSectors = min(c.maxSectors, 2) // r11: 0 means 2
	}
	if qc.BufferCount > 0 && int(qc.BufferCount) < c.cfg.Outstanding {
		c.cfg.Outstanding = int(qc.BufferCount)
	}
	id, err := c.Identify(ctx)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("aoe dial e%d.%d at %s: %w", shelf, slot, target, err)
	}
	c.sectors, _ = IdentifySectors(id[:])
	return c, nil
}

// Close stops the client.
func (c *Client) Close() error {
	c.once.Do(func() {
		close(c.closed)
		c.conn.Close()
		c.txMu.Lock()
		c.txClosed = true
		_ = c.tx.s.Close()
		c.txMu.Unlock()
	})
	c.wg.Wait()
	return nil
}

// Sectors is the capacity IDENTIFY announced.
func (c *Client) Sectors() uint64 { return c.sectors }

// Size is the capacity in bytes.
func (c *Client) Size() int64 { return int64(c.sectors) * SectorSize }

// Config is the target's Query Config answer at dial time.
func (c *Client) Config() Config { return c.config }

// SectorsPerFrame is the transfer size per request in use.
func (c *Client) SectorsPerFrame() int { return c.maxSectors }

// Outstanding is the number of tags kept in flight.
func (c *Client) Outstanding() int { return c.cfg.Outstanding }

// receive takes responses off the socket, a batch per system call, completes the requests
// they answer and sends the requests that take their place (see window).
func (c *Client) receive(frameSize int, rx *mmsg.Receiver) {
	defer c.wg.Done()
	bufs := make([][]byte, batchSize)
	for i := range bufs {
		bufs[i] = make([]byte, frameSize)
	}
	lens := make([]int, batchSize)
	var touched []*window
	var answered []*request
	for {
		k, err := rx.Recv(bufs, lens)
		if err != nil {
			c.failAll(fmt.Errorf("aoe receive: %w", err))
			return
		}
		touched, answered = touched[:0], answered[:0]
		for i := range k {
			buf := bufs[i][:lens[i]]
			var h Header
			if h.UnmarshalBinary(buf) != nil || !h.Response || !bytes.Equal(h.Src, c.target) ||
				h.Shelf != c.shelf || h.Slot != c.slot {
				continue
			}
			c.mu.Lock()
			r := c.pending[h.Tag]
			if r != nil && (r.cmd != h.Command || !r.answeredBy(buf[HeaderLen:])) {
				r = nil
			}
			if r != nil {
				delete(c.pending, h.Tag)
			}
			c.mu.Unlock()
			if r == nil {
				continue // late duplicate or not ours
			}
			w := r.w
			w.mu.Lock()
			if !w.closed {
				r.complete(&h, buf[HeaderLen:])
				c.answeredLocked(w, r)
				answered = append(answered, r)
				if len(w.toSend) > 0 && !slices.Contains(touched, w) {
					touched = append(touched, w)
				}
			}
			w.mu.Unlock()
		}
		// The next requests leave before the data of these answers is copied out, so the
		// target works on them meanwhile.
		for _, w := range touched {
			w.mu.Lock()
			if !w.closed && len(w.toSend) > 0 {
				if err := c.transmit(w.toSend...); err != nil && w.err == nil {
					w.err = fmt.Errorf("aoe send: %w", err)
					w.finishLocked()
				}
			}
			clear(w.toSend)
			w.toSend = w.toSend[:0]
			w.mu.Unlock()
		}
		for _, r := range answered {
			w := r.w
			w.mu.Lock()
			if !w.closed {
				settledLocked(w, r)
			}
			w.mu.Unlock()
		}
		clear(answered)
	}
}

// answeredLocked books r's answer in its window and queues the requests that take its
// place; settledLocked completes it.
func (c *Client) answeredLocked(w *window, r *request) {
	delete(w.live, r.tag)
	if r.err != nil && w.err == nil {
		w.err = r.err
	}
	if w.err == nil {
		w.toSend = c.refillLocked(w, w.toSend)
	}
}

// settledLocked copies r's data to the caller's buffer and counts r done.
func settledLocked(w *window, r *request) {
	copy(r.into, r.data)
	r.data = nil
	w.remaining--
	w.finishLocked()
}

// refillLocked moves requests from w's queue into flight, up to Outstanding, registering
// their tags, and appends them to out.
func (c *Client) refillLocked(w *window, out []*request) []*request {
	start := len(out)
	for w.next < len(w.reqs) && len(w.live) < c.cfg.Outstanding {
		r := w.reqs[w.next]
		w.next++
		w.live[r.tag] = r
		out = append(out, r)
	}
	if len(out) > start {
		c.mu.Lock()
		for _, r := range out[start:] {
			c.pending[r.tag] = r
		}
		c.mu.Unlock()
	}
	return out
}

// answeredBy checks that an ATA response echoes the request's LBA (targets leave the LBA
// registers as sent), a second guard against a stray response with a colliding tag.
func (r *request) answeredBy(arg []byte) bool {
	if r.cmd != CommandATA || len(arg) < ATAArgLen || r.ataCmd == ATAIdentify || r.ataCmd == ATACheckPower {
		return true
	}
	return getLBA(arg[4:10]) == r.lba
}

func (r *request) complete(h *Header, arg []byte) {
	r.h = *h
	r.h.Dst, r.h.Src = nil, nil
	if h.Error {
		r.err = h.Err
		return
	}
	if r.keepArg {
		r.arg = slices.Clone(arg)
	}
	if h.Command != CommandATA {
		return
	}
	if err := r.ata.UnmarshalBinary(arg); err != nil {
		r.err = err
		return
	}
	if r.ata.CmdStatus&(StatusERR|StatusDF) != 0 {
		r.err = &ATAError{Command: r.ataCmd, Status: r.ata.CmdStatus, Err: r.ata.ErrFeature, LBA: r.lba}
		return
	}
	if r.into != nil {
		if len(r.ata.Data) < len(r.into) {
			r.err = fmt.Errorf("aoe: read returned %d bytes, want %d: %w", len(r.ata.Data), len(r.into), ErrShort)
			return
		}
		r.data = r.ata.Data // copied by settledLocked, once the next requests are out
	}
	r.ata.Data = nil
}

func (c *Client) failAll(err error) {
	c.mu.Lock()
	ps := c.pending
	c.pending = map[uint32]*request{}
	c.mu.Unlock()
	for _, r := range ps {
		w := r.w
		w.mu.Lock()
		if !w.closed {
			r.err = err
			c.answeredLocked(w, r)
			settledLocked(w, r)
		}
		w.mu.Unlock()
	}
}

// newRequest builds a request frame: header plus the argument written by fill.
func (c *Client) newRequest(cmd Command, fill func(b []byte) (int, error)) (*request, error) {
	bp := c.bufs.Get().(*[]byte)
	b := *bp
	tag := c.tagPrefix | c.tag.Add(1)&0xffff
	h := Header{Dst: c.target, Src: c.local, Version: Version, Shelf: c.shelf, Slot: c.slot, Command: cmd, Tag: tag}
	if err := h.MarshalTo(b); err != nil {
		return nil, err
	}
	n, err := fill(b[HeaderLen:])
	if err != nil {
		c.bufs.Put(bp)
		return nil, err
	}
	n += HeaderLen
	if n < MinFrameLen {
		clear(b[n:MinFrameLen])
		n = MinFrameLen
	}
	r := &request{tag: tag, cmd: cmd, frame: b[:n]}
	if cmd == CommandATA && n >= HeaderLen+ATAArgLen {
		r.ataCmd, r.lba = b[HeaderLen+3], getLBA(b[HeaderLen+4:])
	}
	return r, nil
}

func (c *Client) release(r *request) {
	b := r.frame[:cap(r.frame)]
	c.bufs.Put(&b)
	r.frame = nil
}

func (c *Client) transmit(rs ...*request) error {
	now := time.Now()
	c.txMu.Lock()
	defer c.txMu.Unlock()
	if c.txClosed {
		return errors.New("aoe: client closed")
	}
	for _, r := range rs {
		r.sent = now
		c.tx.add(r.frame, nil)
	}
	_, err := c.tx.flush()
	return err
}

// run sends the requests with at most Outstanding in flight, retransmitting on timeout, and
// returns the first error.
func (c *Client) run(ctx context.Context, reqs []*request) error {
	finished := make(chan struct{})
	w := &window{reqs: reqs, live: map[uint32]*request{}, remaining: len(reqs), finished: finished}
	for _, r := range reqs {
		r.w = w
	}
	defer func() {
		w.mu.Lock()
		w.closed = true
		live := w.live
		w.live = nil
		w.mu.Unlock()
		c.mu.Lock()
		for t := range live {
			delete(c.pending, t)
		}
		c.mu.Unlock()
		for _, r := range reqs {
			if r.frame != nil {
				c.release(r)
			}
		}
	}()
	w.mu.Lock()
	first := c.refillLocked(w, nil)
	err := c.transmit(first...)
	if err != nil {
		w.err = fmt.Errorf("aoe send: %w", err)
	}
	w.finishLocked()
	w.mu.Unlock()
	ticker := time.NewTicker(c.cfg.Timeout / 4)
	defer ticker.Stop()
	for {
		select {
		case <-finished:
			w.mu.Lock()
			err := w.err
			w.mu.Unlock()
			return err
		case now := <-ticker.C:
			w.mu.Lock()
			for _, r := range w.live {
				wait := c.cfg.Timeout << min(r.tries, 6)
				if now.Sub(r.sent) < wait {
					continue
				}
				if r.tries >= c.cfg.Retries {
					w.mu.Unlock()
					return fmt.Errorf("aoe e%d.%d tag %#x after %d tries: %w", c.shelf, c.slot, r.tag, r.tries+1, ErrTimeout)
				}
				r.tries++
				if err := c.transmit(r); err != nil {
					w.mu.Unlock()
					return fmt.Errorf("aoe resend: %w", err)
				}
			}
			w.mu.Unlock()
		case <-ctx.Done():
			return ctx.Err()
		case <-c.closed:
			return errors.New("aoe: client closed")
		}
	}
}

// do runs one request and returns it completed.
func (c *Client) do(ctx context.Context, cmd Command, keepArg bool, fill func(b []byte) (int, error)) (*request, error) {
	r, err := c.newRequest(cmd, fill)
	if err != nil {
		return nil, err
	}
	r.keepArg = keepArg
	if err := c.run(ctx, []*request{r}); err != nil {
		return r, err
	}
	return r, nil
}

// QueryConfig sends a Query Config sub-command to the target. For ConfigTest and
// ConfigTestPrefix a target that does not match stays silent: ErrTimeout.
func (c *Client) QueryConfig(ctx context.Context, cmd ConfigCommand, s string) (Config, error) {
	r, err := c.do(ctx, CommandQueryConfig, true, func(b []byte) (int, error) {
		return (&ConfigArg{Command: cmd, String: []byte(s)}).MarshalTo(b)
	})
	if err != nil {
		return Config{}, err
	}
	var ca ConfigArg
	if err := ca.UnmarshalBinary(r.arg); err != nil {
		return Config{}, err
	}
	r.h.Src = c.target
	return configFrom(&r.h, &ca), nil
}

// MACMask sends a MAC Mask List command and returns the target's answer (the list after an
// edit; on a directive error the argument's Error and the failing index in len(Directives)).
func (c *Client) MACMask(ctx context.Context, m MACMaskArg) (MACMaskArg, error) {
	r, err := c.do(ctx, CommandMACMask, true, m.MarshalTo)
	if err != nil {
		return MACMaskArg{}, err
	}
	var out MACMaskArg
	if len(r.arg) >= MACMaskArgLen && r.arg[2] != 0 {
		// Error answers carry the failing index in the count and no directives.
		return MACMaskArg{Command: MACMaskCommand(r.arg[1]), Error: MACMaskError(r.arg[2]), Directives: make([]Directive, r.arg[3])}, nil
	}
	if err := out.UnmarshalBinary(r.arg); err != nil {
		return MACMaskArg{}, err
	}
	return out, nil
}

// Reserve sends a Reserve/Release command and returns the reserve list the target holds.
func (c *Client) Reserve(ctx context.Context, a ReserveArg) ([]net.HardwareAddr, error) {
	r, err := c.do(ctx, CommandReserve, true, a.MarshalTo)
	if err != nil {
		return nil, err
	}
	var out ReserveArg
	if err := out.UnmarshalBinary(r.arg); err != nil {
		return nil, err
	}
	return out.MACs, nil
}

// ATA issues one raw ATA command and returns the response registers (Data is nil; use
// ReadAt for data). An ATA status with ERR or DF comes back as *ATAError.
func (c *Client) ATA(ctx context.Context, a ATAArg) (ATAArg, error) {
	r, err := c.do(ctx, CommandATA, false, a.MarshalTo)
	if err != nil {
		return r.ataOrZero(), err
	}
	return r.ata, nil
}

func (r *request) ataOrZero() ATAArg {
	if r == nil {
		return ATAArg{}
	}
	return r.ata
}

// Identify returns the target's ATA IDENTIFY DEVICE block.
func (c *Client) Identify(ctx context.Context) ([512]byte, error) {
	var id [512]byte
	r, err := c.newRequest(CommandATA, func(b []byte) (int, error) {
		return (&ATAArg{SectorCount: 1, CmdStatus: ATAIdentify}).MarshalTo(b)
	})
	if err != nil {
		return id, err
	}
	r.into = id[:]
	return id, c.run(ctx, []*request{r})
}

// Flush asks the target to make completed writes durable (FLUSH CACHE, 0xe7: vblade aborts
// the EXT variant, our target takes both).
func (c *Client) Flush(ctx context.Context) error {
	_, err := c.ATA(ctx, ATAArg{CmdStatus: ATAFlushCache})
	return err
}

// ReadAt reads len(p) bytes at off; both must be multiples of 512. Up to Outstanding
// requests are in flight at once.
func (c *Client) ReadAt(p []byte, off int64) (int, error) {
	if err := c.rw(context.Background(), p, off, false); err != nil {
		return 0, err
	}
	return len(p), nil
}

// WriteAt writes p at off; both must be multiples of 512. It returns once the target
// acknowledged every frame (for a DiStoNet target in its default mode: once it is durable).
func (c *Client) WriteAt(p []byte, off int64) (int, error) {
	if err := c.rw(context.Background(), p, off, true); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (c *Client) rw(ctx context.Context, p []byte, off int64, write bool) error {
	if off%SectorSize != 0 || len(p)%SectorSize != 0 || off < 0 {
		return fmt.Errorf("aoe: offset %d and length %d must be multiples of %d", off, len(p), SectorSize)
	}
	if end := uint64(off) + uint64(len(p)); c.sectors > 0 && end > c.sectors*SectorSize {
		return fmt.Errorf("aoe: range %d+%d beyond the %d-byte device", off, len(p), c.sectors*SectorSize)
	}
	chunk := c.maxSectors * SectorSize
	reqs := make([]*request, 0, (len(p)+chunk-1)/chunk)
	for o := 0; o < len(p); o += chunk {
		part := p[o:min(o+chunk, len(p))]
		a := ATAArg{Extended: true, SectorCount: uint8(len(part) / SectorSize), LBA: uint64(off+int64(o)) / SectorSize, CmdStatus: ATAReadSectorsExt}
		if write {
			a.Write, a.CmdStatus, a.Data = true, ATAWriteSectorsExt, part
		}
		r, err := c.newRequest(CommandATA, a.MarshalTo)
		if err != nil {
			for _, r := range reqs {
				c.release(r)
			}
			return err
		}
		if !write {
			r.into = part
		}
		reqs = append(reqs, r)
	}
	return c.run(ctx, reqs)
}
