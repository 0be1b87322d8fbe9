package poolvm

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestModuleOrder(t *testing.T) {
	dir := t.TempDir()
	dep := `kernel/drivers/md/md-mod.ko:
kernel/drivers/md/raid456.ko: kernel/crypto/async_tx/async_pq.ko kernel/crypto/async_tx/async_tx.ko kernel/drivers/md/md-mod.ko kernel/lib/raid6/raid6_pq.ko
kernel/crypto/async_tx/async_pq.ko: kernel/crypto/async_tx/async_tx.ko kernel/lib/raid6/raid6_pq.ko
kernel/crypto/async_tx/async_tx.ko:
kernel/lib/raid6/raid6_pq.ko:
kernel/crypto/crc32c_generic.ko:
kernel/drivers/block/aoe/aoe.ko:
`
	if err := os.WriteFile(filepath.Join(dir, "modules.dep"), []byte(dep), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := moduleOrder(dir, []string{"crc32c_generic", "raid456", "aoe", "md_mod"})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"kernel/crypto/crc32c_generic.ko",
		"kernel/lib/raid6/raid6_pq.ko", "kernel/drivers/md/md-mod.ko", "kernel/crypto/async_tx/async_tx.ko",
		"kernel/crypto/async_tx/async_pq.ko", "kernel/drivers/md/raid456.ko",
		"kernel/drivers/block/aoe/aoe.ko",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	// Every module comes after all of its dependencies.
	pos := map[string]int{}
	for i, p := range got {
		pos[p] = i
	}
	if pos["kernel/crypto/async_tx/async_tx.ko"] > pos["kernel/crypto/async_tx/async_pq.ko"] {
		t.Error("async_pq before its dependency async_tx")
	}
	if _, err := moduleOrder(dir, []string{"nonexistent"}); err == nil {
		t.Error("unknown module accepted")
	}
}

// The control protocol end to end over a pipe: the guest's Control on one side,
// serveControl on the other.
func TestControlChannel(t *testing.T) {
	cases := []struct {
		name      string
		guest     func(c *Control) error
		want      string
		wantNeeds []string
		wantLines []string
		wantCrash bool
	}{
		{
			name: "needs then ok",
			guest: func(c *Control) error {
				c.Say("STEP one")
				if err := c.Need("kill", 3); err != nil {
					return err
				}
				if err := c.Need("nfsread", 0); err == nil {
					return errors.New("a FAILED answer came back as success")
				}
				c.Result(nil)
				return nil
			},
			want:      "ok",
			wantNeeds: []string{"kill 3", "nfsread 0"},
			wantLines: []string{"STEP one"},
		},
		{
			name:      "error result on one line",
			guest:     func(c *Control) error { c.Result(errors.New("first\nsecond")); return nil },
			want:      "first | second",
			wantNeeds: nil,
		},
		{
			name: "crash",
			guest: func(c *Control) error {
				c.Say("CHECK writing")
				if err := c.Crash(); err == nil {
					return errors.New("Crash returned no error though nothing killed the guest")
				}
				return nil
			},
			want:      Crashed,
			wantLines: []string{"CHECK writing"},
			wantCrash: true,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			host, guest := net.Pipe()
			defer host.Close()
			c := &Control{f: guest, in: bufio.NewReader(guest), crashWait: time.Millisecond}
			guestErr := make(chan error, 1)
			go func() {
				guestErr <- tc.guest(c)
				guest.Close()
			}()
			defer func() {
				if err := <-guestErr; err != nil {
					t.Errorf("guest: %v", err)
				}
			}()
			var needs, lines []string
			crashed := false
			got := serveControl(t, host, func(verb string, arg int) string {
				needs = append(needs, fmt.Sprintf("%s %d", verb, arg))
				if verb == "kill" {
					return "DONE"
				}
				return "FAILED not here"
			}, func() { crashed = true }, func(l string) { lines = append(lines, l) })
			if got != tc.want || crashed != tc.wantCrash {
				t.Errorf("result %q crashed %v, want %q %v", got, crashed, tc.want, tc.wantCrash)
			}
			if diff := cmp.Diff(tc.wantNeeds, needs); diff != "" {
				t.Errorf("needs (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.wantLines, lines); diff != "" {
				t.Errorf("lines (-want +got):\n%s", diff)
			}
		})
	}
}

func TestControlChannelClosedWithoutResult(t *testing.T) {
	host, guest := net.Pipe()
	go func() {
		_, _ = guest.Write([]byte("STEP booting\n"))
		guest.Close()
	}()
	got := serveControl(t, host, func(string, int) string { return "DONE" }, func() {}, nil)
	if !strings.HasPrefix(got, "no RESULT from the guest") {
		t.Errorf("got %q", got)
	}
}
