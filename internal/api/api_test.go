package api

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/distonet/distonet/internal/bootconfig"
	"github.com/distonet/distonet/internal/registry"
)

type fakeBoot struct{}

func (fakeBoot) BootConfig(n registry.Node) (bootconfig.Config, error) {
	return bootconfig.Config{Node: n.Name, Hostname: n.Name, Donate: bootconfig.Donate{Mode: n.Donate.Mode}}, nil
}

func newServer(t *testing.T) (*httptest.Server, *registry.Store) {
	t.Helper()
	st, err := registry.Open(t.TempDir(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	s := &Server{Store: st, Boot: fakeBoot{}, AdminToken: "admin-token-0123456789", Portal: "10.0.0.1:3260", Log: slog.New(slog.DiscardHandler)}
	ts := httptest.NewServer(s.Handler())
	t.Cleanup(ts.Close)
	return ts, st
}

func call(t *testing.T, ts *httptest.Server, method, path, token, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, ts.URL+path, strings.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(raw)
}

func TestAdminRoutesNeedTheToken(t *testing.T) {
	ts, _ := newServer(t)
	for _, tc := range []struct{ method, path, token string }{
		{"GET", "/api/nodes", ""}, {"GET", "/api/nodes", "wrong"}, {"POST", "/api/nodes", ""},
		{"DELETE", "/api/nodes/x", "admin-token-012345678"}, {"GET", "/api/pool", ""},
	} {
		if code, _ := call(t, ts, tc.method, tc.path, tc.token, "{}"); code != http.StatusUnauthorized {
			t.Errorf("%s %s with token %q: %d, want 401", tc.method, tc.path, tc.token, code)
		}
	}
}

func TestEnrollErrorsNameTheField(t *testing.T) {
	ts, _ := newServer(t)
	const tok = "admin-token-0123456789"
	tests := []struct {
		body  string
		code  int
		field string
	}{
		{`{"name":"<script>alert(1)</script>","mac":"52:54:00:00:00:01","image":"demo"}`, 400, "name"},
		{`{"name":"n1","mac":"nope","image":"demo"}`, 400, "mac"},
		{`{"name":"n1","mac":"52:54:00:00:00:01"}`, 400, "image"},
		{`{"name":"n1","mac":"52:54:00:00:00:01","image":"demo","donate":{"mode":"aoe","window":"7pm"}}`, 400, "window"},
		{`{"name":"n1","mac":"52:54:00:00:00:01","image":"demo"}`, 201, ""},
		{`{"name":"n1","mac":"52:54:00:00:00:02","image":"demo"}`, 409, "name"},
		{`not json`, 400, ""},
	}
	for _, tc := range tests {
		code, body := call(t, ts, "POST", "/api/nodes", tok, tc.body)
		if code != tc.code {
			t.Errorf("%s: %d %s, want %d", tc.body, code, body, tc.code)
			continue
		}
		if tc.code >= 400 {
			var e Error
			if err := json.Unmarshal([]byte(body), &e); err != nil || e.Error == "" || e.Field != tc.field {
				t.Errorf("%s: error body %s, want field %q", tc.body, body, tc.field)
			}
		}
	}
}

func TestBootRoutesTakeOnlyTheNodesToken(t *testing.T) {
	ts, st := newServer(t)
	n, err := st.AddNode(registry.Node{Name: "n1", MAC: "52:54:00:00:00:01", Image: "demo"})
	if err != nil {
		t.Fatal(err)
	}
	if code, _ := call(t, ts, "GET", bootconfig.ConfigPath, "admin-token-0123456789", ""); code != 401 {
		t.Errorf("boot config with the admin token: %d, want 401 (node tokens only)", code)
	}
	code, body := call(t, ts, "GET", bootconfig.ConfigPath, n.Secrets.BootToken, "")
	if code != 200 || !strings.Contains(body, `"hostname": "n1"`) {
		t.Fatalf("boot config: %d %s", code, body)
	}
	if code, _ := call(t, ts, "POST", bootconfig.EventPath, n.Secrets.BootToken, `{"stage":"nfs","ok":true,"message":"mounted"}`); code != 204 {
		t.Fatalf("boot event: %d", code)
	}
	if code, _ := call(t, ts, "POST", bootconfig.EventPath, n.Secrets.BootToken, `{"stage":"`+strings.Repeat("x", 40)+`"}`); code != 400 {
		t.Errorf("an oversized stage name was accepted: %d", code)
	}
	tl, _ := st.Timeline("n1")
	b, ok := tl.LastBoot()
	if !ok || len(b.Stages) != 1 || b.Stages[0].Stage != "nfs" || b.IP != "127.0.0.1" {
		t.Fatalf("timeline = %+v", tl)
	}
}

func TestAgentHeartbeatCarriesPolicyAndRelease(t *testing.T) {
	ts, st := newServer(t)
	n, _ := st.AddNode(registry.Node{Name: "n1", MAC: "52:54:00:00:00:01", Image: "demo", Donate: registry.Donate{Mode: "aoe"}})
	tok := n.Secrets.AgentToken
	code, body := call(t, ts, "POST", AgentHeartbeatPath, tok, `{"state":"idle"}`)
	if code != 200 || !strings.Contains(body, `"registered": false`) || !strings.Contains(body, `"mode": "aoe"`) {
		t.Fatalf("first heartbeat: %d %s", code, body)
	}
	if code, body := call(t, ts, "POST", AgentRegisterPath, tok, `{"device":"/dev/vdb","transport":"aoe","address":"e1.0","size_bytes":1000}`); code != 204 {
		t.Fatalf("register: %d %s", code, body)
	}
	exp := `"export":{"device":"/dev/vdb","transport":"aoe","address":"e1.0","size_bytes":1000}`
	if _, body := call(t, ts, "POST", AgentHeartbeatPath, tok, `{"state":"online",`+exp+`}`); !strings.Contains(body, `"registered": true`) {
		t.Fatalf("heartbeat after register: %s", body)
	}
	if _, body := call(t, ts, "POST", AgentHeartbeatPath, tok, `{"state":"withdrawing",`+exp+`}`); !strings.Contains(body, `"released": true`) {
		t.Fatalf("a disk no array uses should be released at once: %s", body)
	}
	disks, _ := st.Disks()
	if len(disks) != 1 || disks[0].State != "withdrawing" {
		t.Fatalf("disks = %+v", disks)
	}
	if code, _ := call(t, ts, "POST", AgentWithdrawPath, tok, `{"state":"withdrawn"}`); code != 204 {
		t.Fatal("withdraw refused")
	}
	if disks, _ = st.Disks(); disks[0].State != "withdrawn" {
		t.Fatalf("after withdraw: %+v", disks)
	}
	if code, _ := call(t, ts, "POST", AgentRegisterPath, tok, `{"device":"/dev/vdb","transport":"nbd","address":"x","size_bytes":1}`); code != 400 {
		t.Errorf("an unknown transport was accepted: %d", code)
	}
}
