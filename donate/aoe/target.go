package aoe

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"

	"github.com/distonet/distonet/internal/mmsg"
	"github.com/mdlayher/packet"
	"golang.org/x/sys/unix"
)

// TargetConfig describes one exported device. Zero values are the documented defaults.
type TargetConfig struct {
	Interface string // network interface to serve on (required)
	Shelf     uint16 // AoE major address; 0xffff is reserved for broadcast
	Slot      uint8  // AoE minor address; 0xff is reserved for broadcast
	Device    string // file or block device to export (required)
	// StateFile keeps the MAC mask list, reserve list and config string across restarts
	// (JSON, written atomically). Empty: kept in memory only, like vblade.
	StateFile string
	// Unsafe acknowledges writes before they reach stable storage (vblade's default). The
	// default is durable: a write is acknowledged only after an fdatasync that covers it.
	Unsafe bool
	// AllowMACs are added to the MAC mask list at start (union with the persisted list). A
	// non-empty list means only those initiators get any answer.
	AllowMACs []net.HardwareAddr
	// BufferCount is the number of outstanding frames advertised in Query Config; the Linux
	// driver uses it as its window. Default 64.
	BufferCount int
	// MTU overrides the interface MTU when sizing frames (0: the interface's).
	MTU int
	// Serial and Model appear in IDENTIFY. Defaults: "<shelf>.<slot>:<hostname>" as vblade,
	// and "DiStoNet AoE target".
	Serial, Model string
}

// TargetStats counts what a target did since it started.
type TargetStats struct {
	Frames    uint64 // AoE requests addressed to us and processed
	Dropped   uint64 // frames ignored: malformed, masked MAC, not for us
	Reads     uint64 // ATA read commands served
	Writes    uint64 // ATA write commands served
	Syncs     uint64 // fdatasync calls (group commits)
	ATAErrors uint64 // ATA commands answered with ERR
	Batches   uint64 // receive batches: wake-ups from the ring, or recvmmsg calls without it (Frames/Batches is the batching achieved)
	SendErrs  uint64 // responses the kernel refused (link down, buffers full): the initiator retransmits
}

// Target serves one device over AoE on one interface.
type Target struct {
	cfg        TargetConfig
	log        *slog.Logger
	conn       *packet.Conn // receives; Query Config announcements
	tx         *txSocket    // sends responses (nil in unit tests without a socket)
	ring       *rxRing      // receive ring on conn; nil: recvmmsg
	mac        net.HardwareAddr
	dev        backing
	sectors    uint64
	maxSectors int
	frameSize  int
	bufcnt     int
	state      *targetState
	ident      [512]byte

	bufs    sync.Pool
	commitq chan *frame
	done    chan struct{}
	once    sync.Once
	wg      sync.WaitGroup

	closeOnce sync.Once
	closeErr  error
	serving   atomic.Bool

	frames, dropped, reads, writes, syncs, ataErrors, batches, sendErrs, ioErrs atomic.Uint64

	// Reads of one received batch are collected and served together (Serve's goroutine only).
	batching bool
	pending  []pendingRead
	iovs     [][]byte
	// mapped is the device mapping while Serve runs with a mappable backing: reads then
	// answer with a reference into it instead of a copy (see frame.ext). mappedRead counts
	// the bytes sent from it since it was last renewed (see remapBytes).
	mapped     []byte
	mappedDev  mappedBacking
	mappedRead int64
	remaps     atomic.Uint64
}

// mappedBacking is a backing that can hand out a mapping of the whole device.
type mappedBacking interface {
	mapping() []byte
	remap() ([]byte, error)
}

// remapBytes is how much is read through one mapping before it is renewed, which frees its
// page tables: at most 2 MB of them, for the cost of a munmap per GB read.
var remapBytes int64 = 1 << 30

// renewMapping swaps the device mapping for a fresh one once remapBytes went through it.
// Serve's goroutine only, between batches: no frame refers to the mapping then.
func (t *Target) renewMapping() {
	if t.mappedDev == nil || t.mappedRead < remapBytes {
		return
	}
	t.mappedRead = 0
	t.remaps.Add(1)
	m, err := t.mappedDev.remap()
	if err != nil {
		t.log.Warn("aoe device mapping not renewed", "err", err)
	}
	t.mapped = m
}

// pendingRead is a read whose response frame waits for flushReads.
type pendingRead struct {
	f     *frame
	data  []byte
	off   int64
	count uint8
}

// frame is one request buffer, reused in place for its response.
type frame struct {
	b   []byte
	n   int // response length once handled (without ext)
	dst net.HardwareAddr
	// ext is a read's data when it is sent by reference from the device mapping (at byte
	// extOff), after b[:n]: the kernel copies it straight into the socket buffer.
	ext    []byte
	extOff int64
}

// NewTarget opens the device, the state file and the raw socket. The socket is bound to the
// network namespace of the calling thread, so tests may create it inside a namespace and
// Serve it from anywhere.
func NewTarget(cfg TargetConfig, logger *slog.Logger) (*Target, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Interface == "" {
		return nil, errors.New("aoe target: interface is required")
	}
	if cfg.Device == "" {
		return nil, errors.New("aoe target: device is required")
	}
	if cfg.Shelf == BroadcastShelf || cfg.Slot == BroadcastSlot {
		return nil, fmt.Errorf("aoe target: address e%d.%d is reserved for broadcast", cfg.Shelf, cfg.Slot)
	}
	if cfg.BufferCount <= 0 {
		cfg.BufferCount = 64
	}
	if cfg.BufferCount > 0xffff {
		return nil, fmt.Errorf("aoe target: buffer count %d exceeds 65535", cfg.BufferCount)
	}
	if cfg.Serial == "" {
		host, _ := os.Hostname()
		cfg.Serial = fmt.Sprintf("%d.%d:%s", cfg.Shelf, cfg.Slot, host)
	}
	if cfg.Model == "" {
		cfg.Model = "DiStoNet AoE target"
	}
	state, err := loadState(cfg.StateFile)
	if err != nil {
		return nil, fmt.Errorf("aoe target: %w", err)
	}
	if err := state.addMasks(cfg.AllowMACs); err != nil {
		return nil, fmt.Errorf("aoe target: %w", err)
	}
	dev, size, err := openBacking(cfg.Device)
	if err != nil {
		return nil, fmt.Errorf("aoe target: %w", err)
	}
	if size < SectorSize {
		dev.Close()
		return nil, fmt.Errorf("aoe target: device %s holds %d bytes, less than one sector", cfg.Device, size)
	}
	conn, ifi, err := listen(cfg.Interface)
	if err != nil {
		dev.Close()
		return nil, fmt.Errorf("aoe target: %w", err)
	}
	tx, err := openTxSocket(ifi.Index)
	if err != nil {
		conn.Close()
		dev.Close()
		return nil, fmt.Errorf("aoe target on %s: %w", cfg.Interface, err)
	}
	t, err := newTarget(cfg, logger, conn, ifi, dev, uint64(size)/SectorSize, state)
	if err != nil {
		tx.Close()
		conn.Close()
		dev.Close()
		return nil, err
	}
	t.tx = tx
	// The receive ring spares a system call per batch; recvmmsg does the same job where
	// the kernel refuses a ring (an unprivileged or very old kernel).
	if rc, err := conn.SyscallConn(); err == nil && !noRxRing {
		if t.ring, err = newRxRing(rc, t.frameSize); err != nil {
			t.log.Debug("aoe receive ring unavailable, using recvmmsg", "err", err)
		}
	}
	return t, nil
}

func newTarget(cfg TargetConfig, logger *slog.Logger, conn *packet.Conn, ifi *net.Interface, dev backing, sectors uint64, state *targetState) (*Target, error) {
	mtu := cfg.MTU
	if mtu == 0 {
		mtu = ifi.MTU
	}
	spf := SectorsPerFrame(mtu)
	if spf < 1 {
		return nil, fmt.Errorf("aoe target: mtu %d cannot carry one sector", mtu)
	}
	t := &Target{
		cfg:        cfg,
		log:        logger.With("stage", "aoe", "shelf", cfg.Shelf, "slot", cfg.Slot),
		conn:       conn,
		mac:        ifi.HardwareAddr,
		dev:        dev,
		sectors:    sectors,
		maxSectors: spf,
		frameSize:  max(14+mtu, HeaderLen+ATAArgLen+spf*SectorSize, HeaderLen+ConfigArgLen+MaxConfigString),
		bufcnt:     cfg.BufferCount,
		state:      state,
		ident:      Identify(sectors, cfg.Serial, cfg.Model, "V1"),
		commitq:    make(chan *frame, 2*cfg.BufferCount),
		done:       make(chan struct{}),
	}
	t.bufs.New = func() any { return &frame{b: make([]byte, t.frameSize)} }
	return t, nil
}

// noRxRing makes NewTarget use recvmmsg, as on a kernel that refuses a ring (tests).
var noRxRing bool

// Sectors is the exported capacity in 512-byte sectors.
func (t *Target) Sectors() uint64 { return t.sectors }

// HardwareAddr is the MAC the target answers from.
func (t *Target) HardwareAddr() net.HardwareAddr { return t.mac }

// SectorsPerFrame is the largest ATA transfer the target accepts in one frame.
func (t *Target) SectorsPerFrame() int { return t.maxSectors }

// Masks returns the current MAC mask list.
func (t *Target) Masks() []net.HardwareAddr { return t.state.Masks() }

// Reservations returns the current reserve list.
func (t *Target) Reservations() []net.HardwareAddr { return t.state.Reserve() }

// Stats returns the counters.
func (t *Target) Stats() TargetStats {
	return TargetStats{
		Frames: t.frames.Load(), Dropped: t.dropped.Load(), Reads: t.reads.Load(),
		Writes: t.writes.Load(), Syncs: t.syncs.Load(), ATAErrors: t.ataErrors.Load(), Batches: t.batches.Load(),
		SendErrs: t.sendErrs.Load(),
	}
}

// Serve answers requests until ctx ends or Close is called; it then returns nil. It first
// announces the target with an unsolicited Query Config response, as vblade does, so
// initiators that are already listening (the Linux driver) find it without a new discovery.
func (t *Target) Serve(ctx context.Context) error {
	select {
	case <-t.done:
		return errors.New("aoe target: closed")
	default:
	}
	if !t.serving.CompareAndSwap(false, true) {
		return errors.New("aoe target: already serving")
	}
	t.wg.Add(1)
	defer t.wg.Done()
	// Close may have run between the first check and Add, without waiting for us: the ring
	// and the send socket may be gone already.
	select {
	case <-t.done:
		return nil
	default:
	}
	stop := context.AfterFunc(ctx, func() { t.shutdown() })
	defer stop()

	t.announce()
	t.log.Info("aoe target serving", "interface", t.cfg.Interface, "device", t.cfg.Device,
		"sectors", t.sectors, "sectors_per_frame", t.maxSectors, "durable", !t.cfg.Unsafe)
	rc, err := t.conn.SyscallConn()
	if err != nil {
		select {
		case <-t.done: // closed before it really started
			return nil
		default:
		}
		return fmt.Errorf("aoe target: %w", err)
	}
	tx := newSender(t.tx)
	if m, ok := t.dev.(mappedBacking); ok {
		t.mapped, t.mappedDev = m.mapping(), m
	}
	if !t.cfg.Unsafe {
		t.wg.Add(1)
		go t.commitLoop(newSender(t.tx))
	}
	// Receives wait in the netpoller: measured here, a blocking recvmmsg cost more CPU per
	// frame (the runtime's sysmon keeps retaking the P of a goroutine parked in a syscall).
	if t.ring != nil {
		return t.serveRing(tx)
	}
	rx := mmsg.NewReceiver(rc, batchSize)
	frames := make([]*frame, batchSize)
	bufs := make([][]byte, batchSize)
	lens := make([]int, batchSize)
	out := make([]*frame, 0, batchSize)
	for {
		for i := range frames {
			if frames[i] == nil {
				frames[i] = t.bufs.Get().(*frame)
			}
			bufs[i] = frames[i].b
		}
		n, err := rx.Recv(bufs, lens)
		if err != nil {
			for _, f := range frames {
				t.bufs.Put(f)
			}
			select {
			case <-t.done:
				return nil
			default:
			}
			return fmt.Errorf("aoe target: read: %w", err)
		}
		t.batches.Add(1)
		out = out[:0]
		t.batching = true
		for i := range n {
			f := frames[i]
			frames[i] = nil
			if t.handle(f, lens[i]) {
				out = append(out, f)
			}
		}
		t.finishBatch(tx, out)
	}
}

// serveRing is Serve's loop on the receive ring: it takes what the ring holds (a batch at
// most), answers, and waits in the netpoller only when the ring is empty.
func (t *Target) serveRing(tx *sender) error {
	out := make([]*frame, 0, batchSize)
	for {
		if err := t.ring.wait(); err != nil {
			select {
			case <-t.done:
				return nil
			default:
			}
			return fmt.Errorf("aoe target: read: %w", err)
		}
		t.batches.Add(1)
		out = out[:0]
		t.batching = true
		for range batchSize {
			data, ok := t.ring.peek()
			if !ok {
				break
			}
			f := t.bufs.Get().(*frame)
			n := copy(f.b, data)
			t.ring.release()
			if t.handle(f, n) {
				out = append(out, f)
			}
		}
		t.finishBatch(tx, out)
	}
}

// finishBatch ends a receive batch the same way on both receive paths: the reads it gathered
// are served (flushReads), the answers leave, and the device mapping is renewed when due.
func (t *Target) finishBatch(tx *sender, out []*frame) {
	t.batching = false
	t.flushReads()
	t.sendFrames(tx, out)
	t.renewMapping()
}

// sendFrames transmits responses in as few system calls as possible and recycles them.
func (t *Target) sendFrames(tx *sender, fs []*frame) {
	for rest := fs; len(rest) > 0; {
		for _, f := range rest {
			tx.add(f.b[:f.n], f.ext)
		}
		k, err := tx.flush()
		if err == nil {
			break
		}
		if errors.Is(err, unix.EFAULT) && k < len(rest) && rest[k].ext != nil {
			// The mapping could not be read (a file truncated under us): copy what can be
			// read, turning the frame into an ATA error if nothing can, and go on.
			t.copyExt(rest[k])
			rest = rest[k:]
			continue
		}
		// Logged once per hundred failures: a downed link must not flood the journal.
		failed := uint64(len(rest) - k)
		if n := t.sendErrs.Add(failed); n%100 < failed {
			select {
			case <-t.done:
			default:
				t.log.Warn("aoe send failed", "frames", failed, "failed_total", n, "err", err)
			}
		}
		break
	}
	for _, f := range fs {
		f.ext = nil
		t.bufs.Put(f)
	}
}

// copyExt brings a read's data from the mapping into the frame itself, or turns the frame
// into an ATA error response when the device cannot be read there.
func (t *Target) copyExt(f *frame) {
	const base = HeaderLen + ATAArgLen
	off := f.extOff
	data := f.b[base : base+len(f.ext)]
	f.ext = nil
	if k, err := t.dev.ReadAt(data, off); err != nil || k != len(data) {
		t.ioWarn("aoe read failed", "offset", off, "bytes", len(data), "err", err)
		regs := f.b[HeaderLen : HeaderLen+ATAArgLen]
		regs[3], regs[1], regs[2] = StatusDRDY|StatusERR, ErrUNC, uint8(len(data)/SectorSize)
		t.ataErrors.Add(1)
		f.n = max(base, MinFrameLen)
		return
	}
	f.n = base + len(data)
}

// Close stops Serve, waits for pending responses and closes the device and socket. It may be
// called more than once.
func (t *Target) Close() error {
	t.shutdown()
	t.wg.Wait()
	t.closeOnce.Do(func() {
		if t.tx != nil { // nothing sends any more: Serve and the committer are done
			_ = t.tx.Close()
		}
		if t.ring != nil { // nor reads: the socket is closed
			_ = t.ring.Close()
		}
		// Flush what was written in unsafe mode; in durable mode nothing is left to flush.
		t.closeErr = errors.Join(t.dev.Sync(), t.dev.Close())
	})
	return t.closeErr
}

func (t *Target) shutdown() {
	t.once.Do(func() {
		close(t.done)
		t.conn.Close()
	})
}

func (t *Target) send(f *frame) {
	if _, err := t.conn.WriteTo(f.b[:f.n], &packet.Addr{HardwareAddr: f.dst}); err != nil {
		t.sendErrs.Add(1)
		select {
		case <-t.done:
		default:
			t.log.Debug("aoe send failed", "mac", f.dst.String(), "err", err)
		}
	}
	t.bufs.Put(f)
}

// announce broadcasts a Query Config response (to each allowed MAC when the mask list is set).
func (t *Target) announce() {
	dsts := t.state.Masks()
	if len(dsts) == 0 {
		dsts = []net.HardwareAddr{{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}}
	}
	for _, d := range dsts {
		f := t.bufs.Get().(*frame)
		clear(f.b[:MinFrameLen])
		h := Header{Dst: d, Src: t.mac, Version: Version, Response: true, Shelf: t.cfg.Shelf, Slot: t.cfg.Slot, Command: CommandQueryConfig}
		_ = h.MarshalTo(f.b)
		f.n = HeaderLen + t.configInto(f.b[HeaderLen:], ConfigRead)
		f.n = max(f.n, MinFrameLen)
		f.dst = d
		t.send(f)
	}
}

func (t *Target) configInto(b []byte, cmd ConfigCommand) int {
	t.state.mu.RLock()
	c := ConfigArg{
		BufferCount: uint16(t.bufcnt), FirmwareVersion: FirmwareVersion,
		SectorCount: uint8(t.maxSectors), Version: Version, Command: cmd, String: t.state.config,
	}
	n, _ := c.MarshalTo(b)
	t.state.mu.RUnlock()
	return n
}

// handle processes the request in f.b[:n] and turns f into its response. It returns false
// when nothing is to be sent now: the frame was dropped (and returned to the pool) or handed
// to the group committer.
func (t *Target) handle(f *frame, n int) bool {
	var h Header
	if err := h.UnmarshalBinary(f.b[:n]); err != nil || h.Response {
		t.drop(f)
		return false
	}
	broadcast := h.Shelf == BroadcastShelf || h.Slot == BroadcastSlot
	if (h.Shelf != t.cfg.Shelf && h.Shelf != BroadcastShelf) || (h.Slot != t.cfg.Slot && h.Slot != BroadcastSlot) {
		t.drop(f)
		return false
	}
	src := h.Src
	if !t.state.maskAllows(src) {
		t.drop(f)
		return false
	}
	// Only discovery may be broadcast: a stray broadcast must never read or write the disk.
	if broadcast && h.Command != CommandQueryConfig {
		t.drop(f)
		return false
	}
	t.frames.Add(1)
	f.dst = append(f.dst[:0], src...)
	f.ext = nil
	arg := f.b[HeaderLen:n]
	respLen := n // unknown commands are echoed back with the error set, as vblade does
	var aerr Error
	deferred := false
	switch {
	case h.Version != Version:
		aerr = ErrorUnsupportedVersion
	case h.Command == CommandATA:
		respLen, aerr, deferred = t.ata(f, arg, src)
	case h.Command == CommandQueryConfig:
		var ok bool
		respLen, aerr, ok = t.queryConfig(f.b, arg)
		if !ok {
			t.bufs.Put(f)
			return false
		}
	case h.Command == CommandMACMask:
		respLen, aerr = t.macMask(f.b, arg)
	case h.Command == CommandReserve:
		respLen, aerr = t.reserve(f.b, arg, src)
	default:
		aerr = ErrorUnrecognizedCommand
	}
	if respLen == 0 { // malformed beyond answering
		t.drop(f)
		return false
	}
	// Turn the request header into the response header in place.
	copy(f.b[0:6], f.dst)
	copy(f.b[6:12], t.mac)
	flags := f.b[14]&0xf0 | 0x08
	if aerr != 0 {
		flags |= 0x04
		f.b[15] = uint8(aerr)
	}
	f.b[14] = flags
	binary.BigEndian.PutUint16(f.b[16:18], t.cfg.Shelf)
	f.b[18] = t.cfg.Slot
	if respLen+len(f.ext) < MinFrameLen {
		clear(f.b[respLen:MinFrameLen])
		respLen = MinFrameLen
	}
	f.n = respLen
	if deferred {
		select {
		case t.commitq <- f:
		case <-t.done:
			t.bufs.Put(f)
		}
		return false
	}
	return true
}

func (t *Target) drop(f *frame) {
	t.dropped.Add(1)
	t.bufs.Put(f)
}

// ata runs one ATA command with the registers and data in arg (which aliases f.b). It
// returns the response length, an AoE error, and whether the response waits for a sync.
func (t *Target) ata(f *frame, arg []byte, src net.HardwareAddr) (int, Error, bool) {
	const base = HeaderLen + ATAArgLen
	var a ATAArg
	if err := a.UnmarshalBinary(arg); err != nil {
		return 0, 0, false
	}
	regs := f.b[HeaderLen : HeaderLen+ATAArgLen]
	setRegs := func(status, errReg, count uint8) {
		regs[3], regs[1], regs[2] = status, errReg, count
		if status&StatusERR != 0 {
			t.ataErrors.Add(1)
		}
	}
	if a.CmdStatus != ATAIdentify && !t.state.reserveAllows(src) {
		return base, ErrorTargetReserved, false
	}
	var lba uint64
	switch a.CmdStatus {
	case ATAIdentify:
		if a.SectorCount != 1 {
			return base, ErrorBadArgument, false
		}
		copy(f.b[base:base+512], t.ident[:])
		setRegs(StatusDRDY, 0, 0)
		return base + 512, 0, false
	case ATACheckPower:
		setRegs(StatusDRDY, 0, 0xff) // active or idle
		return base, 0, false
	case ATAFlushCache, ATAFlushCacheExt:
		setRegs(StatusDRDY, 0, 0)
		if t.cfg.Unsafe {
			if err := t.dev.Sync(); err != nil {
				setRegs(StatusDRDY|StatusERR|StatusDF, ErrABRT, 0)
			}
			t.syncs.Add(1)
			return base, 0, false
		}
		// Durable: every acknowledged write is synced already; queue behind pending writes.
		return base, 0, true
	case ATAReadSectors, ATAWriteSectors:
		lba = a.LBA & maxLBA28 // the driver puts device bits 0xe0 in lba byte 3
	case ATAReadSectorsExt, ATAWriteSectorsExt:
		lba = a.LBA
	default:
		setRegs(StatusDRDY|StatusERR, ErrABRT, a.SectorCount)
		return base, 0, false
	}
	count := int(a.SectorCount)
	write := a.CmdStatus == ATAWriteSectors || a.CmdStatus == ATAWriteSectorsExt
	if count > t.maxSectors {
		return base, ErrorBadArgument, false
	}
	if lba+uint64(count) > t.sectors {
		setRegs(StatusDRDY|StatusERR, ErrIDNF, a.SectorCount)
		return base, 0, false
	}
	data := f.b[base : base+count*SectorSize]
	off := int64(lba) * SectorSize
	if !write {
		t.reads.Add(1)
		if t.batching && t.mapped != nil {
			f.ext, f.extOff = t.mapped[off:off+int64(len(data))], off
			t.mappedRead += int64(len(data))
			setRegs(StatusDRDY, 0, 0)
			return base, 0, false
		}
		if t.batching {
			// Served by flushReads with its neighbours in one preadv.
			t.pending = append(t.pending, pendingRead{f: f, data: data, off: off, count: a.SectorCount})
			setRegs(StatusDRDY, 0, 0)
			return base + len(data), 0, false
		}
		if k, err := t.dev.ReadAt(data, off); err != nil || k != len(data) {
			t.ioWarn("aoe read failed", "lba", lba, "sectors", count, "err", err)
			setRegs(StatusDRDY|StatusERR, ErrUNC, a.SectorCount)
			return base, 0, false
		}
		setRegs(StatusDRDY, 0, 0)
		return base + len(data), 0, false
	}
	if len(a.Data) < len(data) {
		return base, ErrorBadArgument, false
	}
	t.writes.Add(1)
	if k, err := t.dev.WriteAt(data, off); err != nil || k != len(data) {
		t.ioWarn("aoe write failed", "lba", lba, "sectors", count, "err", err)
		setRegs(StatusDRDY|StatusERR|StatusDF, ErrABRT, a.SectorCount)
		return base, 0, false
	}
	setRegs(StatusDRDY, 0, 0)
	return base, 0, !t.cfg.Unsafe
}

// ioWarn logs the first device error and every hundredth after it: a dying disk must not
// flood the journal at frame rate (the count is in Stats().ATAErrors).
func (t *Target) ioWarn(msg string, args ...any) {
	if n := t.ioErrs.Add(1); n == 1 || n%100 == 0 {
		t.log.Warn(msg, append(args, "device_errors", n)...)
	}
}

// flushReads serves the batch's reads, one preadv per run of contiguous requests: an
// initiator streaming with many tags sends neighbours together, and a busy machine delivers
// them in the same batch, so the busier the target the fewer system calls per frame.
func (t *Target) flushReads() {
	ps := t.pending
	for i := 0; i < len(ps); {
		j := i + 1
		for j < len(ps) && ps[j].off == ps[j-1].off+int64(len(ps[j-1].data)) {
			j++
		}
		iovs := t.iovs[:0]
		total := 0
		for _, p := range ps[i:j] {
			iovs = append(iovs, p.data)
			total += len(p.data)
		}
		t.iovs = iovs[:0]
		k, err := readv(t.dev, iovs, ps[i].off)
		if err != nil || k != total {
			t.ioWarn("aoe read failed", "offset", ps[i].off, "bytes", total, "err", err)
			for _, p := range ps[i:j] {
				regs := p.f.b[HeaderLen : HeaderLen+ATAArgLen]
				regs[3], regs[1], regs[2] = StatusDRDY|StatusERR, ErrUNC, p.count
				p.f.n = MinFrameLen
				t.ataErrors.Add(1)
			}
		}
		i = j
	}
	clear(ps)
	t.pending = ps[:0]
}

// commitLoop is the group commit: it takes every write response queued while the previous
// fdatasync ran, syncs once for all of them, then sends them.
func (t *Target) commitLoop(tx *sender) {
	defer t.wg.Done()
	batch := make([]*frame, 0, cap(t.commitq))
	for {
		select {
		case f := <-t.commitq:
			batch = append(batch, f)
		case <-t.done:
			return
		}
	drain:
		for {
			select {
			case f := <-t.commitq:
				batch = append(batch, f)
			default:
				break drain
			}
		}
		err := t.dev.Sync()
		t.syncs.Add(1)
		if err != nil {
			t.log.Error("aoe fdatasync failed: failing the batch", "writes", len(batch), "err", err)
		}
		if err != nil {
			for _, f := range batch {
				regs := f.b[HeaderLen : HeaderLen+ATAArgLen]
				regs[3], regs[1] = StatusDRDY|StatusERR|StatusDF, ErrABRT
				t.ataErrors.Add(1)
			}
		}
		t.sendFrames(tx, batch)
		clear(batch)
		batch = batch[:0]
	}
}

// queryConfig answers Query Config Information the way vblade does. ok=false: no answer
// (a test or prefix that does not match, or a malformed set).
func (t *Target) queryConfig(b, arg []byte) (int, Error, bool) {
	if len(arg) < ConfigArgLen {
		return 0, 0, false
	}
	cmd := ConfigCommand(arg[5] & 0xf)
	var c ConfigArg
	if err := c.UnmarshalBinary(arg); err != nil && cmd != ConfigRead {
		return 0, 0, false
	}
	var aerr Error
	t.state.mu.Lock()
	cur := t.state.config
	switch cmd {
	case ConfigRead:
	case ConfigTest:
		if !bytes.Equal(c.String, cur) {
			t.state.mu.Unlock()
			return 0, 0, false
		}
	case ConfigTestPrefix:
		if !bytes.HasPrefix(cur, c.String) {
			t.state.mu.Unlock()
			return 0, 0, false
		}
	case ConfigSet:
		if len(cur) > 0 && !bytes.Equal(cur, c.String) {
			aerr = ErrorConfigStringPresent
			break
		}
		fallthrough
	case ConfigForceSet:
		if !bytes.Equal(cur, c.String) {
			t.state.config = bytes.Clone(c.String)
			if err := t.state.saveLocked(); err != nil {
				t.log.Error("aoe config string not persisted", "err", err)
			}
		}
	default:
		aerr = ErrorBadArgument
	}
	t.state.mu.Unlock()
	return HeaderLen + t.configInto(b[HeaderLen:], cmd), aerr, true
}

// macMask reads or edits the MAC mask list (AoE r11 section 3.3), persisting edits.
func (t *Target) macMask(b, arg []byte) (int, Error) {
	var m MACMaskArg
	if err := m.UnmarshalBinary(arg); err != nil {
		return 0, 0
	}
	out := b[HeaderLen:]
	t.state.mu.Lock()
	defer t.state.mu.Unlock()
	switch m.Command {
	case MACMaskEdit:
		changed := false
		for i, d := range m.Directives {
			var merr MACMaskError
			switch d.Command {
			case DirectiveNone:
			case DirectiveAdd:
				if containsMAC(t.state.masks, d.MAC) {
					break
				}
				if len(t.state.masks) >= MaxMasks {
					merr = MACMaskErrListFull
					break
				}
				t.state.masks = append(t.state.masks, d.MAC)
				changed = true
			case DirectiveDelete:
				for j, x := range t.state.masks {
					if bytes.Equal(x, d.MAC) {
						t.state.masks = append(t.state.masks[:j], t.state.masks[j+1:]...)
						changed = true
						break
					}
				}
			default:
				merr = MACMaskErrBadCommand
			}
			if merr != 0 {
				// Report the failing directive's index; earlier ones stay applied (vblade).
				t.persistLocked(changed)
				out[2], out[3] = uint8(merr), uint8(i)
				return HeaderLen + MACMaskArgLen, 0
			}
		}
		t.persistLocked(changed)
		fallthrough
	case MACMaskRead:
		resp := MACMaskArg{Command: m.Command}
		for _, x := range t.state.masks {
			resp.Directives = append(resp.Directives, Directive{MAC: x})
		}
		n, err := resp.MarshalTo(out)
		if err != nil {
			return 0, 0
		}
		return HeaderLen + n, 0
	default:
		return HeaderLen + MACMaskArgLen, ErrorBadArgument
	}
}

func (t *Target) persistLocked(changed bool) {
	if !changed {
		return
	}
	if err := t.state.saveLocked(); err != nil {
		t.log.Error("aoe mask list not persisted", "err", err)
	}
}

// reserve reads or sets the reserve list (AoE r11 section 3.4), persisting changes.
func (t *Target) reserve(b, arg []byte, src net.HardwareAddr) (int, Error) {
	if len(arg) < ReserveArgLen { // as vblade: too short to answer
		return 0, 0
	}
	var r ReserveArg
	if err := r.UnmarshalBinary(arg); err != nil {
		// A MAC count beyond the frame: a set is refused, a read is still answered.
		if ReserveCommand(arg[0]) != ReserveRead {
			return HeaderLen + ReserveArgLen, ErrorBadArgument
		}
		r = ReserveArg{Command: ReserveRead}
	}
	var aerr Error
	t.state.mu.Lock()
	defer t.state.mu.Unlock()
	switch r.Command {
	case ReserveRead:
	case ReserveSet:
		if len(t.state.reserve) > 0 && !containsMAC(t.state.reserve, src) {
			aerr = ErrorTargetReserved
			break
		}
		fallthrough
	case ReserveForceSet:
		t.state.reserve = r.MACs
		if err := t.state.saveLocked(); err != nil {
			t.log.Error("aoe reserve list not persisted", "err", err)
		}
	default:
		aerr = ErrorBadArgument
	}
	resp := ReserveArg{Command: r.Command, MACs: t.state.reserve}
	n, err := resp.MarshalTo(b[HeaderLen:])
	if err != nil {
		return 0, 0
	}
	return HeaderLen + n, aerr
}
