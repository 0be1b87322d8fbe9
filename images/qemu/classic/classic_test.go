package classic

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/distonet/distonet/internal/lab"
)

func TestMain(m *testing.M) {
	_ = lab.Sweep()
	os.Exit(m.Run())
}

// TestStackServes checks each daemon of the stack answers a real client.
func TestStackServes(t *testing.T) {
	lab.Require(t, "nfs-ls", "iscsi-ls")
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	if err := os.MkdirAll(filepath.Join(root, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "etc/issue"), []byte("demo\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	vol := filepath.Join(dir, "vol.img")
	FormatVolume(t, vol, 32<<20)
	s := Start(t, Options{Subnet: "10.207.0", Rootfs: root, Volume: vol, CHAPUser: "u1", CHAPSecret: "secret-0123456", Token: "t"})
	out := s.NS.MustExec("nfs-ls", "nfs://"+s.ServerIP+"/images/demo/etc")
	if !strings.Contains(out, "issue") {
		t.Errorf("nfs-ls of the export:\n%s", out)
	}
	out = s.NS.MustExec("iscsi-ls", "-s", "iscsi://u1%secret-0123456@"+s.ServerIP+"/")
	if !strings.Contains(out, s.Config.ISCSI.Target) {
		t.Errorf("iscsi-ls:\n%s", out)
	}
}
