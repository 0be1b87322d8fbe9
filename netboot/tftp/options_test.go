package tftp

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestNegotiate(t *testing.T) {
	lim := limits{maxBlockSize: 1468, maxWindow: 64}
	tests := []struct {
		name     string
		opts     []Option
		lim      limits
		want     params
		wantOACK OACK
	}{
		{name: "none", want: params{blockSize: 512, window: 1}},
		{name: "blksize capped by MTU", opts: []Option{{"blksize", "8192"}, {"tsize", "0"}},
			want: params{blockSize: 1468, window: 1}, wantOACK: OACK{{"blksize", "1468"}, {"tsize", "4096"}}},
		{name: "blksize below 512", opts: []Option{{"blksize", "8"}},
			want: params{blockSize: 8, window: 1}, wantOACK: OACK{{"blksize", "8"}}},
		{name: "blksize out of range ignored", opts: []Option{{"blksize", "7"}, {"blksize2", "1"}},
			want: params{blockSize: 512, window: 1}},
		{name: "non-numeric ignored", opts: []Option{{"blksize", "big"}, {"tsize", "-1"}},
			want: params{blockSize: 512, window: 1}},
		{name: "timeout", opts: []Option{{"timeout", "3"}},
			want: params{blockSize: 512, timeout: 3 * time.Second, window: 1}, wantOACK: OACK{{"timeout", "3"}}},
		{name: "timeout out of range", opts: []Option{{"timeout", "0"}, {"timeout", "256"}},
			want: params{blockSize: 512, window: 1}},
		{name: "windowsize capped", opts: []Option{{"windowsize", "500"}},
			want: params{blockSize: 512, window: 64}, wantOACK: OACK{{"windowsize", "64"}}},
		{name: "windowsize refused by config", opts: []Option{{"windowsize", "8"}}, lim: limits{maxBlockSize: 1468, maxWindow: -1},
			want: params{blockSize: 512, window: 1}},
		{name: "window memory bounded", opts: []Option{{"blksize", "65464"}, {"windowsize", "64"}},
			lim:  limits{maxBlockSize: 65464, maxWindow: 64},
			want: params{blockSize: 65464, window: 16}, wantOACK: OACK{{"blksize", "65464"}, {"windowsize", "16"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := lim
			if tt.lim != (limits{}) {
				l = tt.lim
			}
			got, oack := negotiate(tt.opts, 4096, l)
			if d := cmp.Diff(tt.want, got, cmp.AllowUnexported(params{})); d != "" {
				t.Errorf("params (-want +got):\n%s", d)
			}
			if d := cmp.Diff(tt.wantOACK, oack); d != "" {
				t.Errorf("oack (-want +got):\n%s", d)
			}
		})
	}
	if _, oack := negotiate([]Option{{"tsize", "0"}}, 0, lim); len(oack) != 0 {
		t.Errorf("OACK %v for an empty file: curl refuses tsize 0", oack)
	}
}

func TestConfinement(t *testing.T) {
	dir := t.TempDir()
	rootDir := filepath.Join(dir, "root")
	must(t, os.MkdirAll(filepath.Join(rootDir, "sub"), 0o755))
	must(t, os.WriteFile(filepath.Join(dir, "secret.txt"), []byte("secret"), 0o644))
	must(t, os.WriteFile(filepath.Join(rootDir, "sub", "f"), []byte("ok"), 0o644))
	must(t, os.Symlink("sub/f", filepath.Join(rootDir, "in")))
	must(t, os.Symlink("../secret.txt", filepath.Join(rootDir, "out")))
	must(t, os.Symlink("/etc", filepath.Join(rootDir, "etc")))
	root, err := os.OpenRoot(rootDir)
	must(t, err)
	defer root.Close()

	tests := []struct {
		name string
		code ErrorCode // 0 means served
	}{
		{"sub/f", 0},
		{"./sub//f", 0},
		{"in", 0},
		{"../secret.txt", ErrAccess},
		{"sub/../../secret.txt", ErrAccess},
		{"sub/../in", ErrAccess}, // any ".." is refused, even one that stays inside
		{"/etc/passwd", ErrAccess},
		{"out", ErrAccess},
		{"etc/passwd", ErrAccess},
		{"sub", ErrNotFound},
		{".", ErrNotFound},
		{"missing", ErrNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			name, err := cleanName(tt.name)
			if err == nil {
				var f *os.File
				f, _, err = openRegular(root, name)
				if err == nil {
					f.Close()
				}
			}
			if tt.code == 0 {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("served")
			}
			if got := errorFor(err).Code; got != tt.code {
				t.Errorf("code %d for %v, want %d", got, err, tt.code)
			}
		})
	}
	if !errors.Is(errorForErr(t, root, "missing"), fs.ErrNotExist) {
		t.Error("missing file does not wrap fs.ErrNotExist")
	}
}

func errorForErr(t *testing.T, root *os.Root, name string) error {
	t.Helper()
	_, _, err := openRegular(root, name)
	return err
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// FuzzNegotiate checks negotiation invariants for any request: the block size stays within
// RFC 2348 and the server's cap, the window within its cap and memory bound, and the OACK
// only acknowledges options the client sent.
func FuzzNegotiate(f *testing.F) {
	f.Add(rq(1, "f", "octet", "blksize", "1468", "tsize", "0", "timeout", "3", "windowsize", "16"), 1468, 64)
	f.Add(rq(1, "f", "octet", "BLKSIZE", "65464", "WINDOWSIZE", "65535"), 65464, 64)
	f.Add(rq(1, "f", "octet", "blksize", "-1", "timeout", "999"), 512, -1)
	f.Fuzz(func(t *testing.T, pkt []byte, maxBlk, maxWin int) {
		var r Request
		if r.UnmarshalBinary(pkt) != nil || maxBlk < defaultBlockSize || maxBlk > maxBlockSize {
			return
		}
		p, oack := negotiate(r.Options, 1000, limits{maxBlockSize: maxBlk, maxWindow: maxWin})
		if p.blockSize < minBlockSize || (p.blockSize > maxBlk && p.blockSize != defaultBlockSize) {
			t.Fatalf("blksize %d outside [8, %d]", p.blockSize, maxBlk)
		}
		if p.window < 1 || (p.window > 1 && (p.window > maxWin || p.window*p.blockSize > windowBytes)) {
			t.Fatalf("window %d (blksize %d, cap %d)", p.window, p.blockSize, maxWin)
		}
		if p.timeout < 0 || p.timeout > maxTimeoutSecs*time.Second {
			t.Fatalf("timeout %v", p.timeout)
		}
		for _, o := range oack {
			if _, ok := r.Option(o.Name); !ok {
				t.Fatalf("OACK acknowledges %q, never requested", o.Name)
			}
		}
		if b, err := oack.MarshalBinary(); err != nil || len(b) > 65535 {
			t.Fatalf("OACK does not encode: %v", err)
		}
	})
}

func TestNewServerConfig(t *testing.T) {
	if _, err := NewServer(Config{Root: filepath.Join(t.TempDir(), "missing")}, nil, nil); err == nil {
		t.Error("a missing root was accepted")
	}
	s, err := NewServer(Config{}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := Config{Addr: ":69", Timeout: time.Second, Retries: 5, MaxBlockSize: 65464, MaxWindow: 64, MaxTransfers: 1000, ShutdownGrace: time.Second}
	if d := cmp.Diff(want, s.cfg); d != "" {
		t.Errorf("defaults (-want +got):\n%s", d)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}
