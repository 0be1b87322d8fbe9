package aoe

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

var otherMAC = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x42}

// quick is a client config that gives up fast, for requests that must get no answer.
var quick = ClientConfig{Timeout: 50 * time.Millisecond, Retries: 2}

func macStrings(ms []net.HardwareAddr) []string {
	out := []string{}
	for _, m := range ms {
		out = append(out, m.String())
	}
	return out
}

func TestMaskListKeepsOthersOut(t *testing.T) {
	l := newLink(t, 0)
	file := diskFile(t, 1<<20)
	tg := startTarget(t, l, TargetConfig{Shelf: 2, Slot: 1, Device: file, AllowMACs: []net.HardwareAddr{otherMAC}})
	_, err := dialErr(l, 2, 1, quick)
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("dial from a MAC outside the allow-list: %v, want no answer (ErrTimeout)", err)
	}
	if st := tg.Stats(); st.Dropped == 0 || st.Reads != 0 || st.Writes != 0 {
		t.Fatalf("stats %+v: want dropped frames and no I/O", st)
	}
}

func TestMaskListEditPersists(t *testing.T) {
	l := newLink(t, 0)
	file := diskFile(t, 1<<20)
	state := filepath.Join(t.TempDir(), "aoe.json")
	tg := newTargetIn(t, l, TargetConfig{Shelf: 2, Slot: 2, Device: file, StateFile: state, AllowMACs: []net.HardwareAddr{l.IMAC}})
	stop := serveTarget(t, tg)
	c := dial(t, l, 2, 2, ClientConfig{})
	cq := dial(t, l, 2, 2, quick) // for the request that must get no answer
	ctx := context.Background()

	got, err := c.MACMask(ctx, MACMaskArg{Command: MACMaskEdit, Directives: []Directive{{Command: DirectiveAdd, MAC: otherMAC}}})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{l.IMAC.String(), otherMAC.String()}, dirMACs(got)); diff != "" {
		t.Fatalf("mask list after add (-want +got):\n%s", diff)
	}
	got, err = c.MACMask(ctx, MACMaskArg{Command: MACMaskEdit, Directives: []Directive{{Command: 9, MAC: otherMAC}}})
	if err != nil || got.Error != MACMaskErrBadCommand || len(got.Directives) != 0 {
		t.Fatalf("bad directive: %+v %v, want MACMaskErrBadCommand at index 0", got, err)
	}
	// Deleting ourselves: from now on the target must not answer us at all.
	if _, err := c.MACMask(ctx, MACMaskArg{Command: MACMaskEdit, Directives: []Directive{{Command: DirectiveDelete, MAC: l.IMAC}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := cq.ReadAt(make([]byte, 512), 0); !errors.Is(err, ErrTimeout) {
		t.Fatalf("read after removing ourselves from the mask list: %v, want ErrTimeout", err)
	}
	stop()

	// A restarted target (as after an agent restart) keeps the edited list.
	tg2 := newTargetIn(t, l, TargetConfig{Shelf: 2, Slot: 2, Device: file, StateFile: state})
	defer tg2.Close()
	if diff := cmp.Diff([]string{otherMAC.String()}, macStrings(tg2.Masks())); diff != "" {
		t.Fatalf("mask list after restart (-want +got):\n%s", diff)
	}
}

func dirMACs(m MACMaskArg) []string {
	out := []string{}
	for _, d := range m.Directives {
		out = append(out, d.MAC.String())
	}
	return out
}

func TestReserveRelease(t *testing.T) {
	l := newLink(t, 0)
	file := diskFile(t, 1<<20)
	state := filepath.Join(t.TempDir(), "aoe.json")
	tg := newTargetIn(t, l, TargetConfig{Shelf: 3, Slot: 0, Device: file, StateFile: state})
	stop := serveTarget(t, tg)
	c := dial(t, l, 3, 0, ClientConfig{})
	ctx := context.Background()

	steps := []struct {
		name    string
		arg     ReserveArg
		wantErr error
		want    []string
	}{
		{"read empty", ReserveArg{Command: ReserveRead}, nil, []string{}},
		{"reserve for us", ReserveArg{Command: ReserveSet, MACs: []net.HardwareAddr{l.IMAC}}, nil, []string{l.IMAC.String()}},
		{"hand over to another", ReserveArg{Command: ReserveSet, MACs: []net.HardwareAddr{otherMAC}}, nil, []string{otherMAC.String()}},
		{"set while reserved by another", ReserveArg{Command: ReserveSet, MACs: []net.HardwareAddr{l.IMAC}}, ErrorTargetReserved, nil},
	}
	for _, s := range steps {
		got, err := c.Reserve(ctx, s.arg)
		if !errors.Is(err, s.wantErr) {
			t.Fatalf("%s: error %v, want %v", s.name, err, s.wantErr)
		}
		if s.wantErr == nil {
			if diff := cmp.Diff(s.want, macStrings(got)); diff != "" {
				t.Fatalf("%s (-want +got):\n%s", s.name, diff)
			}
		}
	}
	if _, err := c.ReadAt(make([]byte, 512), 0); !errors.Is(err, ErrorTargetReserved) {
		t.Fatalf("read while reserved by another: %v, want ErrorTargetReserved", err)
	}
	if _, err := c.Identify(ctx); err != nil {
		t.Fatalf("IDENTIFY must work while reserved: %v", err)
	}
	stop()
	tg2 := newTargetIn(t, l, TargetConfig{Shelf: 3, Slot: 0, Device: file, StateFile: state})
	if diff := cmp.Diff([]string{otherMAC.String()}, macStrings(tg2.Reservations())); diff != "" {
		t.Fatalf("reserve list after restart (-want +got):\n%s", diff)
	}
	serveTarget(t, tg2)
	c2 := dial(t, l, 3, 0, ClientConfig{})
	if got, err := c2.Reserve(ctx, ReserveArg{Command: ReserveForceSet}); err != nil || len(got) != 0 {
		t.Fatalf("force release: %v %v", got, err)
	}
	if _, err := c2.ReadAt(make([]byte, 512), 0); err != nil {
		t.Fatalf("read after release: %v", err)
	}
}

func TestConfigString(t *testing.T) {
	l := newLink(t, 0)
	file := diskFile(t, 1<<20)
	state := filepath.Join(t.TempDir(), "aoe.json")
	tg := newTargetIn(t, l, TargetConfig{Shelf: 4, Slot: 4, Device: file, StateFile: state})
	stop := serveTarget(t, tg)
	c := dial(t, l, 4, 4, ClientConfig{})
	cq := dial(t, l, 4, 4, quick) // for the sub-commands that must get no answer
	ctx := context.Background()
	steps := []struct {
		name    string
		cmd     ConfigCommand
		s       string
		wantErr error
		want    string
	}{
		{"set when empty", ConfigSet, "pool=night", nil, "pool=night"},
		{"read", ConfigRead, "", nil, "pool=night"},
		{"set same again", ConfigSet, "pool=night", nil, "pool=night"},
		{"set different", ConfigSet, "pool=day", ErrorConfigStringPresent, ""},
		{"test exact match", ConfigTest, "pool=night", nil, "pool=night"},
		{"test mismatch stays silent", ConfigTest, "pool", ErrTimeout, ""},
		{"prefix match", ConfigTestPrefix, "pool=", nil, "pool=night"},
		{"prefix mismatch stays silent", ConfigTestPrefix, "x", ErrTimeout, ""},
		{"bad sub-command", 9, "", ErrorBadArgument, ""},
		{"force set", ConfigForceSet, "pool=day", nil, "pool=day"},
	}
	for _, s := range steps {
		cl := c
		if s.wantErr == ErrTimeout {
			cl = cq
		}
		got, err := cl.QueryConfig(ctx, s.cmd, s.s)
		if !errors.Is(err, s.wantErr) {
			t.Fatalf("%s: error %v, want %v", s.name, err, s.wantErr)
		}
		if s.wantErr == nil && got.String != s.want {
			t.Fatalf("%s: config string %q, want %q", s.name, got.String, s.want)
		}
	}
	stop()
	tg2 := newTargetIn(t, l, TargetConfig{Shelf: 4, Slot: 4, Device: file, StateFile: state})
	serveTarget(t, tg2)
	if got := discover(t, l, 4, 4); got.String != "pool=day" {
		t.Fatalf("config string after restart %q, want pool=day", got.String)
	}
}

// rawDo sends a request whose frame mutate may alter after marshalling.
func rawDo(ctx context.Context, c *Client, cmd Command, fill func([]byte) (int, error), mutate func([]byte)) (*request, error) {
	r, err := c.newRequest(cmd, fill)
	if err != nil {
		return nil, err
	}
	if mutate != nil {
		mutate(r.frame)
	}
	return r, c.run(ctx, []*request{r})
}

func TestErrorResponses(t *testing.T) {
	l := newLink(t, 0)
	const size = 1 << 20
	startTarget(t, l, TargetConfig{Shelf: 6, Slot: 6, Device: diskFile(t, size)})
	c := dial(t, l, 6, 6, ClientConfig{})
	ctx := context.Background()
	ata := func(a ATAArg) func([]byte) (int, error) { return a.MarshalTo }
	cases := []struct {
		name    string
		cmd     Command
		fill    func([]byte) (int, error)
		mutate  func([]byte)
		wantErr error
		wantATA *ATAError
	}{
		{"unknown aoe command", 7, ata(ATAArg{}), nil, ErrorUnrecognizedCommand, nil},
		{"vendor command", 0xf0, ata(ATAArg{}), nil, ErrorUnrecognizedCommand, nil},
		{"version 2", CommandATA, ata(ATAArg{CmdStatus: ATACheckPower}), func(b []byte) { b[14] = 2<<4 | b[14]&0xf }, ErrorUnsupportedVersion, nil},
		{"unknown ata command", CommandATA, ata(ATAArg{CmdStatus: 0x99}), nil, nil, &ATAError{Status: StatusDRDY | StatusERR, Err: ErrABRT}},
		{"read past the end (lba48)", CommandATA, ata(ATAArg{Extended: true, CmdStatus: ATAReadSectorsExt, SectorCount: 2, LBA: size/SectorSize - 1}), nil, nil, &ATAError{Status: StatusDRDY | StatusERR, Err: ErrIDNF}},
		{"write past the end (lba28)", CommandATA, ata(ATAArg{Write: true, CmdStatus: ATAWriteSectors, SectorCount: 1, LBA: size / SectorSize, Data: make([]byte, 512)}), nil, nil, &ATAError{Status: StatusDRDY | StatusERR, Err: ErrIDNF}},
		{"more sectors than a frame holds", CommandATA, ata(ATAArg{Extended: true, CmdStatus: ATAReadSectorsExt, SectorCount: 200}), nil, ErrorBadArgument, nil},
		{"write without its data", CommandATA, ata(ATAArg{Extended: true, Write: true, CmdStatus: ATAWriteSectorsExt, SectorCount: 2}), nil, ErrorBadArgument, nil},
		{"identify of two sectors", CommandATA, ata(ATAArg{CmdStatus: ATAIdentify, SectorCount: 2}), nil, ErrorBadArgument, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := rawDo(ctx, c, tc.cmd, tc.fill, tc.mutate)
			if tc.wantATA != nil {
				var ae *ATAError
				if !errors.As(err, &ae) || ae.Status != tc.wantATA.Status || ae.Err != tc.wantATA.Err {
					t.Fatalf("got %v, want ATA status %#x error %#x", err, tc.wantATA.Status, tc.wantATA.Err)
				}
				return
			}
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("got %v, want %v", err, tc.wantErr)
			}
		})
	}
	// LBA28 requests carry device bits (0xe0) in LBA byte 3, as the Linux driver sends them.
	want := randomBytes(t, 512)
	if _, err := rawDo(ctx, c, CommandATA, ata(ATAArg{Write: true, CmdStatus: ATAWriteSectors, SectorCount: 1, LBA: 0xe0000000 | 5, Data: want}), nil); err != nil {
		t.Fatalf("lba28 write with device bits: %v", err)
	}
	got := make([]byte, 512)
	if _, err := c.ReadAt(got, 5*512); err != nil || string(got) != string(want) {
		t.Fatalf("lba28 write landed elsewhere (err %v)", err)
	}
}

// TestTruncatedBackingFile: a file shrunk under a running target (its pages now fault) gives
// ATA read errors, not a crashed target.
func TestTruncatedBackingFile(t *testing.T) {
	l := newLink(t, 0)
	file := diskFile(t, 1<<20)
	startTarget(t, l, TargetConfig{Shelf: 8, Slot: 8, Device: file})
	c := dial(t, l, 8, 8, ClientConfig{})
	if _, err := c.ReadAt(make([]byte, 4096), 512<<10); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(file, 0); err != nil {
		t.Fatal(err)
	}
	_, err := c.ReadAt(make([]byte, 4096), 512<<10)
	var ae *ATAError
	if !errors.As(err, &ae) || ae.Err != ErrUNC {
		t.Fatalf("read of a truncated region: %v, want an ATA UNC error", err)
	}
	if _, err := c.Identify(context.Background()); err != nil {
		t.Fatalf("target no longer answers after the fault: %v", err)
	}
}
