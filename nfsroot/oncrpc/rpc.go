// Package oncrpc is the ONC RPC (RFC 5531) wire format shared by the NFS, MOUNT and
// portmapper servers of nfsroot: call and reply messages, AUTH_SYS credentials, TCP record
// marking and XDR items. It also holds the small synchronous client the tests, the
// benchmarks and the rpcbind registration use.
package oncrpc

import (
	"errors"
	"fmt"
)

// Message types and reply states (RFC 5531 §9).
const (
	MsgCall  = 0
	MsgReply = 1

	ReplyAccepted = 0
	ReplyDenied   = 1

	// RPCVersion is the only RPC protocol version there is.
	RPCVersion = 2
)

// AcceptStat says why an accepted call did or did not run.
type AcceptStat uint32

// accept_stat values.
const (
	Success      AcceptStat = 0
	ProgUnavail  AcceptStat = 1
	ProgMismatch AcceptStat = 2
	ProcUnavail  AcceptStat = 3
	GarbageArgs  AcceptStat = 4
	SystemErr    AcceptStat = 5
)

// RejectStat says why a call was denied.
type RejectStat uint32

// reject_stat values.
const (
	RPCMismatch RejectStat = 0
	AuthError   RejectStat = 1
)

// AuthStat says why authentication failed.
type AuthStat uint32

// auth_stat values used here.
const (
	AuthOK           AuthStat = 0
	AuthBadCred      AuthStat = 1
	AuthRejectedCred AuthStat = 2
	AuthBadVerf      AuthStat = 3
	AuthRejectedVerf AuthStat = 4
	AuthTooWeak      AuthStat = 5
)

// Authentication flavors.
const (
	AuthNone = 0
	AuthSys  = 1
)

// MaxAuthBody is the largest credential or verifier body RFC 5531 allows.
const MaxAuthBody = 400

// OpaqueAuth is a credential or verifier.
type OpaqueAuth struct {
	Flavor uint32
	Body   []byte
}

func (a *OpaqueAuth) decode(d *Decoder, field string) {
	a.Flavor = d.Uint32(field + ".flavor")
	a.Body = d.Opaque(field+".body", MaxAuthBody)
}

func (a OpaqueAuth) append(b []byte) []byte {
	b = AppendUint32(b, a.Flavor)
	return AppendOpaque(b, a.Body)
}

// VersionError reports a call whose RPC version is not 2; the server answers RPC_MISMATCH.
type VersionError struct{ Version uint32 }

func (e *VersionError) Error() string { return fmt.Sprintf("rpc version %d, want 2", e.Version) }

// Call is an RPC call message. Args aliases the buffer it was decoded from.
type Call struct {
	XID  uint32
	Prog uint32
	Vers uint32
	Proc uint32
	Cred OpaqueAuth
	Verf OpaqueAuth
	Args []byte
}

// UnmarshalBinary decodes a call. On a *VersionError the XID is already set so the caller
// can answer it.
func (c *Call) UnmarshalBinary(b []byte) error {
	d := NewDecoder(b)
	c.XID = d.Uint32("xid")
	if mt := d.Uint32("mtype"); d.Err == nil && mt != MsgCall {
		return fmt.Errorf("mtype %d is not a call", mt)
	}
	rv := d.Uint32("rpcvers")
	if d.Err != nil {
		return fmt.Errorf("rpc call: %w", d.Err)
	}
	if rv != RPCVersion {
		return &VersionError{Version: rv}
	}
	c.Prog = d.Uint32("prog")
	c.Vers = d.Uint32("vers")
	c.Proc = d.Uint32("proc")
	c.Cred.decode(d, "cred")
	c.Verf.decode(d, "verf")
	if d.Err != nil {
		return fmt.Errorf("rpc call: %w", d.Err)
	}
	c.Args = d.B
	return nil
}

// AppendBinary appends the encoded call.
func (c *Call) AppendBinary(b []byte) ([]byte, error) {
	if len(c.Cred.Body) > MaxAuthBody || len(c.Verf.Body) > MaxAuthBody {
		return b, errors.New("rpc call: auth body too long")
	}
	b = AppendUint32(b, c.XID)
	b = AppendUint32(b, MsgCall)
	b = AppendUint32(b, RPCVersion)
	b = AppendUint32(b, c.Prog)
	b = AppendUint32(b, c.Vers)
	b = AppendUint32(b, c.Proc)
	b = c.Cred.append(b)
	b = c.Verf.append(b)
	return append(b, c.Args...), nil
}

// MarshalBinary encodes the call.
func (c *Call) MarshalBinary() ([]byte, error) { return c.AppendBinary(nil) }

// Reply is an RPC reply message. Which fields mean something depends on Stat, AcceptStat
// and RejectStat; Low and High carry the supported range of a PROG_MISMATCH or RPC_MISMATCH.
type Reply struct {
	XID        uint32
	Stat       uint32 // ReplyAccepted or ReplyDenied
	Verf       OpaqueAuth
	AcceptStat AcceptStat
	RejectStat RejectStat
	AuthStat   AuthStat
	Low, High  uint32
	Results    []byte
}

// UnmarshalBinary decodes a reply; Results aliases b.
func (r *Reply) UnmarshalBinary(b []byte) error {
	d := NewDecoder(b)
	*r = Reply{XID: d.Uint32("xid")}
	if mt := d.Uint32("mtype"); d.Err == nil && mt != MsgReply {
		return fmt.Errorf("rpc reply: mtype %d is not a reply", mt)
	}
	r.Stat = d.Uint32("reply_stat")
	switch {
	case d.Err != nil:
	case r.Stat == ReplyAccepted:
		r.Verf.decode(d, "verf")
		r.AcceptStat = AcceptStat(d.Uint32("accept_stat"))
		switch r.AcceptStat {
		case Success:
			r.Results = d.B
		case ProgMismatch:
			r.Low, r.High = d.Uint32("low"), d.Uint32("high")
		}
	case r.Stat == ReplyDenied:
		r.RejectStat = RejectStat(d.Uint32("reject_stat"))
		switch r.RejectStat {
		case RPCMismatch:
			r.Low, r.High = d.Uint32("low"), d.Uint32("high")
		case AuthError:
			r.AuthStat = AuthStat(d.Uint32("auth_stat"))
		default:
			return fmt.Errorf("rpc reply: reject_stat %d unknown", r.RejectStat)
		}
	default:
		return fmt.Errorf("rpc reply: reply_stat %d unknown", r.Stat)
	}
	if d.Err != nil {
		return fmt.Errorf("rpc reply: %w", d.Err)
	}
	return nil
}

// AppendBinary appends the encoded reply.
func (r *Reply) AppendBinary(b []byte) ([]byte, error) {
	b = AppendUint32(b, r.XID)
	b = AppendUint32(b, MsgReply)
	b = AppendUint32(b, r.Stat)
	switch r.Stat {
	case ReplyAccepted:
		if len(r.Verf.Body) > MaxAuthBody {
			return b, errors.New("rpc reply: verifier too long")
		}
		b = r.Verf.append(b)
		b = AppendUint32(b, uint32(r.AcceptStat))
		switch r.AcceptStat {
		case Success:
			b = append(b, r.Results...)
		case ProgMismatch:
			b = AppendUint32(b, r.Low)
			b = AppendUint32(b, r.High)
		}
	case ReplyDenied:
		b = AppendUint32(b, uint32(r.RejectStat))
		switch r.RejectStat {
		case RPCMismatch:
			b = AppendUint32(b, r.Low)
			b = AppendUint32(b, r.High)
		case AuthError:
			b = AppendUint32(b, uint32(r.AuthStat))
		default:
			return b, fmt.Errorf("rpc reply: reject_stat %d unknown", r.RejectStat)
		}
	default:
		return b, fmt.Errorf("rpc reply: reply_stat %d unknown", r.Stat)
	}
	return b, nil
}

// MarshalBinary encodes the reply.
func (r *Reply) MarshalBinary() ([]byte, error) { return r.AppendBinary(nil) }

// AppendSuccess appends the header of an accepted, successful reply with a null verifier;
// the procedure's results follow it.
func AppendSuccess(b []byte, xid uint32) []byte {
	b = AppendUint32(b, xid)
	b = AppendUint32(b, MsgReply)
	b = AppendUint32(b, ReplyAccepted)
	b = AppendUint32(b, AuthNone)
	b = AppendUint32(b, 0)
	return AppendUint32(b, uint32(Success))
}

// AuthSysParams is an AUTH_SYS (AUTH_UNIX) credential body.
type AuthSysParams struct {
	Stamp   uint32
	Machine string
	UID     uint32
	GID     uint32
	GIDs    []uint32
}

// Limits of an AUTH_SYS credential (RFC 5531 appendix A).
const (
	maxMachineName = 255
	maxGIDs        = 16
)

// UnmarshalBinary decodes an AUTH_SYS body.
func (a *AuthSysParams) UnmarshalBinary(b []byte) error {
	d := NewDecoder(b)
	a.Stamp = d.Uint32("stamp")
	a.Machine = d.String("machinename", maxMachineName)
	a.UID = d.Uint32("uid")
	a.GID = d.Uint32("gid")
	n := d.Uint32("gids.len")
	if d.Err == nil && n > maxGIDs {
		return fmt.Errorf("auth_sys: %d gids exceed %d", n, maxGIDs)
	}
	a.GIDs = nil
	if n > 0 {
		a.GIDs = make([]uint32, 0, n)
	}
	for i := uint32(0); i < n && d.Err == nil; i++ {
		a.GIDs = append(a.GIDs, d.Uint32("gids"))
	}
	if d.Err != nil {
		return fmt.Errorf("auth_sys: %w", d.Err)
	}
	return nil
}

// MarshalBinary encodes an AUTH_SYS body.
func (a *AuthSysParams) MarshalBinary() ([]byte, error) {
	if len(a.Machine) > maxMachineName || len(a.GIDs) > maxGIDs {
		return nil, errors.New("auth_sys: machine name or gid list too long")
	}
	b := AppendUint32(nil, a.Stamp)
	b = AppendString(b, a.Machine)
	b = AppendUint32(b, a.UID)
	b = AppendUint32(b, a.GID)
	b = AppendUint32(b, uint32(len(a.GIDs)))
	for _, g := range a.GIDs {
		b = AppendUint32(b, g)
	}
	return b, nil
}
