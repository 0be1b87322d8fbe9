package iscsit

import (
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"net"
)

// task is one SCSI command on its way through the transport.
type task struct {
	itt      uint32
	cmdSN    uint32
	lun      [8]byte
	cdb      []byte
	edtl     uint32
	read     bool
	write    bool
	buf      []byte // Data-Out collected so far (write commands)
	received uint32
	r2tNext  uint32 // next offset to solicit
	r2tSN    uint32
	r2ts     map[uint32]*r2t // outstanding, by TTT
	unsolSN  uint32          // next DataSN of unsolicited Data-Out
}

type r2t struct{ offset, length, got, nextSN uint32 }

// Reject reasons (RFC 7143 §11.17.1).
const (
	rejectProtocolError = 0x04
	rejectNotSupported  = 0x05
	rejectInvalidField  = 0x09
)

// maxWriteBuffer bounds the Data-Out buffer one command may make us allocate: the longest
// transfer we accept.
const maxWriteBuffer = acceptTransferBlocks << blockShift

// fullFeature reads and dispatches PDUs until the connection ends.
func (c *conn) fullFeature() error {
	maxData := c.p.targetMaxRecvData
	for {
		var p PDU
		if err := c.readPDU(&p, maxData); err != nil {
			return err
		}
		var err error
		switch p.Opcode() {
		case OpSCSICommand:
			err = c.scsiCommand(&p)
		case OpDataOut:
			err = c.dataOut(&p)
		case OpNOPOut:
			err = c.nopOut(&p)
		case OpTaskMgmtReq:
			err = c.taskMgmt(&p)
		case OpTextReq:
			err = c.text(&p)
		case OpLogoutReq:
			return c.logout(&p)
		case OpLoginReq:
			c.reject(&p, rejectProtocolError)
			return fmt.Errorf("login request in full feature phase")
		case OpSNACKReq:
			c.reject(&p, rejectNotSupported) // ErrorRecoveryLevel 0
		default:
			c.reject(&p, rejectNotSupported)
		}
		if err != nil {
			return err
		}
	}
}

// readPDU reads the next PDU. The data of a Data-Out lands directly in its command's
// buffer, immediate data in the buffer the write will use: no copy, no allocation.
func (c *conn) readPDU(p *PDU, maxData uint32) error {
	if err := readHeader(c.br, p, c.p.digests); err != nil {
		return err
	}
	n := p.DataSegmentLength()
	if n > maxData {
		return fmt.Errorf("%w: %d > %d", ErrDataTooLong, n, maxData)
	}
	switch p.Opcode() {
	case OpDataOut:
		if t := c.pending[p.ITT()]; t != nil {
			off := uint64(p.u32(offBufOffset))
			if off+uint64(n) <= uint64(len(t.buf)) {
				p.Data = t.buf[off : off+uint64(n)]
				p.inPlace = true
				return readData(c.br, p.Data, c.p.digests)
			}
		}
	case OpSCSICommand:
		edtl := p.u32(offTTT)
		if p.Flags()&0x20 != 0 && n <= edtl && edtl <= maxWriteBuffer {
			p.buf = getBuf(int(edtl))
			p.Data = p.buf[:n]
			return readData(c.br, p.Data, c.p.digests)
		}
	}
	p.Data = make([]byte, n)
	return readData(c.br, p.Data, c.p.digests)
}

// send writes response PDUs. For each PDU whose statusIdx says so it assigns the next
// StatSN; all carry the current ExpCmdSN/MaxCmdSN.
func (c *conn) send(pdus []*PDU, status []bool) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	exp, maxSN := c.sess.window()
	bufs := make(net.Buffers, 0, 4*len(pdus))
	for i, p := range pdus {
		p.put32(offCmdSN, c.statSN)
		if status[i] {
			c.statSN++
		}
		p.put32(offExpStatSN, exp)
		p.put32(offMaxCmdSN, maxSN)
		var err error
		if bufs, err = appendPDU(bufs, p, c.p.digests); err != nil {
			return err
		}
	}
	// One writev for the whole answer; the data is not copied.
	_, err := bufs.WriteTo(c.nc)
	return err
}

func (c *conn) send1(p *PDU, status bool) error { return c.send([]*PDU{p}, []bool{status}) }

// reject answers a PDU we cannot process.
func (c *conn) reject(p *PDU, reason uint8) {
	c.log.Debug("iscsi reject", "opcode", p.Opcode().String(), "reason", reason, "itt", p.ITT())
	var r PDU
	r.SetOpcode(OpReject)
	r.SetFlags(0x80)
	r.BHS[2] = reason
	r.SetITT(reservedTag)
	r.Data = append([]byte(nil), p.BHS[:]...)
	if err := c.send1(&r, true); err != nil {
		c.log.Debug("iscsi reject not sent", "err", err)
	}
}

func (c *conn) scsiCommand(p *PDU) error {
	if c.sess.tgt == nil {
		c.reject(p, rejectProtocolError) // no SCSI in a discovery session
		return nil
	}
	if !c.sess.accept(p.u32(offCmdSN), p.Immediate(), true) {
		c.log.Debug("iscsi command outside the CmdSN window dropped", "cmdsn", p.u32(offCmdSN))
		return nil
	}
	flags := p.Flags()
	t := &task{
		itt:   p.ITT(),
		cmdSN: p.u32(offCmdSN),
		lun:   p.LUN(),
		edtl:  p.u32(offTTT),
		read:  flags&0x40 != 0,
		write: flags&0x20 != 0,
	}
	t.cdb = append([]byte(nil), p.BHS[32:48]...)
	// An extended CDB AHS (type 1) carries the bytes beyond 16.
	for a := p.AHS; len(a) >= 4; {
		l := int(binary.BigEndian.Uint16(a))
		if 3+l > len(a) {
			break
		}
		if a[2] == 1 && l > 1 {
			t.cdb = append(t.cdb, a[4:3+l]...)
		}
		a = a[pad4(3+l):]
	}
	if !t.write {
		if len(p.Data) > 0 {
			c.reject(p, rejectProtocolError)
			c.sess.release()
			return nil
		}
		c.submit(t)
		return nil
	}
	imm := uint32(len(p.Data))
	if imm > t.edtl || (imm > 0 && !c.p.immediate) || imm > c.p.firstBurst {
		c.reject(p, rejectProtocolError)
		c.sess.release()
		return nil
	}
	if t.edtl > maxWriteBuffer {
		// Far beyond MaxBurstLength*MaxOutstandingR2T of any sane initiator: refuse rather
		// than allocate. Unsolicited Data-Out for it will find no task and be ignored.
		c.answer(t, checkCondition(senseIllegalRequest, ascInvalidFieldInCDB))
		return nil
	}
	if p.buf != nil {
		t.buf = p.buf // immediate data already in place
	} else {
		t.buf = getBuf(int(t.edtl))
		copy(t.buf, p.Data)
	}
	t.received = imm
	unsolicitedEnd := imm
	if !c.p.initialR2T && !p.Final() {
		unsolicitedEnd = min(c.p.firstBurst, t.edtl)
	}
	t.r2tNext = unsolicitedEnd
	if t.received >= t.edtl {
		c.submit(t)
		return nil
	}
	t.r2ts = map[uint32]*r2t{}
	c.pending[t.itt] = t
	return c.issueR2Ts(t)
}

// issueR2Ts solicits the rest of a write, keeping MaxOutstandingR2T in flight.
func (c *conn) issueR2Ts(t *task) error {
	var pdus []*PDU
	for uint32(len(t.r2ts)) < c.p.maxOutstandingR2T && t.r2tNext < t.edtl {
		length := min(c.p.maxBurst, t.edtl-t.r2tNext)
		c.nextTTT++
		if c.nextTTT == reservedTag {
			c.nextTTT = 1
		}
		ttt := c.nextTTT
		t.r2ts[ttt] = &r2t{offset: t.r2tNext, length: length}
		c.byTTT[ttt] = t
		var r PDU
		r.SetOpcode(OpR2T)
		r.SetFlags(0x80)
		r.SetLUN(t.lun)
		r.SetITT(t.itt)
		r.put32(offTTT, ttt)
		r.put32(offDataSN, t.r2tSN)
		r.put32(offBufOffset, t.r2tNext)
		r.put32(offResidual, length)
		t.r2tSN++
		t.r2tNext += length
		pdus = append(pdus, &r)
	}
	if len(pdus) == 0 {
		return nil
	}
	return c.send(pdus, make([]bool, len(pdus)))
}

func (c *conn) dataOut(p *PDU) error {
	t := c.pending[p.ITT()]
	if t == nil {
		// Data for a command that was refused or aborted.
		return nil
	}
	off := p.u32(offBufOffset)
	n := uint32(len(p.Data))
	if uint64(off)+uint64(n) > uint64(t.edtl) {
		c.reject(p, rejectProtocolError)
		return nil
	}
	ttt := p.u32(offTTT)
	var rt *r2t
	if ttt != reservedTag {
		rt = t.r2ts[ttt]
		if rt == nil {
			c.reject(p, rejectInvalidField)
			return nil
		}
	}
	// DataSN numbers the PDUs of each sequence (RFC 7143 §11.7.4). At ErrorRecoveryLevel 0
	// a gap or a repeat is a digest-class error: the connection goes.
	sn := p.u32(offDataSN)
	want := &t.unsolSN
	if rt != nil {
		want = &rt.nextSN
	}
	if sn != *want {
		return fmt.Errorf("Data-Out DataSN %d, expected %d (ITT 0x%x)", sn, *want, t.itt)
	}
	*want++
	if !p.inPlace {
		copy(t.buf[off:], p.Data)
	}
	t.received += n
	if rt != nil {
		rt.got += n
		if p.Final() || rt.got >= rt.length {
			delete(t.r2ts, ttt)
			delete(c.byTTT, ttt)
		}
	}
	if t.received >= t.edtl && len(t.r2ts) == 0 {
		delete(c.pending, t.itt)
		c.submit(t)
		return nil
	}
	return c.issueR2Ts(t)
}

// submit runs a command on its own goroutine; the semaphore makes a flood of commands
// wait in TCP rather than in memory.
func (c *conn) submit(t *task) {
	c.sem <- struct{}{}
	done := make(chan struct{})
	c.runMu.Lock()
	c.running[t.itt] = done
	c.runMu.Unlock()
	c.sess.wg.Add(1)
	go func() {
		defer c.sess.wg.Done()
		defer func() { <-c.sem }()
		defer func() {
			if p := recover(); p != nil {
				c.log.Error("iscsi command answer panicked", "panic", fmt.Sprint(p))
				c.nc.Close()
			}
		}()
		r := c.execute(t)
		c.answer(t, r)
		if r.pooled {
			putBuf(r.data)
		}
		putBuf(t.buf)
		c.runMu.Lock()
		if c.running[t.itt] == done {
			delete(c.running, t.itt)
		}
		c.runMu.Unlock()
		close(done)
	}()
}

// answer sends a command's data and status: Data-In PDUs no longer than the initiator's
// MaxRecvDataSegmentLength, the status folded into the last one when the command succeeded,
// else a SCSI Response with sense data.
func (c *conn) answer(t *task, r result) {
	c.sess.release()
	kind, status := commandKind(t.cdb[0]), "good"
	if r.status != statusGood {
		status = "check"
	}
	c.srv.metrics.commands.WithLabelValues(kind, status).Inc()
	if c.log.Enabled(context.Background(), slog.LevelDebug) {
		c.log.Debug("iscsi command", "itt", t.itt, "cdb", fmt.Sprintf("%x", t.cdb), "edtl", t.edtl,
			"status", r.status, "sense", fmt.Sprintf("%x", r.sense), "data", len(r.data), "over", r.overflow, "under", r.underflow)
	}
	var pdus []*PDU
	var stat []bool
	data := r.data
	if uint32(len(data)) > t.edtl {
		data = data[:t.edtl]
	}
	if !t.read {
		data = nil
	}
	// Residuals (RFC 7143 §11.4.5) compare what the command wanted with EDTL.
	var flags uint8
	var resid uint32
	switch {
	case r.overflow > 0:
		flags, resid = 0x04, r.overflow
	case r.underflow > 0:
		flags, resid = 0x02, r.underflow
	}
	mrdsl := c.p.initiatorMaxRecvData
	var dataSN uint32
	for off := 0; off < len(data); {
		n := min(len(data)-off, int(mrdsl))
		var d PDU
		d.SetOpcode(OpDataIn)
		last := off+n == len(data)
		f := uint8(0)
		if last {
			f |= 0x80
		}
		collapse := last && r.status == statusGood && len(r.sense) == 0
		if collapse {
			f |= 0x01 | flags
			d.BHS[3] = r.status
			d.put32(offResidual, resid)
		}
		d.SetFlags(f)
		d.SetLUN(t.lun)
		d.SetITT(t.itt)
		d.put32(offTTT, reservedTag)
		d.put32(offDataSN, dataSN)
		d.put32(offBufOffset, uint32(off))
		d.Data = data[off : off+n]
		dataSN++
		pdus = append(pdus, &d)
		stat = append(stat, collapse)
		off += n
		if collapse {
			if err := c.send(pdus, stat); err != nil {
				c.log.Debug("iscsi response not sent", "err", err)
			}
			return
		}
	}
	var s PDU
	s.SetOpcode(OpSCSIResponse)
	s.SetFlags(0x80 | flags)
	s.BHS[2] = 0 // command completed at target
	s.BHS[3] = r.status
	s.SetITT(t.itt)
	s.put32(offDataSN, dataSN+t.r2tSN) // ExpDataSN
	s.put32(offResidual, resid)
	if len(r.sense) > 0 {
		s.Data = make([]byte, 2+len(r.sense))
		binary.BigEndian.PutUint16(s.Data, uint16(len(r.sense)))
		copy(s.Data[2:], r.sense)
	}
	pdus = append(pdus, &s)
	stat = append(stat, true)
	if err := c.send(pdus, stat); err != nil {
		c.log.Debug("iscsi response not sent", "err", err)
	}
}

func (c *conn) nopOut(p *PDU) error {
	if p.ITT() == reservedTag {
		return nil // answer to a NOP-In of ours
	}
	if !c.sess.accept(p.u32(offCmdSN), p.Immediate(), false) {
		return nil
	}
	var r PDU
	r.SetOpcode(OpNOPIn)
	r.SetFlags(0x80)
	r.SetLUN(p.LUN())
	r.SetITT(p.ITT())
	r.put32(offTTT, reservedTag)
	if len(p.Data) > 0 {
		r.Data = append([]byte(nil), p.Data[:min(len(p.Data), int(c.p.initiatorMaxRecvData))]...)
	}
	return c.send1(&r, true)
}

// Task management functions and responses (RFC 7143 §11.5, §11.6).
const (
	tmfAbortTask       = 1
	tmfAbortTaskSet    = 2
	tmfClearACA        = 3
	tmfClearTaskSet    = 4
	tmfLUNReset        = 5
	tmfTargetWarmReset = 6
	tmfTargetColdReset = 7
	tmfTaskReassign    = 8

	tmfComplete       = 0
	tmfNoReassign     = 4
	tmfNotSupported   = 5
	tmfAuthFailed     = 6
	tmfRejected       = 255
	tmfNoSuchTask     = 1
	tmfNoSuchLUN      = 2
	tmfTaskAllegiance = 3
)

func (c *conn) taskMgmt(p *PDU) error {
	if !c.sess.accept(p.u32(offCmdSN), p.Immediate(), false) {
		return nil
	}
	fn := p.Flags() & 0x7f
	resp := uint8(tmfComplete)
	var waits []chan struct{} // running commands the answer must follow
	var after func()
	if c.sess.tgt == nil {
		fn, resp = 0, tmfRejected // no tasks in a discovery session
	}
	switch fn {
	case 0:
	case tmfAbortTask:
		ref := p.u32(offTTT)
		if t := c.pending[ref]; t != nil {
			c.dropPending(t)
		} else {
			// Already running or answered: it completes normally, so the abort did nothing.
			waits = c.runningMatching(func(itt uint32) bool { return itt == ref })
			resp = tmfNoSuchTask
		}
	case tmfAbortTaskSet, tmfClearTaskSet, tmfLUNReset, tmfTargetWarmReset, tmfTargetColdReset:
		lun := p.LUN()
		all := fn == tmfTargetWarmReset || fn == tmfTargetColdReset
		for _, t := range c.pending {
			if all || t.lun == lun {
				c.dropPending(t)
			}
		}
		waits = c.runningMatching(func(uint32) bool { return true })
		if fn != tmfAbortTaskSet && fn != tmfClearTaskSet {
			n, ok := lunNumber(lun)
			luns := c.sess.tgt.luns
			after = func() {
				for i, lu := range luns {
					if all || (ok && i == n) {
						lu.res.reset()
					}
				}
			}
		}
	case tmfClearACA:
	case tmfTaskReassign:
		resp = tmfNoReassign
	default:
		resp = tmfNotSupported
	}
	itt := p.ITT()
	answer := func() error {
		for _, w := range waits {
			<-w
		}
		if after != nil {
			after()
		}
		var r PDU
		r.SetOpcode(OpTaskMgmtResp)
		r.SetFlags(0x80)
		r.BHS[2] = resp
		r.SetITT(itt)
		return c.send1(&r, true)
	}
	if len(waits) == 0 {
		if err := answer(); err != nil {
			return err
		}
		if fn == tmfTargetColdReset {
			return fmt.Errorf("target cold reset")
		}
		return nil
	}
	// A running file read or write cannot be interrupted: the answer waits for it, on its
	// own goroutine, so the reader keeps answering NOP-Outs and new commands meanwhile
	// (Linux aborts slow commands and would drop the connection on a missed ping).
	c.sess.wg.Add(1)
	go func() {
		defer c.sess.wg.Done()
		if err := answer(); err == nil && fn == tmfTargetColdReset {
			c.nc.Close()
		}
	}()
	return nil
}

// dropPending forgets a write that is still waiting for data (ABORT TASK and resets).
func (c *conn) dropPending(t *task) {
	delete(c.pending, t.itt)
	putBuf(t.buf)
	for ttt := range t.r2ts {
		delete(c.byTTT, ttt)
	}
	c.sess.release()
}

// runningMatching returns the completion channels of the executing commands that match.
func (c *conn) runningMatching(match func(uint32) bool) []chan struct{} {
	c.runMu.Lock()
	defer c.runMu.Unlock()
	var waits []chan struct{}
	for itt, ch := range c.running {
		if match(itt) {
			waits = append(waits, ch)
		}
	}
	return waits
}

// text answers SendTargets (RFC 7143 §12.3); other keys are not understood.
func (c *conn) text(p *PDU) error {
	if !c.sess.accept(p.u32(offCmdSN), p.Immediate(), false) {
		return nil
	}
	var kv TextParams
	if err := kv.UnmarshalBinary(p.Data); err != nil {
		c.reject(p, rejectProtocolError)
		return nil
	}
	var out TextParams
	for _, q := range kv {
		if q.Key != "SendTargets" {
			out = append(out, KV{q.Key, "NotUnderstood"})
			continue
		}
		out = append(out, c.sendTargets(q.Value)...)
	}
	data, err := out.MarshalBinary()
	if err != nil {
		return err
	}
	var r PDU
	r.SetOpcode(OpTextResp)
	r.SetFlags(0x80)
	r.SetLUN(p.LUN())
	r.SetITT(p.ITT())
	r.put32(offTTT, reservedTag)
	r.Data = data
	return c.send1(&r, true)
}

func (c *conn) sendTargets(which string) TextParams {
	var ts []*target
	if c.sess.tgt != nil {
		// In a normal session only the session's own target exists (RFC 7143 §12.3).
		ts = []*target{c.sess.tgt}
	} else {
		ts = c.srv.visibleTargets(c.sess.initiator, c.sess.chapUser)
	}
	portal := c.srv.cfg.PortalAddr
	if portal == "" {
		portal = c.nc.LocalAddr().String()
		if ta, ok := c.nc.LocalAddr().(*net.TCPAddr); ok {
			portal = net.JoinHostPort(ta.IP.String(), fmt.Sprint(ta.Port))
		}
	}
	var out TextParams
	for _, t := range ts {
		if which != "All" && which != "" && which != t.spec.IQN {
			continue
		}
		if which == "" && c.sess.tgt == nil {
			continue
		}
		out = append(out, KV{"TargetName", t.spec.IQN}, KV{"TargetAddress", portal + "," + targetPortalGroupTag})
	}
	return out
}

func (c *conn) logout(p *PDU) error {
	c.sess.accept(p.u32(offCmdSN), p.Immediate(), false)
	// Answer only after every command of the session has been answered.
	c.sess.wg.Wait()
	reason := p.Flags() & 0x7f
	var r PDU
	r.SetOpcode(OpLogoutResp)
	r.SetFlags(0x80)
	if reason == 2 {
		r.BHS[2] = 2 // connection recovery is not supported (ErrorRecoveryLevel 0)
	}
	r.SetITT(p.ITT())
	r.put16(40, uint16(c.p.time2Wait))
	r.put16(42, uint16(c.p.time2Retain))
	if err := c.send1(&r, true); err != nil {
		return err
	}
	return errLogout
}

func commandKind(op byte) string {
	switch op {
	case 0x08, 0x28, 0xa8, 0x88:
		return "read"
	case 0x0a, 0x2a, 0xaa, 0x8a, 0x2e, 0xae, 0x8e, 0x41, 0x93:
		return "write"
	case 0x35, 0x91:
		return "sync"
	}
	return "other"
}
