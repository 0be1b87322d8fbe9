package iscsit

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"slices"
	"strings"
	"testing"
	"time"
)

func (n *testNet) dial(t *testing.T, o loginOpts) (*testInitiator, error) {
	t.Helper()
	var in *testInitiator
	err := n.cliNS.Do(func() (err error) {
		in, err = dialInitiator(n.srvIP+":3260", o)
		return err
	})
	if in != nil {
		t.Cleanup(func() { in.Close() })
	}
	return in, err
}

func TestMutualCHAP(t *testing.T) {
	n := newTestNet(t)
	s := n.startServer(t, Config{})
	spec := TargetSpec{IQN: IQNForNode("m"), LUNs: []string{newVolume(t, 32<<20)}, CHAPUser: "node-m",
		CHAPSecret: "initiator-secret-123", MutualUser: "appliance", MutualSecret: "target-secret-456789"}
	if err := s.AddTarget(spec); err != nil {
		t.Fatal(err)
	}
	oneWay := TargetSpec{IQN: IQNForNode("o"), LUNs: []string{newVolume(t, 32<<20)}, CHAPUser: "node-o", CHAPSecret: "only-one-way-secret"}
	if err := s.AddTarget(oneWay); err != nil {
		t.Fatal(err)
	}
	base := loginOpts{initiator: initA, target: spec.IQN, user: spec.CHAPUser, secret: spec.CHAPSecret}
	cases := []struct {
		name string
		o    loginOpts
		ok   bool
	}{
		{"one-way", base, true},
		{"mutual", func() loginOpts {
			o := base
			o.mutualUser, o.mutualPass = "appliance", "target-secret-456789"
			return o
		}(), true},
		{"mutual, initiator expects another secret", func() loginOpts {
			o := base
			o.mutualUser, o.mutualPass = "appliance", "some-other-secret"
			return o
		}(), false},
		{"mutual asked, none configured", loginOpts{initiator: initA, target: oneWay.IQN, user: oneWay.CHAPUser,
			secret: oneWay.CHAPSecret, mutualUser: "appliance", mutualPass: "x"}, false},
		{"wrong secret", func() loginOpts { o := base; o.secret = "nope"; return o }(), false},
		{"no CHAP", loginOpts{initiator: initA, target: spec.IQN}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			in, err := n.dial(t, tc.o)
			if tc.ok {
				if err != nil {
					t.Fatalf("login: %v", err)
				}
				if _, err := in.read16(0, 1); err != nil {
					t.Fatalf("read after login: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("login accepted")
			}
		})
	}
}

// TestTargetsAtRunTime: a target added while the server runs is reachable at once; removing
// it ends its sessions and refuses new logins.
func TestTargetsAtRunTime(t *testing.T) {
	n := newTestNet(t)
	s := n.startServer(t, Config{})
	spec := TargetSpec{IQN: IQNForNode("late"), LUNs: []string{newVolume(t, 32<<20)}, CHAPUser: "late", CHAPSecret: "late-secret-0123456"}
	o := loginOpts{initiator: initA, target: spec.IQN, user: spec.CHAPUser, secret: spec.CHAPSecret}
	if _, err := n.dial(t, o); !errors.Is(err, errLoginRefused) {
		t.Fatalf("login before AddTarget: %v, want refused", err)
	}
	if err := s.AddTarget(spec); err != nil {
		t.Fatal(err)
	}
	in, err := n.dial(t, o)
	if err != nil {
		t.Fatalf("login right after AddTarget: %v", err)
	}
	if err := in.write16(8, bytes.Repeat([]byte{0xa5}, blockSize), true); err != nil {
		t.Fatal(err)
	}
	if err := s.RemoveTarget(spec.IQN); err != nil {
		t.Fatal(err)
	}
	if _, err := in.read16(8, 1); err == nil {
		t.Fatal("session still works after RemoveTarget")
	}
	if _, err := n.dial(t, o); !errors.Is(err, errLoginRefused) {
		t.Fatalf("login after RemoveTarget: %v, want refused", err)
	}
	// Added again (same IQN, same file): the data written before is there.
	if err := s.AddTarget(spec); err != nil {
		t.Fatal(err)
	}
	in, err = n.dial(t, o)
	if err != nil {
		t.Fatal(err)
	}
	got, err := in.read16(8, 1)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, bytes.Repeat([]byte{0xa5}, blockSize)) {
		t.Error("block written before removal did not read back")
	}
	if got := s.Targets(); !slices.Equal(got, []string{spec.IQN}) {
		t.Errorf("Targets() = %v", got)
	}
}

// TestMalformedLogins throws broken and unauthenticated PDUs at the server; it must keep
// serving (gotgt's own port crashed on one such packet).
func TestMalformedLogins(t *testing.T) {
	n := newTestNet(t)
	s := n.startServer(t, Config{LoginTimeout: 2 * time.Second})
	a, _ := twoTargets(t, s)
	valid := func() []byte {
		var p PDU
		p.BHS[0] = 0x43
		p.SetFlags(0x81)
		p.Data, _ = TextParams{{"InitiatorName", initA}, {"TargetName", a.IQN}, {"AuthMethod", "None"}}.MarshalBinary()
		b, _ := p.MarshalBinary()
		return b
	}
	rng := rand.New(rand.NewPCG(1, 2))
	payloads := [][]byte{
		{},
		bytes.Repeat([]byte{0xff}, 48),
		func() []byte { b := valid(); b[5], b[6], b[7] = 0xff, 0xff, 0xff; return b }(), // huge data length
		func() []byte { b := valid(); b[4] = 0xff; return b }(),                         // huge AHS
		func() []byte { b := valid(); return b[:len(b)-3] }(),                           // truncated
		func() []byte { b := valid(); b[0] = 0x01; return b }(),                         // SCSI command before login
		func() []byte { b := valid(); b[1] = 0xcf; return b }(),                         // T and C, stage 3
		func() []byte { b := valid(); b[3] = 5; return b }(),                            // version-min 5
		append(valid(), valid()...),
	}
	for range 40 {
		b := valid()
		for range 1 + rng.IntN(8) {
			b[rng.IntN(len(b))] = byte(rng.Uint32())
		}
		payloads = append(payloads, b)
	}
	errs := make(chan error, len(payloads))
	for _, b := range payloads {
		go func() {
			errs <- n.cliNS.Do(func() error {
				c, err := net.DialTimeout("tcp", n.srvIP+":3260", 2*time.Second)
				if err != nil {
					return err
				}
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(3 * time.Second))
				_, _ = c.Write(b)
				buf := make([]byte, 512)
				_, _ = c.Read(buf)
				return nil
			})
		}()
	}
	for range payloads {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if _, err := n.cliNS.Exec("iscsi-inq", "-i", initA, url(a.CHAPUser, a.CHAPSecret, n.srvIP, a.IQN, 0)); err != nil {
		t.Fatalf("server no longer serves after malformed logins: %v", err)
	}
}

// TestDataIntegrity writes patterns through R2T and immediate data and reads them back.
func TestDataIntegrity(t *testing.T) {
	n := newTestNet(t)
	s := n.startServer(t, Config{})
	a, _ := twoTargets(t, s)
	in, err := n.dial(t, loginOpts{initiator: initA, target: a.IQN, user: a.CHAPUser, secret: a.CHAPSecret})
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(3, 4))
	for _, size := range []int{blockSize, 8 * blockSize, 128 << 10, 1 << 20} {
		data := make([]byte, size)
		for i := range data {
			data[i] = byte(rng.Uint32())
		}
		lba := uint64(rng.IntN(1000)) * 8
		if err := in.write16(lba, data, false); err != nil {
			t.Fatalf("write %d bytes: %v", size, err)
		}
		got, err := in.read16(lba, uint32(size/blockSize))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, data) {
			t.Fatalf("%d bytes at LBA %d did not read back", size, lba)
		}
	}
	// Past the end: LBA OUT OF RANGE, not a short file write.
	r, err := in.command(cdbRW(0x8a, 64<<20/blockSize, 1, false), 0, make([]byte, blockSize))
	if err != nil {
		t.Fatal(err)
	}
	if r.status != statusCheckCondition || len(r.sense) < 14 || r.sense[12] != 0x21 {
		t.Errorf("write past the end: status 0x%02x sense %x", r.status, r.sense)
	}
}

// TestSendTargets checks discovery answers at the PDU level: a discovery session with CHAP
// lists the targets of that CHAP user; a normal session lists only its own target.
func TestSendTargets(t *testing.T) {
	n := newTestNet(t)
	s := n.startServer(t, Config{PortalAddr: "10.53.99.1:3260"})
	a, b := twoTargets(t, s)
	cases := []struct {
		name string
		o    loginOpts
		want []string
	}{
		{"discovery as a", loginOpts{initiator: initA, user: a.CHAPUser, secret: a.CHAPSecret, discovery: true}, []string{a.IQN}},
		{"discovery as b", loginOpts{initiator: initB, user: b.CHAPUser, secret: b.CHAPSecret, discovery: true}, []string{b.IQN}},
		{"discovery without CHAP", loginOpts{initiator: initB, discovery: true}, []string{b.IQN}},
		{"discovery, unknown initiator", loginOpts{initiator: "iqn.2026-01.org.example:stranger", discovery: true}, nil},
		{"normal session of a", loginOpts{initiator: initA, target: a.IQN, user: a.CHAPUser, secret: a.CHAPSecret}, []string{a.IQN}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			in, err := n.dial(t, tc.o)
			if err != nil {
				t.Fatal(err)
			}
			got, err := in.sendTargets()
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("SendTargets = %v, want %v", got, tc.want)
			}
		})
	}
	if _, err := n.dial(t, loginOpts{initiator: initA, user: a.CHAPUser, secret: "wrong", discovery: true}); err == nil {
		t.Error("discovery with a wrong CHAP secret accepted")
	}
}

// TestChurnWhileServing adds and removes targets and logs sessions in and out while another
// session keeps running commands that go through gotgt's core: gotgt's shared maps must
// never be changed under a running command (run with -race to see it).
func TestChurnWhileServing(t *testing.T) {
	n := newTestNet(t)
	s := n.startServer(t, Config{})
	a, b := twoTargets(t, s)
	in, err := n.dial(t, loginOpts{initiator: initA, target: a.IQN, user: a.CHAPUser, secret: a.CHAPSecret})
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	churned := make(chan error, 1)
	go func() {
		defer close(churned)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			spec := TargetSpec{IQN: IQNForNode(fmt.Sprintf("churn%d", i)), LUNs: b.LUNs, CHAPUser: "churn", CHAPSecret: "churn-secret-000000"}
			if err := s.AddTarget(spec); err != nil {
				churned <- err
				return
			}
			var bin *testInitiator
			err := n.cliNS.Do(func() (err error) {
				bin, err = dialInitiator(n.srvIP+":3260", loginOpts{initiator: initB, target: spec.IQN, user: spec.CHAPUser, secret: spec.CHAPSecret})
				return err
			})
			if err != nil {
				churned <- err
				return
			}
			bin.Close()
			if err := s.RemoveTarget(spec.IQN); err != nil {
				churned <- err
				return
			}
		}
	}()
	inquiry := []byte{0x12, 0, 0, 0, 96, 0}
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		r, err := in.command(inquiry, 96, nil)
		if err != nil || r.status != 0 {
			t.Fatalf("INQUIRY during churn: %v, status %d", err, r.status)
		}
	}
	close(stop)
	if err := <-churned; err != nil {
		t.Fatalf("churn: %v", err)
	}
}

// TestWriteCacheIsTruthful: the caching page says WCE=1 and MODE SENSE says DPOFUA, so Linux
// sends SYNCHRONIZE CACHE and FUA (which we honour, see TestCrashSafety); Linux probes with
// a 4-byte allocation length first, which gotgt's MODE SENSE could not answer.
func TestWriteCacheIsTruthful(t *testing.T) {
	n := newTestNet(t)
	s := n.startServer(t, Config{})
	a, _ := twoTargets(t, s)
	in, err := n.dial(t, loginOpts{initiator: initA, target: a.IQN, user: a.CHAPUser, secret: a.CHAPSecret})
	if err != nil {
		t.Fatal(err)
	}
	for _, alloc := range []uint8{4, 255} {
		r, err := in.command([]byte{0x1a, 0x08, 0x08, 0, alloc, 0}, uint32(alloc), nil) // DBD, caching page
		if err != nil || r.status != 0 {
			t.Fatalf("MODE SENSE(6) alloc %d: %v status %d", alloc, err, r.status)
		}
		if len(r.data) != int(min(alloc, 4+20)) {
			t.Errorf("alloc %d: %d bytes", alloc, len(r.data))
		}
		if r.data[2]&0x10 == 0 {
			t.Errorf("alloc %d: DPOFUA not set", alloc)
		}
		if alloc > 4 && (r.data[4]&0x3f != 0x08 || r.data[6]&0x04 == 0) {
			t.Errorf("caching page %x: WCE not set", r.data[4:])
		}
	}
	r, err := in.command([]byte{0x5a, 0x08, 0x08, 0, 0, 0, 0, 0, 4, 0}, 4, nil) // MODE SENSE(10), alloc 4
	if err != nil || r.status != 0 || len(r.data) != 4 {
		t.Errorf("MODE SENSE(10) alloc 4: %v status %d, %d bytes", err, r.status, len(r.data))
	}
}

// TestStartupGrace: right after start, a login to a target not added yet is told to retry
// (status class 3) instead of "not found", which initiators treat as final.
func TestStartupGrace(t *testing.T) {
	for _, tc := range []struct {
		name  string
		grace time.Duration
		want  string
	}{
		{"within grace", 0, "status 0x0301"},
		{"grace disabled", -1, "status 0x0203"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := newTestNet(t)
			n.startServer(t, Config{StartupGrace: tc.grace})
			_, err := n.dial(t, loginOpts{initiator: initA, target: IQNForNode("notyet"), user: "u", secret: "s"})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("login to a missing target: %v, want %s", err, tc.want)
			}
		})
	}
}

// TestMultipleLUNs: a target with two backing files (a donor with two disks) exposes them as
// LUN 0 and LUN 1, each with its own size and data.
func TestMultipleLUNs(t *testing.T) {
	n := newTestNet(t)
	s := n.startServer(t, Config{})
	files := []string{newVolume(t, 16<<20), newVolume(t, 32<<20)}
	spec := TargetSpec{IQN: IQNForNode("two"), LUNs: files, CHAPUser: "two", CHAPSecret: "two-luns-secret-0000"}
	if err := s.AddTarget(spec); err != nil {
		t.Fatal(err)
	}
	in, err := n.dial(t, loginOpts{initiator: initA, target: spec.IQN, user: spec.CHAPUser, secret: spec.CHAPSecret})
	if err != nil {
		t.Fatal(err)
	}
	r, err := in.command([]byte{0xa0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0}, 256, nil)
	if err != nil || r.status != 0 {
		t.Fatalf("REPORT LUNS: %v status %d", err, r.status)
	}
	if got := binary.BigEndian.Uint32(r.data); got != 16 {
		t.Errorf("REPORT LUNS lists %d bytes of LUNs, want 2 entries", got)
	}
	for lun, want := range []uint64{16 << 20, 32 << 20} {
		in.lun = [8]byte{0, byte(lun)}
		r, err := in.command([]byte{0x9e, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0}, 32, nil)
		if err != nil || r.status != 0 {
			t.Fatalf("READ CAPACITY(16) LUN %d: %v status %d", lun, err, r.status)
		}
		if got := (binary.BigEndian.Uint64(r.data) + 1) * blockSize; got != want {
			t.Errorf("LUN %d capacity %d, want %d", lun, got, want)
		}
		if err := in.write16(1, bytes.Repeat([]byte{byte(0x10 + lun)}, blockSize), true); err != nil {
			t.Fatal(err)
		}
	}
	for lun, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if b[blockSize] != byte(0x10+lun) {
			t.Errorf("LUN %d write landed elsewhere: byte %#x", lun, b[blockSize])
		}
	}
	in.lun = [8]byte{0, 7}
	if r, err := in.command([]byte{0, 0, 0, 0, 0, 0}, 0, nil); err != nil || r.status != statusCheckCondition {
		t.Errorf("TEST UNIT READY on a missing LUN: %v status %d", err, r.status)
	}
}

// TestDigests runs writes and reads with CRC32C header and data digests negotiated.
func TestDigests(t *testing.T) {
	n := newTestNet(t)
	s := n.startServer(t, Config{})
	a, _ := twoTargets(t, s)
	in, err := n.dial(t, loginOpts{initiator: initA, target: a.IQN, user: a.CHAPUser, secret: a.CHAPSecret, digests: true})
	if err != nil {
		t.Fatal(err)
	}
	if !in.p.digests.header || !in.p.digests.data {
		t.Fatalf("digests not negotiated: %+v", in.p.digests)
	}
	data := bytes.Repeat([]byte("digest-me"), 30000)[:256<<10]
	if err := in.write16(64, data, false); err != nil {
		t.Fatal(err)
	}
	got, err := in.read16(64, uint32(len(data)/blockSize))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Error("data did not survive the digested round trip")
	}
}

// TestNegotiationVariants moves data under the parameter sets initiators actually pick:
// unsolicited Data-Out (InitialR2T=No), no immediate data, several R2Ts in flight, small
// PDUs that split Data-In, small bursts.
func TestNegotiationVariants(t *testing.T) {
	n := newTestNet(t)
	s := n.startServer(t, Config{})
	a, _ := twoTargets(t, s)
	cases := []struct {
		name  string
		extra TextParams
	}{
		{"linux-like unsolicited", TextParams{{"InitialR2T", "No"}, {"FirstBurstLength", "262144"}, {"MaxBurstLength", "16776192"}}},
		{"small PDUs and bursts, 4 R2Ts", TextParams{{"InitialR2T", "No"}, {"MaxRecvDataSegmentLength", "4096"},
			{"FirstBurstLength", "8192"}, {"MaxBurstLength", "16384"}, {"MaxOutstandingR2T", "4"}}},
		{"no immediate data", TextParams{{"ImmediateData", "No"}, {"InitialR2T", "Yes"}}},
		{"no immediate, unsolicited", TextParams{{"ImmediateData", "No"}, {"InitialR2T", "No"}, {"FirstBurstLength", "16384"}}},
	}
	rng := rand.New(rand.NewPCG(5, 6))
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			in, err := n.dial(t, loginOpts{initiator: initA, target: a.IQN, user: a.CHAPUser, secret: a.CHAPSecret, extra: tc.extra})
			if err != nil {
				t.Fatal(err)
			}
			for _, size := range []int{blockSize, 12 << 10, 300 << 10} {
				data := make([]byte, size)
				for i := range data {
					data[i] = byte(rng.Uint32())
				}
				if err := in.write16(128, data, false); err != nil {
					t.Fatalf("write %d: %v", size, err)
				}
				got, err := in.read16(128, uint32(size/blockSize))
				if err != nil {
					t.Fatalf("read %d: %v", size, err)
				}
				if !bytes.Equal(got, data) {
					t.Fatalf("%d bytes did not read back", size)
				}
			}
		})
	}
}
