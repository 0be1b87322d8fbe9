package iscsit

import "encoding/binary"

// supportedOp is one command we execute (ourselves or through gotgt), for REPORT SUPPORTED
// OPERATION CODES.
type supportedOp struct {
	op     byte
	sa     uint16
	hasSA  bool
	cdbLen uint16
}

// supportedOps lists what a node volume answers. gotgt's own report misses the commands we
// took over and has no timeout descriptors (RCTD).
var supportedOps = func() []supportedOp {
	var ops []supportedOp
	plain := map[byte]uint16{
		0x00: 6, 0x03: 6, 0x08: 6, 0x0a: 6, 0x12: 6, 0x15: 6, 0x16: 6, 0x17: 6, 0x1a: 6, 0x1b: 6,
		0x25: 10, 0x28: 10, 0x2a: 10, 0x2e: 10, 0x2f: 10, 0x34: 10, 0x35: 10, 0x41: 10, 0x42: 10,
		0x55: 10, 0x56: 10, 0x57: 10, 0x5a: 10,
		0x88: 16, 0x89: 16, 0x8a: 16, 0x8b: 16, 0x8e: 16, 0x8f: 16, 0x90: 16, 0x91: 16, 0x93: 16,
		0xa0: 12, 0xa8: 12, 0xaa: 12, 0xae: 12, 0xaf: 12,
	}
	for op := 0; op < 256; op++ {
		if l, ok := plain[byte(op)]; ok {
			ops = append(ops, supportedOp{op: byte(op), cdbLen: l})
		}
		switch op {
		case 0x5e:
			for sa := range uint16(4) {
				ops = append(ops, supportedOp{op: 0x5e, sa: sa, hasSA: true, cdbLen: 10})
			}
		case 0x5f:
			for sa := range uint16(7) {
				ops = append(ops, supportedOp{op: 0x5f, sa: sa, hasSA: true, cdbLen: 10})
			}
		case 0x9e:
			ops = append(ops, supportedOp{op: 0x9e, sa: 0x10, hasSA: true, cdbLen: 16},
				supportedOp{op: 0x9e, sa: 0x12, hasSA: true, cdbLen: 16})
		case 0xa3:
			ops = append(ops, supportedOp{op: 0xa3, sa: 0x0c, hasSA: true, cdbLen: 12})
		}
	}
	return ops
}()

// timeoutsDescriptor: length 0x0a, no vendor data, nominal and recommended timeouts unknown.
func timeoutsDescriptor() []byte {
	d := make([]byte, 12)
	binary.BigEndian.PutUint16(d, 0x0a)
	return d
}

// reportOpcodes answers REPORT SUPPORTED OPERATION CODES (SPC-4 §6.35).
func (c *conn) reportOpcodes(t *task) result {
	rctd := t.cdb[2]&0x80 != 0
	opt := t.cdb[2] & 0x07
	reqOp := t.cdb[3]
	reqSA := binary.BigEndian.Uint16(t.cdb[4:6])
	alloc := binary.BigEndian.Uint32(t.cdb[6:10])
	if opt == 0 {
		d := make([]byte, 4)
		for _, o := range supportedOps {
			desc := make([]byte, 8)
			desc[0] = o.op
			binary.BigEndian.PutUint16(desc[2:], o.sa)
			if o.hasSA {
				desc[5] |= 0x01
			}
			binary.BigEndian.PutUint16(desc[6:], o.cdbLen)
			if rctd {
				desc[5] |= 0x02
				desc = append(desc, timeoutsDescriptor()...)
			}
			d = append(d, desc...)
		}
		binary.BigEndian.PutUint32(d, uint32(len(d)-4))
		return c.dataIn(t, d, alloc)
	}
	if opt > 3 {
		return checkCondition(senseIllegalRequest, ascInvalidFieldInCDB)
	}
	var found *supportedOp
	opHasSA := false
	for i, o := range supportedOps {
		if o.op != reqOp {
			continue
		}
		opHasSA = opHasSA || o.hasSA
		if !o.hasSA || o.sa == reqSA {
			found = &supportedOps[i]
		}
	}
	// Option 1 names a command without service actions; 2 one with them.
	if (opt == 1 && opHasSA) || (opt == 2 && !opHasSA && found != nil) {
		return checkCondition(senseIllegalRequest, ascInvalidFieldInCDB)
	}
	d := make([]byte, 4)
	if found == nil {
		d[1] = 0x01 // not supported
	} else {
		d[1] = 0x03 // supported, conforming to the standard
		binary.BigEndian.PutUint16(d[2:], found.cdbLen)
		usage := make([]byte, found.cdbLen)
		for i := range usage {
			usage[i] = 0xff
		}
		usage[0] = found.op
		if found.hasSA {
			usage[1] = 0x1f
		}
		usage[len(usage)-1] = 0x07 // CONTROL: NACA, reserved bits
		d = append(d, usage...)
		if rctd {
			d[1] |= 0x80
			d = append(d, timeoutsDescriptor()...)
		}
	}
	return c.dataIn(t, d, alloc)
}
