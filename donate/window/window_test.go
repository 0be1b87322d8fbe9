package window

import (
	"context"
	"net"
	"os"
	"sync"
	"testing"
	"time"
	_ "time/tzdata" // Europe/Paris for the daylight-saving case, whatever the host has

	"github.com/distonet/distonet/internal/lab"
	"github.com/google/go-cmp/cmp"
)

func TestMain(m *testing.M) {
	_ = lab.Sweep()
	os.Exit(m.Run())
}

func TestParse(t *testing.T) {
	cases := []struct {
		in      string
		want    Window
		wantErr bool
		str     string
	}{
		{"20:00-07:00", Window{Start: 20 * time.Hour, End: 7 * time.Hour}, false, "20:00-07:00"},
		{"8:30-17:45", Window{Start: 8*time.Hour + 30*time.Minute, End: 17*time.Hour + 45*time.Minute}, false, "08:30-17:45"},
		{"00:00-24:00", Window{End: 24 * time.Hour, always: true}, false, "00:00-24:00"},
		{"", Always, false, ""},
		{"12:00-12:00", Window{Start: 12 * time.Hour, End: 12 * time.Hour, always: true}, false, "12:00-12:00"},
		{"24:00-07:00", Window{}, true, ""},
		{"20:00", Window{}, true, ""},
		{"20:60-07:00", Window{}, true, ""},
		{"2000-0700", Window{}, true, ""},
		{"-1:00-07:00", Window{}, true, ""},
		{"20:00-7", Window{}, true, ""},
	}
	for _, tc := range cases {
		t.Run(tc.in, func(t *testing.T) {
			got, err := Parse(tc.in)
			if (err != nil) != tc.wantErr {
				t.Fatalf("Parse(%q) error %v, wantErr %v", tc.in, err, tc.wantErr)
			}
			if tc.wantErr {
				return
			}
			if diff := cmp.Diff(tc.want, got, cmp.AllowUnexported(Window{})); diff != "" {
				t.Fatalf("(-want +got):\n%s", diff)
			}
			if got.String() != tc.str {
				t.Fatalf("String() = %q, want %q", got.String(), tc.str)
			}
		})
	}
}

func day(h, m int) time.Time { return time.Date(2026, 11, 26, h, m, 0, 0, time.UTC) }

func TestContainsAndEdges(t *testing.T) {
	night, _ := Parse("20:00-07:00")
	office, _ := Parse("08:00-18:00")
	cases := []struct {
		name      string
		w         Window
		at        time.Time
		in        bool
		nextOpen  time.Time
		nextClose time.Time
	}{
		{"night, evening", night, day(21, 0), true, day(20, 0).AddDate(0, 0, 1), day(7, 0).AddDate(0, 0, 1)},
		{"night, early morning", night, day(6, 59), true, day(20, 0), day(7, 0)},
		{"night, at close", night, day(7, 0), false, day(20, 0), day(7, 0).AddDate(0, 0, 1)},
		{"night, at open", night, day(20, 0), true, day(20, 0).AddDate(0, 0, 1), day(7, 0).AddDate(0, 0, 1)},
		{"night, afternoon", night, day(15, 0), false, day(20, 0), day(7, 0).AddDate(0, 0, 1)},
		{"office, noon", office, day(12, 0), true, day(8, 0).AddDate(0, 0, 1), day(18, 0)},
		{"office, night", office, day(23, 0), false, day(8, 0).AddDate(0, 0, 1), day(18, 0).AddDate(0, 0, 1)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.w.Contains(tc.at); got != tc.in {
				t.Errorf("Contains = %v, want %v", got, tc.in)
			}
			if got := tc.w.NextOpen(tc.at); !got.Equal(tc.nextOpen) {
				t.Errorf("NextOpen = %v, want %v", got, tc.nextOpen)
			}
			if got := tc.w.NextClose(tc.at); !got.Equal(tc.nextClose) {
				t.Errorf("NextClose = %v, want %v", got, tc.nextClose)
			}
		})
	}
	if !Always.Contains(day(3, 0)) || !Always.NextOpen(day(3, 0)).IsZero() {
		t.Error("Always must always contain and never change")
	}
}

// TestDaylightSaving: a night window keeps its wall-clock hours across the autumn change.
func TestDaylightSaving(t *testing.T) {
	paris, err := time.LoadLocation("Europe/Paris")
	if err != nil {
		t.Fatal(err)
	}
	night, _ := Parse("20:00-07:00")
	sat := time.Date(2026, 10, 24, 21, 0, 0, 0, paris) // DST ends the night of 24-25 October 2026
	close := night.NextClose(sat)
	if want := time.Date(2026, 10, 25, 7, 0, 0, 0, paris); !close.Equal(want) || close.Hour() != 7 {
		t.Fatalf("NextClose = %v, want %v", close, want)
	}
	if close.Sub(sat) != 11*time.Hour { // 10 h of wall clock plus the repeated hour
		t.Fatalf("window lasted %v", close.Sub(sat))
	}
}

func TestDecide(t *testing.T) {
	night, _ := Parse("20:00-07:00")
	steps := []struct {
		name string
		prev time.Time
		now  time.Time
		want Decision
	}{
		{"first decision at noon", time.Time{}, day(12, 0), Decision{Boot: BootLocal, NextChange: day(20, 0)}},
		{"before open", day(12, 0), day(19, 59), Decision{Boot: BootLocal, NextChange: day(20, 0)}},
		{"opening wakes", day(19, 59), day(20, 0), Decision{Open: true, Boot: BootDiskless, Wake: true, NextChange: day(7, 0).AddDate(0, 0, 1)}},
		{"inside", day(20, 0), day(23, 0), Decision{Open: true, Boot: BootDiskless, NextChange: day(7, 0).AddDate(0, 0, 1)}},
		{"closing withdraws", day(23, 0), day(7, 1).AddDate(0, 0, 1), Decision{Boot: BootLocal, Withdraw: true, NextChange: day(20, 0).AddDate(0, 0, 1)}},
		{"first decision inside wakes", time.Time{}, day(22, 0), Decision{Open: true, Boot: BootDiskless, Wake: true, NextChange: day(7, 0).AddDate(0, 0, 1)}},
		{"slept through a whole window", day(19, 0), day(8, 0).AddDate(0, 0, 1), Decision{Boot: BootLocal, Withdraw: true, NextChange: day(20, 0).AddDate(0, 0, 1)}},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			if diff := cmp.Diff(s.want, night.Decide(s.prev, s.now)); diff != "" {
				t.Fatalf("(-want +got):\n%s", diff)
			}
		})
	}
}

type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *fakeClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	c.now = c.now.Add(d) // time jumps straight to the next decision
	now := c.now
	c.mu.Unlock()
	ch := make(chan time.Time, 1)
	ch <- now
	return ch
}

type members []Member

func (m members) DonationMembers() []Member { return m }

func TestSchedulerRunsActionsAtEdges(t *testing.T) {
	night, _ := Parse("20:00-07:00")
	mac := net.HardwareAddr{2, 0, 0, 0, 0, 1}
	var mu sync.Mutex
	var events []string
	rec := func(s string) { mu.Lock(); events = append(events, s); mu.Unlock() }
	ctx, cancel := context.WithCancel(context.Background())
	clock := &fakeClock{now: day(18, 0)}
	s := &Scheduler{
		Clock:    clock,
		Location: time.UTC,
		Tick:     time.Hour,
		Members:  members{{Node: "pc1", MAC: mac, Window: night}},
		Actions: Actions{
			Wake: func(_ context.Context, m Member) error {
				rec("wake " + m.Node + " " + clock.Now().Format("15:04"))
				return nil
			},
			SetBoot: func(m Member, b Boot) error {
				rec("boot " + b.String() + " " + clock.Now().Format("15:04"))
				return nil
			},
			Withdraw: func(_ context.Context, m Member) error {
				rec("withdraw " + m.Node + " " + clock.Now().Format("15:04"))
				return nil
			},
		},
	}
	done := make(chan error)
	go func() { done <- s.Run(ctx) }()
	for {
		mu.Lock()
		n := len(events)
		mu.Unlock()
		if n >= 5 || clock.Now().After(day(21, 0).AddDate(0, 0, 1)) {
			break
		}
		time.Sleep(time.Millisecond)
	}
	cancel()
	<-done
	mu.Lock()
	defer mu.Unlock()
	want := []string{"boot local 18:00", "boot diskless 20:00", "wake pc1 20:00", "boot local 07:00", "withdraw pc1 07:00"}
	if diff := cmp.Diff(want, events[:min(len(events), 5)]); diff != "" {
		t.Fatalf("(-want +got):\n%s", diff)
	}
}

func TestMagicPacket(t *testing.T) {
	mac := net.HardwareAddr{0x52, 0x54, 0, 0x12, 0x34, 0x56}
	b, err := MagicPacket{MAC: mac}.MarshalBinary()
	if err != nil || len(b) != MagicPacketLen {
		t.Fatalf("%d bytes, %v", len(b), err)
	}
	var p MagicPacket
	if err := p.UnmarshalBinary(b); err != nil || p.MAC.String() != mac.String() {
		t.Fatalf("round trip: %v %v", p.MAC, err)
	}
	b[50] ^= 1
	if err := p.UnmarshalBinary(b); err == nil {
		t.Fatal("accepted a packet with a corrupt repetition")
	}
}

func FuzzMagicPacket(f *testing.F) {
	good, _ := MagicPacket{MAC: net.HardwareAddr{1, 2, 3, 4, 5, 6}}.MarshalBinary()
	f.Add(good)
	f.Add(append(good, 1, 2, 3, 4))
	f.Fuzz(func(t *testing.T, b []byte) {
		var p MagicPacket
		if p.UnmarshalBinary(b) != nil {
			return
		}
		out, err := p.MarshalBinary()
		if err != nil || string(out) != string(b[:MagicPacketLen]) {
			t.Fatalf("round trip differs: %x vs %x (%v)", out, b[:MagicPacketLen], err)
		}
	})
}

// TestWakeOnLANBroadcast sends a magic packet to the subnet broadcast of a test network and
// receives it in the other namespace.
func TestWakeOnLANBroadcast(t *testing.T) {
	lab.Require(t)
	a, b := lab.NewNetns(t), lab.NewNetns(t)
	aIf, _ := lab.Veth(t, a, "10.31.0.1/24", b, "10.31.0.2/24")
	pc, err := b.ListenPacket("udp4", ":9")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	mac := net.HardwareAddr{0x52, 0x54, 0, 0xab, 0xcd, 0xef}
	buf := make([]byte, 200)
	var n int
	// UDP may lose the first datagram while the fresh link settles: resend, bounded.
	for try := 0; ; try++ {
		if err := a.Do(func() error {
			return Wake(context.Background(), mac, &net.UDPAddr{IP: net.IPv4(10, 31, 0, 255), Port: 9}, aIf)
		}); err != nil {
			t.Fatal(err)
		}
		_ = pc.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		if n, _, err = pc.ReadFrom(buf); err == nil {
			break
		}
		if try == 10 {
			t.Fatalf("no magic packet received after %d sends: %v", try+1, err)
		}
	}
	var p MagicPacket
	if err := p.UnmarshalBinary(buf[:n]); err != nil || p.MAC.String() != mac.String() {
		t.Fatalf("received %x: %v", buf[:n], err)
	}
}

func TestTrackerEdgesOnce(t *testing.T) {
	night, _ := Parse("20:00-07:00")
	tr := Tracker{Window: night}
	var wakes, withdraws int
	for now := day(18, 0); now.Before(day(9, 0).AddDate(0, 0, 1)); now = now.Add(15 * time.Minute) {
		d := tr.Decide(now)
		if d.Wake {
			wakes++
		}
		if d.Withdraw {
			withdraws++
		}
		if d.Open != night.Contains(now) || (d.Boot == BootDiskless) != d.Open {
			t.Fatalf("%v: %+v", now, d)
		}
	}
	if wakes != 1 || withdraws != 1 {
		t.Fatalf("over one night: %d wakes, %d withdrawals; want exactly one each", wakes, withdraws)
	}
}
