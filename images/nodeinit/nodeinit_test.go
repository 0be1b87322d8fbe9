package nodeinit

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/distonet/distonet/internal/bootconfig"
)

func TestParseCmdline(t *testing.T) {
	mac, _ := net.ParseMAC("52:54:00:12:34:56")
	tests := []struct {
		name    string
		in      string
		want    Cmdline
		wantErr string
	}{
		{"full", "console=ttyS0 distonet.server=http://10.202.0.1/ distonet.token=abc BOOTIF=01-52-54-00-12-34-56 quiet",
			Cmdline{Server: "http://10.202.0.1", Token: "abc", MAC: mac}, ""},
		{"no BOOTIF", "distonet.server=http://h:8080 distonet.token=t distonet.rescue",
			Cmdline{Server: "http://h:8080", Token: "t", Rescue: true}, ""},
		{"no server", "distonet.token=t", Cmdline{}, "no distonet.server"},
		{"no token", "distonet.server=http://h", Cmdline{}, "no distonet.token"},
		{"not http", "distonet.server=10.0.0.1 distonet.token=t", Cmdline{}, "want an http"},
		{"bad BOOTIF", "distonet.server=http://h distonet.token=t BOOTIF=06-aa-bb-cc-dd-ee-ff", Cmdline{}, "not Ethernet"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseCmdline(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseBOOTIF(t *testing.T) {
	for in, want := range map[string]string{
		"01-52-54-00-12-34-56": "52:54:00:12:34:56",
		"52:54:00:12:34:56":    "52:54:00:12:34:56",
		"52-54-00-AB-34-56":    "52:54:00:ab:34:56",
	} {
		got, err := ParseBOOTIF(in)
		if err != nil || got.String() != want {
			t.Errorf("ParseBOOTIF(%q) = %v, %v; want %s", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "01-52-54", "01-zz-54-00-12-34-56", "02-52-54-00-12-34-56"} {
		if _, err := ParseBOOTIF(bad); err == nil {
			t.Errorf("ParseBOOTIF(%q) succeeded", bad)
		}
	}
}

func TestNFSMountData(t *testing.T) {
	tests := []struct {
		in   bootconfig.NFS
		want string
	}{
		{bootconfig.NFS{Server: "10.0.0.1"}, DefaultNFSOptions + ",addr=10.0.0.1"},
		{bootconfig.NFS{Server: "10.0.0.1", Options: "vers=3,port=2049"}, "vers=3,port=2049,addr=10.0.0.1"},
		{bootconfig.NFS{Server: "10.0.0.1", Options: "vers=3,addr=10.0.0.9"}, "vers=3,addr=10.0.0.9"},
		// mountaddr= is not addr=: the server address must still be added.
		{bootconfig.NFS{Server: "10.0.0.1", Options: "mountaddr=10.0.0.2"}, "mountaddr=10.0.0.2,addr=10.0.0.1"},
	}
	for _, tc := range tests {
		if got := NFSMountData(tc.in); got != tc.want {
			t.Errorf("NFSMountData(%+v) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestMachineID(t *testing.T) {
	a, b := MachineID("node1"), MachineID("node2")
	if !regexp.MustCompile(`^[0-9a-f]{32}$`).MatchString(a) {
		t.Errorf("MachineID = %q, want 32 hex digits", a)
	}
	if a == b || a != MachineID("node1") {
		t.Errorf("machine ids not stable per node: %s %s", a, b)
	}
}

func goodConfig() bootconfig.Config {
	return bootconfig.Config{Node: "n1", Hostname: "n1",
		NFS:   bootconfig.NFS{Server: "10.0.0.1", Path: "/images/demo"},
		ISCSI: bootconfig.ISCSI{Portal: "10.0.0.1:3260", Target: "iqn.x:n1", Initiator: "iqn.y:n1", CHAPUser: "n1", CHAPSecret: "s"}}
}

func TestFetchConfig(t *testing.T) {
	var status int
	var body any
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != bootconfig.ConfigPath || r.Header.Get("Authorization") != "Bearer tok" {
			http.Error(w, "no", http.StatusUnauthorized)
			return
		}
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(body)
	}))
	defer srv.Close()
	bad := goodConfig()
	bad.ISCSI.Portal = ""
	tests := []struct {
		name        string
		token       string
		status      int
		body        any
		wantErr     string
		wantRefused bool
	}{
		{"ok", "tok", 200, goodConfig(), "", false},
		{"wrong token", "nope", 200, goodConfig(), "HTTP 401", true},
		{"server error", "tok", 500, "boom", "HTTP 500", false},
		{"incomplete", "tok", 200, bad, "iscsi: portal", false},
		{"not json", "tok", 200, "text", "boot config", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			status, body = tc.status, tc.body
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			cfg, raw, err := FetchConfig(ctx, srv.Client(), srv.URL, tc.token)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want %q", err, tc.wantErr)
				}
				if errors.Is(err, ErrRefused) != tc.wantRefused {
					t.Errorf("refused = %v, want %v (%v)", !tc.wantRefused, tc.wantRefused, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(goodConfig(), cfg); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
			if !json.Valid(raw) {
				t.Errorf("raw config is not JSON: %q", raw)
			}
		})
	}
}

func TestReporter(t *testing.T) {
	var mu sync.Mutex
	var got []bootconfig.Event
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != bootconfig.EventPath || r.Header.Get("Authorization") != "Bearer tok" {
			http.Error(w, "no", http.StatusUnauthorized)
			return
		}
		var ev bootconfig.Event
		if err := json.NewDecoder(r.Body).Decode(&ev); err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		mu.Lock()
		got = append(got, ev)
		mu.Unlock()
	}))
	defer srv.Close()
	r := &Reporter{Client: srv.Client(), Server: srv.URL, Token: "tok"}
	r.Report(bootconfig.StageNFS, true, "mounted")
	r.Report(bootconfig.StageISCSI, false, "iSCSI login refused: CHAP")
	r.Flush(5 * time.Second)
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 2 {
		t.Fatalf("server got %d events, want 2: %+v", len(got), got)
	}
	stages := map[string]bootconfig.Event{}
	for _, ev := range got {
		stages[ev.Stage] = ev
	}
	if !stages[bootconfig.StageNFS].OK || stages[bootconfig.StageISCSI].OK || stages[bootconfig.StageISCSI].Message != "iSCSI login refused: CHAP" {
		t.Errorf("events = %+v", got)
	}
	if stages[bootconfig.StageNFS].Time.IsZero() {
		t.Error("event without a time")
	}
	// A dead server must not block a boot.
	dead := &Reporter{Client: &http.Client{Timeout: time.Second}, Server: "http://127.0.0.1:1", Token: "x"}
	t0 := time.Now()
	dead.Report(bootconfig.StageReady, true, "")
	dead.Flush(5 * time.Second)
	if time.Since(t0) > 4*time.Second {
		t.Errorf("reporting to a dead server took %s", time.Since(t0))
	}
}

func TestResolveAlias(t *testing.T) {
	tests := map[string][]string{
		"crypto-crc32c": {"crc32c_generic"},
		"fs-overlay":    {"overlay"},
		"pci:v00008086d0000100Esv00008086sd0000001Ebc02sc00i00": {"e1000"},
		"fs-xfs": nil,
	}
	for in, want := range tests {
		if diff := cmp.Diff(want, resolveAlias("testdata/modules", in)); diff != "" {
			t.Errorf("resolveAlias(%q) (-want +got):\n%s", in, diff)
		}
	}
}

func TestValidate(t *testing.T) {
	if err := Validate(goodConfig()); err != nil {
		t.Fatal(err)
	}
	c := goodConfig()
	c.Node, c.Hostname, c.NFS.Path = "", "", "relative"
	err := Validate(c)
	if err == nil || !strings.Contains(err.Error(), "hostname") || !strings.Contains(err.Error(), "nfs") {
		t.Errorf("Validate = %v, want both problems named", err)
	}
}
