package tftp

import (
	"bytes"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func rq(op byte, fields ...string) []byte {
	b := []byte{0, op}
	for _, f := range fields {
		b = append(append(b, f...), 0)
	}
	return b
}

func TestRequestUnmarshal(t *testing.T) {
	tests := []struct {
		name    string
		in      []byte
		want    Request
		wantErr string
	}{
		{name: "plain", in: rq(1, "undionly.kpxe", "octet"),
			want: Request{Op: OpRRQ, Filename: "undionly.kpxe", Mode: "octet"}},
		{name: "mode folded", in: rq(1, "f", "OcTeT"),
			want: Request{Op: OpRRQ, Filename: "f", Mode: "octet"}},
		{name: "write", in: rq(2, "f", "netascii"),
			want: Request{Op: OpWRQ, Filename: "f", Mode: "netascii"}},
		{name: "options folded in order", in: rq(1, "f", "octet", "BLKSIZE", "1468", "TSize", "0", "timeout", "3"),
			want: Request{Op: OpRRQ, Filename: "f", Mode: "octet", Options: []Option{
				{"blksize", "1468"}, {"tsize", "0"}, {"timeout", "3"}}}},
		{name: "duplicate keeps first", in: rq(1, "f", "octet", "blksize", "1024", "BlkSize", "8"),
			want: Request{Op: OpRRQ, Filename: "f", Mode: "octet", Options: []Option{{"blksize", "1024"}}}},
		{name: "nul padding ignored", in: append(rq(1, "f", "octet", "tsize", "0"), 0, 0, 0),
			want: Request{Op: OpRRQ, Filename: "f", Mode: "octet", Options: []Option{{"tsize", "0"}}}},
		{name: "empty value kept", in: rq(1, "f", "octet", "x", ""),
			want: Request{Op: OpRRQ, Filename: "f", Mode: "octet", Options: []Option{{"x", ""}}}},
		{name: "short", in: []byte{0}, wantErr: "short packet"},
		{name: "data opcode", in: []byte{0, 3, 0, 1}, wantErr: "not RRQ or WRQ"},
		{name: "no mode", in: rq(1, "f"), wantErr: "missing filename or mode"},
		{name: "empty filename", in: rq(1, "", "octet"), wantErr: "empty filename"},
		{name: "bad mode", in: rq(1, "f", "binary"), wantErr: `mode "binary" unknown`},
		{name: "unterminated filename", in: []byte{0, 1, 'a', 'b'}, wantErr: "not NUL-terminated"},
		{name: "unterminated option", in: append(rq(1, "f", "octet"), "blksize"...), wantErr: "not NUL-terminated"},
		{name: "option without value", in: rq(1, "f", "octet", "blksize", "512", "tsize"), wantErr: `option "tsize" has no value`},
		{name: "empty option name", in: rq(1, "f", "octet", "", "1", "a", "b"), wantErr: "empty option name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got Request
			err := got.UnmarshalBinary(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(tt.want, got); d != "" {
				t.Errorf("request (-want +got):\n%s", d)
			}
		})
	}
}

func TestMarshal(t *testing.T) {
	tests := []struct {
		name    string
		m       interface{ MarshalBinary() ([]byte, error) }
		want    []byte
		wantErr string
	}{
		{name: "rrq", m: &Request{Op: OpRRQ, Filename: "a", Mode: "octet", Options: []Option{{"blksize", "1468"}}},
			want: rq(1, "a", "octet", "blksize", "1468")},
		{name: "rrq bad op", m: &Request{Op: OpDATA, Filename: "a", Mode: "octet"}, wantErr: "not RRQ or WRQ"},
		{name: "rrq nul in name", m: &Request{Op: OpRRQ, Filename: "a\x00b", Mode: "octet"}, wantErr: "contains NUL"},
		{name: "oack", m: OACK{{"tsize", "10"}, {"timeout", "2"}}, want: rq(6, "tsize", "10", "timeout", "2")},
		{name: "oack empty name", m: OACK{{"", "1"}}, wantErr: "empty option name"},
		{name: "error", m: &ErrorPacket{Code: ErrAccess, Message: "access violation"},
			want: append([]byte{0, 5, 0, 2}, "access violation\x00"...)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.m.MarshalBinary()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, tt.want) {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestSmallPackets(t *testing.T) {
	if blk, err := ParseACK([]byte{0, 4, 0xff, 0xfe}); err != nil || blk != 0xfffe {
		t.Errorf("ParseACK = %d, %v", blk, err)
	}
	if _, err := ParseACK([]byte{0, 3, 0, 1}); err == nil {
		t.Error("ParseACK accepted a DATA packet")
	}
	var e ErrorPacket
	if err := e.UnmarshalBinary([]byte{0, 5, 0, 1, 'n', 'o'}); err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(ErrorPacket{Code: ErrNotFound, Message: "no"}, e); d != "" {
		t.Errorf("unterminated error message (-want +got):\n%s", d)
	}
	var o OACK
	if err := o.UnmarshalBinary(rq(6, "blksize", "1468")); err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(OACK{{"blksize", "1468"}}, o); d != "" {
		t.Errorf("oack (-want +got):\n%s", d)
	}
	if err := o.UnmarshalBinary(rq(6, "blksize")); err == nil {
		t.Error("OACK without a value accepted")
	}
}

// FuzzRequest checks that any accepted request re-encodes to bytes that parse to the same
// request, and that parsing never panics.
func FuzzRequest(f *testing.F) {
	f.Add(rq(1, "undionly.kpxe", "octet"))
	f.Add(rq(1, "pxelinux.cfg/01-52-54-00-12-34-56", "octet", "tsize", "0", "blksize", "1468"))
	f.Add(rq(2, "x", "netascii", "TIMEOUT", "3", "windowsize", "16"))
	f.Add(append(rq(1, "../etc/passwd", "OCTET", "blksize", "8"), 0, 0))
	f.Fuzz(func(t *testing.T, b []byte) {
		var r Request
		if r.UnmarshalBinary(b) != nil {
			return
		}
		out, err := r.MarshalBinary()
		if err != nil {
			t.Fatalf("accepted request does not marshal: %v (%+v)", err, r)
		}
		var again Request
		if err := again.UnmarshalBinary(out); err != nil {
			t.Fatalf("re-parse: %v", err)
		}
		if d := cmp.Diff(r, again); d != "" {
			t.Fatalf("round trip (-first +second):\n%s", d)
		}
	})
}

// FuzzReply parses what a client sends back to a transfer (ACK, ERROR) and the OACK a
// client-side test reads: no panics, and OACK/ERROR round-trip.
func FuzzReply(f *testing.F) {
	f.Add([]byte{0, 4, 0, 1})
	f.Add(append([]byte{0, 5, 0, 8}, "option refused\x00"...))
	f.Add(rq(6, "blksize", "1468", "tsize", "123"))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = ParseACK(b)
		var e ErrorPacket
		if e.UnmarshalBinary(b) == nil && strings.IndexByte(e.Message, 0) < 0 {
			out, err := e.MarshalBinary()
			if err != nil {
				t.Fatal(err)
			}
			var again ErrorPacket
			if err := again.UnmarshalBinary(out); err != nil || again != e {
				t.Fatalf("error round trip: %+v -> %+v, %v", e, again, err)
			}
		}
		var o OACK
		if o.UnmarshalBinary(b) == nil {
			for _, opt := range o {
				if opt.Name == "" {
					return // parse accepts it, marshal refuses it: not a round-trip case
				}
			}
			out, err := o.MarshalBinary()
			if err != nil {
				t.Fatal(err)
			}
			var again OACK
			if err := again.UnmarshalBinary(out); err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(o, again); d != "" {
				t.Fatalf("oack round trip:\n%s", d)
			}
		}
	})
}
