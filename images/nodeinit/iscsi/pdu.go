// Package iscsi is the node side of the overlay volume: an iSCSI initiator whose login
// (security negotiation with CHAP, operational negotiation) runs in user space and whose
// full-feature phase runs in the kernel's iscsi_tcp, driven over NETLINK_ISCSI the way
// open-iscsi's iscsid drives it. The same login code also runs over a plain TCP socket, which
// is how it is tested against tgt on a host without iscsi_tcp.
package iscsi

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"sort"
	"strings"
)

// BHSLen is the size of an iSCSI Basic Header Segment.
const BHSLen = 48

// Opcodes used during login.
const (
	OpLoginReq  = 0x03
	OpLoginResp = 0x23
	OpReject    = 0x3f
	opImmediate = 0x40
)

// Login stages (CSG/NSG).
const (
	StageSecurity    = 0
	StageOperational = 1
	StageFullFeature = 3
)

// LoginReq is a Login Request PDU (RFC 7143 11.12).
type LoginReq struct {
	Transit   bool
	Continue  bool
	CSG, NSG  uint8
	ISID      [6]byte
	TSIH      uint16
	ITT       uint32
	CID       uint16
	CmdSN     uint32
	ExpStatSN uint32
	Data      []byte // text keys
}

// MarshalBinary returns the BHS followed by the padded data segment.
func (p *LoginReq) MarshalBinary() ([]byte, error) {
	if p.CSG > 3 || p.NSG > 3 {
		return nil, fmt.Errorf("login request: stage CSG %d NSG %d out of range", p.CSG, p.NSG)
	}
	if len(p.Data) >= 1<<24 {
		return nil, fmt.Errorf("login request: data segment of %d bytes too long", len(p.Data))
	}
	b := make([]byte, BHSLen+len(p.Data)+pad4(len(p.Data)))
	b[0] = opImmediate | OpLoginReq
	b[1] = p.CSG<<2 | p.NSG
	if p.Transit {
		b[1] |= 0x80
	}
	if p.Continue {
		b[1] |= 0x40
	}
	putDataLen(b, len(p.Data))
	copy(b[8:14], p.ISID[:])
	binary.BigEndian.PutUint16(b[14:], p.TSIH)
	binary.BigEndian.PutUint32(b[16:], p.ITT)
	binary.BigEndian.PutUint16(b[20:], p.CID)
	binary.BigEndian.PutUint32(b[24:], p.CmdSN)
	binary.BigEndian.PutUint32(b[28:], p.ExpStatSN)
	copy(b[BHSLen:], p.Data)
	return b, nil
}

// LoginResp is a Login Response PDU (RFC 7143 11.13).
type LoginResp struct {
	Transit      bool
	Continue     bool
	CSG, NSG     uint8
	ISID         [6]byte
	TSIH         uint16
	ITT          uint32
	StatSN       uint32
	ExpCmdSN     uint32
	MaxCmdSN     uint32
	StatusClass  uint8
	StatusDetail uint8
	Data         []byte
}

// UnmarshalBinary parses a BHS and its data segment (padding optional).
func (p *LoginResp) UnmarshalBinary(b []byte) error {
	if len(b) < BHSLen {
		return fmt.Errorf("login response: %d bytes, want at least %d", len(b), BHSLen)
	}
	if op := b[0] & 0x3f; op != OpLoginResp {
		if op == OpReject {
			return fmt.Errorf("login response: target sent Reject (reason 0x%02x)", b[2])
		}
		return fmt.Errorf("login response: opcode 0x%02x, want 0x%02x", op, OpLoginResp)
	}
	if ahs := b[4]; ahs != 0 {
		return fmt.Errorf("login response: TotalAHSLength %d, want 0", ahs)
	}
	n := dataLen(b)
	if len(b) < BHSLen+n {
		return fmt.Errorf("login response: DataSegmentLength %d but %d bytes follow", n, len(b)-BHSLen)
	}
	*p = LoginResp{
		Transit:      b[1]&0x80 != 0,
		Continue:     b[1]&0x40 != 0,
		CSG:          b[1] >> 2 & 3,
		NSG:          b[1] & 3,
		TSIH:         binary.BigEndian.Uint16(b[14:]),
		ITT:          binary.BigEndian.Uint32(b[16:]),
		StatSN:       binary.BigEndian.Uint32(b[24:]),
		ExpCmdSN:     binary.BigEndian.Uint32(b[28:]),
		MaxCmdSN:     binary.BigEndian.Uint32(b[32:]),
		StatusClass:  b[36],
		StatusDetail: b[37],
		Data:         append([]byte(nil), b[BHSLen:BHSLen+n]...),
	}
	copy(p.ISID[:], b[8:14])
	return nil
}

// MarshalBinary is the inverse of UnmarshalBinary (for tests and fuzzing).
func (p *LoginResp) MarshalBinary() ([]byte, error) {
	if p.CSG > 3 || p.NSG > 3 || len(p.Data) >= 1<<24 {
		return nil, fmt.Errorf("login response: bad stage or data length")
	}
	b := make([]byte, BHSLen+len(p.Data)+pad4(len(p.Data)))
	b[0] = OpLoginResp
	b[1] = p.CSG<<2 | p.NSG
	if p.Transit {
		b[1] |= 0x80
	}
	if p.Continue {
		b[1] |= 0x40
	}
	putDataLen(b, len(p.Data))
	copy(b[8:14], p.ISID[:])
	binary.BigEndian.PutUint16(b[14:], p.TSIH)
	binary.BigEndian.PutUint32(b[16:], p.ITT)
	binary.BigEndian.PutUint32(b[24:], p.StatSN)
	binary.BigEndian.PutUint32(b[28:], p.ExpCmdSN)
	binary.BigEndian.PutUint32(b[32:], p.MaxCmdSN)
	b[36], b[37] = p.StatusClass, p.StatusDetail
	copy(b[BHSLen:], p.Data)
	return b, nil
}

// StatusError explains a login failure status (RFC 7143 11.13.5).
func StatusError(class, detail uint8) error {
	if class == 0 {
		return nil
	}
	why := map[uint16]string{
		0x0101: "target moved temporarily", 0x0102: "target moved permanently",
		0x0200: "initiator error", 0x0201: "authentication failed (CHAP)",
		0x0202: "authorization failure (initiator not allowed)", 0x0203: "target not found",
		0x0204: "target removed", 0x0205: "unsupported version", 0x0206: "too many connections",
		0x0207: "missing parameter", 0x0208: "cannot include in session", 0x0209: "session type not supported",
		0x020a: "session does not exist", 0x020b: "invalid during login",
		0x0300: "target error", 0x0301: "service unavailable", 0x0302: "out of resources",
	}[uint16(class)<<8|uint16(detail)]
	if why == "" {
		why = "unknown status"
	}
	return &LoginError{Class: class, Detail: detail, Reason: why}
}

// LoginError is a refusal by the target.
type LoginError struct {
	Class, Detail uint8
	Reason        string
}

func (e *LoginError) Error() string {
	return fmt.Sprintf("iSCSI login refused: %s (status 0x%02x%02x)", e.Reason, e.Class, e.Detail)
}

// Auth reports whether the target refused our credentials.
func (e *LoginError) Auth() bool { return e.Class == 2 && (e.Detail == 1 || e.Detail == 2) }

func dataLen(b []byte) int { return int(b[5])<<16 | int(b[6])<<8 | int(b[7]) }

func putDataLen(b []byte, n int) { b[5], b[6], b[7] = byte(n>>16), byte(n>>8), byte(n) }

func pad4(n int) int { return (4 - n%4) % 4 }

// Keys is an ordered list of text key=value pairs (RFC 7143 6.1).
type Keys []KV

// KV is one key=value pair.
type KV struct{ Key, Value string }

// Get returns the value of key.
func (ks Keys) Get(key string) (string, bool) {
	for _, kv := range ks {
		if kv.Key == key {
			return kv.Value, true
		}
	}
	return "", false
}

// Marshal encodes the pairs as NUL-terminated key=value strings.
func (ks Keys) Marshal() []byte {
	var b bytes.Buffer
	for _, kv := range ks {
		b.WriteString(kv.Key)
		b.WriteByte('=')
		b.WriteString(kv.Value)
		b.WriteByte(0)
	}
	return b.Bytes()
}

// ParseKeys decodes a text data segment. Trailing padding NULs are ignored.
func ParseKeys(b []byte) (Keys, error) {
	var ks Keys
	for len(b) > 0 {
		i := bytes.IndexByte(b, 0)
		var item []byte
		if i < 0 {
			item, b = b, nil
		} else {
			item, b = b[:i], b[i+1:]
		}
		if len(item) == 0 {
			continue
		}
		k, v, ok := strings.Cut(string(item), "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("text key %q: no key=value", item)
		}
		if len(k) > 63 {
			return nil, fmt.Errorf("text key %q: longer than 63 bytes", k[:16]+"...")
		}
		ks = append(ks, KV{k, v})
	}
	return ks, nil
}

// String renders keys for logs with secrets masked.
func (ks Keys) String() string {
	parts := make([]string, 0, len(ks))
	for _, kv := range ks {
		v := kv.Value
		if kv.Key == "CHAP_R" || kv.Key == "CHAP_C" {
			v = "…"
		}
		parts = append(parts, kv.Key+"="+v)
	}
	sort.Strings(parts)
	return strings.Join(parts, " ")
}
