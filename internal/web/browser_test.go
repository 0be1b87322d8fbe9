package web

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/google/go-cmp/cmp"

	"github.com/distonet/distonet/internal/registry"
)

// chromiumPath is Debian's chromium; the browser tests fail (never skip) without it.
const chromiumPath = "/usr/bin/chromium"

// browser starts a headless Chromium with a fresh profile that can reach only 127.0.0.1.
func browser(t *testing.T) context.Context {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Fatalf("browser tests need Debian's chromium at %s (.ci/install-deps installs it): %v", chromiumPath, err)
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromiumPath),
		chromedp.Flag("headless", true),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		// Belt and braces for the network rule: no name resolves except the test server's.
		chromedp.Flag("host-resolver-rules", "MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"),
		chromedp.WindowSize(1440, 900),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(actx)
	ctx, cancelTimeout := context.WithTimeout(ctx, 4*time.Minute)
	t.Cleanup(func() {
		cancelTimeout()
		cancelCtx()
		cancelAlloc()
	})
	if err := chromedp.Do(ctx); err != nil { // starts the browser
		t.Fatalf("start chromium: %v", err)
	}
	return ctx
}

// artifacts is where screenshots go: $DISTONET_ARTIFACTS/web, else a temporary directory.
func artifacts(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("DISTONET_ARTIFACTS")
	if dir == "" {
		dir = t.TempDir()
	}
	dir = filepath.Join(dir, "web")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// into runs an action that returns a value and stores the value in dst.
func into[T any](dst *T, a chromedp.Action[T]) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		v, err := a(ctx, tg)
		if err != nil {
			return err
		}
		*dst = v
		return nil
	})
}

func screenshot(t *testing.T, dir, name string) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		png, err := chromedp.FullScreenshot(100)(ctx, tg)
		if err != nil {
			return fmt.Errorf("screenshot %s: %w", name, err)
		}
		path := filepath.Join(dir, name+".png")
		t.Logf("screenshot %s", path)
		return os.WriteFile(path, png, 0o644)
	})
}

// run runs browser actions as one named step, failing the test with the step's name. A step
// that meets a stale DOM node id (-32000: a live region was replaced under the query, see
// chromedp#1001) is run again: steps are written to be repeatable (values are set, not typed,
// in live regions; a click is a step's last action or it is done by jsClick).
func run(t *testing.T, ctx context.Context, step string, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		sctx, cancel := context.WithTimeout(ctx, 90*time.Second) // generous: two shared cores under load
		err = chromedp.Do(sctx, actions...)
		cancel()
		if err == nil || !strings.Contains(err.Error(), "-32000") {
			break
		}
		t.Logf("%s: %v: again", step, err)
	}
	if err != nil {
		var url, body string
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		_ = chromedp.Do(cctx, into(&url, chromedp.Location()), into(&body, chromedp.Text(chromedp.CSS("body"))))
		cancel()
		t.Fatalf("%s: %v\nat %s:\n%s", step, err, url, body)
	}
}

// jsClick clicks the first element matching sel from inside the page, without holding a DOM
// node id that a live update could invalidate.
func jsClick(sel string) chromedp.Action[chromedp.Void] {
	return into(new(bool), chromedp.Evaluate[bool](`(() => { const e = document.querySelector(`+strconvQuote(sel)+`); if (!e) { throw new Error("no element " + `+strconvQuote(sel)+`); } e.click(); return true; })()`))
}

func strconvQuote(s string) string { return strconv.Quote(s) }

func TestBrowserEnrollment(t *testing.T) {
	e := newEnv(t)
	e.setPassword()
	ctx := browser(t)
	shots := artifacts(t)
	base := e.srv.URL

	const mac, id = "52:54:00:12:34:56", "m525400123456"
	mark := into(new(any), chromedp.Evaluate[any](`window.__mark = 42`))
	row := `tr[data-mac="` + mac + `"]`

	// Not logged in: the dashboard sends the browser to the login page.
	var loc string
	run(t, ctx, "open dashboard logged out",
		chromedp.Navigate(base+"/"),
		chromedp.WaitVisible(chromedp.CSS(`#login-form`)),
		into(&loc, chromedp.Location()),
		screenshot(t, shots, "01-login"),
	)
	if !strings.Contains(loc, "/login?next=") {
		t.Fatalf("logged-out dashboard went to %s, want /login?next=…", loc)
	}

	var loginErr string
	run(t, ctx, "wrong password",
		chromedp.SendKeys(chromedp.CSS(`#password`), "not the password"),
		chromedp.Submit(chromedp.CSS(`#login-form`)),
		chromedp.WaitVisible(chromedp.CSS(`#login-error`)),
		into(&loginErr, chromedp.Text(chromedp.CSS(`#login-error`))),
	)
	if !strings.Contains(loginErr, "Wrong password") {
		t.Errorf("login error = %q", loginErr)
	}
	run(t, ctx, "log in",
		chromedp.SendKeys(chromedp.CSS(`#password`), testPassword),
		chromedp.Submit(chromedp.CSS(`#login-form`)),
		chromedp.WaitVisible(chromedp.CSS(`#nodes`)),
		chromedp.WaitVisible(chromedp.CSS(`#live-dot.on`)), // the event stream is connected
		screenshot(t, shots, "02-dashboard-empty"),
	)

	// A machine PXE-boots while the admin watches the discovered page: it appears without a reload.
	run(t, ctx, "open discovered page",
		chromedp.Navigate(base+"/discovered"),
		chromedp.WaitVisible(chromedp.CSS(`#discovered`)),
		chromedp.WaitVisible(chromedp.CSS(`#live-dot.on`)),
		mark, // a reload would drop it
	)
	if err := e.store.SeeMAC(registry.Discovered{MAC: mac, Arch: "x86 BIOS", VendorClass: "PXEClient:Arch:00000:UNDI:002001"}); err != nil {
		t.Fatal(err)
	}
	// A hostile DHCP client's vendor class must render as text, not run.
	const hostile = `<img src=x onerror="window.__xss=1"><script>window.__xss=2</script>`
	if err := e.store.SeeMAC(registry.Discovered{MAC: "52:54:00:66:66:66", VendorClass: hostile}); err != nil {
		t.Fatal(err)
	}
	var vendor string
	var xss, marked bool
	run(t, ctx, "discovered MACs appear live",
		chromedp.WaitVisible(chromedp.CSS(row)),
		chromedp.WaitVisible(chromedp.CSS(`tr[data-mac="52:54:00:66:66:66"] .vendor`)),
		into(&vendor, chromedp.Text(chromedp.CSS(`tr[data-mac="52:54:00:66:66:66"] .vendor`))),
		into(&xss, chromedp.Evaluate[bool](`window.__xss !== undefined || document.querySelector('#discovered img, #discovered script') !== null`)),
		into(&marked, chromedp.Evaluate[bool](`window.__mark === 42`)),
		screenshot(t, shots, "03-discovered"),
	)
	if !marked {
		t.Error("the discovered page reloaded instead of updating its table in place")
	}
	if vendor != hostile || xss {
		t.Errorf("hostile vendor class: text %q, injected = %v; want it shown verbatim and inert", vendor, xss)
	}

	// Invalid input: each reason shows beside its field and nothing is enrolled.
	var nameErr, windowErr, kept string
	run(t, ctx, "submit invalid enrollment",
		chromedp.SetValue(chromedp.CSS(`#`+id+`-name`), "Room1_PC07"),
		chromedp.SetValue(chromedp.CSS(`#`+id+`-image`), "debian-12"),
		chromedp.SetValue(chromedp.CSS(`#`+id+`-donate`), "aoe"),
		chromedp.SetValue(chromedp.CSS(`#`+id+`-window`), "25:00-07:00"),
		jsClick(`#enroll-`+id+` button`),
		chromedp.WaitVisible(chromedp.CSS(row+` td:nth-child(4) .err`)),
		into(&nameErr, chromedp.Text(chromedp.CSS(row+` td:nth-child(4) .err`))),
		into(&windowErr, chromedp.Text(chromedp.CSS(row+` td:nth-child(8) .err`))),
		into(&kept, chromedp.Value(chromedp.CSS(`#`+id+`-name`))),
		screenshot(t, shots, "04-discovered-invalid"),
	)
	if !strings.Contains(nameErr, "hostname label") || !strings.Contains(windowErr, "HH:MM") || kept != "Room1_PC07" {
		t.Errorf("beside name: %q, beside window: %q, name kept as %q", nameErr, windowErr, kept)
	}
	if nodes, _ := e.store.Nodes(); len(nodes) != 0 {
		t.Fatalf("invalid form enrolled %+v", nodes)
	}

	// Another machine boots while the admin fixes the form: the form and its errors stay,
	// and a notice offers the reload.
	if err := e.store.SeeMAC(registry.Discovered{MAC: "52:54:00:77:77:77"}); err != nil {
		t.Fatal(err)
	}
	var stillErr string
	run(t, ctx, "live update does not wipe a form being fixed",
		chromedp.WaitVisible(chromedp.CSS(`.flash.stale`)),
		into(&kept, chromedp.Value(chromedp.CSS(`#`+id+`-name`))),
		into(&stillErr, chromedp.Text(chromedp.CSS(row+` td:nth-child(4) .err`))),
	)
	if kept != "Room1_PC07" || stillErr != nameErr {
		t.Errorf("after a live event: name %q, error %q", kept, stillErr)
	}

	// Corrected, it enrolls and the node page says so.
	var flash string
	run(t, ctx, "submit valid enrollment",
		chromedp.SetValue(chromedp.CSS(`#`+id+`-name`), "room1-pc07"),
		chromedp.SetValue(chromedp.CSS(`#`+id+`-group`), "room1"),
		chromedp.SetValue(chromedp.CSS(`#`+id+`-window`), "20:00-07:00"),
		chromedp.SetValue(chromedp.CSS(`#`+id+`-volume_size`), "20G"),
		jsClick(`#enroll-`+id+` button`),
	)
	run(t, ctx, "enrolled",
		chromedp.WaitVisible(chromedp.CSS(`#flash`)),
		chromedp.WaitNotPresent(chromedp.CSS(row)),
		into(&flash, chromedp.Text(chromedp.CSS(`#flash`))),
		into(&loc, chromedp.Location()),
		screenshot(t, shots, "05-discovered-after-enroll"),
	)
	// Other machines still wait, so the admin is back on the list.
	if !strings.HasSuffix(loc, "/discovered") || !strings.Contains(flash, "Enrolled room1-pc07 (52:54:00:12:34:56): it boots debian-12") || !strings.Contains(flash, "2 more waiting") {
		t.Errorf("after enrollment at %s, flash %q", loc, flash)
	}
	run(t, ctx, "node page",
		chromedp.Navigate(base+"/nodes/room1-pc07"),
		chromedp.WaitVisible(chromedp.CSS(`#edit-form`)),
		chromedp.WaitVisible(chromedp.CSS(`a.button.danger[href="/nodes/room1-pc07/remove"]`)),
		screenshot(t, shots, "05-node-enrolled"),
	)
	n, err := e.store.Node("room1-pc07")
	if err != nil {
		t.Fatalf("node not enrolled: %v", err)
	}
	if n.MAC != mac || n.Image != "debian-12" || n.Group != "room1" || n.Donate.Mode != "aoe" || n.Donate.Window != "20:00-07:00" || n.VolumeSize != 20<<30 {
		t.Errorf("enrolled node = %+v", n.Redacted())
	}

	// The dashboard lists it and follows its boot live.
	run(t, ctx, "dashboard lists the node",
		chromedp.Navigate(base+"/"),
		chromedp.WaitVisible(chromedp.CSS(`tr[data-node="room1-pc07"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#live-dot.on`)),
		mark,
	)
	t0 := time.Now().UTC()
	for i, st := range []string{"dhcp", "bootfile", "kernel", "nfs", "iscsi", "overlay", "ready"} {
		if err := e.store.RecordStage("room1-pc07", registry.Stage{Stage: st, OK: true, Time: t0.Add(time.Duration(i*4) * time.Second)}, "10.9.0.107"); err != nil {
			t.Fatal(err)
		}
	}
	for i, name := range []string{"room1-pc07"} {
		if err := e.store.PutDisk(registry.DonatedDisk{Node: name, Group: "room1", Device: "/dev/sda", Transport: "aoe", Address: fmt.Sprintf("e1.%d", i), SizeBytes: 500 << 30, State: "online", Window: "20:00-07:00", LastSeen: t0}); err != nil {
			t.Fatal(err)
		}
	}
	var state string
	run(t, ctx, "boot appears live",
		chromedp.WaitVisible(chromedp.CSS(`tr[data-node="room1-pc07"] .badge.ok`)),
		into(&state, chromedp.Text(chromedp.CSS(`tr[data-node="room1-pc07"] td:nth-child(3)`))),
		into(&marked, chromedp.Evaluate[bool](`window.__mark === 42`)),
		screenshot(t, shots, "06-dashboard-booted"),
	)
	if !marked {
		t.Error("the dashboard reloaded instead of updating its table in place")
	}
	if strings.TrimSpace(state) != "ready" {
		t.Errorf("dashboard state = %q, want ready", state)
	}

	run(t, ctx, "pool and images pages",
		chromedp.Navigate(base+"/pool"),
		chromedp.WaitVisible(chromedp.CSS(`#disks`)),
		screenshot(t, shots, "07-pool"),
		chromedp.Navigate(base+"/images"),
		chromedp.WaitVisible(chromedp.CSS(`#images`)),
		screenshot(t, shots, "08-images"),
	)

	// Bulk: a file with one bad line enrolls nothing and says which line.
	bad := "mac,name,group,image,donate,window\n52:54:00:00:20:01,room2-pc01,room2,debian-12,iscsi,\n52:54:00:00:20:02,room2-pc02,room2,no-such-image,none,\n"
	var bulkErr string
	run(t, ctx, "bulk file with an error",
		chromedp.Navigate(base+"/enroll/bulk"),
		chromedp.WaitVisible(chromedp.CSS(`#bulk-form`)),
		chromedp.SetValue(chromedp.CSS(`#csv`), bad),
		chromedp.Click(chromedp.CSS(`#bulk-form button`)),
		chromedp.WaitVisible(chromedp.CSS(`#bulk-errors`)),
		into(&bulkErr, chromedp.Text(chromedp.CSS(`#bulk-errors`))),
		screenshot(t, shots, "09-bulk-errors"),
	)
	if !strings.Contains(bulkErr, "Nothing was enrolled") || !strings.Contains(bulkErr, "no-such-image") {
		t.Errorf("bulk errors = %q", bulkErr)
	}
	if _, err := e.store.Node("room2-pc01"); err == nil {
		t.Error("a file with an error enrolled its good line")
	}
	good := strings.Replace(bad, "no-such-image", "alpine-3.20", 1)
	var previewRows int
	run(t, ctx, "bulk file without errors: preview",
		chromedp.SetValue(chromedp.CSS(`#csv`), good),
		chromedp.Click(chromedp.CSS(`#bulk-form button`)),
		chromedp.WaitVisible(chromedp.CSS(`#bulk-preview`)),
		into(&previewRows, chromedp.Evaluate[int](`document.querySelectorAll('#bulk-preview tbody tr').length`)),
		screenshot(t, shots, "10-bulk-preview"),
	)
	if _, err := e.store.Node("room2-pc01"); err == nil || previewRows != 2 {
		t.Errorf("preview: %d rows, enrolled already: %v", previewRows, err == nil)
	}
	run(t, ctx, "bulk file without errors: confirm",
		jsClick(`#bulk-confirm button`),
	)
	run(t, ctx, "dashboard after bulk",
		chromedp.WaitVisible(chromedp.CSS(`tr[data-node="room2-pc02"]`)),
		screenshot(t, shots, "11-dashboard-after-bulk"),
	)

	// Removal asks for confirmation, warns about the volume, then deletes it.
	var warning string
	run(t, ctx, "remove node",
		chromedp.Navigate(base+"/nodes/room1-pc07/remove"),
		chromedp.WaitVisible(chromedp.CSS(`#remove-form`)),
		into(&warning, chromedp.Text(chromedp.CSS(`#remove-form`))),
		screenshot(t, shots, "12-remove-confirm"),
		chromedp.SetValue(chromedp.CSS(`#confirm`), "room1-pc07"),
		jsClick(`#remove-form button.danger`),
	)
	run(t, ctx, "removed",
		chromedp.WaitVisible(chromedp.CSS(`#nodes`)),
		chromedp.WaitNotPresent(chromedp.CSS(`tr[data-node="room1-pc07"]`)),
	)
	if !strings.Contains(warning, "deletes the node's iSCSI volume") || !strings.Contains(warning, "cannot be recovered") {
		t.Errorf("removal page does not warn about the volume: %q", warning)
	}
	if _, err := e.store.Node("room1-pc07"); err == nil {
		t.Error("node still enrolled after removal")
	}
	e.removeMu.Lock()
	removed := strings.Join(e.removed, ",")
	e.removeMu.Unlock()
	if removed != "room1-pc07" {
		t.Errorf("volumes removed: %q, want room1-pc07", removed)
	}

	run(t, ctx, "log out",
		jsClick(`.logout button`),
	)
	run(t, ctx, "logged out",
		chromedp.WaitVisible(chromedp.CSS(`#login-form`)),
		chromedp.Navigate(base+"/pool"),
		chromedp.WaitVisible(chromedp.CSS(`#login-form`)),
	)
}

func TestBrowserFirstRunSetup(t *testing.T) {
	e := newEnv(t)
	tok, err := FirstRunToken(e.dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx := browser(t)
	shots := artifacts(t)
	var loc, tokenErr string
	run(t, ctx, "no password: setup page",
		chromedp.Navigate(e.srv.URL+"/"),
		chromedp.WaitVisible(chromedp.CSS(`#setup-form`)),
		into(&loc, chromedp.Location()),
		chromedp.SendKeys(chromedp.CSS(`#token`), "not-the-token"),
		chromedp.SendKeys(chromedp.CSS(`#password`), testPassword),
		chromedp.SendKeys(chromedp.CSS(`#confirm`), testPassword),
		chromedp.Submit(chromedp.CSS(`#setup-form`)),
		chromedp.WaitVisible(chromedp.CSS(`#setup-form .err`)),
		into(&tokenErr, chromedp.Text(chromedp.CSS(`#setup-form .err`))),
		screenshot(t, shots, "00-setup-wrong-token"),
	)
	if !strings.HasSuffix(loc, "/setup") || !strings.Contains(tokenErr, "Wrong setup token") {
		t.Errorf("at %s, error %q", loc, tokenErr)
	}
	run(t, ctx, "setup with the printed link",
		chromedp.Navigate(e.srv.URL+"/setup?token="+tok),
		chromedp.WaitVisible(chromedp.CSS(`#setup-form`)),
		chromedp.SendKeys(chromedp.CSS(`#password`), testPassword),
		chromedp.SendKeys(chromedp.CSS(`#confirm`), testPassword),
		chromedp.Submit(chromedp.CSS(`#setup-form`)),
		chromedp.WaitVisible(chromedp.CSS(`#nodes`)),
	)
	if err := verifyPassword(e.dir, []byte(testPassword)); err != nil {
		t.Errorf("password not set: %v", err)
	}
}

// TestBrowserDashboardDense fills the registry like the founding test bench (48 nodes in a
// cluster and two classrooms, in every state) and checks the dashboard stays readable and
// filterable.
func TestBrowserDashboardDense(t *testing.T) {
	e := newEnv(t)
	e.setPassword()
	t0 := time.Now().UTC().Add(-10 * time.Minute)
	wantReadyRoom2 := 0
	for i := 0; i < 48; i++ {
		group := []string{"cluster", "room1", "room2"}[i/16]
		n := registry.Node{Name: fmt.Sprintf("%s-%02d", group, i%16), MAC: fmt.Sprintf("52:54:00:00:%02x:%02x", i/16, i%16), Image: "debian-12", Group: group}
		switch {
		case group == "cluster":
			n.Donate = registry.Donate{Mode: "aoe"}
		case i%3 == 0:
			n.Donate = registry.Donate{Mode: "iscsi", Window: "20:00-07:00"}
		}
		added, err := e.store.AddNode(n)
		if err != nil {
			t.Fatal(err)
		}
		stages := []string{"dhcp", "bootfile", "kernel", "nfs", "iscsi", "overlay", "ready", "donated"}
		switch i % 4 {
		case 0: // never booted
			continue
		case 1: // booting
			stages = stages[:3+i%3]
		case 2: // failed at NFS
			stages = stages[:4]
		}
		for j, st := range stages {
			ok, msg := true, ""
			if i%4 == 2 && st == "nfs" {
				ok, msg = false, "mount 10.9.0.1:/images/debian-12: connection refused"
			}
			if err := e.store.RecordStage(n.Name, registry.Stage{Stage: st, OK: ok, Message: msg, Time: t0.Add(time.Duration(i)*time.Second + time.Duration(j*3)*time.Second)}, fmt.Sprintf("10.9.0.%d", 100+i)); err != nil {
				t.Fatal(err)
			}
		}
		if i%4 == 3 && group == "room2" {
			wantReadyRoom2++
		}
		if n.Donate.Mode != "" && i%4 == 3 {
			addr := added.AoEAddress()
			if n.Donate.Mode == "iscsi" {
				addr = added.DonateIQN()
			}
			state := []string{"online", "online", "offline", "withdrawing"}[(i/4)%4]
			if err := e.store.PutDisk(registry.DonatedDisk{Node: n.Name, Group: group, Device: "/dev/sda", Transport: n.Donate.Mode, Address: addr,
				SizeBytes: int64(146+i) << 30, State: state, Window: n.Donate.Window, LastSeen: t0}); err != nil {
				t.Fatal(err)
			}
		}
	}
	for i := 0; i < 5; i++ {
		e.store.SeeMAC(registry.Discovered{MAC: fmt.Sprintf("52:54:00:99:00:%02x", i), Arch: "x86 BIOS"})
	}
	ctx := browser(t)
	shots := artifacts(t)
	var visible int
	var errs []string
	run(t, ctx, "log in",
		chromedp.Navigate(e.srv.URL+"/login"),
		chromedp.WaitVisible(chromedp.CSS(`#login-form`)),
		chromedp.SendKeys(chromedp.CSS(`#password`), testPassword),
		chromedp.Submit(chromedp.CSS(`#login-form`)),
	)
	run(t, ctx, "dense dashboard",
		chromedp.WaitVisible(chromedp.CSS(`#nodes`)),
		screenshot(t, shots, "20-dashboard-48-nodes"),
		// Typed as the input event the filter listens to (repeatable, unlike key presses).
		into(new(bool), chromedp.Evaluate[bool](`(() => { const f = document.querySelector('#filter'); f.value = 'room2 ready'; f.dispatchEvent(new Event('input', {bubbles: true})); return true; })()`)),
		into(&visible, chromedp.Evaluate[int](`Array.from(document.querySelectorAll('#nodes tbody tr')).filter(r => !r.hidden).length`)),
		screenshot(t, shots, "21-dashboard-filtered"),
		chromedp.Navigate(e.srv.URL+"/pool"),
		chromedp.WaitVisible(chromedp.CSS(`#disks`)),
		screenshot(t, shots, "22-pool-mixed"),
		chromedp.Navigate(e.srv.URL+"/nodes/room1-02"),
		chromedp.WaitVisible(chromedp.CSS(`#boots`)),
		screenshot(t, shots, "23-node-failed-boot"),
		chromedp.Navigate(e.srv.URL+"/enroll"),
		chromedp.SetValue(chromedp.CSS(`#f-mac`), "52:54:00:zz"),
		chromedp.SetValue(chromedp.CSS(`#f-name`), "cluster-03"),
		chromedp.SetValue(chromedp.CSS(`#f-volume_size`), "big"),
		jsClick(`#enroll-form button`),
	)
	run(t, ctx, "enroll errors and a narrow screen",
		chromedp.WaitVisible(chromedp.CSS(`#enroll-form .err`)),
		into(&errs, chromedp.Evaluate[[]string](`Array.from(document.querySelectorAll('#enroll-form .err')).map(e => e.previousElementSibling.id + ": " + e.textContent)`)),
		screenshot(t, shots, "24-enroll-invalid"),
		chromedp.EmulateViewport(1024, 768),
		chromedp.Navigate(e.srv.URL+"/discovered"),
		chromedp.WaitVisible(chromedp.CSS(`#discovered`)),
		screenshot(t, shots, "25-discovered-1024px"),
		chromedp.ResetViewport(),
	)
	want := []string{
		`f-mac: mac "52:54:00:zz": want an Ethernet address such as 52:54:00:12:34:56`,
		`f-name: node cluster-03: name already enrolled`,
		`f-image: image: required`,
		`f-volume_size: volume size "big": want a size such as 20G, 512M or a number of bytes`,
	}
	if d := cmp.Diff(want, errs); d != "" {
		t.Errorf("errors beside the fields (-want +got):\n%s", d)
	}

	// The session expires while the dashboard is open: the next live update sends the
	// browser to the login page instead of leaving a stale table.
	run(t, ctx, "open dashboard",
		chromedp.Navigate(e.srv.URL+"/"),
		chromedp.WaitVisible(chromedp.CSS(`#live-dot.on`)),
	)
	e.clock.Add(13 * time.Hour)
	if err := e.store.SeeMAC(registry.Discovered{MAC: "52:54:00:99:01:01"}); err != nil {
		t.Fatal(err)
	}
	var loc string
	run(t, ctx, "expired session goes to login",
		chromedp.WaitVisible(chromedp.CSS(`#login-form`)),
		into(&loc, chromedp.Location()),
	)
	if !strings.HasSuffix(loc, "/login?next=%2F") {
		t.Errorf("after expiry the dashboard went to %s", loc)
	}
	if visible != wantReadyRoom2 {
		t.Errorf("filter 'room2 ready' shows %d rows, want %d", visible, wantReadyRoom2)
	}
}

func TestBrowserLoginRateLimit(t *testing.T) {
	e := newEnv(t)
	e.setPassword()
	ctx := browser(t)
	shots := artifacts(t)
	for i := 0; i < 5; i++ {
		run(t, ctx, fmt.Sprintf("wrong password %d", i+1),
			chromedp.Navigate(e.srv.URL+"/login"),
			chromedp.SendKeys(chromedp.CSS(`#password`), "guess"),
			chromedp.Submit(chromedp.CSS(`#login-form`)),
			chromedp.WaitVisible(chromedp.CSS(`#login-error`)),
		)
	}
	var msg string
	run(t, ctx, "sixth attempt, right password",
		chromedp.Navigate(e.srv.URL+"/login"), // a fresh form: the last one still shows its error
		chromedp.SendKeys(chromedp.CSS(`#password`), testPassword),
		chromedp.Submit(chromedp.CSS(`#login-form`)),
		chromedp.WaitVisible(chromedp.CSS(`#login-error`)),
		into(&msg, chromedp.Text(chromedp.CSS(`#login-error`))),
		screenshot(t, shots, "26-login-rate-limited"),
	)
	if !strings.HasPrefix(msg, "Too many failed attempts from 127.0.0.1: wait ") {
		t.Errorf("rate-limit message = %q", msg)
	}
}
