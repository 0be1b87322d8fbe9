package head

import (
	"reflect"
	"testing"
)

// The seeds in testdata/fuzz/ are the real mdadm and /proc/mdstat outputs of testdata/fixtures.

func FuzzParseMdstat(f *testing.F) {
	f.Add([]byte("Personalities : [raid6]\nmd0 : active raid6 vda[0]\n      10 blocks super 1.2 level 6, 512k chunk, algorithm 2 [4/1] [U___]\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := ParseMdstat(b)
		if err != nil {
			return
		}
		again, err := ParseMdstat(b)
		if err != nil || !reflect.DeepEqual(st, again) {
			t.Fatalf("second parse differs: %v", err)
		}
		for _, a := range st.Arrays {
			if a.Device == "" || a.Blocks < 0 || a.RaidDisks < 0 || a.InSync < 0 || a.Progress < 0 || a.Progress > 100 {
				t.Fatalf("out of range: %+v", a)
			}
			if a.Degraded() && !a.Active {
				t.Fatalf("inactive array reported degraded: %+v", a)
			}
			for _, m := range a.Members {
				if m.Name == "" || m.Slot < 0 {
					t.Fatalf("bad member %+v", m)
				}
			}
		}
	})
}

func FuzzParseDetail(f *testing.F) {
	f.Add([]byte("/dev/md/x:\n        Raid Level : raid6\n              UUID : a:b:c:d\n    Number   Major   Minor   RaidDevice State\n       -       0        0        1      removed\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := ParseDetail(b)
		if err != nil {
			return
		}
		if d.UUID == "" && d.RaidLevel == "" {
			t.Fatal("accepted a detail that describes no array")
		}
		if d.SyncPercent < 0 || d.SyncPercent > 100 || d.RaidDevices < 0 || d.ArraySizeKiB < 0 {
			t.Fatalf("out of range: %+v", d)
		}
		for _, m := range d.Members {
			if m.RaidDevice < -1 || m.Number < -1 {
				t.Fatalf("bad row %+v", m)
			}
			if m.Device != "" && m.Device[0] != '/' {
				t.Fatalf("device %q is not a path", m.Device)
			}
		}
		_ = d.Degraded()
		_ = d.ShortName()
	})
}

func FuzzParseExamineExport(f *testing.F) {
	f.Add([]byte("MD_UUID=a:b:c:d\nMD_NAME=any:x\nMD_DEVICES=4\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := ParseExamineExport(b)
		if err != nil {
			return
		}
		if e.UUID == "" || e.Devices < 0 {
			t.Fatalf("accepted %+v", e)
		}
	})
}
