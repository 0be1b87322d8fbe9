package registry

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func open(t *testing.T) (*Store, string) {
	t.Helper()
	dir := t.TempDir()
	s, err := Open(dir, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, dir
}

func TestAddNodeValidates(t *testing.T) {
	s, _ := open(t)
	tests := []struct {
		name  string
		node  Node
		want  string
		field string
	}{
		{"bad name", Node{Name: "Node_1", MAC: "52:54:00:00:00:01", Image: "demo"}, "hostname label", "name"},
		{"html name", Node{Name: "<script>alert(1)</script>", MAC: "52:54:00:00:00:01", Image: "demo"}, "hostname label", "name"},
		{"bad mac", Node{Name: "n1", MAC: "52:54:00:00:01", Image: "demo"}, "Ethernet address", "mac"},
		{"multicast mac", Node{Name: "n1", MAC: "01:00:5e:00:00:01", Image: "demo"}, "multicast", "mac"},
		{"no image", Node{Name: "n1", MAC: "52:54:00:00:00:01"}, "image", "image"},
		{"bad group", Node{Name: "n1", MAC: "52:54:00:00:00:01", Image: "demo", Group: "Room B"}, "group", "group"},
		{"bad donate", Node{Name: "n1", MAC: "52:54:00:00:00:01", Image: "demo", Donate: Donate{Mode: "nbd"}}, "aoe or iscsi", "donate"},
		{"bad window", Node{Name: "n1", MAC: "52:54:00:00:00:01", Image: "demo", Donate: Donate{Mode: "aoe", Window: "25:00-07:00"}}, "HH:MM", "window"},
		{"empty window", Node{Name: "n1", MAC: "52:54:00:00:00:01", Image: "demo", Donate: Donate{Mode: "aoe", Window: "07:00-07:00"}}, "equal", "window"},
		{"bad ip", Node{Name: "n1", MAC: "52:54:00:00:00:01", Image: "demo", IP: "10.0.0"}, "IPv4", "ip"},
		{"bad role", Node{Name: "n1", MAC: "52:54:00:00:00:01", Image: "demo", Role: "master"}, "pool-head", "role"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s.AddNode(tc.node)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to mention %q", err, tc.want)
			}
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Field != tc.field {
				t.Fatalf("err %v names field %+v, want %q", err, fe, tc.field)
			}
		})
	}
}

func TestAddNodeRefusesDuplicates(t *testing.T) {
	s, _ := open(t)
	n, err := s.AddNode(Node{Name: "n1", MAC: "52-54-00-AA-00-01", Image: "demo"})
	if err != nil {
		t.Fatal(err)
	}
	if n.MAC != "52:54:00:aa:00:01" {
		t.Errorf("MAC not normalised: %s", n.MAC)
	}
	if n.Secrets.CHAPSecret == "" || n.Secrets.BootToken == "" || n.Secrets.AgentToken == n.Secrets.BootToken {
		t.Errorf("secrets not issued: %+v", n.Secrets)
	}
	if _, err := s.AddNode(Node{Name: "n1", MAC: "52:54:00:aa:00:02", Image: "demo"}); !errors.Is(err, ErrExists) {
		t.Errorf("duplicate name: err = %v", err)
	}
	if _, err := s.AddNode(Node{Name: "n2", MAC: "52:54:00:aa:00:01", Image: "demo"}); !errors.Is(err, ErrExists) {
		t.Errorf("duplicate mac: err = %v", err)
	}
}

func TestAoEAddressesAreUniqueAndReused(t *testing.T) {
	s, _ := open(t)
	seen := map[[2]int]string{}
	for i := 0; i < 20; i++ {
		n, err := s.AddNode(Node{Name: "n" + string(rune('a'+i)), MAC: "52:54:00:00:01:" + hex2(i), Image: "demo"})
		if err != nil {
			t.Fatal(err)
		}
		k := [2]int{n.Shelf, n.Slot}
		if other, dup := seen[k]; dup {
			t.Fatalf("%s and %s share e%d.%d", n.Name, other, n.Shelf, n.Slot)
		}
		seen[k] = n.Name
	}
	if _, err := s.RemoveNode("nc"); err != nil {
		t.Fatal(err)
	}
	n, err := s.AddNode(Node{Name: "late", MAC: "52:54:00:00:02:01", Image: "demo"})
	if err != nil {
		t.Fatal(err)
	}
	if n.Shelf != 1 || n.Slot != 2 {
		t.Errorf("freed address not reused: e%d.%d", n.Shelf, n.Slot)
	}
}

func hex2(i int) string { return string("0123456789abcdef"[i/16]) + string("0123456789abcdef"[i%16]) }

func TestDiscoveredThenEnrolled(t *testing.T) {
	s, _ := open(t)
	if err := s.SeeMAC(Discovered{MAC: "52:54:00:00:00:09", Arch: "bios"}); err != nil {
		t.Fatal(err)
	}
	ds, _ := s.DiscoveredMACs()
	if len(ds) != 1 || ds[0].State != "discovered" || ds[0].Arch != "bios" {
		t.Fatalf("discovered = %+v", ds)
	}
	if _, err := s.AddNode(Node{Name: "n9", MAC: "52:54:00:00:00:09", Image: "demo"}); err != nil {
		t.Fatal(err)
	}
	ds, _ = s.DiscoveredMACs()
	if len(ds) != 0 {
		t.Fatalf("enrolled MAC still discovered: %+v", ds)
	}
	if err := s.SeeMAC(Discovered{MAC: "52:54:00:00:00:09"}); err != nil {
		t.Fatal(err)
	}
	if ds, _ = s.DiscoveredMACs(); len(ds) != 0 {
		t.Fatalf("enrolled MAC recorded as discovered again: %+v", ds)
	}
}

func TestTokensAndRemoval(t *testing.T) {
	s, _ := open(t)
	n, _ := s.AddNode(Node{Name: "n1", MAC: "52:54:00:00:00:01", Image: "demo"})
	if got, ok := s.NodeByToken(n.Secrets.BootToken); !ok || got.Name != "n1" {
		t.Fatal("boot token does not find the node")
	}
	tok, err := s.RotateBootToken("n1")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := s.NodeByToken(n.Secrets.BootToken); ok {
		t.Error("old boot token still valid after rotation")
	}
	if _, ok := s.NodeByToken(tok); !ok {
		t.Error("new boot token not valid")
	}
	if err := s.PutDisk(DonatedDisk{Node: "n1", Device: "/dev/vdb", Transport: "aoe", Address: "e1.0", State: "online"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.RemoveNode("n1"); err != nil {
		t.Fatal(err)
	}
	if _, ok := s.NodeByToken(tok); ok {
		t.Error("token of removed node still valid")
	}
	if ds, _ := s.Disks(); len(ds) != 0 {
		t.Errorf("disks of removed node remain: %+v", ds)
	}
	if _, err := s.RemoveNode("n1"); !errors.Is(err, ErrNotFound) {
		t.Errorf("second remove: %v", err)
	}
}

func TestTimelineGroupsBoots(t *testing.T) {
	s, _ := open(t)
	s.AddNode(Node{Name: "n1", MAC: "52:54:00:00:00:01", Image: "demo"})
	t0 := time.Date(2026, 1, 1, 20, 0, 0, 0, time.UTC)
	for _, st := range []Stage{{Stage: "dhcp", Time: t0}, {Stage: "dhcp", Time: t0.Add(time.Second)}, {Stage: "bootfile", Time: t0.Add(2 * time.Second)},
		{Stage: "ready", Time: t0.Add(20 * time.Second)}, {Stage: "dhcp", Time: t0.Add(time.Hour)}} {
		if err := s.RecordStage("n1", st, "10.0.0.5"); err != nil {
			t.Fatal(err)
		}
	}
	tl, _ := s.Timeline("n1")
	if len(tl.Boots) != 2 {
		t.Fatalf("boots = %d, want 2: %+v", len(tl.Boots), tl)
	}
	first := tl.Boots[0]
	if len(first.Stages) != 3 || first.Stages[2].Since != 20*time.Second || first.IP != "10.0.0.5" {
		t.Fatalf("first boot = %+v", first)
	}
}

func TestSecondOpenIsLocked(t *testing.T) {
	_, dir := open(t)
	if _, err := Open(dir, 50*time.Millisecond); !errors.Is(err, ErrLocked) {
		t.Fatalf("second open: err = %v, want ErrLocked", err)
	}
}

func TestReopenKeepsData(t *testing.T) {
	dir := t.TempDir()
	s, _ := Open(dir, time.Second)
	s.AddNode(Node{Name: "n1", MAC: "52:54:00:00:00:01", Image: "demo", Donate: Donate{Mode: "aoe", Window: "20:00-07:00"}})
	s.Close()
	s, err := Open(dir, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	n, err := s.Node("n1")
	if err != nil || n.Donate.Window != "20:00-07:00" {
		t.Fatalf("after reopen: %+v, %v", n, err)
	}
}
