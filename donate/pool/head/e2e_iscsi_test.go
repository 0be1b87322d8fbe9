package head

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/distonet/distonet/donate/pool"
	"github.com/distonet/distonet/donate/pool/poolvm"
	"github.com/distonet/distonet/internal/lab"
	"golang.org/x/sys/unix"
)

// The iSCSI half of the real-md test: four donors exported by tgt (CHAP per target) on the
// test namespace's bridge, the guest's kernel initiator driven by open-iscsi (iscsid and
// iscsiadm unpacked from Debian's packages), no udev in the guest.

const (
	iscsiPortal    = "10.77.0.1:3260"
	iscsiInitiator = "iqn.2026-01.net.distonet:pool-head"
)

func iscsiDonor(n int) (iqn, user, secret string) {
	return fmt.Sprintf("iqn.2026-01.net.distonet:donor%d", n), fmt.Sprintf("donor%d", n), fmt.Sprintf("s3cret-donor%d-xyz", n)
}

func TestE2EPoolHeadOverISCSI(t *testing.T) {
	if os.Getenv("DISTONET_E2E") == "" {
		t.Skip("real md runs in a QEMU guest: set DISTONET_E2E=1 (make e2e)")
	}
	lab.Require(t, "tgtd", "tgtadm")
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cfg := poolvm.Config{
		Package: wd, GuestEnv: guestEnv, GuestArg: "iscsi", Donors: -1,
		Debs:         []string{"open-iscsi", "libisns0", "libopeniscsiusr"},
		DebBinaries:  []string{"/sbin/iscsid", "/sbin/iscsiadm"},
		ExtraModules: []string{"iscsi_tcp", "sd_mod"},
		Files: map[string]string{
			"/etc/iscsi/initiatorname.iscsi": "InitiatorName=" + iscsiInitiator + "\n",
			"/etc/iscsi/iscsid.conf":         "node.startup = manual\nnode.session.scan = auto\n",
			// iscsid checks that its clients are root by name.
			"/etc/passwd": "root:x:0:0:root:/root:/bin/sh\n",
			"/etc/group":  "root:x:0:\n",
		},
		BridgeAddr: "10.77.0.1/24", GuestAddr: "10.77.0.2/24",
		Setup: func(t lab.T, ns *lab.Netns, _ string) {
			ctl := fmt.Sprint(os.Getpid()%1000 + 3000)
			ns.Start("tgtd", "-f", "-C", ctl, "--iscsi", "portal="+iscsiPortal)
			adm := func(args ...string) error {
				_, err := ns.Exec("tgtadm", append([]string{"-C", ctl, "--lld", "iscsi"}, args...)...)
				return err
			}
			for i := 0; adm("--op", "show", "--mode", "target") != nil; i++ {
				if i > 200 {
					t.Fatalf("tgtd did not come up")
				}
				time.Sleep(100 * time.Millisecond)
			}
			for n := 1; n <= 4; n++ {
				iqn, user, secret := iscsiDonor(n)
				img := filepath.Join(dir, fmt.Sprintf("donor%d.img", n))
				f, err := os.Create(img)
				if err != nil {
					t.Fatal(err)
				}
				if err := f.Truncate(96 << 20); err != nil {
					t.Fatal(err)
				}
				f.Close()
				tid := fmt.Sprint(n)
				for _, args := range [][]string{
					{"--op", "new", "--mode", "target", "--tid", tid, "-T", iqn},
					{"--op", "new", "--mode", "logicalunit", "--tid", tid, "--lun", "1", "-b", img},
					{"--op", "bind", "--mode", "target", "--tid", tid, "-I", "ALL"},
					{"--op", "new", "--mode", "account", "--user", user, "--password", secret},
					{"--op", "bind", "--mode", "account", "--tid", tid, "--user", user},
				} {
					if err := adm(args...); err != nil {
						t.Fatalf("tgtadm %v: %v", args, err)
					}
				}
			}
		},
	}
	if got := poolvm.Run(t, cfg); got != "ok" {
		t.Errorf("guest scenario: %s", got)
	}
}

type donorCHAP struct{}

func (donorCHAP) CHAP(d pool.Disk) (string, string, error) {
	for n := 1; n <= 4; n++ {
		if iqn, user, secret := iscsiDonor(n); iqn == d.Address {
			return user, secret, nil
		}
	}
	return "", "", fmt.Errorf("no CHAP account for %s", d.Address)
}

func sessions() []string {
	s, _ := filepath.Glob("/sys/class/iscsi_session/session*")
	return s
}

func (g *guest) iscsiScenario() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	for _, d := range []string{"/etc/iscsi/nodes", "/etc/iscsi/send_targets", "/etc/iscsi/ifaces", "/etc/iscsi/isns", "/etc/iscsi/static", "/etc/iscsi/fw", "/run/lock/iscsi", "/var/lock", "/var/lib/iscsi"} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	iscsid := exec.Command("/sbin/iscsid", "-f")
	iscsid.Stdout, iscsid.Stderr = os.Stdout, os.Stdout
	if err := iscsid.Start(); err != nil {
		return fmt.Errorf("iscsid: %w", err)
	}
	defer func() { _ = iscsid.Process.Kill() }()
	run := &recordingRunner{}
	// iscsiadm needs iscsid's socket: wait (bounded) until it answers.
	for i := 0; ; i++ {
		_, err := run.Run(ctx, "iscsiadm", "-m", "session")
		if err == nil || exitCode(err) == 21 {
			break
		}
		if i > 100 {
			return fmt.Errorf("iscsid never answered: %w", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	logger := slog.New(slog.NewTextHandler(os.Stdout, nil))
	at := &ISCSI{Runner: run, Credentials: donorCHAP{}, LUN: 1, Wait: time.Minute}
	h := New(Config{Runner: run, MountRoot: "/mnt/pool", Logger: logger, Attachers: map[string]Attacher{pool.TransportISCSI: at}})

	var inv []pool.Member
	for n := 1; n <= 4; n++ {
		iqn, _, _ := iscsiDonor(n)
		inv = append(inv, pool.Member{Node: fmt.Sprintf("ws%d", n), Group: fmt.Sprintf("room%d", (n+1)/2), Transport: pool.TransportISCSI,
			Address: iqn, Portal: iscsiPortal, SizeBytes: 96 << 20, State: pool.StateOnline})
	}
	layout, reasons := pool.Plan(pool.Layout{}, inv, pool.Options{})
	if len(layout.Arrays) != 1 {
		return fmt.Errorf("plan: %+v %v", layout, reasons)
	}
	a := layout.Arrays[0]
	g.say("STEP planned " + a.Name + " over 4 iSCSI donors")

	st, err := h.Up(ctx, a, nil)
	if err != nil {
		return fmt.Errorf("create: %w", err)
	}
	a.UUID = st.UUID
	calls := strings.Join(run.take(), "\n")
	if !strings.Contains(calls, "--login") || !strings.Contains(calls, "--create /dev/md/"+a.Name) || !strings.Contains(calls, "node.session.auth.password") {
		return fmt.Errorf("create: argv:\n%s", calls)
	}
	if len(sessions()) != 4 {
		return fmt.Errorf("create: %d iSCSI sessions, want 4", len(sessions()))
	}
	g.say(fmt.Sprintf("CHECK logged in to 4 targets with CHAP, array %s (%s), members %v", a.Name, st.State, memberDevices(st)))
	if _, err := run.Run(ctx, "mdadm", "--wait", h.Device(a.Name)); err != nil && exitCode(err) != 1 {
		return err
	}
	data := filepath.Join(h.MountPoint(a.Name), "data.bin")
	buf := make([]byte, 8<<20)
	if _, err := rand.Read(buf); err != nil {
		return err
	}
	if err := os.WriteFile(data, buf, 0o644); err != nil {
		return err
	}
	unix.Sync()
	want := fmt.Sprintf("%x", sha256.Sum256(buf))

	// A donor withdraws: failed, removed, logged out.
	d2 := a.Members[1]
	if err := h.Withdraw(ctx, a, d2); err != nil {
		return fmt.Errorf("withdraw: %w", err)
	}
	if len(sessions()) != 3 {
		return fmt.Errorf("withdraw: %d sessions left, want 3", len(sessions()))
	}
	if st, err := h.Status(ctx, a); err != nil || !st.Degraded {
		return fmt.Errorf("withdraw: status %+v %v", st, err)
	}
	if err := dropCaches(); err != nil {
		return err
	}
	if got, err := fileSum(data); err != nil || got != want {
		return fmt.Errorf("withdraw: read back %s %v", got, err)
	}
	g.say("CHECK donor withdrawn (logged out), degraded, data intact")
	run.take()

	// It comes back: logged in again and re-added through the bitmap.
	if _, err := h.Up(ctx, a, nil); err != nil {
		return fmt.Errorf("return: %w", err)
	}
	calls = strings.Join(run.take(), "\n")
	if !strings.Contains(calls, "--re-add") {
		return fmt.Errorf("return: no re-add:\n%s", calls)
	}
	if _, err := run.Run(ctx, "mdadm", "--wait", h.Device(a.Name)); err != nil && exitCode(err) != 1 {
		return err
	}
	g.say("CHECK re-added after login")

	// Stop: unmounted, stopped, every session logged out; then assembled again.
	if err := h.Stop(ctx, a); err != nil {
		return fmt.Errorf("stop: %w", err)
	}
	if n := len(sessions()); n != 0 {
		return fmt.Errorf("stop: %d sessions left", n)
	}
	run.take()
	if _, err := h.Up(ctx, a, nil); err != nil {
		return fmt.Errorf("reassemble: %w", err)
	}
	calls = strings.Join(run.take(), "\n")
	if !strings.Contains(calls, "--assemble") || strings.Contains(calls, "--create") {
		return fmt.Errorf("reassemble: argv:\n%s", calls)
	}
	if err := dropCaches(); err != nil {
		return err
	}
	if got, err := fileSum(data); err != nil || got != want {
		return fmt.Errorf("reassemble: read back %s %v", got, err)
	}
	g.say("CHECK stopped, logged out, reassembled, data intact")
	return h.Stop(ctx, a)
}

func memberDevices(st pool.ArrayStatus) []string {
	var out []string
	for _, m := range st.Members {
		out = append(out, m.Device+"="+m.State)
	}
	return out
}
