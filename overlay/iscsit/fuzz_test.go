package iscsit

import (
	"bufio"
	"bytes"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// FuzzPDU: any bytes either fail to parse or round-trip.
func FuzzPDU(f *testing.F) {
	var p PDU
	p.BHS[0] = 0x43
	p.Data = []byte("InitiatorName=iqn.x\x00")
	b, _ := p.MarshalBinary()
	f.Add(b)
	f.Fuzz(func(t *testing.T, b []byte) {
		var p PDU
		if err := p.UnmarshalBinary(b); err != nil {
			return
		}
		out, err := p.MarshalBinary()
		if err != nil {
			t.Fatalf("marshal of a parsed PDU: %v", err)
		}
		var q PDU
		if err := q.UnmarshalBinary(out); err != nil {
			t.Fatalf("re-parse: %v", err)
		}
		if q.BHS != p.BHS || !bytes.Equal(q.AHS, p.AHS) || !bytes.Equal(q.Data, p.Data) {
			t.Fatal("round trip changed the PDU")
		}
		// The stream reader agrees with UnmarshalBinary.
		var r PDU
		if err := readPDU(bytes.NewReader(out), &r, 1<<24, digests{}); err != nil {
			t.Fatalf("readPDU: %v", err)
		}
		if r.BHS != p.BHS || !bytes.Equal(r.Data, p.Data) {
			t.Fatal("readPDU disagrees with UnmarshalBinary")
		}
	})
}

// FuzzTextParams: parsed text re-encodes to something that parses the same.
func FuzzTextParams(f *testing.F) {
	f.Add([]byte("HeaderDigest=None,CRC32C\x00MaxRecvDataSegmentLength=262144\x00"))
	f.Add([]byte("CHAP_A=5\x00\x00\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		var kv TextParams
		if err := kv.UnmarshalBinary(b); err != nil {
			return
		}
		out, err := kv.MarshalBinary()
		if err != nil {
			t.Fatalf("marshal: %v", err)
		}
		var again TextParams
		if err := again.UnmarshalBinary(out); err != nil {
			t.Fatalf("re-parse: %v", err)
		}
		if diff := cmp.Diff(kv, again); diff != "" {
			t.Fatalf("round trip (-first +second):\n%s", diff)
		}
		// Negotiation must cope with anything that parses.
		p := newParams(262144)
		_ = p.negotiate(kv)
	})
}

// FuzzLogin feeds arbitrary bytes to a connection's login phase: it must end without
// panicking, whatever arrives.
func FuzzLogin(f *testing.F) {
	mk := func(flags uint8, kv TextParams) []byte {
		var p PDU
		p.BHS[0] = 0x43
		p.SetFlags(flags)
		p.Data, _ = kv.MarshalBinary()
		b, _ := p.MarshalBinary()
		return b
	}
	f.Add(mk(0x81, TextParams{{"InitiatorName", initA}, {"TargetName", IQNForNode("f")}, {"AuthMethod", "CHAP,None"}}))
	f.Add(append(mk(0x01, TextParams{{"InitiatorName", initA}, {"SessionType", "Discovery"}, {"AuthMethod", "None"}}),
		mk(0x87, TextParams{{"MaxRecvDataSegmentLength", "512"}})...))
	f.Add(mk(0x40, TextParams{{"InitiatorName", initA}}))
	s, err := NewServer(Config{LoginTimeout: time.Second}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		a, c := net.Pipe()
		done := make(chan struct{})
		go func() {
			defer close(done)
			cn := newConn(s, a)
			cn.br = bufio.NewReader(a)
			l := &login{c: cn}
			_, _ = l.run()
			a.Close()
		}()
		go io.Copy(io.Discard, c)
		_, _ = c.Write(b)
		c.Close()
		<-done
	})
}

// FuzzFullFeature feeds arbitrary PDUs to a logged-in session on a real volume: SCSI
// commands, Data-Out, task management, text, in any order. Nothing may panic.
func FuzzFullFeature(f *testing.F) {
	cmd := func(cdb []byte, flags uint8, edtl uint32, data []byte) []byte {
		var p PDU
		p.SetOpcode(OpSCSICommand)
		p.SetFlags(flags)
		p.SetITT(1)
		p.put32(offTTT, edtl)
		copy(p.BHS[32:], cdb)
		p.Data = data
		b, _ := p.MarshalBinary()
		return b
	}
	f.Add(cmd([]byte{0x12, 0, 0, 0, 36}, 0xc1, 36, nil))
	f.Add(cmd([]byte{0x2a, 0, 0, 0, 0, 1, 0, 0, 2}, 0xa1, 1024, make([]byte, 512)))
	f.Add(cmd([]byte{0x42, 0, 0, 0, 0, 0, 0, 0, 24}, 0xa1, 24, make([]byte, 24)))
	f.Add(cmd([]byte{0x5f, 0, 0, 0, 0, 0, 0, 0, 24}, 0xa1, 24, make([]byte, 24)))
	f.Add(cmd([]byte{0x89, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2}, 0xa1, 2048, make([]byte, 2048)))
	s, err := NewServer(Config{}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		f.Fatal(err)
	}
	vol := filepath.Join(f.TempDir(), "vol.img")
	if err := os.WriteFile(vol, nil, 0o600); err != nil {
		f.Fatal(err)
	}
	if err := os.Truncate(vol, 4<<20); err != nil {
		f.Fatal(err)
	}
	if err := s.AddTarget(TargetSpec{IQN: IQNForNode("fuzz"), LUNs: []string{vol}}); err != nil {
		f.Fatal(err)
	}
	tgt := s.lookup(IQNForNode("fuzz"))
	f.Fuzz(func(t *testing.T, b []byte) {
		a, c := net.Pipe()
		cn := newConn(s, a)
		cn.p = newParams(s.cfg.MaxRecvDataSegmentLength)
		cn.p.initiatorMaxRecvData = 4096
		cn.sess = newSession(cn, &login{c: cn, tgt: tgt, initiator: initA})
		cn.sess.start(0)
		go io.Copy(io.Discard, c)
		done := make(chan struct{})
		go func() {
			defer close(done)
			_ = cn.fullFeature()
			a.Close()
			cn.sess.wg.Wait()
		}()
		_, _ = c.Write(b)
		c.Close()
		<-done
	})
}
