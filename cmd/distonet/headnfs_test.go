package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/distonet/distonet/donate/pool/head"
)

func TestLeaseNetworkIsTheBootSubnet(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "lease.json")
	os.WriteFile(good, []byte(`{"ifname":"eth0","ip":"10.202.0.117","mask":"////AA==","server":"10.202.0.1"}`), 0o600)
	got, err := leaseNetwork(good)
	if err != nil || got != "10.202.0.0/24" {
		t.Errorf("leaseNetwork = %q, %v; want 10.202.0.0/24", got, err)
	}
	bad := filepath.Join(dir, "bad.json")
	os.WriteFile(bad, []byte(`{"ifname":"eth0"}`), 0o600)
	if _, err := leaseNetwork(bad); err == nil || !strings.Contains(err.Error(), "no address and mask") {
		t.Errorf("a lease without address: err = %v", err)
	}
	if _, err := leaseNetwork(filepath.Join(dir, "missing.json")); err == nil {
		t.Error("a missing lease file was accepted")
	}
}

func TestNFSExporterModes(t *testing.T) {
	exp, err := nfsExporter("nfs", "10.202.0.0/24")
	if k, ok := exp.(*head.KernelNFS); err != nil || !ok || k.Clients != "10.202.0.0/24" {
		t.Errorf("nfs: %#v, %v", exp, err)
	}
	if exp, err := nfsExporter("none", ""); exp != nil || err != nil {
		t.Errorf("none: %#v, %v", exp, err)
	}
	if _, err := nfsExporter("nfs", ""); err == nil {
		t.Error("an NFS export to no network was accepted")
	}
	if _, err := nfsExporter("smb", "10.0.0.0/8"); err == nil || !strings.Contains(err.Error(), "nfs or none") {
		t.Errorf("unknown mode: err = %v", err)
	}
}
