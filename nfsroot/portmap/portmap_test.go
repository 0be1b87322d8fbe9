package portmap

import (
	"context"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/distonet/distonet/nfsroot/oncrpc"
)

var testMaps = []Mapping{
	{Prog: 100003, Vers: 3, Prot: TCP, Port: 2049},
	{Prog: 100005, Vers: 3, Prot: TCP, Port: 2049},
	{Prog: 100005, Vers: 3, Prot: UDP, Port: 2049},
	{Prog: 100005, Vers: 1, Prot: UDP, Port: 2049},
}

func TestUniversalAddr(t *testing.T) {
	for _, tc := range []struct {
		ip   string
		port uint16
		want string
	}{
		{"10.41.0.1", 2049, "10.41.0.1.8.1"},
		{"127.0.0.1", 111, "127.0.0.1.0.111"},
		{"::1", 65535, "::1.255.255"},
	} {
		got := UniversalAddr(netip.MustParseAddr(tc.ip), tc.port)
		if got != tc.want {
			t.Errorf("UniversalAddr(%s, %d) = %q, want %q", tc.ip, tc.port, got, tc.want)
		}
		ip, port, err := ParseUniversalAddr(got)
		if err != nil || ip.String() != tc.ip || port != tc.port {
			t.Errorf("ParseUniversalAddr(%q) = %s %d %v", got, ip, port, err)
		}
	}
	for _, bad := range []string{"", "10.0.0.1", "10.0.0.1.8", "10.0.0.1.256.1", "x.8.1"} {
		if _, _, err := ParseUniversalAddr(bad); err == nil {
			t.Errorf("ParseUniversalAddr(%q) accepted", bad)
		}
	}
}

func call(t *testing.T, s *Server, netid string, vers, proc uint32, args []byte) *oncrpc.Decoder {
	t.Helper()
	b, _ := (&oncrpc.Call{XID: 42, Prog: Program, Vers: vers, Proc: proc, Args: args}).MarshalBinary()
	var r oncrpc.Reply
	if err := r.UnmarshalBinary(s.Handle(b, netid, netip.MustParseAddr("10.41.0.1"))); err != nil {
		t.Fatal(err)
	}
	if r.XID != 42 || r.Stat != oncrpc.ReplyAccepted || r.AcceptStat != oncrpc.Success {
		t.Fatalf("reply %+v", r)
	}
	return oncrpc.NewDecoder(r.Results)
}

func TestHandle(t *testing.T) {
	s := &Server{Mappings: func() []Mapping { return testMaps }}
	t.Run("v2 getport", func(t *testing.T) {
		for _, tc := range []struct {
			m    Mapping
			want uint32
		}{
			{Mapping{Prog: 100003, Vers: 3, Prot: TCP}, 2049},
			{Mapping{Prog: 100003, Vers: 3, Prot: UDP}, 0},
			{Mapping{Prog: 100003, Vers: 4, Prot: TCP}, 0},
			{Mapping{Prog: 100005, Vers: 1, Prot: UDP}, 2049},
		} {
			d := call(t, s, "udp", 2, procGetport, tc.m.appendTo(nil))
			if got := d.Uint32("port"); got != tc.want {
				t.Errorf("GETPORT %+v = %d, want %d", tc.m, got, tc.want)
			}
		}
	})
	t.Run("v2 dump", func(t *testing.T) {
		d := call(t, s, "tcp", 2, procDump, nil)
		var got []Mapping
		for d.Bool("follows") {
			var m Mapping
			m.decode(d)
			got = append(got, m)
		}
		if diff := cmp.Diff(testMaps, got); diff != "" {
			t.Errorf("DUMP (-want +got):\n%s", diff)
		}
	})
	t.Run("v3 v4 getaddr", func(t *testing.T) {
		for _, tc := range []struct {
			vers, proc uint32
			r          RPCB
			want       string
		}{
			{3, procGetport, RPCB{Prog: 100003, Vers: 3, Netid: "tcp"}, "10.41.0.1.8.1"},
			{4, procGetport, RPCB{Prog: 100005, Vers: 2, Netid: "udp"}, "10.41.0.1.8.1"}, // any version will do
			{4, procGetVersAddr, RPCB{Prog: 100005, Vers: 2, Netid: "udp"}, ""},
			{3, procGetport, RPCB{Prog: 100005, Vers: 2, Netid: "udp"}, ""},
			{4, procGetport, RPCB{Prog: 100021, Vers: 4, Netid: "tcp"}, ""},
		} {
			d := call(t, s, "udp", tc.vers, tc.proc, tc.r.appendTo(nil))
			if got := d.String("addr", 100); got != tc.want {
				t.Errorf("v%d proc %d %+v = %q, want %q", tc.vers, tc.proc, tc.r, got, tc.want)
			}
		}
	})
	t.Run("set refused", func(t *testing.T) {
		if d := call(t, s, "udp", 2, procSet, Mapping{Prog: 1, Vers: 1, Prot: TCP, Port: 1}.appendTo(nil)); d.Bool("ok") {
			t.Errorf("SET accepted")
		}
	})
	t.Run("other program", func(t *testing.T) {
		b, _ := (&oncrpc.Call{XID: 1, Prog: 100003, Vers: 3}).MarshalBinary()
		var r oncrpc.Reply
		if err := r.UnmarshalBinary(s.Handle(b, "udp", netip.MustParseAddr("10.41.0.1"))); err != nil || r.AcceptStat != oncrpc.ProgUnavail {
			t.Errorf("reply %+v %v, want PROG_UNAVAIL", r, err)
		}
	})
}

// Over real sockets: the oncrpc client finds NFS through the server, TCP and UDP.
func TestServeLoopback(t *testing.T) {
	s := &Server{Addr: "127.0.0.1:0", Mappings: func() []Mapping { return testMaps }}
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	for _, network := range []string{"tcp", "udp"} {
		c, err := oncrpc.Dial(ctx, network, s.tcp.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		res, _, err := c.Call(Program, 4, procGetport, RPCB{Prog: 100003, Vers: 3, Netid: "tcp"}.appendTo(nil))
		c.Close()
		if err != nil {
			t.Fatalf("%s: %v", network, err)
		}
		d := oncrpc.NewDecoder(res)
		_, port, err := ParseUniversalAddr(d.String("addr", 100))
		if err != nil || port != 2049 {
			t.Errorf("%s GETADDR: port %d, %v", network, port, err)
		}
	}
	// A second server on the same address is told the port is taken.
	other := &Server{Addr: s.tcp.Addr().String(), Mappings: s.Mappings}
	if err := other.Listen(); err == nil || !strings.Contains(err.Error(), ErrInUse.Error()) {
		t.Errorf("second Listen: %v, want ErrInUse", err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Serve: %v", err)
	}
}

func FuzzMapping(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		var m Mapping
		if err := m.UnmarshalBinary(b); err != nil {
			return
		}
		out, _ := m.MarshalBinary()
		if string(out) != string(b) {
			t.Fatalf("re-encoding differs")
		}
	})
}

func FuzzRPCB(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		var r RPCB
		if err := r.UnmarshalBinary(b); err != nil {
			return
		}
		out, _ := r.MarshalBinary()
		var again RPCB
		if err := again.UnmarshalBinary(out); err != nil || again != r {
			t.Fatalf("round trip: %+v vs %+v (%v)", r, again, err)
		}
	})
}

func FuzzHandle(f *testing.F) {
	s := &Server{Mappings: func() []Mapping { return testMaps }}
	f.Fuzz(func(t *testing.T, b []byte) {
		out := s.Handle(b, "udp", netip.MustParseAddr("10.41.0.1"))
		if out == nil {
			return
		}
		var r oncrpc.Reply
		if err := r.UnmarshalBinary(out); err != nil {
			t.Fatalf("reply does not parse: %v", err)
		}
	})
}

func FuzzUniversalAddr(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		ip, port, err := ParseUniversalAddr(string(b))
		if err != nil {
			return
		}
		ip2, port2, err := ParseUniversalAddr(UniversalAddr(ip, port))
		if err != nil || ip2 != ip.Unmap() || port2 != port {
			t.Fatalf("%q: %s %d -> %s %d %v", b, ip, port, ip2, port2, err)
		}
	})
}
