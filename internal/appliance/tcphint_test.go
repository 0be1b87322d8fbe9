package appliance

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"
)

func TestTCPHintOnlyUnderBBR(t *testing.T) {
	for _, tc := range []struct {
		cc   string
		err  error
		hint bool
	}{{"bbr\n", nil, true}, {"cubic\n", nil, false}, {"", errors.New("no /proc"), false}} {
		var out bytes.Buffer
		log := slog.New(slog.NewTextHandler(&out, nil))
		read := func(path string) ([]byte, error) {
			if path != congestionControlPath {
				t.Fatalf("read %s", path)
			}
			return []byte(tc.cc), tc.err
		}
		tcpHint(log, read, "eth1", "10.202.0.0/24", "10.202.0.1")
		got := out.String()
		if tc.hint != strings.Contains(got, "ip route replace 10.202.0.0/24 dev eth1 proto kernel scope link src 10.202.0.1 congctl cubic") {
			t.Errorf("congestion control %q (err %v): hint %v, log %q", tc.cc, tc.err, tc.hint, got)
		}
	}
}
