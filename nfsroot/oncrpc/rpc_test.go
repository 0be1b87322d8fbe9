package oncrpc

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

func TestCallRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name string
		call Call
	}{
		{"null auth", Call{XID: 1, Prog: 100003, Vers: 3, Proc: 0}},
		{"auth sys with args", Call{XID: 0xdeadbeef, Prog: 100005, Vers: 3, Proc: 1, Cred: SysCred("node1", 0, 0, 1, 2), Args: []byte{0, 0, 0, 1, 'x', 0, 0, 0}}},
		{"verifier", Call{XID: 7, Prog: 100000, Vers: 2, Proc: 3, Verf: OpaqueAuth{Flavor: 6, Body: []byte("abcde")}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := tc.call.MarshalBinary()
			if err != nil {
				t.Fatal(err)
			}
			var got Call
			if err := got.UnmarshalBinary(b); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.call, got, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("round trip (-want +got):\n%s", diff)
			}
		})
	}
}

func TestCallErrorsNameTheField(t *testing.T) {
	good, _ := (&Call{XID: 1, Prog: 2, Vers: 3, Proc: 4, Cred: SysCred("m", 1, 1)}).MarshalBinary()
	reply, _ := (&Reply{XID: 1}).MarshalBinary()
	badVersion := append([]byte(nil), good...)
	badVersion[11] = 3
	hugeCred := append([]byte(nil), good[:24]...)
	hugeCred = AppendUint32(AppendUint32(hugeCred, AuthSys), 100000)
	for _, tc := range []struct {
		name string
		in   []byte
		want string
	}{
		{"empty", nil, "xid"},
		{"truncated header", good[:10], "rpcvers"},
		{"truncated cred", good[:30], "cred.body"},
		{"not a call", reply, "not a call"},
		{"huge cred", hugeCred, "cred.body: length 100000 exceeds 400"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var c Call
			err := c.UnmarshalBinary(tc.in)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one naming %q", err, tc.want)
			}
		})
	}
	var c Call
	var verr *VersionError
	if err := c.UnmarshalBinary(badVersion); !errors.As(err, &verr) || verr.Version != 3 || c.XID != 1 {
		t.Errorf("rpc version 3: %v (xid %d), want a VersionError with the xid kept", err, c.XID)
	}
}

func TestReplyRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name  string
		reply Reply
	}{
		{"success", Reply{XID: 9, Stat: ReplyAccepted, AcceptStat: Success, Results: []byte{0, 0, 0, 5}}},
		{"prog mismatch", Reply{XID: 9, Stat: ReplyAccepted, AcceptStat: ProgMismatch, Low: 3, High: 3}},
		{"proc unavail", Reply{XID: 9, Stat: ReplyAccepted, AcceptStat: ProcUnavail}},
		{"garbage args", Reply{XID: 9, Stat: ReplyAccepted, AcceptStat: GarbageArgs}},
		{"rpc mismatch", Reply{XID: 9, Stat: ReplyDenied, RejectStat: RPCMismatch, Low: 2, High: 2}},
		{"auth error", Reply{XID: 9, Stat: ReplyDenied, RejectStat: AuthError, AuthStat: AuthTooWeak}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := tc.reply.MarshalBinary()
			if err != nil {
				t.Fatal(err)
			}
			var got Reply
			if err := got.UnmarshalBinary(b); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.reply, got, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("round trip (-want +got):\n%s", diff)
			}
		})
	}
}

// The codes on the wire are RFC 5531's: go-nfs v0.0.4 sends PROC_UNAVAIL as 2 and an
// auth error as reject_stat 6 with a little-endian auth_stat.
func TestReplyWireCodes(t *testing.T) {
	b, _ := (&Reply{XID: 1, Stat: ReplyAccepted, AcceptStat: ProcUnavail}).MarshalBinary()
	if want := []byte{0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3}; !bytes.Equal(b, want) {
		t.Errorf("PROC_UNAVAIL reply = %x, want %x", b, want)
	}
	b, _ = (&Reply{XID: 1, Stat: ReplyDenied, RejectStat: AuthError, AuthStat: AuthTooWeak}).MarshalBinary()
	if want := []byte{0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 5}; !bytes.Equal(b, want) {
		t.Errorf("AUTH_ERROR reply = %x, want %x", b, want)
	}
	got := AppendSuccess(nil, 1)
	want, _ := (&Reply{XID: 1, Stat: ReplyAccepted}).MarshalBinary()
	if !bytes.Equal(got, want) {
		t.Errorf("AppendSuccess = %x, want %x", got, want)
	}
}

func TestAuthSys(t *testing.T) {
	p := AuthSysParams{Stamp: 5, Machine: "node-17", UID: 1000, GID: 100, GIDs: []uint32{4, 24, 27}}
	b, err := p.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	var got AuthSysParams
	if err := got.UnmarshalBinary(b); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(p, got); diff != "" {
		t.Errorf("round trip (-want +got):\n%s", diff)
	}
	tooMany := AppendUint32(AppendUint32(AppendUint32(AppendString(AppendUint32(nil, 0), "m"), 0), 0), 17)
	if err := got.UnmarshalBinary(tooMany); err == nil || !strings.Contains(err.Error(), "17 gids") {
		t.Errorf("17 gids: %v", err)
	}
}

func TestReadRecord(t *testing.T) {
	var stream []byte
	frag := func(last bool, data string) {
		mark := uint32(len(data))
		if last {
			mark |= lastFragment
		}
		stream = AppendUint32(stream, mark)
		stream = append(stream, data...)
	}
	frag(false, "hel")
	frag(true, "lo")
	frag(true, "world")
	r := bytes.NewReader(stream)
	for _, want := range []string{"hello", "world"} {
		got, err := ReadRecord(r, nil, 100)
		if err != nil || string(got) != want {
			t.Fatalf("record = %q, %v; want %q", got, err, want)
		}
	}
	if _, err := ReadRecord(r, nil, 100); !errors.Is(err, io.EOF) {
		t.Errorf("at end: %v, want EOF", err)
	}
	big := AppendUint32(nil, lastFragment|1000)
	if _, err := ReadRecord(bytes.NewReader(big), nil, 100); !errors.Is(err, ErrRecordTooLarge) {
		t.Errorf("oversized record: %v", err)
	}
	cut := append(AppendUint32(nil, lastFragment|10), "abc"...)
	if _, err := ReadRecord(bytes.NewReader(cut), nil, 100); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("truncated record: %v", err)
	}
}

func FuzzCall(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		var c Call
		if err := c.UnmarshalBinary(b); err != nil {
			return
		}
		out, err := c.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		var again Call
		if err := again.UnmarshalBinary(out); err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(c, again, cmpopts.EquateEmpty()); diff != "" {
			t.Fatalf("round trip (-first +second):\n%s", diff)
		}
	})
}

func FuzzReply(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		var r Reply
		if err := r.UnmarshalBinary(b); err != nil {
			return
		}
		out, err := r.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		var again Reply
		if err := again.UnmarshalBinary(out); err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(r, again, cmpopts.EquateEmpty()); diff != "" {
			t.Fatalf("round trip (-first +second):\n%s", diff)
		}
	})
}

func FuzzAuthSys(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		var p AuthSysParams
		if err := p.UnmarshalBinary(b); err != nil {
			return
		}
		out, err := p.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		var again AuthSysParams
		if err := again.UnmarshalBinary(out); err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(p, again, cmpopts.EquateEmpty()); diff != "" {
			t.Fatalf("round trip:\n%s", diff)
		}
	})
}

func FuzzReadRecord(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		r := bytes.NewReader(b)
		for range 100 {
			rec, err := ReadRecord(r, nil, 4096)
			if err != nil {
				return
			}
			if len(rec) > 4096 {
				t.Fatalf("record of %d bytes past the limit", len(rec))
			}
		}
	})
}

// RecordBuffered is true only for a whole last-fragment record already buffered.
func TestRecordBuffered(t *testing.T) {
	whole := RecordMark(3)
	first := AppendUint32(nil, 3) // a fragment that is not the last
	for _, tc := range []struct {
		name string
		in   []byte
		want bool
	}{
		{"empty", nil, false},
		{"half a mark", whole[:2], false},
		{"mark only", whole[:], false},
		{"short body", append(whole[:], "ab"...), false},
		{"whole", append(whole[:], "abc"...), true},
		{"whole and more", append(whole[:], "abcdef"...), true},
		{"not the last fragment", append(first, "abc"...), false},
	} {
		br := bufio.NewReader(bytes.NewReader(tc.in))
		if len(tc.in) > 0 {
			_, _ = br.Peek(len(tc.in)) // fill the buffer as a socket read would
		}
		if got := RecordBuffered(br); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}
