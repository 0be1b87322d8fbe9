package config

import (
	"strings"
	"testing"
)

func TestDefaultIsValid(t *testing.T) {
	cfg := Default()
	if err := cfg.Validate(); err != nil {
		t.Fatalf("default config invalid: %v", err)
	}
}

func TestParseEmptyMeansDefaults(t *testing.T) {
	cfg, err := Parse(nil, "empty")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.DHCP.Mode != "server" || cfg.HTTP.Listen != ":80" || cfg.VolumeSize("") != 8<<30 {
		t.Fatalf("defaults not applied: %+v", cfg)
	}
}

func TestParseReportsKeyAndValue(t *testing.T) {
	tests := []struct {
		name, yaml string
		want       []string // substrings of the error
	}{
		{"bad mode", "dhcp:\n  mode: relay\n", []string{"dhcp.mode", `"relay"`, "server, proxy or off"}},
		{"range outside subnet", "address: 10.1.0.1/24\ndhcp:\n  range: 10.2.0.10-10.2.0.20\n", []string{"dhcp.range", "inside address's subnet"}},
		{"range holds own address", "address: 10.1.0.1/24\ndhcp:\n  range: 10.1.0.1-10.1.0.20\n", []string{"dhcp.range", "own address"}},
		{"bad address", "address: 10.1.0.1\n", []string{"address", "prefix length"}},
		{"relative state dir", "state_dir: var/lib\n", []string{"state_dir", "absolute"}},
		{"unknown key", "interfaces: eth0\n", []string{"interfaces", "not found"}},
		{"bad size", "volumes:\n  size: lots\n", []string{"lots", "not a size"}},
		{"small size", "volumes:\n  size: 1MiB\n", []string{"volumes.size", "64MiB"}},
		{"bad listen", "http:\n  listen: 80\n", []string{"http.listen", "host:port"}},
		{"bad zone", "time_zone: Mars/Base\n", []string{"time_zone"}},
		{"pool stop before zero", "donate:\n  pool_stop_before: 0s\n", []string{"donate.pool_stop_before", "between 1s and 12h"}},
		{"pool grace too long", "donate:\n  pool_assemble_grace: 13h\n", []string{"donate.pool_assemble_grace", "13h0m0s"}},
		{"pool export", "donate:\n  pool_export: smb\n", []string{"donate.pool_export", "nfs or none"}},
		{"two problems at once", "dhcp:\n  mode: x\nlog_level: loud\n", []string{"dhcp.mode", "log_level"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.yaml), "test.yaml")
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

func TestParseByteSize(t *testing.T) {
	for in, want := range map[string]int64{"8GiB": 8 << 30, "512M": 512 << 20, "4096": 4096, "1TB": 1e12, "2 GiB": 2 << 30} {
		got, err := ParseByteSize(in)
		if err != nil || got != want {
			t.Errorf("ParseByteSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	if _, err := ParseByteSize("-1"); err == nil {
		t.Error("negative size accepted")
	}
}

func TestURLs(t *testing.T) {
	cfg := Default()
	if got := cfg.BaseURL(); got != "http://10.202.0.1" {
		t.Errorf("BaseURL = %s", got)
	}
	cfg.HTTP.Listen = "127.0.0.1:8080"
	if got := cfg.BaseURL(); got != "http://10.202.0.1:8080" {
		t.Errorf("BaseURL = %s", got)
	}
	if got := cfg.LocalURL(); got != "http://127.0.0.1:8080" {
		t.Errorf("LocalURL = %s", got)
	}
	if got := cfg.ISCSIAddr(); got != "10.202.0.1:3260" {
		t.Errorf("ISCSIAddr = %s", got)
	}
}
