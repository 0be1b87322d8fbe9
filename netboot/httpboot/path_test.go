package httpboot

import (
	"net"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseBootPath(t *testing.T) {
	mac := net.HardwareAddr{0x52, 0x54, 0x00, 0x12, 0x34, 0x56}
	tests := []struct {
		path    string
		want    net.HardwareAddr
		wantErr string
	}{
		{"/boot/52:54:00:12:34:56.ipxe", mac, ""},
		{"/boot/52-54-00-12-34-56.ipxe", mac, ""},
		{"/boot/52:54:00:12:34:5A.ipxe", net.HardwareAddr{0x52, 0x54, 0x00, 0x12, 0x34, 0x5a}, ""},
		{"/boot/525400123456.ipxe", nil, "not a MAC address"},
		{"/boot/5254.0012.3456.ipxe", nil, "not a MAC address"},
		{"/boot/52:54:00:12:34:zz.ipxe", nil, "not a MAC address"},
		{"/boot/52:54:00:12:34:56:78:9a.ipxe", nil, "not a MAC address"},
		{"/boot/52:54:00:12:34:56", nil, "does not end in .ipxe"},
		{"/boot/.ipxe", nil, "not a MAC address"},
		{"/boot/../52:54:00:12:34:56.ipxe", nil, "not a MAC address"},
		{"/files/52:54:00:12:34:56.ipxe", nil, "not under /boot/"},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			got, err := ParseBootPath(tt.path)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(tt.want, got); d != "" {
				t.Errorf("mac (-want +got):\n%s", d)
			}
		})
	}
}

func TestParseFilePath(t *testing.T) {
	tests := []struct {
		path string
		want string // "" means refused
	}{
		{"/files/debian/3/vmlinuz", "debian/3/vmlinuz"},
		{"/files/initrd.img", "initrd.img"},
		{"/files/", ""},
		{"/files//etc/passwd", ""},
		{"/files/../secret", ""},
		{"/files/a/../../secret", ""},
		{"/files/a/./b", ""},
		{"/files/a//b", ""},
		{"/files/dir/", ""},
		{"/files/a\x00b", ""},
		{"/boot/x", ""},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			got, err := parseFilePath(tt.path)
			if tt.want == "" {
				if err == nil {
					t.Fatalf("accepted as %q", got)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("got %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

// FuzzParsePaths checks the two URL parsers never panic, that an accepted MAC formats back
// to a path that parses to the same MAC, and that no accepted file path can climb.
func FuzzParsePaths(f *testing.F) {
	f.Add("/boot/52:54:00:12:34:56.ipxe")
	f.Add("/boot/52-54-00-12-34-56.ipxe")
	f.Add("/files/debian/3/vmlinuz")
	f.Add("/files/../../etc/shadow")
	f.Fuzz(func(t *testing.T, p string) {
		if mac, err := ParseBootPath(p); err == nil {
			again, err := ParseBootPath(BootPrefix + mac.String() + scriptSuffix)
			if err != nil || again.String() != mac.String() {
				t.Fatalf("%q: %v does not round-trip: %v %v", p, mac, again, err)
			}
		}
		if rel, err := parseFilePath(p); err == nil {
			for _, elem := range strings.Split(rel, "/") {
				if elem == ".." || elem == "" || elem == "." {
					t.Fatalf("%q accepted as %q", p, rel)
				}
			}
			if strings.HasPrefix(rel, "/") {
				t.Fatalf("%q accepted as absolute %q", p, rel)
			}
		}
	})
}

func TestNewHandlerConfig(t *testing.T) {
	if _, err := NewHandler(Config{}, nil, nil); err == nil {
		t.Error("nil Scripts accepted")
	}
	if _, err := NewHandler(Config{Root: "/nonexistent/distonet"}, fakeScripts{}, nil); err == nil {
		t.Error("a missing root was accepted")
	}
}
