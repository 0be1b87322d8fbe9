package iscsi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// DefaultRecoveryTimeout keeps I/O to a root disk queued through an appliance restart
// (a day) instead of failing it after open-iscsi's default two minutes.
const DefaultRecoveryTimeout = 86400

// Session is a kernel iSCSI session to one target, with one connection.
type Session struct {
	K      *Kernel `json:"-"`
	SID    uint32  `json:"sid"`
	CID    uint32  `json:"cid"`
	Host   uint32  `json:"host"`
	Target Target  `json:"target"`
	// RecoveryTimeout is replacement_timeout in seconds (DefaultRecoveryTimeout if zero).
	RecoveryTimeout int    `json:"recovery_timeout"`
	Params          Params `json:"params"`
	sockfd          int
}

// NewSession creates the kernel session and connection objects (no network yet).
func NewSession(k *Kernel, tgt Target) (*Session, error) {
	sid, host, err := k.CreateSession(1, 128, 32)
	if err != nil {
		return nil, err
	}
	cid, err := k.CreateConn(sid, 0)
	if err != nil {
		_ = k.DestroySession(sid)
		return nil, err
	}
	return &Session{K: k, SID: sid, CID: cid, Host: host, Target: tgt, sockfd: -1}, nil
}

// Connect makes one attempt to bring the connection up: TCP connect, hand the socket to
// the kernel, log in (CHAP) through it, set the negotiated parameters, start. On failure the
// connection is stopped again so the next attempt starts clean.
func (s *Session) Connect(ctx context.Context) error {
	err := s.connect(ctx)
	if err != nil {
		_ = s.K.StopConn(s.SID, s.CID, stopConnRecover)
		s.closeSocket()
	}
	return err
}

func (s *Session) connect(ctx context.Context) error {
	s.closeSocket()
	s.K.drain()
	fd, err := dialPortal(s.Target.Portal)
	if err != nil {
		return err
	}
	s.sockfd = fd
	if err := s.K.BindConn(s.SID, s.CID, fd, true); err != nil {
		return err
	}
	lctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	p, err := Login(lctx, KernelTransport{K: s.K, SID: s.SID, CID: s.CID}, s.Target, uint16(s.CID))
	if err != nil {
		return err
	}
	s.Params = p
	if err := s.setParams(); err != nil {
		return err
	}
	return s.K.StartConn(s.SID, s.CID)
}

func (s *Session) closeSocket() {
	if s.sockfd >= 0 {
		unix.Close(s.sockfd)
		s.sockfd = -1
	}
}

func dialPortal(portal string) (int, error) {
	host, port, err := net.SplitHostPort(portal)
	if err != nil {
		return -1, fmt.Errorf("portal %q: %w", portal, err)
	}
	ip := net.ParseIP(host).To4()
	pn, perr := strconv.Atoi(port)
	if ip == nil || perr != nil {
		return -1, fmt.Errorf("portal %q: want IPv4:port", portal)
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("socket: %w", err)
	}
	// A blocking connect honours SO_SNDTIMEO: no hang on an unreachable portal.
	_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &unix.Timeval{Sec: 10})
	_ = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	sa := &unix.SockaddrInet4{Port: pn}
	copy(sa.Addr[:], ip)
	if err := unix.Connect(fd, sa); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("connect %s: %w", portal, err)
	}
	_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &unix.Timeval{})
	return fd, nil
}

func b01(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

func (s *Session) setParams() error {
	p := s.Params
	host, port, _ := net.SplitHostPort(s.Target.Portal)
	tmo := s.RecoveryTimeout
	if tmo == 0 {
		tmo = DefaultRecoveryTimeout
	}
	params := []struct {
		id  uint32
		val string
	}{
		{paramMaxRecvDLength, strconv.Itoa(p.MaxRecvDSL)},
		{paramMaxXmitDLength, strconv.Itoa(p.MaxXmitDSL)},
		{paramHdrDgstEn, b01(p.HeaderDigest)},
		{paramDataDgstEn, b01(p.DataDigest)},
		{paramInitialR2TEn, b01(p.InitialR2T)},
		{paramMaxR2T, strconv.Itoa(p.MaxR2T)},
		{paramImmDataEn, b01(p.ImmediateData)},
		{paramFirstBurst, strconv.Itoa(p.FirstBurst)},
		{paramMaxBurst, strconv.Itoa(p.MaxBurst)},
		{paramPDUInOrderEn, b01(p.DataPDUInOrder)},
		{paramDataSeqInOrderEn, b01(p.DataSeqInOrder)},
		{paramERL, strconv.Itoa(p.ERL)},
		{paramIFMarkerEn, "0"},
		{paramOFMarkerEn, "0"},
		{paramExpStatSN, strconv.FormatUint(uint64(p.StatSN+1), 10)},
		{paramTargetName, s.Target.Name},
		{paramTPGT, strconv.Itoa(p.TPGT)},
		{paramPersistentAddr, host},
		{paramPersistentPort, port},
		{paramSessRecoveryTmo, strconv.Itoa(tmo)},
		{paramInitiatorName, s.Target.Initiator},
		{paramFastAbort, "1"},
		{paramAbortTmo, "15"},
		{paramLUResetTmo, "30"},
		{paramTgtResetTmo, "30"},
		// No NOP-Out pings and no receive timeout: a root disk must wait out an appliance
		// restart rather than declare the connection dead.
		{paramPingTmo, "0"},
		{paramRecvTmo, "0"},
	}
	for _, pr := range params {
		if err := s.K.SetParam(s.SID, s.CID, pr.id, pr.val); err != nil {
			// Parameters a driver does not implement are reported as ENOSYS; iscsid ignores them too.
			if errors.Is(err, unix.ENOSYS) {
				continue
			}
			return err
		}
	}
	return nil
}

// Scan asks the SCSI layer to scan the session's host (iscsi_tcp leaves scanning to user space).
func (s *Session) Scan() error {
	f := fmt.Sprintf("/sys/class/scsi_host/host%d/scan", s.Host)
	if err := os.WriteFile(f, []byte("- - -"), 0o200); err != nil {
		return fmt.Errorf("scan %s: %w", f, err)
	}
	return nil
}

// Device waits for the block device of the target's LUN and returns its /dev path.
func (s *Session) Device(ctx context.Context) (string, error) {
	pattern := fmt.Sprintf("/sys/class/iscsi_session/session%d/device/target*/*:*:*:%d/block/*", s.SID, s.Target.LUN)
	for {
		if m, _ := filepath.Glob(pattern); len(m) > 0 {
			dev := "/dev/" + filepath.Base(m[0])
			if _, err := os.Stat(dev); err == nil {
				return dev, nil
			}
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("no disk for LUN %d of %s: %w", s.Target.LUN, s.Target.Name, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Save writes the session's state (0600: it holds the CHAP secret) for the relogin watcher.
func (s *Session) Save(file string) error {
	b, err := json.Marshal(s)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(file), 0o700); err != nil {
		return err
	}
	tmp := file + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, file)
}

// LoadSession reads a saved session and attaches it to k.
func LoadSession(k *Kernel, file string) (*Session, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	s := &Session{K: k, sockfd: -1}
	if err := json.Unmarshal(b, s); err != nil {
		return nil, fmt.Errorf("session state %s: %w", file, err)
	}
	return s, nil
}

// Watch waits for the kernel to report the connection failed and logs in again until it
// succeeds, forever (until ctx ends). Without it the kernel keeps the disk's I/O queued for
// the recovery timeout and then fails it: the kernel does not reconnect by itself.
func (s *Session) Watch(ctx context.Context, report func(msg string, err error)) error {
	for {
		ev, _, err := s.K.nextEvent(ctx, time.Now().Add(time.Hour))
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				continue
			}
			return err
		}
		if ev.Type != kevConnError || ev.r32(0) != s.SID {
			continue
		}
		report(fmt.Sprintf("connection lost (iscsi_err %d), logging in again", ev.r32(8)), nil)
		// The kernel has already stopped the connection (or is doing so); STOP_CONN with
		// RECOVER waits for that and releases the old socket, keeping the session and its disk.
		_ = s.K.StopConn(s.SID, s.CID, stopConnRecover)
		backoff := 500 * time.Millisecond
		lost := time.Now()
		for attempt := 1; ; attempt++ {
			if err := ctx.Err(); err != nil {
				return err
			}
			err := s.Connect(ctx)
			if err == nil {
				report(fmt.Sprintf("logged in again after %d attempt(s), %.1fs after the loss", attempt, time.Since(lost).Seconds()), nil)
				break
			}
			report(fmt.Sprintf("relogin attempt %d failed, retrying in %s", attempt, backoff), err)
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(backoff):
			}
			if backoff < 10*time.Second {
				backoff *= 2
			}
		}
		// Drop events about the connection we just replaced.
		s.K.events, s.K.evdata = nil, nil
	}
}
