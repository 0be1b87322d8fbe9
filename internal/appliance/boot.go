package appliance

import (
	"bytes"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"text/template"
	"time"

	"github.com/distonet/distonet/internal/bootconfig"
	"github.com/distonet/distonet/internal/config"
	"github.com/distonet/distonet/internal/registry"
)

// ImageVersion is one published version of an image, as the boot path needs it.
type ImageVersion struct {
	Name    string
	Version string // as shown to people, e.g. v3
	Number  uint64 // the same as a number; NFS handles carry it
	Kernel  string // absolute paths on the appliance, under ImagesDir
	Initrd  string
	Rootfs  string
}

// Catalog is the image store as the boot path sees it.
type Catalog interface {
	Names() []string
	Current(name string) (ImageVersion, error)
	Get(name string, version uint64) (ImageVersion, error)
}

// Window tells whether a node should boot diskless now (inside its donation window, or it
// has none) or boot its local disk.
type Window func(n registry.Node, now time.Time) (diskless bool)

// bootScripts renders iPXE scripts, kernel command lines and boot documents from templates.
type bootScripts struct {
	cfg     config.Config
	store   *registry.Store
	images  Catalog
	tmpl    fs.FS
	window  Window
	now     func() time.Time
	onStage func(node string, st registry.Stage)

	mu    sync.Mutex
	cache map[string]*template.Template

	zoneOnce sync.Once
	zone     string
}

func (b *bootScripts) template(name string) (*template.Template, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if t, ok := b.cache[name]; ok {
		return t, nil
	}
	raw, err := fs.ReadFile(b.tmpl, name)
	if err != nil {
		return nil, fmt.Errorf("template %s: %w", name, err)
	}
	t, err := template.New(name).Option("missingkey=error").Parse(string(raw))
	if err != nil {
		return nil, fmt.Errorf("template %s: %w", name, err)
	}
	if b.cache == nil {
		b.cache = map[string]*template.Template{}
	}
	b.cache[name] = t
	return t, nil
}

func (b *bootScripts) render(name string, data any) (string, error) {
	t, err := b.template(name)
	if err != nil {
		return "", err
	}
	var buf bytes.Buffer
	if err := t.Execute(&buf, data); err != nil {
		return "", fmt.Errorf("template %s: %w", name, err)
	}
	return buf.String(), nil
}

// BootScript answers GET /boot/<mac>.ipxe: the node script for an enrolled MAC (with a fresh
// boot token), the local-disk script outside a donation window, or the enrollment script.
func (b *bootScripts) BootScript(mac net.HardwareAddr, r *http.Request) (string, error) {
	base := b.cfg.BaseURL()
	scriptURL := fmt.Sprintf("%s/boot/%s.ipxe", base, mac)
	n, ok := b.store.NodeByMAC(mac.String())
	if !ok {
		_ = b.store.SeeMAC(registry.Discovered{MAC: mac.String(), IPXE: true})
		return b.render("ipxe/enroll.ipxe", map[string]any{
			"MAC": mac.String(), "EnrollURL": base + "/discovered", "ScriptURL": scriptURL, "PollSeconds": 10,
		})
	}
	if b.window != nil && !b.window(n, b.now()) {
		return b.render("ipxe/local.ipxe", map[string]any{"Node": n.Name, "Window": n.Donate.Window})
	}
	img, err := b.images.Current(n.Image)
	if err != nil {
		return "", fmt.Errorf("node %s: image %s: %w", n.Name, n.Image, err)
	}
	token, err := b.store.RotateBootToken(n.Name)
	if err != nil {
		return "", err
	}
	cmdline, err := b.render("boot/cmdline.tmpl", map[string]any{
		"Extra": b.cfg.Boot.CmdlineExtra, "Server": base, "Token": token,
		"MACHyphen": strings.ReplaceAll(mac.String(), ":", "-"), "Node": n.Name,
	})
	if err != nil {
		return "", err
	}
	if b.onStage != nil {
		b.onStage(n.Name, registry.Stage{Stage: bootconfig.StageBootFile, OK: true, Message: "iPXE script"})
	}
	kernel, err := b.filePath(img.Kernel)
	if err != nil {
		return "", err
	}
	initrd, err := b.filePath(img.Initrd)
	if err != nil {
		return "", err
	}
	return b.render("ipxe/node.ipxe", map[string]any{
		"Node": n.Name, "MAC": mac.String(), "Image": img.Name, "Version": img.Version, "Server": base,
		"ServerIP":  b.cfg.ServerIP().String(),
		"KernelURL": base + "/" + kernel, "InitrdURL": base + "/" + initrd,
		"KernelPath": kernel, "InitrdPath": initrd,
		"Cmdline": strings.Join(strings.Fields(cmdline), " "), "ScriptURL": scriptURL,
	})
}

// filePath is a boot file's path as HTTP (/files/...) and TFTP serve it: relative to the
// images directory, which both serve read-only.
func (b *bootScripts) filePath(abs string) (string, error) {
	rel, err := filepath.Rel(ImagesDir(b.cfg.StateDir), abs)
	if err != nil || strings.HasPrefix(rel, "..") {
		return "", fmt.Errorf("boot file %s is outside %s", abs, ImagesDir(b.cfg.StateDir))
	}
	return "files/" + filepath.ToSlash(rel), nil
}

// BootConfig renders the document the node init fetches with its boot token.
func (b *bootScripts) BootConfig(n registry.Node) (bootconfig.Config, error) {
	ip := b.cfg.ServerIP().String()
	nfsPort := portOf(b.cfg.NFS.Listen, "2049") // MOUNT is answered on the NFS port
	c := bootconfig.Config{
		Node: n.Name, Hostname: n.Name, Role: n.Role, Server: b.cfg.BaseURL(), AgentToken: n.Secrets.AgentToken,
		NFS: bootconfig.NFS{
			Server: ip, Path: "/images/" + n.Image,
			Options: fmt.Sprintf("vers=3,proto=tcp,port=%[1]s,mountport=%[1]s,mountproto=tcp,nolock,ro,actimeo=600,addr=%[2]s", nfsPort, ip),
		},
		ISCSI: bootconfig.ISCSI{
			Portal: b.cfg.ISCSIAddr(), Target: n.TargetIQN(), LUN: 0, Initiator: n.InitiatorIQN(),
			CHAPUser: n.Name, CHAPSecret: n.Secrets.CHAPSecret,
		},
		Overlay: bootconfig.Overlay{Options: "index=off,xino=off,redirect_dir=off,metacopy=off"},
		Donate: bootconfig.Donate{
			Mode: n.Donate.Mode, Device: n.Donate.Device, Wipe: n.Donate.Wipe, Window: n.Donate.Window,
			TimeZone: b.zoneName(), AfterWindow: n.Donate.AfterWindow,
			Shelf: n.Shelf, Slot: n.Slot, AllowMACs: b.cfg.Donate.PoolHeadMACs,
		},
	}
	if n.Role == "pool-head" {
		c.Pool = &bootconfig.Pool{StopBeforeSeconds: int(b.cfg.Donate.PoolStopBefore / time.Second),
			AssembleGraceSeconds: int(b.cfg.Donate.PoolAssembleGrace / time.Second), Export: b.cfg.Donate.PoolExport}
	}
	if n.Donate.Mode == "iscsi" {
		c.Donate.ISCSITarget = n.DonateIQN()
		if b.cfg.Donate.PoolHeadIQN != "" {
			c.Donate.ISCSIInitiators = []string{b.cfg.Donate.PoolHeadIQN}
		}
		c.Donate.CHAPUser, c.Donate.CHAPSecret = n.Name, n.Secrets.DonateCHAP
	}
	return c, nil
}

// zoneName names the appliance's time zone for the node, which has no local time configured.
// It is worked out once: the host's zone does not change under a running daemon.
func (b *bootScripts) zoneName() string {
	b.zoneOnce.Do(func() { b.zone = b.lookupZone() })
	return b.zone
}

func (b *bootScripts) lookupZone() string {
	loc, err := b.cfg.Location()
	if err != nil || loc == time.Local {
		if name := os.Getenv("TZ"); name != "" {
			return name
		}
		if target, err := os.Readlink("/etc/localtime"); err == nil {
			if i := strings.Index(target, "zoneinfo/"); i >= 0 {
				return target[i+len("zoneinfo/"):]
			}
		}
		return "UTC"
	}
	return loc.String()
}

func portOf(hostport, def string) string {
	if _, p, err := net.SplitHostPort(hostport); err == nil && p != "" {
		return p
	}
	return def
}
