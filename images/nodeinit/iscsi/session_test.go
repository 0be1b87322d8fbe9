package iscsi

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// TestSessionSaveLoad checks the state the init hands to the relogin watcher survives the
// trip through /run, readable by root only (it holds the CHAP secret).
func TestSessionSaveLoad(t *testing.T) {
	s := &Session{SID: 3, CID: 0, Host: 2, RecoveryTimeout: 600,
		Target: Target{Portal: "10.0.0.1:3260", Name: "iqn.t:n1", LUN: 0, Initiator: "iqn.i:n1", CHAPUser: "n1", CHAPSecret: "s3cret"},
		Params: Params{TSIH: 7, StatSN: 9, MaxXmitDSL: 65536, ImmediateData: true}}
	file := filepath.Join(t.TempDir(), "run", "iscsi.json")
	if err := s.Save(file); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(file)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("state file mode %v, %v; want 0600", fi.Mode(), err)
	}
	got, err := LoadSession(nil, file)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(s, got, cmpopts.IgnoreUnexported(Session{})); diff != "" {
		t.Errorf("(-saved +loaded):\n%s", diff)
	}
	if err := os.WriteFile(file, []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadSession(nil, file); err == nil {
		t.Error("corrupt state loaded")
	}
}

func TestISID(t *testing.T) {
	a, b := ISID("iqn.x:n1"), ISID("iqn.x:n2")
	if a == b || a != ISID("iqn.x:n1") {
		t.Errorf("ISIDs not stable per initiator: %x %x", a, b)
	}
	if a[0]&0xc0 != 0x80 {
		t.Errorf("ISID type bits %02x, want 10b (random)", a[0]>>6)
	}
}
