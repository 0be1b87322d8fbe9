package web

import (
	"net/url"
	"os"
	"testing"

	"github.com/distonet/distonet/internal/registry"
)

func TestSmokeDump(t *testing.T) {
	e := newEnv(t)
	e.setPassword()
	c, tok := e.login()
	e.store.SeeMAC(registry.Discovered{MAC: "52:54:00:00:00:01", Arch: "x86 BIOS", VendorClass: "<script>alert(1)</script>"})
	r := e.do(c, "POST", "/discovered/52:54:00:00:00:01/enroll", url.Values{"csrf": {tok}, "name": {"<script>alert(1)</script>"}, "image": {"debian-12"}, "window": {"25:00-01:00"}})
	os.WriteFile("/tmp/disc.html", []byte(r.body), 0o644)
	t.Log(r.code)
	for _, p := range []string{"/", "/images", "/pool", "/nodes/new", "/nodes/bulk"} {
		r := e.do(c, "GET", p, nil)
		if r.code != 200 {
			t.Errorf("%s: %d %s", p, r.code, r.body)
		}
	}
}
