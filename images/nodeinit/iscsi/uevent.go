package iscsi

import (
	"encoding/binary"
	"fmt"
)

// NETLINK_ISCSI messages (include/scsi/iscsi_if.h): a struct iscsi_uevent of 56 bytes
// (type, iferror, transport handle, a 24-byte request union, a 16-byte reply union) in host
// byte order, followed by a payload for SET_PARAM, SEND_PDU and RECV_PDU.
const (
	ueventLen = 56
	uOff      = 16 // request union
	rOff      = 40 // reply union

	evCreateSession  = 11
	evDestroySession = 12
	evCreateConn     = 13
	evDestroyConn    = 14
	evBindConn       = 15
	evSetParam       = 16
	evStartConn      = 17
	evStopConn       = 18
	evSendPDU        = 19

	kevRecvPDU        = 101
	kevConnError      = 102
	kevIfError        = 103
	kevDestroySession = 104
	kevUnbindSession  = 105
	kevCreateSession  = 106
	kevConnLoginState = 109

	stopConnTerm    = 1
	stopConnRecover = 3

	nlGroupISCSID = 1
)

// iscsi_param values (enum iscsi_param).
const (
	paramMaxRecvDLength   = 0
	paramMaxXmitDLength   = 1
	paramHdrDgstEn        = 2
	paramDataDgstEn       = 3
	paramInitialR2TEn     = 4
	paramMaxR2T           = 5
	paramImmDataEn        = 6
	paramFirstBurst       = 7
	paramMaxBurst         = 8
	paramPDUInOrderEn     = 9
	paramDataSeqInOrderEn = 10
	paramERL              = 11
	paramIFMarkerEn       = 12
	paramOFMarkerEn       = 13
	paramExpStatSN        = 14
	paramTargetName       = 15
	paramTPGT             = 16
	paramPersistentAddr   = 17
	paramPersistentPort   = 18
	paramSessRecoveryTmo  = 19
	paramFastAbort        = 26
	paramAbortTmo         = 27
	paramLUResetTmo       = 28
	paramPingTmo          = 30
	paramRecvTmo          = 31
	paramInitiatorName    = 34
	paramTgtResetTmo      = 35
)

var ne = binary.NativeEndian

// uevent is the fixed part of a message.
type uevent struct {
	Type    uint32
	IfError int32
	Handle  uint64
	U       [24]byte
	R       [16]byte
}

func (e *uevent) marshal(payload []byte) []byte {
	b := make([]byte, ueventLen+len(payload))
	ne.PutUint32(b[0:], e.Type)
	ne.PutUint32(b[4:], uint32(e.IfError))
	ne.PutUint64(b[8:], e.Handle)
	copy(b[uOff:], e.U[:])
	copy(b[rOff:], e.R[:])
	copy(b[ueventLen:], payload)
	return b
}

func parseUevent(b []byte) (uevent, []byte, error) {
	var e uevent
	if len(b) < ueventLen {
		return e, nil, fmt.Errorf("iscsi uevent: %d bytes, want %d", len(b), ueventLen)
	}
	e.Type = ne.Uint32(b[0:])
	e.IfError = int32(ne.Uint32(b[4:]))
	e.Handle = ne.Uint64(b[8:])
	copy(e.U[:], b[uOff:rOff])
	copy(e.R[:], b[rOff:ueventLen])
	return e, b[ueventLen:], nil
}

// u32s writes request-union fields at 4-byte offsets.
func (e *uevent) u32(off int, v uint32) { ne.PutUint32(e.U[off:], v) }
func (e *uevent) u16(off int, v uint16) { ne.PutUint16(e.U[off:], v) }
func (e *uevent) u64(off int, v uint64) { ne.PutUint64(e.U[off:], v) }
func (e *uevent) r32(off int) uint32    { return ne.Uint32(e.R[off:]) }

// Netlink framing: struct nlmsghdr is 16 bytes, messages are 4-byte aligned.
const nlmsgHdrLen = 16

func nlAlign(n int) int { return (n + 3) &^ 3 }

func nlMarshal(typ uint16, seq uint32, payload []byte) []byte {
	b := make([]byte, nlAlign(nlmsgHdrLen+len(payload)))
	ne.PutUint32(b[0:], uint32(nlmsgHdrLen+len(payload)))
	ne.PutUint16(b[4:], typ)
	ne.PutUint16(b[6:], 0x1) // NLM_F_REQUEST
	ne.PutUint32(b[8:], seq)
	copy(b[nlmsgHdrLen:], payload)
	return b
}

type nlMsg struct {
	Type    uint16
	Seq     uint32
	Payload []byte
}

// nlParse splits a datagram into netlink messages.
func nlParse(b []byte) ([]nlMsg, error) {
	var msgs []nlMsg
	for len(b) >= nlmsgHdrLen {
		n := int(ne.Uint32(b[0:]))
		if n < nlmsgHdrLen || n > len(b) {
			return msgs, fmt.Errorf("netlink: message length %d with %d bytes left", n, len(b))
		}
		msgs = append(msgs, nlMsg{Type: ne.Uint16(b[4:]), Seq: ne.Uint32(b[8:]), Payload: b[nlmsgHdrLen:n]})
		if nlAlign(n) >= len(b) {
			break
		}
		b = b[nlAlign(n):]
	}
	return msgs, nil
}
