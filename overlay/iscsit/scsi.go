package iscsit

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"runtime/debug"

	"github.com/gostor/gotgt/pkg/api"
)

// SCSI status and sense codes used by the commands we answer ourselves.
const (
	statusGood           = 0x00
	statusCheckCondition = 0x02

	senseNotReady       = 0x02
	senseMediumError    = 0x03
	senseHardwareError  = 0x04
	senseIllegalRequest = 0x05

	ascInvalidOpcode           = 0x2000
	ascLBAOutOfRange           = 0x2100
	ascInvalidFieldInCDB       = 0x2400
	ascLUNNotSupported         = 0x2500
	ascInvalidFieldParam       = 0x2600
	ascParamListLength         = 0x1a00
	ascWriteError              = 0x0c00
	ascReadError               = 0x1100
	ascInternalTgtFailure      = 0x4400
	ascMiscompareVerify        = 0x1d00
	ascSavingParamsUnsupported = 0x3900
	senseMiscompare            = 0x0e
)

// result is what a command produced: data for the initiator, status, sense, and the
// residual relative to the iSCSI expected data transfer length.
type result struct {
	status    uint8
	sense     []byte
	data      []byte
	overflow  uint32
	underflow uint32
	pooled    bool // data came from getBuf and goes back after sending
}

func good() result { return result{status: statusGood} }

// checkCondition builds fixed-format sense data (SPC-4 §4.5.3).
func checkCondition(key uint8, ascq uint16) result {
	s := make([]byte, 18)
	s[0] = 0x70
	s[2] = key
	s[7] = 10
	s[12], s[13] = uint8(ascq>>8), uint8(ascq)
	return result{status: statusCheckCondition, sense: s}
}

// withResidual sets the residual for a command that wanted `want` bytes.
func (r result) withResidual(want, edtl uint32) result {
	switch {
	case want > edtl:
		r.overflow = want - edtl
	case want < edtl:
		r.underflow = edtl - want
	}
	return r
}

// lunNumber decodes a single-level LUN (SAM-5 §4.7): peripheral or flat addressing.
func lunNumber(l [8]byte) (int, bool) {
	switch l[0] >> 6 {
	case 0:
		if l[0] != 0 {
			return 0, false
		}
		return int(l[1]), true
	case 1:
		return int(l[0]&0x3f)<<8 | int(l[1]), true
	}
	return 0, false
}

// execute runs one command. The data path (READ, WRITE, WRITE SAME, UNMAP, SYNCHRONIZE
// CACHE) and the answers gotgt's core gets wrong are ours; everything else goes to gotgt.
func (c *conn) execute(t *task) (r result) {
	defer func() {
		if p := recover(); p != nil {
			c.log.Error("iscsi command panicked", "opcode", fmt.Sprintf("0x%02x", t.cdb[0]), "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			r = checkCondition(senseHardwareError, ascInternalTgtFailure)
		}
	}()
	op := t.cdb[0]
	n, ok := lunNumber(t.lun)
	var lu *lunit
	if ok && n < len(c.sess.tgt.luns) {
		lu = c.sess.tgt.luns[n]
	}
	if lu == nil {
		switch op {
		case 0x12: // INQUIRY of a LUN that is not there: peripheral qualifier 3
			return c.inquiryNoLUN(t)
		case 0xa0: // REPORT LUNS works on any LUN
			return c.gotgt(t, c.sess.tgt.luns[0])
		}
		return checkCondition(senseIllegalRequest, ascLUNNotSupported)
	}
	n1 := c.sess.nexus()
	if lu.res.conflict(n1, t.cdb) {
		return conflictResult()
	}
	switch op {
	case 0x16, 0x17, 0x56, 0x57:
		return c.reserve6(t, lu, n1)
	case 0x5e:
		return c.persistentReserveIn(t, lu)
	case 0x5f:
		return c.persistentReserveOut(t, lu, n1)
	case 0x08, 0x28, 0xa8, 0x88:
		return c.readBlocks(t, lu)
	case 0x0a, 0x2a, 0xaa, 0x8a, 0x2e, 0xae, 0x8e:
		return c.writeBlocks(t, lu)
	case 0x41, 0x93:
		return c.writeSame(t, lu)
	case 0x8b:
		return c.orWrite(t, lu)
	case 0x89:
		return c.compareAndWrite(t, lu)
	case 0x1a, 0x5a:
		return c.modeSense(t, lu)
	case 0x42:
		return c.unmap(t, lu)
	case 0x35, 0x91:
		return c.syncCache(t, lu)
	case 0x12:
		if t.cdb[1]&0x01 != 0 && (t.cdb[2] == 0xb0 || t.cdb[2] == 0xb2) {
			return c.vpd(t, lu)
		}
	case 0xa3:
		if t.cdb[1]&0x1f == 0x0c {
			return c.reportOpcodes(t)
		}
	case 0x9e:
		switch t.cdb[1] & 0x1f {
		case 0x10:
			return c.readCapacity16(t, lu)
		case 0x12:
			return c.getLBAStatus(t, lu)
		}
	}
	return c.gotgt(t, lu)
}

// rwRange decodes LBA and block count of READ/WRITE/WRITE AND VERIFY (6/10/12/16).
func rwRange(cdb []byte) (lba uint64, blocks uint32, ok bool) {
	switch cdb[0] {
	case 0x08, 0x0a:
		if len(cdb) < 6 {
			return 0, 0, false
		}
		lba = uint64(cdb[1]&0x1f)<<16 | uint64(cdb[2])<<8 | uint64(cdb[3])
		blocks = uint32(cdb[4])
		if blocks == 0 {
			blocks = 256
		}
	case 0x28, 0x2a, 0x2e, 0x41:
		lba = uint64(binary.BigEndian.Uint32(cdb[2:6]))
		blocks = uint32(binary.BigEndian.Uint16(cdb[7:9]))
	case 0xa8, 0xaa, 0xae:
		lba = uint64(binary.BigEndian.Uint32(cdb[2:6]))
		blocks = binary.BigEndian.Uint32(cdb[6:10])
	case 0x88, 0x8a, 0x8e, 0x93, 0x8b:
		lba = binary.BigEndian.Uint64(cdb[2:10])
		blocks = binary.BigEndian.Uint32(cdb[10:14])
	default:
		return 0, 0, false
	}
	return lba, blocks, true
}

// inRange checks lba..lba+blocks against the LU; a zero-length command at the end is fine.
func inRange(lba uint64, blocks uint32, capacity uint64) bool {
	end := lba + uint64(blocks)
	return end >= lba && lba <= capacity && end <= capacity
}

func (c *conn) readBlocks(t *task, lu *lunit) result {
	lba, blocks, _ := rwRange(t.cdb)
	if t.cdb[0] != 0x08 && t.cdb[1]&0xe0 != 0 { // RDPROTECT: we keep no protection information
		return checkCondition(senseIllegalRequest, ascInvalidFieldInCDB)
	}
	if !inRange(lba, blocks, lu.blocks) {
		return checkCondition(senseIllegalRequest, ascLBAOutOfRange)
	}
	if blocks > acceptTransferBlocks {
		return checkCondition(senseIllegalRequest, ascInvalidFieldInCDB)
	}
	want := blocks << blockShift
	n := min(want, t.edtl)
	if !t.read {
		n = 0
	}
	r := good().withResidual(want, t.edtl)
	if n == 0 {
		return r
	}
	buf := getBuf(int(n))
	if err := lu.store.readAt(buf, int64(lba<<blockShift)); err != nil {
		putBuf(buf)
		c.log.Error("iscsi read failed", "lba", lba, "blocks", blocks, "err", err)
		return checkCondition(senseMediumError, ascReadError)
	}
	c.srv.metrics.bytes.WithLabelValues("read").Add(float64(n))
	r.data, r.pooled = buf, true
	return r
}

func (c *conn) writeBlocks(t *task, lu *lunit) result {
	lba, blocks, _ := rwRange(t.cdb)
	if t.cdb[0] != 0x0a && t.cdb[1]&0xe0 != 0 { // WRPROTECT
		return checkCondition(senseIllegalRequest, ascInvalidFieldInCDB)
	}
	if !inRange(lba, blocks, lu.blocks) {
		return checkCondition(senseIllegalRequest, ascLBAOutOfRange)
	}
	if blocks > acceptTransferBlocks {
		return checkCondition(senseIllegalRequest, ascInvalidFieldInCDB)
	}
	want := blocks << blockShift
	// Only whole blocks the initiator actually sent are written (SAM: EDTL below the
	// transfer length is an overflow; the rest of the blocks keep their data).
	n := min(want, uint32(len(t.buf))) &^ (blockSize - 1)
	if n > 0 {
		if err := lu.store.Write(t.buf[:n], int64(lba<<blockShift)); err != nil {
			c.log.Error("iscsi write failed", "lba", lba, "blocks", blocks, "err", err)
			return checkCondition(senseMediumError, ascWriteError)
		}
		c.srv.metrics.bytes.WithLabelValues("write").Add(float64(n))
	}
	fua := t.cdb[0] != 0x0a && t.cdb[1]&0x08 != 0
	verify := t.cdb[0] == 0x2e || t.cdb[0] == 0xae || t.cdb[0] == 0x8e
	if fua || verify {
		if err := lu.store.DataSync(0, 0); err != nil {
			c.log.Error("iscsi FUA sync failed", "err", err)
			return checkCondition(senseMediumError, ascWriteError)
		}
	}
	return good().withResidual(want, t.edtl)
}

func (c *conn) syncCache(t *task, lu *lunit) result {
	var lba uint64
	var blocks uint32
	if t.cdb[0] == 0x35 {
		lba = uint64(binary.BigEndian.Uint32(t.cdb[2:6]))
		blocks = uint32(binary.BigEndian.Uint16(t.cdb[7:9]))
	} else {
		lba = binary.BigEndian.Uint64(t.cdb[2:10])
		blocks = binary.BigEndian.Uint32(t.cdb[10:14])
	}
	if !inRange(lba, blocks, lu.blocks) {
		return checkCondition(senseIllegalRequest, ascLBAOutOfRange)
	}
	if err := lu.store.DataSync(0, 0); err != nil {
		c.log.Error("iscsi synchronize cache failed", "err", err)
		return checkCondition(senseMediumError, ascWriteError)
	}
	return good()
}

// writeSame writes one block's pattern over a range. gotgt acknowledges WRITE SAME without
// writing anything; we write it, or punch holes for zeros and for the UNMAP bit.
func (c *conn) writeSame(t *task, lu *lunit) result {
	flags := t.cdb[1]
	if flags&0xe0 != 0 || flags&0x10 != 0 || flags&0x06 != 0 { // WRPROTECT, ANCHOR, PBDATA/LBDATA
		return checkCondition(senseIllegalRequest, ascInvalidFieldInCDB)
	}
	lba, blocks, _ := rwRange(t.cdb)
	if !inRange(lba, blocks, lu.blocks) {
		return checkCondition(senseIllegalRequest, ascLBAOutOfRange)
	}
	if blocks == 0 { // WSNZ=1 in our block limits page: zero blocks is not allowed
		return checkCondition(senseIllegalRequest, ascInvalidFieldInCDB)
	}
	if blocks > maxWriteSameBlocks {
		return checkCondition(senseIllegalRequest, ascInvalidFieldInCDB)
	}
	if len(t.buf) < blockSize {
		return checkCondition(senseIllegalRequest, ascInvalidFieldInCDB).withResidual(blockSize, t.edtl)
	}
	pattern := t.buf[:blockSize]
	off, length := int64(lba<<blockShift), int64(blocks)<<blockShift
	if flags&0x08 != 0 || allZero(pattern) {
		if err := lu.store.punch(off, length); err != nil {
			c.log.Error("iscsi write same (unmap) failed", "err", err)
			return checkCondition(senseMediumError, ascWriteError)
		}
		return good().withResidual(blockSize, t.edtl)
	}
	chunk := bytes.Repeat(pattern, int(min(blocks, 2048)))
	for length > 0 {
		n := min(length, int64(len(chunk)))
		if err := lu.store.Write(chunk[:n], off); err != nil {
			c.log.Error("iscsi write same failed", "err", err)
			return checkCondition(senseMediumError, ascWriteError)
		}
		off += n
		length -= n
	}
	return good().withResidual(blockSize, t.edtl)
}

const (
	// maxTransferBlocks is the MAXIMUM TRANSFER LENGTH of our block limits page (16 MiB),
	// what Linux sizes its requests by. We accept up to acceptTransferBlocks (64 MiB, some
	// test suites go past the advertised limit) and refuse longer commands, so no command
	// makes us hold more than that.
	maxTransferBlocks    = 1 << 24 >> blockShift
	acceptTransferBlocks = 1 << 26 >> blockShift
	maxWriteSameBlocks   = 1 << 22 // 2 GiB per command
	maxUnmapBlocks       = 1 << 20
	maxUnmapDescriptors  = 64
)

func allZero(b []byte) bool {
	for _, x := range b {
		if x != 0 {
			return false
		}
	}
	return true
}

// unmap punches holes for each block descriptor (SBC-4 §5.30).
func (c *conn) unmap(t *task, lu *lunit) result {
	if t.cdb[1]&0x01 != 0 { // ANCHOR
		return checkCondition(senseIllegalRequest, ascInvalidFieldInCDB)
	}
	plen := uint32(binary.BigEndian.Uint16(t.cdb[7:9]))
	d := t.buf[:min(plen, uint32(len(t.buf)))]
	if plen == 0 {
		return good().withResidual(0, t.edtl)
	}
	if len(d) < 8 {
		return checkCondition(senseIllegalRequest, ascParamListLength)
	}
	bdl := int(binary.BigEndian.Uint16(d[2:4]))
	if bdl > len(d)-8 {
		bdl = (len(d) - 8) &^ 15
	}
	if bdl/16 > maxUnmapDescriptors {
		return checkCondition(senseIllegalRequest, ascInvalidFieldParam)
	}
	type span struct {
		lba uint64
		n   uint32
	}
	var spans []span
	for i := 8; i+16 <= 8+bdl; i += 16 {
		lba := binary.BigEndian.Uint64(d[i:])
		n := binary.BigEndian.Uint32(d[i+8:])
		if !inRange(lba, n, lu.blocks) {
			return checkCondition(senseIllegalRequest, ascLBAOutOfRange)
		}
		if n > maxUnmapBlocks {
			return checkCondition(senseIllegalRequest, ascInvalidFieldParam)
		}
		spans = append(spans, span{lba, n})
	}
	for _, s := range spans {
		if err := lu.store.punch(int64(s.lba<<blockShift), int64(s.n)<<blockShift); err != nil {
			c.log.Error("iscsi unmap failed", "err", err)
			return checkCondition(senseMediumError, ascWriteError)
		}
	}
	return good().withResidual(plen, t.edtl)
}

// allocLen returns the allocation length of data-in commands gotgt answers.
func allocLen(cdb []byte) (uint32, bool) {
	switch cdb[0] {
	case 0x12: // INQUIRY
		return uint32(binary.BigEndian.Uint16(cdb[3:5])), true
	case 0x03, 0x1a: // REQUEST SENSE, MODE SENSE(6)
		return uint32(cdb[4]), true
	case 0x5a, 0x5e, 0x4d: // MODE SENSE(10), PERSISTENT RESERVE IN, LOG SENSE
		return uint32(binary.BigEndian.Uint16(cdb[7:9])), true
	case 0xa0, 0xa3: // REPORT LUNS, MAINTENANCE IN
		return binary.BigEndian.Uint32(cdb[6:10]), true
	case 0x25: // READ CAPACITY(10)
		return 8, true
	case 0x9e: // SERVICE ACTION IN(16)
		return binary.BigEndian.Uint32(cdb[10:14]), true
	}
	return 0, false
}

// gotgt runs a command through gotgt's SCSI core (SPC/SBC emulation, reservations).
func (c *conn) gotgt(t *task, lu *lunit) result {
	alloc, known := allocLen(t.cdb)
	// gotgt's answers are small; the buffer only has to hold what the initiator may take,
	// and never what a hostile EDTL or allocation length asks for.
	size := min(max(t.edtl, alloc, 512), 1<<20)
	cmd := &api.SCSICommand{
		OpCode:          t.cdb[0],
		SCB:             t.cdb,
		SCBLength:       len(t.cdb),
		ITNexusID:       c.sess.itnID,
		RelTargetPortID: 1,
		Tag:             uint64(t.itt),
		InSDBBuffer:     &api.SCSIDataBuffer{Buffer: make([]byte, size), Length: size},
	}
	// gotgt indexes its LUN map with the raw LUN field read as a little-endian integer.
	n, _ := lunNumber(t.lun)
	binary.LittleEndian.PutUint64(cmd.Lun[:], uint64(n))
	switch {
	case t.write:
		cmd.Direction = api.SCSIDataWrite
		cmd.OutSDBBuffer = &api.SCSIDataBuffer{Buffer: t.buf, Length: uint32(len(t.buf))}
	case t.read:
		cmd.Direction = api.SCSIDataRead
	}
	c.srv.svcMu.RLock()
	err := c.srv.svc.AddCommandQueue(c.sess.tgt.st.TID, cmd)
	c.srv.svcMu.RUnlock()
	if err != nil {
		c.log.Error("iscsi gotgt command failed", "err", err)
		return checkCondition(senseHardwareError, ascInternalTgtFailure)
	}
	status := cmd.Result
	// gotgt leaves the sense key in Result when a handler builds sense data but does not
	// fail; sense data always means CHECK CONDITION to the initiator.
	if cmd.SenseBuffer != nil && len(cmd.SenseBuffer.Buffer) > 0 && status != 0x18 {
		status = statusCheckCondition
	}
	if status != statusGood {
		r := result{status: status}
		if cmd.SenseBuffer != nil {
			r.sense = append([]byte(nil), cmd.SenseBuffer.Buffer...)
		}
		return r
	}
	if !t.read {
		return good()
	}
	want := min(t.edtl, size)
	if known {
		want = min(want, alloc)
	}
	if n, ok := naturalLen(t.cdb, cmd.InSDBBuffer.Buffer); ok {
		want = min(want, n)
	}
	data := cmd.InSDBBuffer.Buffer[:want]
	return result{status: statusGood, data: data}.withResidual(want, t.edtl)
}

// inquiryNoLUN answers INQUIRY for a LUN that does not exist (SPC-4 §6.6.2: peripheral
// qualifier 011b, device type 1Fh).
func (c *conn) inquiryNoLUN(t *task) result {
	d := make([]byte, 36)
	d[0] = 0x7f
	d[2] = 0x06
	d[3] = 0x02
	d[4] = 31
	copy(d[8:16], "DISTONET")
	copy(d[16:32], "VOLUME          ")
	copy(d[32:36], "1   ")
	return c.dataIn(t, d, uint32(binary.BigEndian.Uint16(t.cdb[3:5])))
}

// dataIn returns data truncated to the allocation length and EDTL, with residuals.
func (c *conn) dataIn(t *task, d []byte, alloc uint32) result {
	want := min(uint32(len(d)), alloc)
	return result{status: statusGood, data: d[:want]}.withResidual(want, t.edtl)
}

// vpd answers the Block Limits (B0h) and Logical Block Provisioning (B2h) pages: gotgt's
// do not advertise WRITE SAME with UNMAP or that unmapped blocks read back as zeros.
func (c *conn) vpd(t *task, lu *lunit) result {
	alloc := uint32(binary.BigEndian.Uint16(t.cdb[3:5]))
	switch t.cdb[2] {
	case 0xb0:
		d := make([]byte, 64)
		d[1] = 0xb0
		binary.BigEndian.PutUint16(d[2:], 0x3c)
		d[4] = 0x01 // WSNZ
		d[5] = maxCompareAndWriteBlocks
		binary.BigEndian.PutUint16(d[6:], 8) // optimal granularity: 4 KiB
		binary.BigEndian.PutUint32(d[8:], maxTransferBlocks)
		binary.BigEndian.PutUint32(d[12:], 1<<20>>blockShift)
		binary.BigEndian.PutUint32(d[20:], maxUnmapBlocks)
		binary.BigEndian.PutUint32(d[24:], maxUnmapDescriptors)
		binary.BigEndian.PutUint32(d[28:], 8) // unmap granularity: 4 KiB
		binary.BigEndian.PutUint64(d[36:], maxWriteSameBlocks)
		return c.dataIn(t, d, alloc)
	default: // 0xb2
		d := make([]byte, 8)
		d[1] = 0xb2
		binary.BigEndian.PutUint16(d[2:], 4)
		d[5] = 0x80 | 0x40 | 0x20 | 0x04 // LBPU, LBPWS, LBPWS10, LBPRZ
		d[6] = 0x02                      // thin provisioned
		return c.dataIn(t, d, alloc)
	}
}

// readCapacity16 answers READ CAPACITY(16) with LBPME and LBPRZ, so initiators use UNMAP
// and know trimmed blocks read as zeros.
func (c *conn) readCapacity16(t *task, lu *lunit) result {
	d := make([]byte, 32)
	binary.BigEndian.PutUint64(d[0:], lu.blocks-1)
	binary.BigEndian.PutUint32(d[8:], blockSize)
	// LOGICAL BLOCKS PER PHYSICAL BLOCK EXPONENT stays 0: holes are punched at 512-byte
	// granularity as far as the initiator can tell.
	d[14] = 0x80 | 0x40
	return c.dataIn(t, d, binary.BigEndian.Uint32(t.cdb[10:14]))
}

// getLBAStatus reports whether the blocks from an LBA are mapped or deallocated (SBC-4
// §5.8). gotgt answers with an empty list, which initiators such as QEMU treat as an error.
func (c *conn) getLBAStatus(t *task, lu *lunit) result {
	lba := binary.BigEndian.Uint64(t.cdb[2:10])
	alloc := binary.BigEndian.Uint32(t.cdb[10:14])
	if lba >= lu.blocks {
		return checkCondition(senseIllegalRequest, ascLBAOutOfRange)
	}
	mapped, length, err := lu.store.extent(int64(lba << blockShift))
	if err != nil {
		return checkCondition(senseMediumError, ascReadError)
	}
	blocks := uint64(length+blockSize-1) >> blockShift
	blocks = max(min(blocks, lu.blocks-lba, 0xffffffff), 1)
	d := make([]byte, 24)
	binary.BigEndian.PutUint32(d[0:], 20)
	binary.BigEndian.PutUint64(d[8:], lba)
	binary.BigEndian.PutUint32(d[16:], uint32(blocks))
	if !mapped {
		d[20] = 1
	}
	return c.dataIn(t, d, alloc)
}

// naturalLen reads the length a data-in answer declares about itself, so we send what
// gotgt produced and not its zero padding up to the allocation length.
func naturalLen(cdb, d []byte) (uint32, bool) {
	if len(d) < 8 {
		return 0, false
	}
	switch cdb[0] {
	case 0x12:
		if cdb[1]&0x01 != 0 {
			return uint32(binary.BigEndian.Uint16(d[2:4])) + 4, true
		}
		return uint32(d[4]) + 5, true
	case 0x03:
		return uint32(d[7]) + 8, true
	case 0xa0:
		return binary.BigEndian.Uint32(d[0:4]) + 8, true
	case 0x25:
		return 8, true
	case 0xa3:
		return binary.BigEndian.Uint32(d[0:4]) + 4, true
	case 0x4d:
		return uint32(binary.BigEndian.Uint16(d[2:4])) + 4, true
	}
	return 0, false
}

const maxCompareAndWriteBlocks = 255

// orWrite implements ORWRITE(16): gotgt's writes the data without OR-ing it.
func (c *conn) orWrite(t *task, lu *lunit) result {
	lba, blocks, _ := rwRange(t.cdb)
	if t.cdb[1]&0xe0 != 0 {
		return checkCondition(senseIllegalRequest, ascInvalidFieldInCDB)
	}
	if !inRange(lba, blocks, lu.blocks) {
		return checkCondition(senseIllegalRequest, ascLBAOutOfRange)
	}
	if blocks > acceptTransferBlocks {
		return checkCondition(senseIllegalRequest, ascInvalidFieldInCDB)
	}
	want := blocks << blockShift
	n := min(want, uint32(len(t.buf))) &^ (blockSize - 1)
	if n > 0 {
		lu.atomic.Lock()
		defer lu.atomic.Unlock()
		cur := make([]byte, n)
		off := int64(lba << blockShift)
		if err := lu.store.readAt(cur, off); err != nil {
			return checkCondition(senseMediumError, ascReadError)
		}
		for i := range cur {
			cur[i] |= t.buf[i]
		}
		if err := lu.store.Write(cur, off); err != nil {
			return checkCondition(senseMediumError, ascWriteError)
		}
	}
	if t.cdb[1]&0x08 != 0 {
		if err := lu.store.DataSync(0, 0); err != nil {
			return checkCondition(senseMediumError, ascWriteError)
		}
	}
	return good().withResidual(want, t.edtl)
}

// compareAndWrite implements COMPARE AND WRITE (SBC-4 §5.3): the data-out holds the
// expected blocks then the new blocks; the comparison and the write are atomic with
// respect to other COMPARE AND WRITE and ORWRITE commands.
func (c *conn) compareAndWrite(t *task, lu *lunit) result {
	lba := binary.BigEndian.Uint64(t.cdb[2:10])
	blocks := uint32(t.cdb[13])
	if t.cdb[1]&0xe0 != 0 || blocks > maxCompareAndWriteBlocks {
		return checkCondition(senseIllegalRequest, ascInvalidFieldInCDB)
	}
	if !inRange(lba, blocks, lu.blocks) {
		return checkCondition(senseIllegalRequest, ascLBAOutOfRange)
	}
	want := 2 * blocks << blockShift
	if blocks == 0 {
		if t.edtl != 0 {
			// Data for a zero-block command: the initiator meant more blocks than the
			// one-byte field holds (256 encodes as 0). Refuse rather than ignore it.
			return checkCondition(senseIllegalRequest, ascInvalidFieldInCDB)
		}
		return good()
	}
	if uint32(len(t.buf)) < want {
		return checkCondition(senseIllegalRequest, ascInvalidFieldInCDB).withResidual(want, t.edtl)
	}
	n := blocks << blockShift
	lu.atomic.Lock()
	defer lu.atomic.Unlock()
	cur := make([]byte, n)
	off := int64(lba << blockShift)
	if err := lu.store.readAt(cur, off); err != nil {
		return checkCondition(senseMediumError, ascReadError)
	}
	for i := range cur {
		if cur[i] != t.buf[i] {
			r := checkCondition(senseMiscompare, ascMiscompareVerify)
			r.sense[0] |= 0x80 // VALID: INFORMATION holds the offset of the first mismatch
			binary.BigEndian.PutUint32(r.sense[3:7], uint32(i))
			return r
		}
	}
	if err := lu.store.Write(t.buf[n:2*n], off); err != nil {
		return checkCondition(senseMediumError, ascWriteError)
	}
	if t.cdb[1]&0x08 != 0 {
		if err := lu.store.DataSync(0, 0); err != nil {
			return checkCondition(senseMediumError, ascWriteError)
		}
	}
	return good().withResidual(want, t.edtl)
}

// Mode pages we report (SBC-4 §6.5). The caching page says WCE=1: writes sit in the page
// cache until SYNCHRONIZE CACHE or FUA, so the initiator must send them (and Linux does).
var modePages = []struct {
	code uint8
	data []byte // after the two-byte page header
}{
	{0x02, []byte{0x80, 0x80, 0, 0x0a, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}},
	{0x08, []byte{0x04, 0, 0xff, 0xff, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x80, 0x14, 0, 0, 0, 0, 0, 0}},
	{0x0a, []byte{0x02, 0x10, 0, 0, 0, 0, 0, 0, 0x02, 0x00}},
	{0x1c, []byte{0x08, 0, 0, 0, 0, 0, 0, 0, 0, 0}},
}

// modeSense answers MODE SENSE(6/10). gotgt's panics on allocation lengths shorter than
// the header, which Linux uses when it probes the write cache.
func (c *conn) modeSense(t *task, lu *lunit) result {
	ten := t.cdb[0] == 0x5a
	dbd := t.cdb[1]&0x08 != 0
	pc := t.cdb[2] >> 6
	page, sub := t.cdb[2]&0x3f, t.cdb[3]
	var alloc uint32
	if ten {
		alloc = uint32(binary.BigEndian.Uint16(t.cdb[7:9]))
	} else {
		alloc = uint32(t.cdb[4])
	}
	if pc == 3 {
		return checkCondition(senseIllegalRequest, ascSavingParamsUnsupported)
	}
	var body []byte
	found := false
	for _, p := range modePages {
		if page != 0x3f && (p.code != page || sub != 0) {
			continue
		}
		if page == 0x3f && sub != 0 && sub != 0xff {
			break
		}
		found = true
		data := p.data
		if pc == 1 { // changeable values: none
			data = make([]byte, len(p.data))
		}
		body = append(body, p.code, uint8(len(data)))
		body = append(body, data...)
	}
	if !found {
		return checkCondition(senseIllegalRequest, ascInvalidFieldInCDB)
	}
	var bd []byte
	if !dbd {
		bd = make([]byte, 8)
		binary.BigEndian.PutUint32(bd[0:], uint32(min(lu.blocks, 0xffffffff)))
		binary.BigEndian.PutUint32(bd[4:], blockSize) // byte 4 is density code 0
	}
	var d []byte
	if ten {
		d = make([]byte, 8, 8+len(bd)+len(body))
		d[3] = 0x10 // DPOFUA
		binary.BigEndian.PutUint16(d[6:], uint16(len(bd)))
		d = append(append(d, bd...), body...)
		binary.BigEndian.PutUint16(d[0:], uint16(len(d)-2))
	} else {
		d = make([]byte, 4, 4+len(bd)+len(body))
		d[2] = 0x10
		d[3] = uint8(len(bd))
		d = append(append(d, bd...), body...)
		d[0] = uint8(len(d) - 1)
	}
	return c.dataIn(t, d, alloc)
}
