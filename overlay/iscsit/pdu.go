package iscsit

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
)

// Opcode is the iSCSI PDU opcode (RFC 7143 §11.2.1.2), without the immediate bit.
type Opcode uint8

// Initiator opcodes.
const (
	OpNOPOut       Opcode = 0x00
	OpSCSICommand  Opcode = 0x01
	OpTaskMgmtReq  Opcode = 0x02
	OpLoginReq     Opcode = 0x03
	OpTextReq      Opcode = 0x04
	OpDataOut      Opcode = 0x05
	OpLogoutReq    Opcode = 0x06
	OpSNACKReq     Opcode = 0x10
	OpNOPIn        Opcode = 0x20
	OpSCSIResponse Opcode = 0x21
	OpTaskMgmtResp Opcode = 0x22
	OpLoginResp    Opcode = 0x23
	OpTextResp     Opcode = 0x24
	OpDataIn       Opcode = 0x25
	OpLogoutResp   Opcode = 0x26
	OpR2T          Opcode = 0x31
	OpAsync        Opcode = 0x32
	OpReject       Opcode = 0x3f
)

func (o Opcode) String() string {
	names := map[Opcode]string{
		OpNOPOut: "NOP-Out", OpSCSICommand: "SCSI-Command", OpTaskMgmtReq: "TMF-Request",
		OpLoginReq: "Login-Request", OpTextReq: "Text-Request", OpDataOut: "Data-Out",
		OpLogoutReq: "Logout-Request", OpSNACKReq: "SNACK", OpNOPIn: "NOP-In",
		OpSCSIResponse: "SCSI-Response", OpTaskMgmtResp: "TMF-Response", OpLoginResp: "Login-Response",
		OpTextResp: "Text-Response", OpDataIn: "Data-In", OpLogoutResp: "Logout-Response",
		OpR2T: "R2T", OpAsync: "Async", OpReject: "Reject",
	}
	if n, ok := names[o]; ok {
		return n
	}
	return fmt.Sprintf("opcode-0x%02x", uint8(o))
}

// BHSLen is the size of the basic header segment.
const BHSLen = 48

// reservedTag is the "no tag" value for ITT and TTT.
const reservedTag = 0xffffffff

// PDU is one iSCSI protocol data unit: the 48-byte basic header segment, additional header
// segments and the data segment. Field accessors read and write the header in place, so a
// PDU received from the wire can be answered without re-encoding what the code does not know.
type PDU struct {
	BHS  [BHSLen]byte
	AHS  []byte
	Data []byte

	inPlace bool   // Data already sits in its command's buffer
	buf     []byte // pooled buffer holding Data, handed on to the command
}

// Errors returned when a PDU cannot be read.
var (
	ErrShortPDU      = errors.New("iscsi: short PDU")
	ErrDataTooLong   = errors.New("iscsi: data segment longer than negotiated")
	ErrHeaderDigest  = errors.New("iscsi: header digest mismatch")
	ErrDataDigest    = errors.New("iscsi: data digest mismatch")
	ErrAHSOutOfRange = errors.New("iscsi: AHS length out of range")
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Opcode returns the PDU's opcode.
func (p *PDU) Opcode() Opcode { return Opcode(p.BHS[0] & 0x3f) }

// SetOpcode sets the opcode and clears the immediate bit.
func (p *PDU) SetOpcode(o Opcode) { p.BHS[0] = uint8(o) & 0x3f }

// Immediate reports the I bit.
func (p *PDU) Immediate() bool { return p.BHS[0]&0x40 != 0 }

// Final reports the F bit (byte 1, bit 7).
func (p *PDU) Final() bool { return p.BHS[1]&0x80 != 0 }

// Flags returns byte 1.
func (p *PDU) Flags() uint8 { return p.BHS[1] }

// SetFlags sets byte 1.
func (p *PDU) SetFlags(f uint8) { p.BHS[1] = f }

// ahsWords is TotalAHSLength in 4-byte words.
func (p *PDU) ahsWords() int { return int(p.BHS[4]) }

// DataSegmentLength is the length of the data segment, without padding.
func (p *PDU) DataSegmentLength() uint32 {
	return uint32(p.BHS[5])<<16 | uint32(p.BHS[6])<<8 | uint32(p.BHS[7])
}

// LUN returns bytes 8-15.
func (p *PDU) LUN() [8]byte {
	var l [8]byte
	copy(l[:], p.BHS[8:16])
	return l
}

// SetLUN sets bytes 8-15.
func (p *PDU) SetLUN(l [8]byte) { copy(p.BHS[8:16], l[:]) }

// ITT is the initiator task tag.
func (p *PDU) ITT() uint32 { return p.u32(16) }

// SetITT sets the initiator task tag.
func (p *PDU) SetITT(v uint32) { p.put32(16, v) }

func (p *PDU) u32(off int) uint32      { return binary.BigEndian.Uint32(p.BHS[off:]) }
func (p *PDU) put32(off int, v uint32) { binary.BigEndian.PutUint32(p.BHS[off:], v) }
func (p *PDU) u16(off int) uint16      { return binary.BigEndian.Uint16(p.BHS[off:]) }
func (p *PDU) put16(off int, v uint16) { binary.BigEndian.PutUint16(p.BHS[off:], v) }

// Common field offsets (RFC 7143 §11).
const (
	offTTT       = 20 // target transfer tag / EDTL / referenced task tag
	offCmdSN     = 24 // CmdSN (requests) / StatSN (responses)
	offExpStatSN = 28 // ExpStatSN (requests) / ExpCmdSN (responses)
	offMaxCmdSN  = 32
	offDataSN    = 36 // DataSN / R2TSN / ExpDataSN
	offBufOffset = 40
	offResidual  = 44
)

// UnmarshalBinary decodes a complete PDU without digests.
func (p *PDU) UnmarshalBinary(b []byte) error {
	if len(b) < BHSLen {
		return fmt.Errorf("%w: %d bytes, need %d for the header", ErrShortPDU, len(b), BHSLen)
	}
	copy(p.BHS[:], b)
	ahs := p.ahsWords() * 4
	dsl := int(p.DataSegmentLength())
	need := BHSLen + ahs + pad4(dsl)
	if len(b) < need {
		return fmt.Errorf("%w: %d bytes, need %d (AHS %d, data %d)", ErrShortPDU, len(b), need, ahs, dsl)
	}
	p.AHS = append([]byte(nil), b[BHSLen:BHSLen+ahs]...)
	p.Data = append([]byte(nil), b[BHSLen+ahs:BHSLen+ahs+dsl]...)
	return nil
}

// MarshalBinary encodes the PDU without digests, setting the length fields from AHS and Data.
func (p *PDU) MarshalBinary() ([]byte, error) {
	if err := p.fixLengths(); err != nil {
		return nil, err
	}
	out := make([]byte, 0, BHSLen+len(p.AHS)+pad4(len(p.Data)))
	out = append(out, p.BHS[:]...)
	out = append(out, p.AHS...)
	out = append(out, p.Data...)
	out = append(out, make([]byte, pad4(len(p.Data))-len(p.Data))...)
	return out, nil
}

func (p *PDU) fixLengths() error {
	if len(p.AHS)%4 != 0 || len(p.AHS)/4 > 255 {
		return fmt.Errorf("%w: %d bytes", ErrAHSOutOfRange, len(p.AHS))
	}
	if len(p.Data) > 1<<24-1 {
		return fmt.Errorf("%w: %d bytes", ErrDataTooLong, len(p.Data))
	}
	p.BHS[4] = uint8(len(p.AHS) / 4)
	n := len(p.Data)
	p.BHS[5], p.BHS[6], p.BHS[7] = uint8(n>>16), uint8(n>>8), uint8(n)
	return nil
}

func pad4(n int) int { return (n + 3) &^ 3 }

// digests says which CRC32C digests are in use on a connection.
type digests struct{ header, data bool }

// readPDU reads one PDU from r. maxData bounds the data segment so a peer cannot make us
// allocate what it likes; buf, when large enough, is reused for the data segment.
func readPDU(r io.Reader, p *PDU, maxData uint32, d digests) error {
	if _, err := io.ReadFull(r, p.BHS[:]); err != nil {
		return err
	}
	ahs := p.ahsWords() * 4
	p.AHS = p.AHS[:0]
	if ahs > 0 {
		p.AHS = make([]byte, ahs)
		if _, err := io.ReadFull(r, p.AHS); err != nil {
			return fmt.Errorf("read AHS: %w", err)
		}
	}
	if d.header {
		var dg [4]byte
		if _, err := io.ReadFull(r, dg[:]); err != nil {
			return fmt.Errorf("read header digest: %w", err)
		}
		c := crc32.Update(crc32.Checksum(p.BHS[:], castagnoli), castagnoli, p.AHS)
		if binary.LittleEndian.Uint32(dg[:]) != c {
			return ErrHeaderDigest
		}
	}
	dsl := p.DataSegmentLength()
	if dsl > maxData {
		return fmt.Errorf("%w: %d > %d", ErrDataTooLong, dsl, maxData)
	}
	if dsl == 0 {
		p.Data = p.Data[:0]
		return nil
	}
	total := pad4(int(dsl))
	if cap(p.Data) >= total {
		p.Data = p.Data[:total]
	} else {
		p.Data = make([]byte, total)
	}
	if _, err := io.ReadFull(r, p.Data); err != nil {
		return fmt.Errorf("read data segment: %w", err)
	}
	if d.data {
		var dg [4]byte
		if _, err := io.ReadFull(r, dg[:]); err != nil {
			return fmt.Errorf("read data digest: %w", err)
		}
		if binary.LittleEndian.Uint32(dg[:]) != crc32.Checksum(p.Data, castagnoli) {
			return ErrDataDigest
		}
	}
	p.Data = p.Data[:dsl]
	return nil
}

// writePDU writes one PDU to w, with digests when negotiated.
func writePDU(w io.Writer, p *PDU, d digests) error {
	if err := p.fixLengths(); err != nil {
		return err
	}
	if _, err := w.Write(p.BHS[:]); err != nil {
		return err
	}
	if len(p.AHS) > 0 {
		if _, err := w.Write(p.AHS); err != nil {
			return err
		}
	}
	var dg [4]byte
	if d.header {
		c := crc32.Update(crc32.Checksum(p.BHS[:], castagnoli), castagnoli, p.AHS)
		binary.LittleEndian.PutUint32(dg[:], c)
		if _, err := w.Write(dg[:]); err != nil {
			return err
		}
	}
	if len(p.Data) == 0 {
		return nil
	}
	if _, err := w.Write(p.Data); err != nil {
		return err
	}
	var zero [3]byte
	padding := zero[:pad4(len(p.Data))-len(p.Data)]
	if len(padding) > 0 {
		if _, err := w.Write(padding); err != nil {
			return err
		}
	}
	if d.data {
		c := crc32.Update(crc32.Checksum(p.Data, castagnoli), castagnoli, padding)
		binary.LittleEndian.PutUint32(dg[:], c)
		if _, err := w.Write(dg[:]); err != nil {
			return err
		}
	}
	return nil
}
