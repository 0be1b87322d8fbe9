package head

// The real-md test: md has no module on the host, so a QEMU guest (Debian's kernel, TCG) runs
// this package's own test binary as the pool head, against four donors that are vblade
// processes exporting files over AoE on a bridge inside a test namespace (package poolvm).
// It runs with DISTONET_E2E=1 (make e2e); the guest half is guestMain in e2e_guest_test.go.

import (
	"os"
	"testing"

	"github.com/distonet/distonet/donate/pool/poolvm"
	"github.com/distonet/distonet/internal/lab"
)

// guestEnv makes the test binary run the guest scenario instead of tests.
const guestEnv = "DISTONET_POOL_GUEST"

func TestMain(m *testing.M) {
	if os.Getenv(guestEnv) != "" {
		os.Exit(guestMain())
	}
	if os.Geteuid() == 0 {
		_ = lab.Sweep()
	}
	os.Exit(m.Run())
}

func TestE2EPoolHeadOverAoE(t *testing.T) {
	if os.Getenv("DISTONET_E2E") == "" {
		t.Skip("real md runs in a QEMU guest: set DISTONET_E2E=1 (make e2e)")
	}
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	if got := poolvm.Run(t, poolvm.Config{Package: wd, GuestEnv: guestEnv, Donors: 4}); got != "ok" {
		t.Errorf("guest scenario: %s", got)
	}
}
