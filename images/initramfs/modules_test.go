package initramfs

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	kgzip "github.com/klauspost/compress/gzip"
)

func TestModuleName(t *testing.T) {
	for in, want := range map[string]string{
		"kernel/crypto/crc32c-generic.ko": "crc32c_generic",
		"kernel/fs/nfs/nfsv3.ko.xz":       "nfsv3",
		"iscsi_tcp":                       "iscsi_tcp",
		"crc32c-intel":                    "crc32c_intel",
		"kernel/fs/overlay.ko.zst":        "overlay",
	} {
		if got := ModuleName(in); got != want {
			t.Errorf("ModuleName(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestClosure(t *testing.T) {
	f, err := os.Open("testdata/modtree/6.1.0-test/modules.dep")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	md, err := ParseModulesDep(f)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name        string
		want        []string
		paths, miss []string
	}{
		{"leaf", []string{"overlay"}, []string{"kernel/fs/overlay.ko.zst"}, nil},
		{"deps first", []string{"ext4"}, []string{"kernel/fs/jbd2.ko", "kernel/fs/mbcache.ko", "kernel/lib/crc16.ko", "kernel/fs/ext4.ko"}, nil},
		{"shared deps once", []string{"iscsi_tcp", "libiscsi"}, []string{
			"kernel/drivers/scsi_mod.ko", "kernel/drivers/scsi_transport_iscsi.ko", "kernel/drivers/libiscsi.ko",
			"kernel/drivers/libiscsi_tcp.ko", "kernel/drivers/iscsi_tcp.ko"}, nil},
		{"dash or underscore", []string{"crc32c_generic"}, []string{"kernel/lib/crc32c-generic.ko.gz"}, nil},
		{"missing", []string{"nosuch", "overlay"}, []string{"kernel/fs/overlay.ko.zst"}, []string{"nosuch"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			paths, miss := md.Closure(tc.want)
			if diff := cmp.Diff(tc.paths, paths); diff != "" {
				t.Errorf("paths (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.miss, miss); diff != "" {
				t.Errorf("missing (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseModulesDepErrors(t *testing.T) {
	for _, in := range []string{"no colon here\n", ": kernel/a.ko\n", "kernel/a.txt: b\n"} {
		if _, err := ParseModulesDep(strings.NewReader(in)); err == nil {
			t.Errorf("ParseModulesDep(%q) succeeded", in)
		}
	}
}

func TestBuild(t *testing.T) {
	bin := t.TempDir() + "/init"
	if err := os.WriteFile(bin, []byte("\x7fELF fake init"), 0o755); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	res, err := Build(context.Background(), &out, Options{
		Binary:     bin,
		ModulesDir: "testdata/modtree/6.1.0-test",
		Modules:    []string{"crc32c_generic", "iscsi_tcp", "ext4", "overlay", "virtio_net", "e1000e", "aoe"},
		Extra:      map[string][]byte{"/etc/distonet/x": []byte("y")},
	})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"e1000e"}, res.Missing); diff != "" {
		t.Errorf("missing (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"virtio_net"}, res.Builtin); diff != "" {
		t.Errorf("builtin (-want +got):\n%s", diff)
	}
	zr, err := kgzip.NewReader(&out)
	if err != nil {
		t.Fatal(err)
	}
	raw := new(bytes.Buffer)
	if _, err := raw.ReadFrom(zr); err != nil {
		t.Fatal(err)
	}
	entries, err := readAll(t, raw.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]Entry{}
	var order []string
	for _, e := range entries {
		if _, dup := files[e.Name]; dup {
			t.Errorf("entry %s twice", e.Name)
		}
		files[e.Name] = e
		order = append(order, e.Name)
	}
	// Every entry's parent directory must come before it, or the kernel cannot create it.
	seen := map[string]bool{}
	for _, n := range order {
		if i := strings.LastIndex(n, "/"); i > 0 && !seen[n[:i]] {
			t.Errorf("%s comes before its directory", n)
		}
		seen[n] = true
	}
	p := "lib/modules/6.1.0-test/"
	checks := map[string]string{
		"init":                             "\x7fELF fake init",
		"sbin/modprobe":                    "/init",
		p + "kernel/lib/crc32c-generic.ko": "fake module crc32c\n",
		p + "kernel/fs/overlay.ko":         "fake module overlay\n",
		p + "kernel/drivers/aoe.ko":        "fake module aoe\n",
		p + "kernel/fs/jbd2.ko":            "fake module fs/jbd2\n",
		p + "modules.alias":                "alias crypto-crc32c crc32c_generic\nalias fs-overlay overlay\n",
		"etc/distonet/x":                   "y",
	}
	for name, want := range checks {
		if got := string(files[name].Data); got != want {
			t.Errorf("%s = %q, want %q", name, got, want)
		}
	}
	dep := string(files[p+"modules.dep"].Data)
	if !strings.Contains(dep, "kernel/fs/overlay.ko:\n") || strings.Contains(dep, ".zst") {
		t.Errorf("modules.dep does not name decompressed modules:\n%s", dep)
	}
	if c := files["dev/console"]; c.Mode != TypeChar|0o600 || c.RMajor != 5 || c.RMinor != 1 {
		t.Errorf("dev/console = %+v", c)
	}
}
