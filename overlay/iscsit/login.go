package iscsit

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Login status classes and details (RFC 7143 §11.13.5).
const (
	statusSuccess            = 0x0000
	statusInitiatorError     = 0x0200
	statusAuthFailed         = 0x0201
	statusNotAuthorized      = 0x0202
	statusNotFound           = 0x0203
	statusUnsupportedVer     = 0x0205
	statusTooManyConns       = 0x0206
	statusMissingParam       = 0x0207
	statusSessionNotExist    = 0x020a
	statusTargetError        = 0x0300
	statusServiceUnavailable = 0x0301
	statusOutOfResources     = 0x0302
	stageSecurity            = 0
	stageOperational         = 1
	stageFullFeature         = 3
	loginMaxData             = 65536
	targetPortalGroupTag     = "1"
	sessionTypeDiscovery     = "Discovery"
	sessionTypeNormal        = "Normal"
	loginFlagTransit         = 0x80
	loginFlagContinue        = 0x40
)

type authState int

const (
	authStart authState = iota
	authWaitAlgorithm
	authWaitResponse
	authDone
)

// loginError ends a login with a status for the initiator and a reason for our log.
type loginError struct {
	status uint16
	reason string
}

func (e *loginError) Error() string {
	return fmt.Sprintf("login status 0x%04x: %s", e.status, e.reason)
}

func failLogin(status uint16, format string, args ...any) error {
	return &loginError{status: status, reason: fmt.Sprintf(format, args...)}
}

// login holds what a connection learns during its login phase.
type login struct {
	c           *conn
	first       bool
	initiator   string
	sessionType string
	tgt         *target
	isid        [6]byte
	tsih        uint16
	cid         uint16
	needAuth    bool
	auth        authState
	chapID      byte
	challenge   []byte
	chapUser    string
	declared    bool
	statSN      uint32
	pending     []byte
	p           params
}

// run performs the login phase. On success the connection has a session in full feature
// phase; on failure the initiator has been told why (when the connection still works).
func (l *login) run() (*session, error) {
	l.first = true
	l.p = newParams(l.c.srv.cfg.MaxRecvDataSegmentLength)
	var req PDU
	for {
		if err := readPDU(l.c.br, &req, loginMaxData, digests{}); err != nil {
			return nil, fmt.Errorf("read login request: %w", err)
		}
		if req.Opcode() != OpLoginReq {
			l.sendFail(&req, statusInitiatorError)
			return nil, fmt.Errorf("%v during login", req.Opcode())
		}
		done, err := l.step(&req)
		if err != nil {
			var le *loginError
			if errors.As(err, &le) {
				l.sendFail(&req, le.status)
			} else {
				l.sendFail(&req, statusTargetError)
			}
			return nil, err
		}
		if done {
			return l.c.sess, nil
		}
	}
}

// step handles one Login Request and sends its response. It reports whether the
// connection entered full feature phase.
func (l *login) step(req *PDU) (bool, error) {
	flags := req.Flags()
	transit := flags&loginFlagTransit != 0
	cont := flags&loginFlagContinue != 0
	csg, nsg := int(flags>>2&3), int(flags&3)
	copy(l.isid[:], req.BHS[8:14])
	tsih := req.u16(14)
	cmdSN := req.u32(offCmdSN)
	if l.first {
		l.statSN = req.u32(offExpStatSN)
		l.cid = req.u16(20)
	}
	if req.BHS[3] > 0 { // Version-min above the only version there is
		return false, failLogin(statusUnsupportedVer, "version-min %d", req.BHS[3])
	}
	if transit && cont {
		return false, failLogin(statusInitiatorError, "T and C bits both set")
	}
	if cont {
		if len(l.pending)+len(req.Data) > loginMaxData {
			return false, failLogin(statusInitiatorError, "login text longer than %d", loginMaxData)
		}
		l.pending = append(l.pending, req.Data...)
		return false, l.respond(req, csg, false, 0, nil)
	}
	text := append(l.pending, req.Data...)
	l.pending = nil
	var kv TextParams
	if err := kv.UnmarshalBinary(text); err != nil {
		return false, failLogin(statusInitiatorError, "%v", err)
	}
	var out TextParams
	if l.first {
		if err := l.identify(kv, tsih); err != nil {
			return false, err
		}
		if l.sessionType == sessionTypeNormal {
			out = append(out, KV{"TargetPortalGroupTag", targetPortalGroupTag})
		}
	}
	switch csg {
	case stageSecurity:
		ans, err := l.security(kv)
		if err != nil {
			return false, err
		}
		out = append(out, ans...)
	case stageOperational:
		if l.needAuth && l.auth != authDone {
			return false, failLogin(statusAuthFailed, "operational stage before authentication")
		}
		l.auth = authDone
		out = append(out, l.p.negotiate(kv)...)
		if !l.declared {
			out = append(out, KV{"MaxRecvDataSegmentLength", fmt.Sprint(l.p.targetMaxRecvData)})
			l.declared = true
		}
	default:
		return false, failLogin(statusInitiatorError, "login in stage %d", csg)
	}
	l.first = false
	// Transit only where the initiator asked and authentication allows it.
	canTransit := transit && (csg != stageSecurity || l.auth == authDone)
	if canTransit {
		if nsg <= csg || (nsg != stageOperational && nsg != stageFullFeature) {
			return false, failLogin(statusInitiatorError, "transit from stage %d to %d", csg, nsg)
		}
	}
	if canTransit && nsg == stageFullFeature {
		ss := newSession(l.c, l)
		if _, err := l.c.srv.registerSession(ss); err != nil {
			return false, failLogin(statusTargetError, "%v", err)
		}
		l.c.sess = ss
		l.tsih = ss.tsih
		ss.start(cmdSN)
		// The login phase ends with this response: it goes without digests, everything
		// after it with the negotiated ones.
		if err := l.respond(req, csg, true, nsg, out); err != nil {
			return false, err
		}
		l.c.p = l.p
		return true, nil
	}
	return false, l.respond(req, csg, canTransit, nsg, out)
}

// identify checks the first Login Request's declarations: who logs in, to what.
func (l *login) identify(kv TextParams, tsih uint16) error {
	name, ok := kv.Get("InitiatorName")
	if !ok || name == "" {
		return failLogin(statusMissingParam, "no InitiatorName")
	}
	l.initiator = name
	l.sessionType = sessionTypeNormal
	if st, ok := kv.Get("SessionType"); ok {
		if st != sessionTypeNormal && st != sessionTypeDiscovery {
			return failLogin(statusInitiatorError, "SessionType %q", st)
		}
		l.sessionType = st
	}
	if tsih != 0 {
		if l.c.srv.sessionByTSIH(tsih) {
			return failLogin(statusTooManyConns, "second connection to session %d (MaxConnections=1)", tsih)
		}
		return failLogin(statusSessionNotExist, "session %d does not exist", tsih)
	}
	if l.sessionType == sessionTypeDiscovery {
		l.needAuth = false // decided by the AuthMethod the initiator offers
		return nil
	}
	tn, ok := kv.Get("TargetName")
	if !ok || tn == "" {
		return failLogin(statusMissingParam, "no TargetName")
	}
	t := l.c.srv.lookup(tn)
	if t == nil {
		if l.c.srv.starting() {
			return failLogin(statusServiceUnavailable, "target %s not (yet) there, server starting", tn)
		}
		return failLogin(statusNotFound, "target %s not found", tn)
	}
	if !t.spec.allows(name) {
		return failLogin(statusNotAuthorized, "initiator %s not allowed on %s", name, tn)
	}
	l.tgt = t
	l.needAuth = t.spec.CHAPUser != ""
	return nil
}

// security runs the authentication exchange (RFC 7143 §12).
func (l *login) security(kv TextParams) (TextParams, error) {
	var out TextParams
	if l.auth == authStart {
		methods, ok := kv.Get("AuthMethod")
		if !ok {
			if l.needAuth {
				// The initiator must offer a method before it can pass.
				return out, nil
			}
			l.auth = authDone
			return out, nil
		}
		choice := ""
		for _, m := range strings.Split(methods, ",") {
			if m == "CHAP" && (l.needAuth || (l.sessionType == sessionTypeDiscovery && l.c.srv.anyCHAP())) {
				choice = m
				break
			}
			if m == "None" && !l.needAuth {
				choice = m
				break
			}
		}
		if choice == "" {
			return nil, failLogin(statusAuthFailed, "no acceptable AuthMethod in %q", methods)
		}
		out = append(out, KV{"AuthMethod", choice})
		if choice == "None" {
			l.auth = authDone
		} else {
			l.needAuth = true
			l.auth = authWaitAlgorithm
		}
		return out, nil
	}
	switch l.auth {
	case authWaitAlgorithm:
		algs, ok := kv.Get("CHAP_A")
		if !ok {
			return out, nil
		}
		if !slices.Contains(strings.Split(algs, ","), chapMD5) {
			return nil, failLogin(statusAuthFailed, "CHAP_A %q without MD5", algs)
		}
		id, ch, err := newChallenge()
		if err != nil {
			return nil, err
		}
		l.chapID, l.challenge = id, ch
		l.auth = authWaitResponse
		out = append(out, KV{"CHAP_A", chapMD5}, KV{"CHAP_I", fmt.Sprint(id)}, KV{"CHAP_C", encodeCHAPBinary(ch)})
	case authWaitResponse:
		user, okN := kv.Get("CHAP_N")
		resp, okR := kv.Get("CHAP_R")
		if !okN || !okR {
			return nil, failLogin(statusAuthFailed, "CHAP_N or CHAP_R missing")
		}
		r, err := decodeCHAPBinary(resp)
		if err != nil {
			return nil, failLogin(statusAuthFailed, "CHAP_R: %v", err)
		}
		spec, err := l.verify(user, r)
		if err != nil {
			return nil, err
		}
		l.chapUser = user
		ans, err := l.mutualCHAP(kv, spec)
		if err != nil {
			return nil, err
		}
		out = append(out, ans...)
		l.auth = authDone
	}
	return out, nil
}

// verify checks the initiator's CHAP response and returns the spec whose secret matched.
func (l *login) verify(user string, r []byte) (*TargetSpec, error) {
	var candidates []*target
	if l.tgt != nil {
		candidates = []*target{l.tgt}
	} else {
		candidates = l.c.srv.chapTargets(user)
	}
	for _, t := range candidates {
		nameOK := len(user) == len(t.spec.CHAPUser) && user == t.spec.CHAPUser
		if nameOK && chapVerify(l.chapID, t.spec.CHAPSecret, l.challenge, r) {
			spec := t.spec
			return &spec, nil
		}
	}
	return nil, failLogin(statusAuthFailed, "CHAP response for user %q does not match", user)
}

// mutualCHAP answers the initiator's own challenge when it asks to authenticate us.
func (l *login) mutualCHAP(kv TextParams, spec *TargetSpec) (TextParams, error) {
	is, okI := kv.Get("CHAP_I")
	cs, okC := kv.Get("CHAP_C")
	if !okI && !okC {
		return nil, nil
	}
	if !okI || !okC {
		return nil, failLogin(statusAuthFailed, "mutual CHAP needs both CHAP_I and CHAP_C")
	}
	if spec.MutualUser == "" {
		return nil, failLogin(statusAuthFailed, "initiator asks for mutual CHAP, none configured")
	}
	id, err := decodeCHAPID(is)
	if err != nil {
		return nil, failLogin(statusAuthFailed, "%v", err)
	}
	c, err := decodeCHAPBinary(cs)
	if err != nil {
		return nil, failLogin(statusAuthFailed, "CHAP_C: %v", err)
	}
	if len(c) == 0 || bytes.Equal(c, l.challenge) {
		// A reflected challenge would make us compute the answer to our own challenge.
		return nil, failLogin(statusAuthFailed, "mutual CHAP challenge empty or reflected")
	}
	return TextParams{
		{"CHAP_N", spec.MutualUser},
		{"CHAP_R", encodeCHAPBinary(chapResponse(id, spec.MutualSecret, c))},
	}, nil
}

// respond sends a Login Response.
func (l *login) respond(req *PDU, csg int, transit bool, nsg int, kv TextParams) error {
	var p PDU
	p.SetOpcode(OpLoginResp)
	flags := uint8(csg) << 2
	if transit {
		flags |= loginFlagTransit | uint8(nsg)
	}
	p.SetFlags(flags)
	p.BHS[2], p.BHS[3] = 0, 0
	copy(p.BHS[8:14], req.BHS[8:14])
	p.put16(14, l.tsih)
	p.SetITT(req.ITT())
	p.put32(offCmdSN, l.statSN)
	l.statSN++
	cmdSN := req.u32(offCmdSN)
	p.put32(offExpStatSN, cmdSN)
	p.put32(offMaxCmdSN, cmdSN+uint32(l.c.srv.cfg.QueueDepth)-1)
	data, err := kv.MarshalBinary()
	if err != nil {
		return err
	}
	p.Data = data
	l.c.statSN = l.statSN
	return l.c.writeNow(&p)
}

// sendFail sends a Login Response carrying a failure status; errors are ignored because
// the connection is closed next anyway.
func (l *login) sendFail(req *PDU, status uint16) {
	var p PDU
	p.SetOpcode(OpLoginResp)
	p.SetFlags(req.Flags() & 0x0c)
	copy(p.BHS[8:14], req.BHS[8:14])
	p.SetITT(req.ITT())
	p.put32(offCmdSN, l.statSN)
	cmdSN := req.u32(offCmdSN)
	p.put32(offExpStatSN, cmdSN)
	p.put32(offMaxCmdSN, cmdSN)
	p.BHS[36], p.BHS[37] = uint8(status>>8), uint8(status)
	_ = l.c.writeNow(&p)
}
