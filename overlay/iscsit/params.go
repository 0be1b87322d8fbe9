package iscsit

import (
	"strconv"
	"strings"
)

// params are a connection's and session's negotiated operational parameters
// (RFC 7143 §13). Zero values are never used: newParams fills in the RFC defaults.
type params struct {
	digests                digests
	initiatorMaxRecvData   uint32 // what the initiator accepts per PDU: bounds our Data-In
	targetMaxRecvData      uint32 // what we accept per PDU
	maxBurst, firstBurst   uint32
	initialR2T, immediate  bool
	maxOutstandingR2T      uint32
	maxConnections         uint32
	errorRecoveryLevel     uint32
	time2Wait, time2Retain uint32
}

func newParams(targetMaxRecvData uint32) params {
	return params{
		initiatorMaxRecvData: 8192,
		targetMaxRecvData:    targetMaxRecvData,
		maxBurst:             262144,
		firstBurst:           65536,
		initialR2T:           true,
		immediate:            true,
		maxOutstandingR2T:    1,
		maxConnections:       1,
		time2Wait:            2,
		time2Retain:          20,
	}
}

// What we are willing to go up to.
const (
	ourMaxBurst          = 1<<24 - 1
	ourFirstBurst        = 1<<24 - 1
	ourMaxOutstandingR2T = 8
)

// loginOnlyKeys are declarations handled by the login code, not answered here.
var loginOnlyKeys = map[string]bool{
	"InitiatorName": true, "InitiatorAlias": true, "TargetName": true, "SessionType": true,
	"AuthMethod": true, "CHAP_A": true, "CHAP_I": true, "CHAP_C": true, "CHAP_N": true, "CHAP_R": true,
}

// negotiate applies the initiator's offers and returns our answers, in order. Keys we
// do not know are answered NotUnderstood; bad values Reject (RFC 7143 §6.2).
func (p *params) negotiate(in TextParams) TextParams {
	var out TextParams
	answer := func(k, v string) { out = append(out, KV{k, v}) }
	for _, kv := range in {
		k, v := kv.Key, kv.Value
		if loginOnlyKeys[k] {
			continue
		}
		switch k {
		case "HeaderDigest", "DataDigest":
			choice := ""
			for _, o := range strings.Split(v, ",") {
				if o == "None" || o == "CRC32C" {
					choice = o
					break
				}
			}
			if choice == "" {
				answer(k, "Reject")
				continue
			}
			if k == "HeaderDigest" {
				p.digests.header = choice == "CRC32C"
			} else {
				p.digests.data = choice == "CRC32C"
			}
			answer(k, choice)
		case "MaxConnections":
			n, ok := parseNum(v, 1, 65535)
			if !ok {
				answer(k, "Reject")
				continue
			}
			p.maxConnections = 1
			_ = n
			answer(k, "1")
		case "InitialR2T": // OR: Yes wins
			b, ok := parseBool(v)
			if !ok {
				answer(k, "Reject")
				continue
			}
			p.initialR2T = b
			answer(k, yesNo(b))
		case "ImmediateData": // AND
			b, ok := parseBool(v)
			if !ok {
				answer(k, "Reject")
				continue
			}
			p.immediate = b
			answer(k, yesNo(b))
		case "DataPDUInOrder", "DataSequenceInOrder": // OR, and we only do in order
			if _, ok := parseBool(v); !ok {
				answer(k, "Reject")
				continue
			}
			answer(k, "Yes")
		case "IFMarker", "OFMarker": // AND, we have none
			answer(k, "No")
		case "IFMarkInt", "OFMarkInt":
			answer(k, "Irrelevant")
		case "MaxRecvDataSegmentLength": // declarative
			n, ok := parseNum(v, 512, 1<<24-1)
			if !ok {
				answer(k, "Reject")
				continue
			}
			p.initiatorMaxRecvData = n
		case "MaxBurstLength":
			n, ok := parseNum(v, 512, 1<<24-1)
			if !ok {
				answer(k, "Reject")
				continue
			}
			p.maxBurst = min(n, ourMaxBurst)
			answer(k, strconv.FormatUint(uint64(p.maxBurst), 10))
		case "FirstBurstLength":
			n, ok := parseNum(v, 512, 1<<24-1)
			if !ok {
				answer(k, "Reject")
				continue
			}
			p.firstBurst = min(n, ourFirstBurst)
			answer(k, strconv.FormatUint(uint64(p.firstBurst), 10))
		case "MaxOutstandingR2T":
			n, ok := parseNum(v, 1, 65535)
			if !ok {
				answer(k, "Reject")
				continue
			}
			p.maxOutstandingR2T = min(n, ourMaxOutstandingR2T)
			answer(k, strconv.FormatUint(uint64(p.maxOutstandingR2T), 10))
		case "DefaultTime2Wait": // max
			n, ok := parseNum(v, 0, 3600)
			if !ok {
				answer(k, "Reject")
				continue
			}
			p.time2Wait = max(n, 2)
			answer(k, strconv.FormatUint(uint64(p.time2Wait), 10))
		case "DefaultTime2Retain": // min
			n, ok := parseNum(v, 0, 3600)
			if !ok {
				answer(k, "Reject")
				continue
			}
			p.time2Retain = min(n, 20)
			answer(k, strconv.FormatUint(uint64(p.time2Retain), 10))
		case "ErrorRecoveryLevel": // min, we do level 0
			if _, ok := parseNum(v, 0, 2); !ok {
				answer(k, "Reject")
				continue
			}
			p.errorRecoveryLevel = 0
			answer(k, "0")
		case "iSCSIProtocolLevel": // RFC 7144, min; we implement RFC 7143 = 1
			n, ok := parseNum(v, 0, 31)
			if !ok {
				answer(k, "Reject")
				continue
			}
			answer(k, strconv.FormatUint(uint64(min(n, 1)), 10))
		case "TaskReporting":
			answer(k, "RFC3720")
		default:
			answer(k, "NotUnderstood")
		}
	}
	// Adjustments the RFC requires after both sides spoke.
	if p.firstBurst > p.maxBurst {
		p.firstBurst = p.maxBurst
		for i := range out {
			if out[i].Key == "FirstBurstLength" {
				out[i].Value = strconv.FormatUint(uint64(p.firstBurst), 10)
			}
		}
	}
	return out
}

func parseNum(s string, lo, hi uint64) (uint32, bool) {
	n, err := strconv.ParseUint(s, 0, 32)
	if err != nil || n < lo || n > hi {
		return 0, false
	}
	return uint32(n), true
}

func parseBool(s string) (bool, bool) {
	switch s {
	case "Yes":
		return true, true
	case "No":
		return false, true
	}
	return false, false
}

func yesNo(b bool) string {
	if b {
		return "Yes"
	}
	return "No"
}
