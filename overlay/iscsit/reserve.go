package iscsit

import (
	"encoding/binary"
	"sync"
)

// Reservations: SPC-2 RESERVE/RELEASE and SPC-4 persistent reservations, per logical unit.
// gotgt's versions are broken (PERSISTENT RESERVE IN always fails, RESERVE never
// conflicts), so we keep our own. They live in memory: APTPL is not offered, and the
// report says so (PTPL_C=0).

// nexus identifies an I_T nexus: the initiator port (name and ISID) on our one target port.
type nexus struct {
	initiator string
	isid      [6]byte
}

// Persistent reservation types (SPC-4 table 214).
const (
	prWriteExclusive     = 1
	prExclusiveAccess    = 3
	prWriteExclusiveRO   = 5
	prExclusiveAccessRO  = 6
	prWriteExclusiveAR   = 7
	prExclusiveAccessAR  = 8
	statusResvConflict   = 0x18
	ascInvalidRelease    = 0x2604
	senseUnitAttention   = 0x06
	ascReservationsReset = 0x2a03
)

type reservations struct {
	mu         sync.Mutex
	legacy     *nexus // SPC-2 RESERVE holder
	keys       map[nexus]uint64
	order      []nexus // registration order, for stable reports
	generation uint32
	holder     *nexus // persistent reservation holder (any registrant for all-registrants types)
	typ        uint8
}

func allRegistrants(typ uint8) bool { return typ == prWriteExclusiveAR || typ == prExclusiveAccessAR }

func (r *reservations) register(n nexus, key uint64) {
	if r.keys == nil {
		r.keys = map[nexus]uint64{}
	}
	if _, ok := r.keys[n]; !ok {
		r.order = append(r.order, n)
	}
	r.keys[n] = key
}

func (r *reservations) unregister(n nexus) {
	delete(r.keys, n)
	for i, o := range r.order {
		if o == n {
			r.order = append(r.order[:i], r.order[i+1:]...)
			break
		}
	}
	if r.holder != nil && (*r.holder == n) {
		if allRegistrants(r.typ) && len(r.keys) > 0 {
			h := r.order[0]
			r.holder = &h
		} else {
			r.holder = nil
			r.typ = 0
		}
	}
}

// holds reports whether n is a reservation holder.
func (r *reservations) holds(n nexus) bool {
	if r.holder == nil {
		return false
	}
	if allRegistrants(r.typ) {
		_, ok := r.keys[n]
		return ok
	}
	return *r.holder == n
}

// nexusLost releases what an ended I_T nexus held under SPC-2 rules.
func (r *reservations) nexusLost(n nexus) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.legacy != nil && *r.legacy == n {
		r.legacy = nil
	}
}

// reset clears SPC-2 reservations (LUN reset, target reset); persistent ones survive.
func (r *reservations) reset() {
	r.mu.Lock()
	r.legacy = nil
	r.mu.Unlock()
}

// access classes for the conflict table.
const (
	accessNone = iota
	accessRead
	accessWrite
)

func accessOf(cdb []byte) int {
	switch cdb[0] {
	case 0x08, 0x28, 0xa8, 0x88, 0x2f, 0xaf, 0x8f, 0x34, 0x90, 0x1a, 0x5a:
		return accessRead
	case 0x0a, 0x2a, 0xaa, 0x8a, 0x2e, 0xae, 0x8e, 0x41, 0x93, 0x42, 0x8b, 0x89, 0x35, 0x91, 0x04, 0x15, 0x55:
		return accessWrite
	}
	return accessNone
}

// conflict reports whether n may not run cdb because of someone else's reservation.
func (r *reservations) conflict(n nexus, cdb []byte) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	op := cdb[0]
	if r.legacy != nil && *r.legacy != n {
		switch op {
		case 0x12, 0x03, 0xa0, 0x17, 0x57, 0x25, 0x5e:
			return false
		case 0x9e:
			return cdb[1]&0x1f != 0x10
		}
		return true
	}
	if r.holder == nil || r.holds(n) {
		return false
	}
	acc := accessOf(cdb)
	if acc == accessNone {
		return false
	}
	_, registered := r.keys[n]
	switch r.typ {
	case prWriteExclusive:
		return acc == accessWrite
	case prExclusiveAccess:
		return true
	case prWriteExclusiveRO, prWriteExclusiveAR:
		return !registered && acc == accessWrite
	case prExclusiveAccessRO, prExclusiveAccessAR:
		return !registered
	}
	return false
}

func conflictResult() result { return result{status: statusResvConflict} }

// reserve6 handles RESERVE(6/10) and RELEASE(6/10).
func (c *conn) reserve6(t *task, lu *lunit, n nexus) result {
	r := &lu.res
	r.mu.Lock()
	defer r.mu.Unlock()
	switch t.cdb[0] {
	case 0x16, 0x56:
		if r.holder != nil {
			return conflictResult()
		}
		if r.legacy != nil && *r.legacy != n {
			return conflictResult()
		}
		r.legacy = &n
	case 0x17, 0x57:
		if r.legacy != nil && *r.legacy == n {
			r.legacy = nil
		}
	}
	return good()
}

// persistentReserveIn answers PERSISTENT RESERVE IN (SPC-4 §6.15).
func (c *conn) persistentReserveIn(t *task, lu *lunit) result {
	r := &lu.res
	r.mu.Lock()
	defer r.mu.Unlock()
	alloc := uint32(binary.BigEndian.Uint16(t.cdb[7:9]))
	var d []byte
	switch t.cdb[1] & 0x1f {
	case 0: // READ KEYS
		d = make([]byte, 8, 8+8*len(r.order))
		binary.BigEndian.PutUint32(d[0:], r.generation)
		for _, n := range r.order {
			d = binary.BigEndian.AppendUint64(d, r.keys[n])
		}
		binary.BigEndian.PutUint32(d[4:], uint32(len(d)-8))
	case 1: // READ RESERVATION
		d = make([]byte, 8)
		binary.BigEndian.PutUint32(d[0:], r.generation)
		if r.holder != nil {
			desc := make([]byte, 16)
			if !allRegistrants(r.typ) {
				binary.BigEndian.PutUint64(desc[0:], r.keys[*r.holder])
			}
			desc[13] = r.typ // scope 0: logical unit
			d = append(d, desc...)
			binary.BigEndian.PutUint32(d[4:], 16)
		}
	case 2: // REPORT CAPABILITIES
		d = make([]byte, 8)
		binary.BigEndian.PutUint16(d[0:], 8)
		d[2] = 0x10        // CRH: RESERVE(6) conflicts with persistent reservations
		d[3] = 0x80 | 0x10 // TMV, ALLOW COMMANDS 001b
		d[4] = 0x80 | 0x40 | 0x20 | 0x08 | 0x02
		d[5] = 0x01
	case 3: // READ FULL STATUS
		d = make([]byte, 8)
		binary.BigEndian.PutUint32(d[0:], r.generation)
		for _, n := range r.order {
			desc := make([]byte, 24)
			binary.BigEndian.PutUint64(desc[0:], r.keys[n])
			if r.holds(n) {
				desc[12] = 0x01
				desc[13] = r.typ
			}
			binary.BigEndian.PutUint16(desc[18:], 1) // relative target port
			tid := transportID(n)
			binary.BigEndian.PutUint32(desc[20:], uint32(len(tid)))
			d = append(append(d, desc...), tid...)
		}
		binary.BigEndian.PutUint32(d[4:], uint32(len(d)-8))
	default:
		return checkCondition(senseIllegalRequest, ascInvalidFieldInCDB)
	}
	return c.dataIn(t, d, alloc)
}

// transportID is an iSCSI TransportID, format 01b: name ",i,0x" ISID (SPC-4 §7.6.4.6).
func transportID(n nexus) []byte {
	name := n.initiator + ",i,0x" + hexISID(n.isid)
	l := pad4(len(name) + 1)
	b := make([]byte, 4+l)
	b[0] = 0x40 | 0x05
	binary.BigEndian.PutUint16(b[2:], uint16(l))
	copy(b[4:], name)
	return b
}

func hexISID(i [6]byte) string {
	const hexdigits = "0123456789abcdef"
	out := make([]byte, 12)
	for k, v := range i {
		out[2*k], out[2*k+1] = hexdigits[v>>4], hexdigits[v&15]
	}
	return string(out)
}

// persistentReserveOut runs PERSISTENT RESERVE OUT (SPC-4 §5.9, §6.16).
func (c *conn) persistentReserveOut(t *task, lu *lunit, n nexus) result {
	sa := t.cdb[1] & 0x1f
	scope, typ := t.cdb[2]>>4, t.cdb[2]&0x0f
	plen := binary.BigEndian.Uint32(t.cdb[5:9])
	if plen != 24 || uint32(len(t.buf)) < 24 {
		return checkCondition(senseIllegalRequest, ascParamListLength)
	}
	p := t.buf[:24]
	key := binary.BigEndian.Uint64(p[0:])
	sakey := binary.BigEndian.Uint64(p[8:])
	flags := p[20]
	if flags&0x08 != 0 || flags&0x01 != 0 { // SPEC_I_PT, APTPL: not supported
		return checkCondition(senseIllegalRequest, ascInvalidFieldParam)
	}
	r := &lu.res
	r.mu.Lock()
	defer r.mu.Unlock()
	cur, registered := r.keys[n]
	validType := func() bool {
		switch typ {
		case prWriteExclusive, prExclusiveAccess, prWriteExclusiveRO, prExclusiveAccessRO, prWriteExclusiveAR, prExclusiveAccessAR:
			return scope == 0
		}
		return false
	}
	switch sa {
	case 0, 6: // REGISTER, REGISTER AND IGNORE EXISTING KEY
		if sa == 0 {
			if !registered && key != 0 {
				return conflictResult()
			}
			if registered && key != cur {
				return conflictResult()
			}
		}
		if sakey == 0 {
			if registered {
				r.unregister(n)
			}
		} else {
			r.register(n, sakey)
		}
		r.generation++
		return good()
	}
	if !registered || key != cur {
		return conflictResult()
	}
	switch sa {
	case 1: // RESERVE
		if !validType() {
			return checkCondition(senseIllegalRequest, ascInvalidFieldInCDB)
		}
		if r.legacy != nil && *r.legacy != n {
			return conflictResult()
		}
		if r.holder != nil {
			if r.holds(n) && r.typ == typ {
				return good()
			}
			return conflictResult()
		}
		h := n
		r.holder, r.typ = &h, typ
	case 2: // RELEASE
		if r.holder == nil || !r.holds(n) {
			return good()
		}
		if r.typ != typ || scope != 0 {
			return checkCondition(senseIllegalRequest, ascInvalidRelease)
		}
		r.holder, r.typ = nil, 0
	case 3: // CLEAR
		r.keys, r.order, r.holder, r.typ = nil, nil, nil, 0
		r.generation++
	case 4, 5: // PREEMPT, PREEMPT AND ABORT
		if !validType() {
			return checkCondition(senseIllegalRequest, ascInvalidFieldInCDB)
		}
		var victims []nexus
		for _, o := range r.order {
			if r.keys[o] == sakey || (sakey == 0 && r.holder != nil && allRegistrants(r.typ) && o != n) {
				victims = append(victims, o)
			}
		}
		holderPreempted := r.holder != nil && (allRegistrants(r.typ) && sakey == 0 ||
			!allRegistrants(r.typ) && r.keys[*r.holder] == sakey)
		if len(victims) == 0 && !holderPreempted {
			if sakey == 0 {
				return checkCondition(senseIllegalRequest, ascInvalidFieldParam)
			}
			return conflictResult()
		}
		for _, v := range victims {
			if v != n {
				r.unregister(v)
			}
		}
		if holderPreempted || r.holder == nil && len(victims) > 0 && false {
			h := n
			r.holder, r.typ = &h, typ
		}
		r.generation++
	default: // REGISTER AND MOVE and beyond
		return checkCondition(senseIllegalRequest, ascInvalidFieldInCDB)
	}
	return good()
}
