package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/distonet/distonet/internal/demolab"
	"github.com/distonet/distonet/internal/lab"
)

// A machine's DHCP DISCOVER (udhcpc, as a PXE client) makes it a discovered node; its boot
// script is the enrollment script until it is enrolled through the API, then its node script.
func TestDiscoverThenEnrollChangesTheBootScript(t *testing.T) {
	lab.Require(t, "udhcpc")
	d := demolab.New(t, distonet, t.TempDir(), testWriter{t})
	// A tiny image: a kernel file and an empty module tree are enough to render scripts.
	root := t.TempDir()
	for _, dir := range []string{"boot", "lib/modules/6.1.0-t"} {
		os.MkdirAll(filepath.Join(root, dir), 0o755)
	}
	os.WriteFile(filepath.Join(root, "boot/vmlinuz-6.1.0-t"), []byte("kernel"), 0o644)
	os.WriteFile(filepath.Join(root, "lib/modules/6.1.0-t/modules.dep"), nil, 0o644)
	if err := d.ImportImage("tiny", root); err != nil {
		t.Fatal(err)
	}
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	client := lab.NewNetns(t)
	brPort, cif := lab.Veth(t, d.NS, "", client, "")
	d.NS.MustExec("ip", "link", "set", brPort, "master", d.Bridge)
	mac := client.HardwareAddr(cif).String()
	// udhcpc sends option 60 "PXEClient:Arch:00000..." like a BIOS PXE ROM.
	out, err := client.Exec("udhcpc", "-i", cif, "-n", "-q", "-f", "-t", "5", "-T", "2", "-V", "PXEClient:Arch:00000:UNDI:002001", "-s", "/bin/true")
	if err != nil {
		t.Fatalf("udhcpc: %v\n%s", err, out)
	}
	var listed []listed
	deadline := time.Now().Add(20 * time.Second)
	for !slicesContains(listed, mac, "discovered") && time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
		raw, err := d.CLI("node", "list", "--json")
		if err != nil {
			t.Fatal(err)
		}
		decode(t, raw, &listed)
	}
	if !slicesContains(listed, mac, "discovered") {
		t.Fatalf("%s not discovered after its DISCOVER: %+v", mac, listed)
	}
	script, err := d.Get("/boot/" + mac + ".ipxe")
	if err != nil || !strings.Contains(script, "not enrolled") {
		t.Fatalf("before enrollment: %v\n%s", err, script)
	}
	tok, err := os.ReadFile(filepath.Join(d.StateDir, "admin.token"))
	if err != nil {
		t.Fatal(err)
	}
	body := fmt.Sprintf(`{"name":"pc01","mac":"%s","image":"tiny"}`, mac)
	if out, err := d.NS.Exec("curl", "-sf", "-X", "POST", "-H", "Authorization: Bearer "+strings.TrimSpace(string(tok)),
		"-d", body, "http://"+demolab.Server+"/api/nodes"); err != nil {
		t.Fatalf("enroll through the API: %v %s", err, out)
	}
	script, err = d.Get("/boot/" + mac + ".ipxe")
	if err != nil || !strings.Contains(script, "pc01 boots tiny v1") || !strings.Contains(script, "distonet.token=") {
		t.Fatalf("after enrollment: %v\n%s", err, script)
	}
	images, err := d.NS.Exec("curl", "-sf", "-H", "Authorization: Bearer "+strings.TrimSpace(string(tok)), "http://"+demolab.Server+"/api/images")
	if err != nil || !strings.Contains(images, `"name": "tiny"`) || !strings.Contains(images, `"current": 1`) {
		t.Fatalf("GET /api/images: %v\n%s", err, images)
	}
}

func decode(t *testing.T, raw string, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(raw), v); err != nil {
		t.Fatalf("%v: %s", err, raw)
	}
}
