package disk

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseMountInfo(t *testing.T) {
	in := `22 27 0:21 / /proc rw,relatime - proc proc rw
36 35 98:0 /mnt1 /mnt\040two rw,noatime master:1 - ext3 /dev/root rw,errors=continue
40 27 8:17 / /home rw shared:5 master:2 - ext4 /dev/sdb1 rw
`
	got, err := ParseMountInfo(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	want := []Mount{
		{ID: 22, Parent: 27, Major: 0, Minor: 21, Root: "/", MountPoint: "/proc", FSType: "proc", Source: "proc"},
		{ID: 36, Parent: 35, Major: 98, Minor: 0, Root: "/mnt1", MountPoint: "/mnt two", FSType: "ext3", Source: "/dev/root"},
		{ID: 40, Parent: 27, Major: 8, Minor: 17, Root: "/", MountPoint: "/home", FSType: "ext4", Source: "/dev/sdb1"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("(-want +got):\n%s", diff)
	}
	for _, bad := range []string{
		"22 27 0:21 / /proc rw,relatime proc proc rw", // no separator
		"x 27 0:21 / /proc rw - proc proc rw",         // bad id
		"22 27 021 / /proc rw - proc proc rw",         // bad dev
		"22 27 0:21 / /proc rw - proc",                // no source
	} {
		t.Run(bad, func(t *testing.T) {
			if _, err := ParseMountInfo(strings.NewReader(bad)); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}

func TestParseSwaps(t *testing.T) {
	got, err := ParseSwaps(strings.NewReader("Filename\tType\tSize\tUsed\tPriority\n/dev/sda2 partition 1 0 -2\n/swap\\040file file 1 0 -3\n"))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"/dev/sda2", "/swap file"}, got); diff != "" {
		t.Fatalf("(-want +got):\n%s", diff)
	}
}

func FuzzParseMountInfo(f *testing.F) {
	f.Add("36 35 98:0 /mnt1 /mnt\\040two rw,noatime master:1 - ext3 /dev/root rw\n")
	f.Add("1 2 3:4 / / rw - x y z\n")
	f.Fuzz(func(t *testing.T, s string) {
		ms, err := ParseMountInfo(strings.NewReader(s))
		if err != nil {
			return
		}
		for _, m := range ms {
			if m.FSType == "" || m.Source == "" && !strings.Contains(s, " - ") {
				t.Fatalf("accepted mount without type/source: %+v", m)
			}
		}
	})
}

func FuzzParseSwaps(f *testing.F) {
	f.Add("Filename\tType\tSize\tUsed\tPriority\n/dev/sda2 partition 1 0 -2\n")
	f.Add("Filename\n/swap\\040file file 1 0 -3\n\n")
	f.Fuzz(func(t *testing.T, s string) {
		swaps, err := ParseSwaps(strings.NewReader(s))
		if err != nil {
			return
		}
		for _, sw := range swaps {
			if sw == "" {
				t.Fatalf("empty swap path from %q", s)
			}
		}
	})
}
