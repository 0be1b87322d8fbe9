package iscsi

import (
	"context"
	"crypto/sha256"
	"fmt"
	"strconv"
	"strings"
)

// Target is what a node needs to reach its volume.
type Target struct {
	Portal     string // A.B.C.D:3260
	Name       string // target IQN
	LUN        int
	Initiator  string // our IQN
	CHAPUser   string // empty: no authentication offered
	CHAPSecret string
}

// Transport carries login PDUs: the kernel's connection over netlink on a node, a plain
// TCP socket in tests and tools.
type Transport interface {
	// RoundTrip sends one PDU (BHS and padded data) and returns the response PDU.
	RoundTrip(ctx context.Context, pdu []byte) ([]byte, error)
}

// Params are the outcome of a login: what the full-feature phase must use.
type Params struct {
	TSIH           uint16
	StatSN         uint32 // of the final login response
	ExpCmdSN       uint32
	TPGT           int
	MaxRecvDSL     int // ours, declared to the target
	MaxXmitDSL     int // the target's MaxRecvDataSegmentLength
	InitialR2T     bool
	ImmediateData  bool
	MaxBurst       int
	FirstBurst     int
	MaxR2T         int
	DataPDUInOrder bool
	DataSeqInOrder bool
	ERL            int
	HeaderDigest   bool
	DataDigest     bool
}

// Our operational offer: iscsi_tcp's usual values, digests off (the link is trusted and
// CRC32C would cost the node CPU), no markers, error recovery level 0 (the kernel's).
const ourMaxRecvDSL = 262144

func operationalOffer() Keys {
	return Keys{
		{"HeaderDigest", "None"}, {"DataDigest", "None"},
		{"MaxConnections", "1"}, {"InitialR2T", "No"}, {"ImmediateData", "Yes"},
		{"MaxRecvDataSegmentLength", strconv.Itoa(ourMaxRecvDSL)},
		{"MaxBurstLength", "16776192"}, {"FirstBurstLength", "262144"},
		{"DefaultTime2Wait", "0"}, {"DefaultTime2Retain", "0"},
		{"MaxOutstandingR2T", "1"}, {"DataPDUInOrder", "Yes"}, {"DataSequenceInOrder", "Yes"},
		{"ErrorRecoveryLevel", "0"}, {"IFMarker", "No"}, {"OFMarker", "No"},
	}
}

// ISID derives a stable session identifier from the initiator name (type "random", 10b),
// so a node that logs in again after a crash reinstates its old session on the target.
func ISID(initiator string) [6]byte {
	h := sha256.Sum256([]byte(initiator))
	return [6]byte{0x80 | h[0]&0x3f, h[1], h[2], h[3], 0, 1}
}

// maxLoginPDUs bounds a login so a confused target cannot keep us in it forever.
const maxLoginPDUs = 16

// Login runs the login phase: security negotiation (CHAP when a user is set) and
// operational negotiation, ending in full-feature phase.
func Login(ctx context.Context, t Transport, tgt Target, cid uint16) (Params, error) {
	p := Params{
		MaxRecvDSL: ourMaxRecvDSL, MaxXmitDSL: 8192, InitialR2T: true, ImmediateData: true,
		MaxBurst: 262144, FirstBurst: 65536, MaxR2T: 1, DataPDUInOrder: true, DataSeqInOrder: true,
	}
	if tgt.Initiator == "" || tgt.Name == "" {
		return p, fmt.Errorf("iSCSI login: initiator and target names are required")
	}
	req := LoginReq{ISID: ISID(tgt.Initiator), CID: cid, CSG: StageSecurity, NSG: StageOperational}
	keys := Keys{{"InitiatorName", tgt.Initiator}, {"SessionType", "Normal"}, {"TargetName", tgt.Name}}
	useCHAP := tgt.CHAPUser != ""
	if useCHAP {
		keys = append(keys, KV{"AuthMethod", "CHAP,None"})
	} else {
		keys = append(keys, KV{"AuthMethod", "None"})
		req.Transit = true
	}
	const (
		offerAuth = iota
		sentChapA
		sentChapR
		operational
	)
	state := offerAuth
	for range maxLoginPDUs {
		req.Data = keys.Marshal()
		b, err := req.MarshalBinary()
		if err != nil {
			return p, err
		}
		rb, err := t.RoundTrip(ctx, b)
		if err != nil {
			return p, fmt.Errorf("iSCSI login: %w", err)
		}
		var resp LoginResp
		if err := resp.UnmarshalBinary(rb); err != nil {
			return p, fmt.Errorf("iSCSI login: %w", err)
		}
		if err := StatusError(resp.StatusClass, resp.StatusDetail); err != nil {
			return p, err
		}
		rk, err := ParseKeys(resp.Data)
		if err != nil {
			return p, fmt.Errorf("iSCSI login: %w", err)
		}
		req.ExpStatSN = resp.StatSN + 1
		req.CmdSN = resp.ExpCmdSN
		p.StatSN, p.ExpCmdSN = resp.StatSN, resp.ExpCmdSN
		if v, ok := rk.Get("TargetPortalGroupTag"); ok {
			p.TPGT, _ = strconv.Atoi(v)
		}
		if err := applyOperational(&p, rk); err != nil {
			return p, err
		}
		if resp.Transit && resp.NSG == StageFullFeature {
			if req.NSG != StageFullFeature {
				return p, fmt.Errorf("iSCSI login: target jumped to full feature phase unasked")
			}
			p.TSIH = resp.TSIH
			return p, nil
		}
		keys = nil
		switch state {
		case offerAuth:
			switch m, _ := rk.Get("AuthMethod"); m {
			case "CHAP":
				if !useCHAP {
					return p, &LoginError{Class: 2, Detail: 1, Reason: "target requires CHAP and the node has no secret"}
				}
				keys, state = Keys{{"CHAP_A", chapMD5}}, sentChapA
				continue
			case "None", "":
				if resp.Transit {
					state = operational
				} else {
					// The target wants another PDU before moving on; ask to transit.
					req.Transit = true
					continue
				}
			default:
				return p, fmt.Errorf("iSCSI login: target chose AuthMethod %q", m)
			}
		case sentChapA:
			ans, err := chapAnswer(rk, tgt.CHAPUser, tgt.CHAPSecret)
			if err != nil {
				return p, fmt.Errorf("iSCSI login: %w", err)
			}
			keys, state, req.Transit = ans, sentChapR, true
			continue
		case sentChapR:
			if !resp.Transit {
				return p, fmt.Errorf("iSCSI login: target did not accept the CHAP response and did not refuse it")
			}
			state = operational
		case operational:
			// The target needs another round (it answered without the T bit): send an empty
			// request with T set until it agrees.
			keys = answerTarget(rk)
			continue
		}
		if state == operational {
			if resp.TSIH != 0 {
				req.TSIH = 0 // TSIH is assigned only in the final response
			}
			req.CSG, req.NSG, req.Transit = StageOperational, StageFullFeature, true
			keys = operationalOffer()
		}
	}
	return p, fmt.Errorf("iSCSI login: not finished after %d PDUs", maxLoginPDUs)
}

// answerTarget echoes keys the target offered on its own (declaratives need no answer; a
// negotiation it started gets its value back, which accepts it).
func answerTarget(rk Keys) Keys {
	var out Keys
	for _, kv := range rk {
		switch kv.Key {
		case "TargetAlias", "TargetAddress", "TargetPortalGroupTag", "MaxRecvDataSegmentLength":
			continue
		}
		if strings.HasPrefix(kv.Key, "X-") || strings.HasPrefix(kv.Key, "X#") {
			out = append(out, KV{kv.Key, "NotUnderstood"})
		}
	}
	return out
}

func applyOperational(p *Params, rk Keys) error {
	for _, kv := range rk {
		var err error
		switch kv.Key {
		case "MaxRecvDataSegmentLength":
			p.MaxXmitDSL, err = atoiRange(kv.Value, 512, 1<<24-1)
		case "MaxBurstLength":
			p.MaxBurst, err = atoiRange(kv.Value, 512, 1<<24-1)
		case "FirstBurstLength":
			p.FirstBurst, err = atoiRange(kv.Value, 512, 1<<24-1)
		case "MaxOutstandingR2T":
			p.MaxR2T, err = atoiRange(kv.Value, 1, 65535)
		case "ErrorRecoveryLevel":
			p.ERL, err = atoiRange(kv.Value, 0, 2)
		case "InitialR2T":
			p.InitialR2T = kv.Value == "Yes"
		case "ImmediateData":
			p.ImmediateData = kv.Value == "Yes"
		case "DataPDUInOrder":
			p.DataPDUInOrder = kv.Value == "Yes"
		case "DataSequenceInOrder":
			p.DataSeqInOrder = kv.Value == "Yes"
		case "HeaderDigest":
			p.HeaderDigest = kv.Value == "CRC32C"
		case "DataDigest":
			p.DataDigest = kv.Value == "CRC32C"
		}
		if err != nil {
			return fmt.Errorf("iSCSI login: key %s: %w", kv.Key, err)
		}
	}
	if p.FirstBurst > p.MaxBurst {
		p.FirstBurst = p.MaxBurst
	}
	return nil
}

func atoiRange(s string, lo, hi int) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil {
		return 0, fmt.Errorf("value %q: %w", s, err)
	}
	if n < lo || n > hi {
		return 0, fmt.Errorf("value %d outside %d..%d", n, lo, hi)
	}
	return n, nil
}
