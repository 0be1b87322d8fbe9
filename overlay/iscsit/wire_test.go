package iscsit

import (
	"bytes"
	"crypto/md5"
	"errors"
	"os"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/gostor/gotgt/pkg/api"
	"github.com/prometheus/client_golang/prometheus"
)

func TestTextParams(t *testing.T) {
	cases := []struct {
		name    string
		in      string
		want    TextParams
		wantErr bool
	}{
		{"two keys", "A=1\x00B=x,y\x00", TextParams{{"A", "1"}, {"B", "x,y"}}, false},
		{"padding NULs", "A=1\x00\x00\x00", TextParams{{"A", "1"}}, false},
		{"no trailing NUL", "A=1", TextParams{{"A", "1"}}, false},
		{"empty value", "A=\x00", TextParams{{"A", ""}}, false},
		{"value with =", "A=b=c\x00", TextParams{{"A", "b=c"}}, false},
		{"empty", "", nil, false},
		{"no =", "A\x00", nil, true},
		{"empty key", "=1\x00", nil, true},
		{"long key", string(bytes.Repeat([]byte("k"), 64)) + "=1\x00", nil, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var got TextParams
			err := got.UnmarshalBinary([]byte(tc.in))
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error %v", err, tc.wantErr)
			}
			if tc.wantErr {
				if !errors.Is(err, ErrMalformedText) {
					t.Errorf("error %v is not ErrMalformedText", err)
				}
				return
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestNegotiate(t *testing.T) {
	cases := []struct {
		name  string
		offer TextParams
		want  TextParams
		check func(params) bool
	}{
		{"linux defaults",
			TextParams{{"HeaderDigest", "None"}, {"DataDigest", "None"}, {"MaxRecvDataSegmentLength", "262144"},
				{"InitialR2T", "No"}, {"ImmediateData", "Yes"}, {"MaxBurstLength", "16776192"}, {"FirstBurstLength", "262144"},
				{"MaxOutstandingR2T", "1"}, {"ErrorRecoveryLevel", "0"}},
			TextParams{{"HeaderDigest", "None"}, {"DataDigest", "None"}, {"InitialR2T", "No"}, {"ImmediateData", "Yes"},
				{"MaxBurstLength", "16776192"}, {"FirstBurstLength", "262144"}, {"MaxOutstandingR2T", "1"}, {"ErrorRecoveryLevel", "0"}},
			func(p params) bool {
				return p.initiatorMaxRecvData == 262144 && !p.initialR2T && p.immediate && p.firstBurst == 262144
			}},
		{"crc32c first", TextParams{{"HeaderDigest", "CRC32C,None"}}, TextParams{{"HeaderDigest", "CRC32C"}},
			func(p params) bool { return p.digests.header && !p.digests.data }},
		{"unknown digest", TextParams{{"DataDigest", "SHA1"}}, TextParams{{"DataDigest", "Reject"}}, nil},
		{"first burst above max burst", TextParams{{"MaxBurstLength", "65536"}, {"FirstBurstLength", "262144"}},
			TextParams{{"MaxBurstLength", "65536"}, {"FirstBurstLength", "65536"}},
			func(p params) bool { return p.firstBurst == 65536 }},
		{"bad number", TextParams{{"MaxBurstLength", "12"}}, TextParams{{"MaxBurstLength", "Reject"}}, nil},
		{"error recovery 2 becomes 0", TextParams{{"ErrorRecoveryLevel", "2"}}, TextParams{{"ErrorRecoveryLevel", "0"}}, nil},
		{"private key", TextParams{{"X-com.example.foo", "1"}}, TextParams{{"X-com.example.foo", "NotUnderstood"}}, nil},
		{"markers", TextParams{{"IFMarker", "Yes"}}, TextParams{{"IFMarker", "No"}}, nil},
		{"login keys ignored", TextParams{{"InitiatorName", "iqn.x"}, {"AuthMethod", "None"}}, nil, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := newParams(262144)
			got := p.negotiate(tc.offer)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("answers (-want +got):\n%s", diff)
			}
			if tc.check != nil && !tc.check(p) {
				t.Errorf("negotiated params %+v", p)
			}
		})
	}
}

func TestCHAP(t *testing.T) {
	ch := []byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}
	sum := md5.Sum(append(append([]byte{42}, "s3cret-s3cret"...), ch...))
	if !bytes.Equal(chapResponse(42, "s3cret-s3cret", ch), sum[:]) {
		t.Fatal("chapResponse is not MD5(id||secret||challenge)")
	}
	if !chapVerify(42, "s3cret-s3cret", ch, sum[:]) || chapVerify(43, "s3cret-s3cret", ch, sum[:]) ||
		chapVerify(42, "other", ch, sum[:]) {
		t.Fatal("chapVerify accepts or refuses the wrong things")
	}
	for _, tc := range []struct {
		in   string
		want []byte
		ok   bool
	}{
		{"0x0a0b", []byte{10, 11}, true},
		{"0XAB", []byte{0xab}, true},
		{"0xabc", []byte{0x0a, 0xbc}, true},
		{"0bAQID", []byte{1, 2, 3}, true},
		{"abcd", nil, false},
		{"0xzz", nil, false},
		{"0b!!", nil, false},
		{"0x", nil, false},
	} {
		got, err := decodeCHAPBinary(tc.in)
		if (err == nil) != tc.ok || !bytes.Equal(got, tc.want) {
			t.Errorf("decodeCHAPBinary(%q) = %x, %v", tc.in, got, err)
		}
	}
	id1, c1, _ := newChallenge()
	id2, c2, _ := newChallenge()
	if bytes.Equal(c1, c2) && id1 == id2 {
		t.Error("two challenges are equal")
	}
	if len(c1) != chapChallengeLen {
		t.Errorf("challenge length %d", len(c1))
	}
}

func TestPDUFields(t *testing.T) {
	var p PDU
	p.SetOpcode(OpSCSICommand)
	p.SetFlags(0xc1)
	p.SetLUN([8]byte{0, 1})
	p.SetITT(0xdeadbeef)
	p.put32(offCmdSN, 7)
	p.AHS = []byte{0, 5, 1, 0, 0xa, 0xb, 0xc, 0xd}
	p.Data = []byte("hello")
	b, err := p.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if len(b) != BHSLen+8+8 {
		t.Fatalf("encoded length %d", len(b))
	}
	var q PDU
	if err := q.UnmarshalBinary(b); err != nil {
		t.Fatal(err)
	}
	got := []any{q.Opcode(), q.Flags(), q.LUN(), q.ITT(), q.u32(offCmdSN), q.DataSegmentLength(), string(q.Data), q.AHS}
	want := []any{OpSCSICommand, uint8(0xc1), [8]byte{0, 1}, uint32(0xdeadbeef), uint32(7), uint32(5), "hello", p.AHS}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	if err := q.UnmarshalBinary(b[:50]); !errors.Is(err, ErrShortPDU) {
		t.Errorf("short PDU: %v", err)
	}
	// Digests: what writePDU adds, readPDU checks.
	var buf bytes.Buffer
	d := digests{header: true, data: true}
	if err := writePDU(&buf, &p, d); err != nil {
		t.Fatal(err)
	}
	wire := buf.Bytes()
	var r PDU
	if err := readPDU(bytes.NewReader(wire), &r, 1<<20, d); err != nil {
		t.Fatalf("readPDU with digests: %v", err)
	}
	wire[BHSLen+8+4+1] ^= 1 // flip a data bit
	if err := readPDU(bytes.NewReader(wire), &r, 1<<20, d); !errors.Is(err, ErrDataDigest) {
		t.Errorf("corrupted data: %v", err)
	}
	wire[3] ^= 1
	if err := readPDU(bytes.NewReader(wire), &r, 1<<20, d); !errors.Is(err, ErrHeaderDigest) {
		t.Errorf("corrupted header: %v", err)
	}
	if err := readPDU(bytes.NewReader(b), &r, 4, digests{}); !errors.Is(err, ErrDataTooLong) {
		t.Errorf("over-long data: %v", err)
	}
}

func TestIQN(t *testing.T) {
	for _, tc := range []struct{ name, want string }{
		{"n1", "iqn.2011-06.org.distonet:node.n1"},
		{"Lab-PC_07", "iqn.2011-06.org.distonet:node.lab-pc-07"},
		{"é", "iqn.2011-06.org.distonet:node.-"},
	} {
		if got := IQNForNode(tc.name); got != tc.want {
			t.Errorf("IQNForNode(%q) = %q, want %q", tc.name, got, tc.want)
		}
		if err := ValidIQN(IQNForNode(tc.name)); err != nil {
			t.Errorf("IQNForNode(%q) is not valid: %v", tc.name, err)
		}
	}
	for _, bad := range []string{"", "node1", "iqn.2011-06.org.distonet:Node", "iqn.a b"} {
		if ValidIQN(bad) == nil {
			t.Errorf("ValidIQN(%q) accepted", bad)
		}
	}
}

func TestLUNNumber(t *testing.T) {
	for _, tc := range []struct {
		in   [8]byte
		want int
		ok   bool
	}{
		{[8]byte{}, 0, true},
		{[8]byte{0, 5}, 5, true},
		{[8]byte{0x41, 0x02}, 0x102, true},
		{[8]byte{0x01, 0x00}, 0, false},
		{[8]byte{0xc0}, 0, false},
	} {
		got, ok := lunNumber(tc.in)
		if got != tc.want || ok != tc.ok {
			t.Errorf("lunNumber(%x) = %d, %v", tc.in, got, ok)
		}
	}
}

func TestMetricsTwice(t *testing.T) {
	reg := prometheus.NewRegistry()
	a, err := newMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	b, err := newMetrics(reg)
	if err != nil {
		t.Fatalf("second registration: %v", err)
	}
	_ = a
	b.logins.WithLabelValues("ok").Inc()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := -1.0
	for _, mf := range mfs {
		if mf.GetName() == "distonet_iscsi_logins_total" {
			got = mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	if got != 1 {
		t.Errorf("second server's login counter in the registry = %v, want 1", got)
	}
}

func TestTargetSpecValidate(t *testing.T) {
	ok := TargetSpec{IQN: IQNForNode("v"), LUNs: []string{"/x"}, CHAPUser: "v", CHAPSecret: "twelve-bytes"}
	if err := ok.validate(); err != nil {
		t.Fatalf("valid spec refused: %v", err)
	}
	for name, mutate := range map[string]func(*TargetSpec){
		"bad iqn":           func(s *TargetSpec) { s.IQN = "node v" },
		"no lun":            func(s *TargetSpec) { s.LUNs = nil },
		"user without pass": func(s *TargetSpec) { s.CHAPSecret = "" },
		"short secret":      func(s *TargetSpec) { s.CHAPSecret = "short" },
		"mutual same secret": func(s *TargetSpec) {
			s.MutualUser, s.MutualSecret = "app", s.CHAPSecret
		},
		"mutual short": func(s *TargetSpec) { s.MutualUser, s.MutualSecret = "app", "short" },
		"mutual without one-way": func(s *TargetSpec) {
			s.CHAPUser, s.CHAPSecret, s.MutualUser, s.MutualSecret = "", "", "app", "long-enough-secret"
		},
	} {
		s := ok
		s.LUNs = slices.Clone(ok.LUNs)
		mutate(&s)
		if err := s.validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestStoreNeverGrowsAndPunches(t *testing.T) {
	p := newVolume(t, 1<<20)
	var s fileStore
	if err := s.Open(nil, p); err != nil {
		t.Fatal(err)
	}
	defer s.Close(nil)
	if err := s.Write(make([]byte, blockSize), 1<<20-blockSize/2); err == nil {
		t.Error("write across the end accepted")
	}
	data := bytes.Repeat([]byte{0x77}, 8192)
	if err := s.Write(data, 4096); err != nil {
		t.Fatal(err)
	}
	if err := s.Unmap([]api.UnmapBlockDescriptor{{Offset: 4096, TL: 4096}}); err != nil {
		t.Fatal(err)
	}
	got, err := s.Read(4096, 8192)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got[:4096], make([]byte, 4096)) || !bytes.Equal(got[4096:], data[4096:]) {
		t.Error("unmapped range does not read as zeros or the rest changed")
	}
	mapped, _, err := s.extent(4096)
	if err != nil || mapped {
		t.Errorf("punched range reported mapped=%v (%v)", mapped, err)
	}
	if st, _ := os.Stat(p); st.Size() != 1<<20 {
		t.Errorf("file size changed to %d", st.Size())
	}
}
