package iscsi

import (
	"bytes"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestUeventLayout pins the offsets of struct iscsi_uevent (include/scsi/iscsi_if.h): a
// 16-byte header, the request union at 16 (24 bytes, msg_bind_conn being the largest), the
// reply union at 40 (16 bytes), 56 in all.
func TestUeventLayout(t *testing.T) {
	ev := uevent{Type: evBindConn, IfError: -22, Handle: 0x1122334455667788}
	ev.u32(0, 7)  // sid
	ev.u32(4, 9)  // cid
	ev.u64(8, 5)  // transport_eph
	ev.u32(16, 1) // is_leading
	ne.PutUint32(ev.R[4:], 3)
	b := ev.marshal([]byte("payload"))
	if len(b) != ueventLen+7 {
		t.Fatalf("length %d", len(b))
	}
	want := map[int]uint32{0: evBindConn, 4: 0xffffffea, 16: 7, 20: 9, 24: 5, 32: 1, 44: 3}
	for off, v := range want {
		if got := ne.Uint32(b[off:]); got != v {
			t.Errorf("offset %d = %d, want %d", off, got, v)
		}
	}
	if ne.Uint64(b[8:]) != 0x1122334455667788 {
		t.Errorf("handle at 8 = %x", ne.Uint64(b[8:]))
	}
	got, payload, err := parseUevent(b)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(ev, got); diff != "" {
		t.Errorf("round trip (-want +got):\n%s", diff)
	}
	if string(payload) != "payload" {
		t.Errorf("payload %q", payload)
	}
	if _, _, err := parseUevent(b[:55]); err == nil {
		t.Error("short uevent parsed")
	}
}

func TestNetlinkFraming(t *testing.T) {
	a := nlMarshal(evSetParam, 1, []byte("abcde")) // padded to 24
	b := nlMarshal(kevRecvPDU, 2, bytes.Repeat([]byte{7}, 8))
	if len(a) != 24 || ne.Uint32(a) != 21 {
		t.Fatalf("first message %d bytes, nlmsg_len %d", len(a), ne.Uint32(a))
	}
	msgs, err := nlParse(append(a, b...))
	if err != nil {
		t.Fatal(err)
	}
	want := []nlMsg{{Type: evSetParam, Seq: 1, Payload: []byte("abcde")}, {Type: kevRecvPDU, Seq: 2, Payload: bytes.Repeat([]byte{7}, 8)}}
	if diff := cmp.Diff(want, msgs); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	bad := append([]byte{}, a...)
	ne.PutUint32(bad, 200)
	if _, err := nlParse(bad); err == nil {
		t.Error("message longer than the datagram parsed")
	}
}

func FuzzNetlink(f *testing.F) {
	ev := uevent{Type: kevRecvPDU}
	f.Add(nlMarshal(kevRecvPDU, 1, ev.marshal(make([]byte, BHSLen))))
	f.Add(nlMarshal(evCreateSession, 3, make([]byte, 10)))
	f.Fuzz(func(t *testing.T, b []byte) {
		msgs, err := nlParse(b)
		if err != nil {
			return
		}
		for _, m := range msgs {
			ev, payload, err := parseUevent(m.Payload)
			if err != nil {
				continue
			}
			again, p2, err := parseUevent(ev.marshal(payload))
			if err != nil || again != ev || !bytes.Equal(p2, payload) {
				t.Fatalf("uevent round trip: %+v %+v %v", ev, again, err)
			}
			if ev.Type == kevRecvPDU && len(payload) >= BHSLen {
				var r LoginResp
				_ = r.UnmarshalBinary(payload)
			}
		}
	})
}
