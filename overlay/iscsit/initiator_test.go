package iscsit

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"time"
)

// testInitiator is a minimal iSCSI initiator for tests that need control libiscsi's tools do
// not give: one command at a time, CHAP (one-way or mutual), immediate data, R2T.
type testInitiator struct {
	nc        net.Conn
	br        *bufio.Reader
	cmdSN     uint32
	expStatSN uint32
	itt       uint32
	tsih      uint16
	p         params
	lun       [8]byte // LUN field of the commands sent
}

type loginOpts struct {
	initiator, target      string
	user, secret           string
	mutualUser, mutualPass string
	discovery              bool
	digests                bool       // offer CRC32C header and data digests
	extra                  TextParams // more operational keys
}

var errLoginRefused = errors.New("login refused")

func dialInitiator(addr string, o loginOpts) (*testInitiator, error) {
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	in := &testInitiator{nc: nc, br: bufio.NewReader(nc), cmdSN: 1, itt: 1, p: newParams(262144)}
	if err := in.login(o); err != nil {
		nc.Close()
		return nil, err
	}
	return in, nil
}

func (in *testInitiator) Close() error { return in.nc.Close() }

func (in *testInitiator) loginPDU(csg, nsg int, transit bool, kv TextParams) (*PDU, TextParams, error) {
	var p PDU
	p.BHS[0] = 0x40 | uint8(OpLoginReq)
	f := uint8(csg) << 2
	if transit {
		f |= 0x80 | uint8(nsg)
	}
	p.SetFlags(f)
	copy(p.BHS[8:14], []byte{0x80, 0, 0, 0x12, 0x34, 0x56})
	p.put16(14, in.tsih)
	p.SetITT(in.itt)
	p.put32(offCmdSN, in.cmdSN)
	p.put32(offExpStatSN, in.expStatSN)
	data, err := kv.MarshalBinary()
	if err != nil {
		return nil, nil, err
	}
	p.Data = data
	_ = in.nc.SetDeadline(time.Now().Add(10 * time.Second))
	if err := writePDU(in.nc, &p, digests{}); err != nil {
		return nil, nil, err
	}
	var r PDU
	if err := readPDU(in.br, &r, 1<<20, digests{}); err != nil {
		return nil, nil, err
	}
	if r.Opcode() != OpLoginResp {
		return nil, nil, fmt.Errorf("got %v", r.Opcode())
	}
	in.expStatSN = r.u32(offCmdSN) + 1
	if st := r.u16(36); st != 0 {
		return &r, nil, fmt.Errorf("%w: status 0x%04x", errLoginRefused, st)
	}
	var out TextParams
	if err := out.UnmarshalBinary(r.Data); err != nil {
		return nil, nil, err
	}
	return &r, out, nil
}

func (in *testInitiator) login(o loginOpts) error {
	kv := TextParams{{"InitiatorName", o.initiator}}
	if o.discovery {
		kv = append(kv, KV{"SessionType", "Discovery"})
	} else {
		kv = append(kv, KV{"SessionType", "Normal"}, KV{"TargetName", o.target})
	}
	if o.user != "" {
		kv = append(kv, KV{"AuthMethod", "CHAP,None"})
	} else {
		kv = append(kv, KV{"AuthMethod", "None"})
	}
	r, ans, err := in.loginPDU(0, 1, o.user == "", kv)
	if err != nil {
		return err
	}
	if o.user != "" {
		if m, _ := ans.Get("AuthMethod"); m != "CHAP" {
			return fmt.Errorf("AuthMethod %q", m)
		}
		_, ans, err = in.loginPDU(0, 1, false, TextParams{{"CHAP_A", "5"}})
		if err != nil {
			return err
		}
		is, _ := ans.Get("CHAP_I")
		cs, _ := ans.Get("CHAP_C")
		id, err := decodeCHAPID(is)
		if err != nil {
			return err
		}
		ch, err := decodeCHAPBinary(cs)
		if err != nil {
			return err
		}
		kv := TextParams{{"CHAP_N", o.user}, {"CHAP_R", encodeCHAPBinary(chapResponse(id, o.secret, ch))}}
		myID, myCh := byte(7), []byte("initiator-challenge!")
		if o.mutualUser != "" {
			kv = append(kv, KV{"CHAP_I", fmt.Sprint(myID)}, KV{"CHAP_C", encodeCHAPBinary(myCh)})
		}
		r, ans, err = in.loginPDU(0, 1, true, kv)
		if err != nil {
			return err
		}
		if o.mutualUser != "" {
			n, _ := ans.Get("CHAP_N")
			rs, _ := ans.Get("CHAP_R")
			rb, err := decodeCHAPBinary(rs)
			if err != nil || n != o.mutualUser || !chapVerify(myID, o.mutualPass, myCh, rb) {
				return fmt.Errorf("target failed mutual CHAP (%q)", n)
			}
		}
	}
	if r.Flags()&0x80 == 0 {
		return fmt.Errorf("target did not leave the security stage")
	}
	hd, dd := "None", "None"
	if o.digests {
		hd, dd = "CRC32C", "CRC32C"
	}
	op := TextParams{{"HeaderDigest", hd}, {"DataDigest", dd}, {"ImmediateData", "Yes"},
		{"InitialR2T", "Yes"}, {"MaxRecvDataSegmentLength", "65536"}, {"MaxBurstLength", "262144"},
		{"FirstBurstLength", "65536"}, {"ErrorRecoveryLevel", "0"}}
	for _, e := range o.extra {
		replaced := false
		for i := range op {
			if op[i].Key == e.Key {
				op[i].Value, replaced = e.Value, true
			}
		}
		if !replaced {
			op = append(op, e)
		}
	}
	r, ans, err = in.loginPDU(1, 3, true, op)
	if err != nil {
		return err
	}
	if r.Flags()&0x83 != 0x83 {
		return fmt.Errorf("no transit to full feature phase: flags 0x%02x", r.Flags())
	}
	in.tsih = r.u16(14)
	in.p.negotiate(ans)
	for _, kv := range ans {
		if kv.Key == "MaxRecvDataSegmentLength" {
			n, _ := parseNum(kv.Value, 512, 1<<24)
			in.p.initiatorMaxRecvData = n // the target's limit, for our Data-Out
		}
	}
	return nil
}

// scsiResult is what one command returned.
type scsiResult struct {
	status   uint8
	sense    []byte
	data     []byte
	flags    uint8
	residual uint32
}

// command runs one SCSI command on LUN 0 and waits for its status.
func (in *testInitiator) command(cdb []byte, readLen uint32, out []byte) (scsiResult, error) {
	in.itt++
	var p PDU
	p.SetOpcode(OpSCSICommand)
	f := uint8(0x80 | 0x01) // F, simple task
	edtl := readLen
	if out != nil {
		f |= 0x20
		edtl = uint32(len(out))
	}
	if readLen > 0 {
		f |= 0x40
	}
	imm := min(len(out), int(in.p.firstBurst), int(in.p.initiatorMaxRecvData))
	if !in.p.immediate {
		imm = 0
	}
	// Unsolicited Data-Out follows the command when InitialR2T=No (F clear on the command).
	unsolEnd := imm
	if out != nil && !in.p.initialR2T {
		unsolEnd = min(len(out), int(in.p.firstBurst))
		if unsolEnd > imm {
			f &^= 0x80
		}
	}
	p.SetFlags(f)
	p.SetLUN(in.lun)
	p.SetITT(in.itt)
	p.put32(offTTT, edtl)
	p.put32(offCmdSN, in.cmdSN)
	p.put32(offExpStatSN, in.expStatSN)
	copy(p.BHS[32:48], cdb)
	if out != nil {
		p.Data = out[:imm]
	}
	in.cmdSN++
	_ = in.nc.SetDeadline(time.Now().Add(30 * time.Second))
	if err := writePDU(in.nc, &p, in.p.digests); err != nil {
		return scsiResult{}, err
	}
	var sn uint32
	for off := imm; off < unsolEnd; {
		chunk := min(unsolEnd-off, int(in.p.initiatorMaxRecvData))
		var d PDU
		d.SetOpcode(OpDataOut)
		if off+chunk == unsolEnd {
			d.SetFlags(0x80)
		}
		d.SetITT(in.itt)
		d.put32(offTTT, reservedTag)
		d.put32(offExpStatSN, in.expStatSN)
		d.put32(offDataSN, sn)
		d.put32(offBufOffset, uint32(off))
		d.Data = out[off : off+chunk]
		if err := writePDU(in.nc, &d, in.p.digests); err != nil {
			return scsiResult{}, err
		}
		off += chunk
		sn++
	}
	var res scsiResult
	for {
		var r PDU
		if err := readPDU(in.br, &r, 1<<24, in.p.digests); err != nil {
			return res, err
		}
		switch r.Opcode() {
		case OpR2T:
			off, n := r.u32(offBufOffset), r.u32(offResidual)
			var sn uint32
			for sent := uint32(0); sent < n; {
				chunk := min(n-sent, in.p.initiatorMaxRecvData)
				var d PDU
				d.SetOpcode(OpDataOut)
				if sent+chunk == n {
					d.SetFlags(0x80)
				}
				d.SetITT(in.itt)
				d.put32(offTTT, r.u32(offTTT))
				d.put32(offExpStatSN, in.expStatSN)
				d.put32(offDataSN, sn)
				d.put32(offBufOffset, off+sent)
				d.Data = out[off+sent : off+sent+chunk]
				if err := writePDU(in.nc, &d, in.p.digests); err != nil {
					return res, err
				}
				sent += chunk
				sn++
			}
		case OpDataIn:
			res.data = append(res.data, r.Data...)
			if r.Flags()&0x01 != 0 {
				in.expStatSN = r.u32(offCmdSN) + 1
				res.status = r.BHS[3]
				res.flags = r.Flags()
				res.residual = r.u32(offResidual)
				return res, nil
			}
		case OpSCSIResponse:
			in.expStatSN = r.u32(offCmdSN) + 1
			res.status = r.BHS[3]
			res.flags = r.Flags()
			res.residual = r.u32(offResidual)
			if len(r.Data) >= 2 {
				n := int(binary.BigEndian.Uint16(r.Data))
				res.sense = r.Data[2 : 2+min(n, len(r.Data)-2)]
			}
			return res, nil
		case OpNOPIn, OpAsync:
		default:
			return res, fmt.Errorf("unexpected %v", r.Opcode())
		}
	}
}

// sendTargets runs a SendTargets=All text exchange and returns the target names.
func (in *testInitiator) sendTargets() ([]string, error) {
	in.itt++
	var p PDU
	p.SetOpcode(OpTextReq)
	p.BHS[0] |= 0x40
	p.SetFlags(0x80)
	p.SetITT(in.itt)
	p.put32(offTTT, reservedTag)
	p.put32(offCmdSN, in.cmdSN)
	p.put32(offExpStatSN, in.expStatSN)
	p.Data, _ = TextParams{{"SendTargets", "All"}}.MarshalBinary()
	if err := writePDU(in.nc, &p, digests{}); err != nil {
		return nil, err
	}
	var r PDU
	if err := readPDU(in.br, &r, 1<<20, digests{}); err != nil {
		return nil, err
	}
	var kv TextParams
	if err := kv.UnmarshalBinary(r.Data); err != nil {
		return nil, err
	}
	var names []string
	for _, x := range kv {
		if x.Key == "TargetName" {
			names = append(names, x.Value)
		}
	}
	return names, nil
}

func cdbRW(op byte, lba uint64, blocks uint32, fua bool) []byte {
	c := make([]byte, 16)
	c[0] = op
	if fua {
		c[1] = 0x08
	}
	binary.BigEndian.PutUint64(c[2:], lba)
	binary.BigEndian.PutUint32(c[10:], blocks)
	return c
}

func (in *testInitiator) write16(lba uint64, data []byte, fua bool) error {
	r, err := in.command(cdbRW(0x8a, lba, uint32(len(data)/blockSize), fua), 0, data)
	if err != nil {
		return err
	}
	if r.status != 0 {
		return fmt.Errorf("WRITE(16) status 0x%02x sense %x", r.status, r.sense)
	}
	return nil
}

func (in *testInitiator) read16(lba uint64, blocks uint32) ([]byte, error) {
	r, err := in.command(cdbRW(0x88, lba, blocks, false), blocks*blockSize, nil)
	if err != nil {
		return nil, err
	}
	if r.status != 0 {
		return nil, fmt.Errorf("READ(16) status 0x%02x sense %x", r.status, r.sense)
	}
	return r.data, nil
}

func (in *testInitiator) syncCache() error {
	c := make([]byte, 16)
	c[0] = 0x91
	r, err := in.command(c, 0, nil)
	if err != nil {
		return err
	}
	if r.status != 0 {
		return fmt.Errorf("SYNCHRONIZE CACHE(16) status 0x%02x", r.status)
	}
	return nil
}
