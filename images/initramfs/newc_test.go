package initramfs

import (
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

func readAll(t testing.TB, data []byte) ([]Entry, error) {
	t.Helper()
	r := NewReader(bytes.NewReader(data))
	var out []Entry
	for {
		e, err := r.Next()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out = append(out, e)
	}
}

var sampleEntries = []Entry{
	{Name: "dev", Mode: TypeDir | 0o755, Nlink: 2},
	{Name: "dev/console", Mode: TypeChar | 0o600, Nlink: 1, RMajor: 5, RMinor: 1},
	{Name: "init", Mode: TypeReg | 0o755, Nlink: 1, Mtime: 1700000000, Data: []byte("#!/bin/sh\necho hi\n")},
	{Name: "sbin/modprobe", Mode: TypeSymlink | 0o777, Nlink: 1, Data: []byte("/init")},
	{Name: "bin/su", Mode: TypeReg | 0o4755, UID: 0, GID: 0, Nlink: 1, Data: []byte("x")},
	{Name: "odd-name-len", Mode: TypeReg | 0o600, UID: 1000, GID: 1000, Nlink: 1, Data: []byte("abc")},
	{Name: "empty", Mode: TypeReg | 0o644, Nlink: 1, Data: []byte{}},
}

func TestNewcRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	w := NewWriter(&buf)
	for _, e := range sampleEntries {
		if err := w.Write(e); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if buf.Len()%4 != 0 {
		t.Errorf("archive length %d is not a multiple of 4", buf.Len())
	}
	got, err := readAll(t, buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(sampleEntries, got, cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("round trip (-want +got):\n%s", diff)
	}
}

// TestNewcDebianCpio checks the archive against GNU cpio, the reference reader.
func TestNewcDebianCpio(t *testing.T) {
	if _, err := exec.LookPath("cpio"); err != nil {
		t.Fatalf("needs cpio (Debian package cpio): %v", err)
	}
	var buf bytes.Buffer
	w := NewWriter(&buf)
	for _, e := range sampleEntries {
		if err := w.Write(e); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("cpio", "-t", "-v", "--quiet")
	cmd.Stdin = bytes.NewReader(buf.Bytes())
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("cpio -t: %v: %s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != len(sampleEntries) {
		t.Fatalf("cpio lists %d entries, want %d:\n%s", len(lines), len(sampleEntries), out)
	}
	for i, want := range []string{"drwxr-xr-x", "crw-------", "-rwxr-xr-x", "lrwxrwxrwx", "-rwsr-xr-x", "-rw-------", "-rw-r--r--"} {
		f := strings.Fields(lines[i])
		if f[0] != want || !strings.Contains(lines[i], sampleEntries[i].Name) {
			t.Errorf("cpio line %d = %q, want mode %s and name %s", i, lines[i], want, sampleEntries[i].Name)
		}
	}
	if !strings.Contains(lines[1], "5,") || !strings.Contains(lines[3], "-> /init") {
		t.Errorf("device numbers or symlink target lost:\n%s", out)
	}

	// Extract for real and compare file contents and modes.
	dir := t.TempDir()
	cmd = exec.Command("cpio", "-i", "-d", "--quiet", "--no-absolute-filenames")
	cmd.Dir = dir
	cmd.Stdin = bytes.NewReader(buf.Bytes())
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("cpio -i: %v: %s", err, out)
	}
	got, err := os.ReadFile(filepath.Join(dir, "init"))
	if err != nil || string(got) != "#!/bin/sh\necho hi\n" {
		t.Errorf("extracted init = %q, %v", got, err)
	}
	if fi, err := os.Stat(filepath.Join(dir, "bin/su")); err != nil || fi.Mode()&os.ModeSetuid == 0 {
		t.Errorf("setuid bit lost: %v %v", fi, err)
	}
}

func TestNewcReaderErrors(t *testing.T) {
	var buf bytes.Buffer
	w := NewWriter(&buf)
	if err := w.Write(Entry{Name: "a", Mode: TypeReg | 0o644, Data: []byte("data")}); err != nil {
		t.Fatal(err)
	}
	good := buf.Bytes()
	tests := []struct {
		name string
		data []byte
		want string
	}{
		{"empty", nil, "header"},
		{"bad magic", append([]byte("070707"), good[6:]...), "bad magic"},
		{"bad hex", append(append([]byte{}, good[:14]...), append([]byte("zzzzzzzz"), good[22:]...)...), "field mode"},
		{"truncated data", good[:len(good)-4], "data of a"},
		{"no trailer", good, "header"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := readAll(t, tc.data)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error = %v, want it to mention %q", err, tc.want)
			}
		})
	}
}

func FuzzReader(f *testing.F) {
	var buf bytes.Buffer
	w := NewWriter(&buf)
	for _, e := range sampleEntries {
		_ = w.Write(e)
	}
	_ = w.Close()
	f.Add(buf.Bytes())
	f.Fuzz(func(t *testing.T, data []byte) {
		entries, err := readAll(t, data)
		if err != nil {
			return
		}
		// Whatever parses must survive a write/read round trip unchanged.
		var out bytes.Buffer
		w := NewWriter(&out)
		for _, e := range entries {
			if err := w.Write(e); err != nil {
				return
			}
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		again, err := readAll(t, out.Bytes())
		if err != nil {
			t.Fatalf("re-read: %v", err)
		}
		for i := range entries {
			entries[i].Nlink, again[i].Nlink = 0, 0
		}
		if diff := cmp.Diff(entries, again, cmpopts.EquateEmpty()); diff != "" {
			t.Errorf("round trip (-first +second):\n%s", diff)
		}
	})
}
