package appliance

import (
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/distonet/distonet/internal/bootconfig"
	"github.com/distonet/distonet/internal/config"
	"github.com/distonet/distonet/internal/registry"
	"github.com/distonet/distonet/templates"
)

type fakeCatalog struct{ dir string }

func (f fakeCatalog) Names() []string { return []string{"demo"} }
func (f fakeCatalog) Current(name string) (ImageVersion, error) {
	return f.Get(name, 3)
}
func (f fakeCatalog) Get(name string, v uint64) (ImageVersion, error) {
	d := filepath.Join(ImagesDir(f.dir), name, "v3")
	return ImageVersion{Name: name, Version: "v3", Number: 3, Kernel: d + "/vmlinuz", Initrd: d + "/initramfs.img", Rootfs: d + "/rootfs"}, nil
}

func newBootScripts(t *testing.T, now *time.Time) (*bootScripts, *registry.Store) {
	t.Helper()
	cfg := config.Default()
	cfg.StateDir = t.TempDir()
	cfg.TimeZone = "UTC"
	st, err := registry.Open(cfg.StateDir, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return &bootScripts{cfg: cfg, store: st, images: fakeCatalog{cfg.StateDir}, tmpl: templates.Load(cfg.StateDir),
		window: insideWindow(time.UTC), now: func() time.Time { return *now }}, st
}

func TestBootScriptPerNodeAndWindow(t *testing.T) {
	now := time.Date(2026, 11, 26, 21, 0, 0, 0, time.UTC) // inside 20:00-07:00
	b, st := newBootScripts(t, &now)
	mac, _ := net.ParseMAC("52:54:00:00:00:01")
	stranger, _ := net.ParseMAC("52:54:00:00:00:99")
	if _, err := st.AddNode(registry.Node{Name: "pc1", MAC: mac.String(), Image: "demo", Donate: registry.Donate{Mode: "aoe", Window: "20:00-07:00"}}); err != nil {
		t.Fatal(err)
	}

	script, err := b.BootScript(stranger, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"#!ipxe", "not enrolled", "52:54:00:00:00:99", "http://10.202.0.1/boot/52:54:00:00:00:99.ipxe"} {
		if !strings.Contains(script, want) {
			t.Errorf("enrollment script lacks %q:\n%s", want, script)
		}
	}
	if ds, _ := st.DiscoveredMACs(); len(ds) != 1 || ds[0].MAC != "52:54:00:00:00:99" {
		t.Errorf("unknown MAC not recorded as discovered: %+v", ds)
	}

	first, err := b.BootScript(mac, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"kernel http://10.202.0.1/files/demo/v3/vmlinuz initrd=initramfs.img", "distonet.server=http://10.202.0.1",
		"BOOTIF=01-52-54-00-00-00-01", "initrd --name initramfs.img http://10.202.0.1/files/demo/v3/initramfs.img", "console=ttyS0"} {
		if !strings.Contains(first, want) {
			t.Errorf("node script lacks %q:\n%s", want, first)
		}
	}
	second, _ := b.BootScript(mac, nil)
	tok := func(s string) string {
		_, after, _ := strings.Cut(s, "distonet.token=")
		return strings.Fields(after)[0]
	}
	if tok(first) == tok(second) {
		t.Error("boot token not rotated between scripts")
	}
	if _, ok := st.NodeByToken(tok(first)); ok {
		t.Error("the previous boot token still authenticates")
	}
	if n, ok := st.NodeByToken(tok(second)); !ok || n.Name != "pc1" {
		t.Error("the current boot token does not authenticate the node")
	}

	now = time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC) // daytime: outside the window
	day, err := b.BootScript(mac, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(day, "sanboot") || strings.Contains(day, "vmlinuz") {
		t.Errorf("outside its window the node should boot its local disk:\n%s", day)
	}
}

func TestBootConfigCarriesTheNodesSecretsAndPaths(t *testing.T) {
	now := time.Now()
	b, st := newBootScripts(t, &now)
	n, err := st.AddNode(registry.Node{Name: "sun01", MAC: "00:03:ba:00:00:01", Image: "demo", Donate: registry.Donate{Mode: "iscsi"}})
	if err != nil {
		t.Fatal(err)
	}
	b.cfg.Donate.PoolHeadIQN = "iqn.2011-06.org.distonet:head"
	c, err := b.BootConfig(n)
	if err != nil {
		t.Fatal(err)
	}
	if c.Hostname != "sun01" || c.NFS.Path != "/images/demo" || !strings.Contains(c.NFS.Options, "addr=10.202.0.1") || !strings.Contains(c.NFS.Options, "mountport=2049") {
		t.Errorf("nfs = %+v", c.NFS)
	}
	if c.ISCSI.Target != "iqn.2011-06.org.distonet:node.sun01" || c.ISCSI.CHAPSecret != n.Secrets.CHAPSecret || c.ISCSI.Portal != "10.202.0.1:3260" {
		t.Errorf("iscsi = %+v", c.ISCSI)
	}
	if c.Donate.ISCSITarget != "iqn.2011-06.org.distonet:donate.sun01" || len(c.Donate.ISCSIInitiators) != 1 || c.Donate.CHAPSecret == c.ISCSI.CHAPSecret {
		t.Errorf("donate = %+v", c.Donate)
	}
	if c.AgentToken != n.Secrets.AgentToken || c.Donate.TimeZone != "UTC" {
		t.Errorf("agent token / zone wrong: %+v", c)
	}
}

// Only a pool-head node gets the pool head's timing, taken from the appliance's config.
func TestBootConfigGivesThePoolHeadItsTiming(t *testing.T) {
	now := time.Now()
	b, st := newBootScripts(t, &now)
	b.cfg.Donate.PoolStopBefore, b.cfg.Donate.PoolAssembleGrace, b.cfg.Donate.PoolExport = 90*time.Second, 4*time.Minute, "none"
	ph, err := st.AddNode(registry.Node{Name: "head1", MAC: "52:54:00:d5:0f:01", Image: "demo", Role: "pool-head"})
	if err != nil {
		t.Fatal(err)
	}
	donor, err := st.AddNode(registry.Node{Name: "pc01", MAC: "52:54:00:d5:0f:02", Image: "demo", Donate: registry.Donate{Mode: "aoe"}})
	if err != nil {
		t.Fatal(err)
	}
	c, err := b.BootConfig(ph)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(&bootconfig.Pool{StopBeforeSeconds: 90, AssembleGraceSeconds: 240, Export: "none"}, c.Pool); diff != "" {
		t.Errorf("pool head timing (-want +got):\n%s", diff)
	}
	if c, _ := b.BootConfig(donor); c.Pool != nil {
		t.Errorf("a donor got pool head timing: %+v", c.Pool)
	}
}
