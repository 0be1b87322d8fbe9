package iscsi

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

const netlinkISCSI = 8

// TransportHandleFile holds the handle of the kernel's software iSCSI transport once
// iscsi_tcp is loaded.
const TransportHandleFile = "/sys/class/iscsi_transport/tcp/handle"

// Kernel is a NETLINK_ISCSI socket to the kernel's iSCSI transport class, joined to the
// group on which it reports received login PDUs and connection errors.
type Kernel struct {
	fd     int
	handle uint64
	seq    uint32
	events []uevent // kernel events read while waiting for a reply
	evdata [][]byte
}

// OpenKernel opens the socket; iscsi_tcp must be loaded.
func OpenKernel() (*Kernel, error) {
	b, err := os.ReadFile(TransportHandleFile)
	if err != nil {
		return nil, fmt.Errorf("iscsi_tcp transport: %w (is iscsi_tcp loaded?)", err)
	}
	handle, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return nil, fmt.Errorf("iscsi_tcp transport handle %q: %w", b, err)
	}
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, netlinkISCSI)
	if err != nil {
		return nil, fmt.Errorf("NETLINK_ISCSI socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: 1 << (nlGroupISCSID - 1)}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("NETLINK_ISCSI bind: %w", err)
	}
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 1<<20)
	return &Kernel{fd: fd, handle: handle}, nil
}

// Close closes the socket; sessions stay in the kernel.
func (k *Kernel) Close() error { return unix.Close(k.fd) }

func (k *Kernel) send(ev uevent, payload []byte) error {
	ev.Handle = k.handle
	k.seq++
	msg := nlMarshal(uint16(ev.Type), k.seq, ev.marshal(payload))
	if err := unix.Sendto(k.fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("netlink send: %w", err)
	}
	return nil
}

// recv reads one datagram, waiting at most until deadline.
func (k *Kernel) recv(deadline time.Time) ([]nlMsg, error) {
	wait := time.Until(deadline)
	if wait <= 0 {
		return nil, os.ErrDeadlineExceeded
	}
	ms := int(wait / time.Millisecond)
	if ms > 1000 {
		ms = 1000 // wake up now and then so a cancelled context is noticed
	}
	pfd := []unix.PollFd{{Fd: int32(k.fd), Events: unix.POLLIN}}
	n, err := unix.Poll(pfd, ms)
	if err != nil {
		if errors.Is(err, unix.EINTR) {
			return nil, nil
		}
		return nil, fmt.Errorf("netlink poll: %w", err)
	}
	if n == 0 {
		return nil, nil
	}
	buf := make([]byte, 1<<16)
	n, _, err = unix.Recvfrom(k.fd, buf, 0)
	if err != nil {
		return nil, fmt.Errorf("netlink receive: %w", err)
	}
	return nlParse(buf[:n])
}

// request sends one message and waits for the kernel's reply to it, keeping events that
// arrive meanwhile.
func (k *Kernel) request(ev uevent, payload []byte) (uevent, error) {
	if err := k.send(ev, payload); err != nil {
		return uevent{}, err
	}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		msgs, err := k.recv(deadline)
		if err != nil {
			return uevent{}, err
		}
		for _, m := range msgs {
			if m.Type == unix.NLMSG_ERROR {
				if len(m.Payload) >= 4 {
					if e := int32(binary.NativeEndian.Uint32(m.Payload)); e != 0 {
						return uevent{}, fmt.Errorf("netlink: %w", unix.Errno(-e))
					}
				}
				continue
			}
			rep, data, err := parseUevent(m.Payload)
			if err != nil {
				return uevent{}, err
			}
			if uint32(m.Type) == ev.Type {
				if rep.IfError != 0 {
					return rep, unix.Errno(-rep.IfError)
				}
				return rep, nil
			}
			k.events = append(k.events, rep)
			k.evdata = append(k.evdata, append([]byte(nil), data...))
		}
	}
	return uevent{}, fmt.Errorf("netlink: no reply to request %d", ev.Type)
}

// nextEvent returns the next kernel event (queued or read), or ok=false at deadline.
func (k *Kernel) nextEvent(ctx context.Context, deadline time.Time) (uevent, []byte, error) {
	for {
		if len(k.events) > 0 {
			ev, data := k.events[0], k.evdata[0]
			k.events, k.evdata = k.events[1:], k.evdata[1:]
			return ev, data, nil
		}
		if err := ctx.Err(); err != nil {
			return uevent{}, nil, err
		}
		msgs, err := k.recv(deadline)
		if err != nil {
			return uevent{}, nil, err
		}
		for _, m := range msgs {
			ev, data, err := parseUevent(m.Payload)
			if err != nil || m.Type == unix.NLMSG_ERROR {
				continue
			}
			k.events = append(k.events, ev)
			k.evdata = append(k.evdata, append([]byte(nil), data...))
		}
	}
}

// drain drops queued and pending kernel events: before a new connection is bound, reports
// about the previous one (its close after a refused login, say) are stale.
func (k *Kernel) drain() {
	k.events, k.evdata = nil, nil
	deadline := time.Now().Add(50 * time.Millisecond)
	for time.Now().Before(deadline) {
		msgs, err := k.recv(deadline)
		if err != nil || len(msgs) == 0 {
			return
		}
	}
}

func retcode(ev uevent) error {
	if rc := int32(ev.r32(0)); rc != 0 {
		if rc < 0 {
			return unix.Errno(-rc)
		}
		return unix.Errno(rc)
	}
	return nil
}

// CreateSession makes a software iSCSI session (and its SCSI host) in the kernel.
func (k *Kernel) CreateSession(initialCmdSN uint32, cmdsMax, queueDepth uint16) (sid, host uint32, err error) {
	ev := uevent{Type: evCreateSession}
	ev.u32(0, initialCmdSN)
	ev.u16(4, cmdsMax)
	ev.u16(6, queueDepth)
	rep, err := k.request(ev, nil)
	if err != nil {
		return 0, 0, fmt.Errorf("create session: %w", err)
	}
	return rep.r32(0), rep.r32(4), nil
}

// DestroySession removes a session and its SCSI host.
func (k *Kernel) DestroySession(sid uint32) error {
	ev := uevent{Type: evDestroySession}
	ev.u32(0, sid)
	if _, err := k.request(ev, nil); err != nil {
		return fmt.Errorf("destroy session %d: %w", sid, err)
	}
	return nil
}

// CreateConn adds connection cid to a session.
func (k *Kernel) CreateConn(sid, cid uint32) (uint32, error) {
	ev := uevent{Type: evCreateConn}
	ev.u32(0, sid)
	ev.u32(4, cid)
	rep, err := k.request(ev, nil)
	if err != nil {
		return 0, fmt.Errorf("create connection: %w", err)
	}
	return rep.r32(4), nil
}

// BindConn hands a connected TCP socket (a descriptor of this process) to the connection.
func (k *Kernel) BindConn(sid, cid uint32, sockfd int, leading bool) error {
	ev := uevent{Type: evBindConn}
	ev.u32(0, sid)
	ev.u32(4, cid)
	ev.u64(8, uint64(sockfd))
	if leading {
		ev.u32(16, 1)
	}
	rep, err := k.request(ev, nil)
	if err == nil {
		err = retcode(rep)
	}
	if err != nil {
		return fmt.Errorf("bind connection: %w", err)
	}
	return nil
}

// SetParam sets one session or connection parameter, as text.
func (k *Kernel) SetParam(sid, cid, param uint32, value string) error {
	ev := uevent{Type: evSetParam}
	ev.u32(0, sid)
	ev.u32(4, cid)
	ev.u32(8, param)
	ev.u32(12, uint32(len(value)+1))
	rep, err := k.request(ev, append([]byte(value), 0))
	if err == nil {
		err = retcode(rep)
	}
	if err != nil {
		return fmt.Errorf("set parameter %d: %w", param, err)
	}
	return nil
}

// StartConn moves the connection to full-feature phase in the kernel.
func (k *Kernel) StartConn(sid, cid uint32) error {
	ev := uevent{Type: evStartConn}
	ev.u32(0, sid)
	ev.u32(4, cid)
	rep, err := k.request(ev, nil)
	if err == nil {
		err = retcode(rep)
	}
	if err != nil {
		return fmt.Errorf("start connection: %w", err)
	}
	return nil
}

// StopConn stops the connection; STOP_CONN_RECOVER keeps the session (and its disk) for
// a new connection.
func (k *Kernel) StopConn(sid, cid uint32, flag uint32) error {
	ev := uevent{Type: evStopConn}
	ev.u32(0, sid)
	ev.u32(4, cid)
	ev.u32(16, flag)
	if _, err := k.request(ev, nil); err != nil {
		return fmt.Errorf("stop connection: %w", err)
	}
	return nil
}

// SendPDU queues a login PDU on the bound connection; the kernel fills in ITT and CmdSN.
func (k *Kernel) SendPDU(sid, cid uint32, hdr, data []byte) error {
	ev := uevent{Type: evSendPDU}
	ev.u32(0, sid)
	ev.u32(4, cid)
	ev.u32(8, uint32(len(hdr)))
	ev.u32(12, uint32(len(data)))
	rep, err := k.request(ev, append(append([]byte(nil), hdr...), data...))
	if err == nil {
		err = retcode(rep)
	}
	if err != nil {
		return fmt.Errorf("send PDU: %w", err)
	}
	return nil
}

// ConnError is a connection failure the kernel reported.
type ConnError struct{ SID, CID, Code uint32 }

func (e *ConnError) Error() string {
	return fmt.Sprintf("kernel reports connection %d of session %d failed (iscsi_err %d)", e.CID, e.SID, e.Code)
}

// KernelTransport runs the login through the kernel's connection, so the kernel numbers
// the login's CmdSN itself, as it does for open-iscsi: after a reconnect the session's
// command numbering then stays consistent with the target's.
type KernelTransport struct {
	K        *Kernel
	SID, CID uint32
}

// RoundTrip sends a login PDU and waits for the target's response (a RECV_PDU event).
func (t KernelTransport) RoundTrip(ctx context.Context, pdu []byte) ([]byte, error) {
	if len(pdu) < BHSLen {
		return nil, fmt.Errorf("PDU of %d bytes", len(pdu))
	}
	n := dataLen(pdu)
	if len(pdu) < BHSLen+n {
		return nil, fmt.Errorf("PDU shorter than its data segment")
	}
	if err := t.K.SendPDU(t.SID, t.CID, pdu[:BHSLen], pdu[BHSLen:BHSLen+n]); err != nil {
		return nil, err
	}
	deadline := time.Now().Add(20 * time.Second)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	for {
		ev, data, err := t.K.nextEvent(ctx, deadline)
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return nil, fmt.Errorf("no login response from the target within %s", time.Until(deadline).Round(time.Second))
			}
			return nil, err
		}
		switch ev.Type {
		case kevRecvPDU:
			if ev.r32(0) == t.SID && ev.r32(4) == t.CID {
				return data, nil
			}
		case kevConnError:
			if ev.r32(0) == t.SID && ev.r32(4) == t.CID {
				return nil, &ConnError{SID: t.SID, CID: t.CID, Code: ev.r32(8)}
			}
		}
	}
}
