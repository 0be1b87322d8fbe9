package appliance

import (
	"net"
	"net/http"
	"os"
	"strings"

	"github.com/distonet/distonet/netboot/httpboot"
	"github.com/distonet/distonet/nfsroot"
)

// mountBoot serves iPXE scripts (/boot/<mac>.ipxe) and boot files (/files/...) from the
// images directory.
func (a *Appliance) mountBoot() error {
	if err := os.MkdirAll(ImagesDir(a.cfg.StateDir), 0o755); err != nil {
		return err
	}
	h, err := httpboot.NewHandler(httpboot.Config{Root: ImagesDir(a.cfg.StateDir), Metrics: a.metrics}, a.boot, a.log.With("svc", "http"))
	if err != nil {
		return err
	}
	a.mux.Handle(httpboot.BootPrefix, h)
	a.mux.Handle(httpboot.FilesPrefix, h)
	// UEFI HTTP boot clients fetch the iPXE binary itself over HTTP: serve the TFTP root's
	// files there too, confined to it (symlinks leaving it are refused).
	if a.cfg.TFTP.Root != "" {
		if root, err := os.OpenRoot(a.cfg.TFTP.Root); err == nil {
			a.mux.Handle("GET "+IPXEPrefix, http.StripPrefix(IPXEPrefix, http.FileServerFS(root.FS())))
		} else {
			a.log.Warn("iPXE binaries not served over HTTP", "root", a.cfg.TFTP.Root, "err", err)
		}
	}
	return nil
}

// IPXEPrefix is where UEFI HTTP boot clients fetch the iPXE binary.
const IPXEPrefix = "/ipxe/"

// tftpFiles serves the boot files over TFTP too (files/<image>/<version>/...), the iPXE
// script's fallback when HTTP fails. TFTP is slow for a kernel; it is a fallback only.
type tftpFiles struct {
	root *os.Root
}

func (t tftpFiles) File(remote net.Addr, path string) ([]byte, bool) {
	rel, ok := strings.CutPrefix(path, "files/")
	if !ok || t.root == nil {
		return nil, false
	}
	raw, err := t.root.ReadFile(rel)
	if err != nil {
		return nil, false
	}
	return raw, true
}

// nfsExports publishes each image's current version at /images/NAME, and keeps older
// versions reachable for handles taken before an update.
type nfsExports struct {
	images Catalog
}

func (e nfsExports) name(path string) (string, bool) {
	name, ok := strings.CutPrefix(path, "/images/")
	return name, ok && name != "" && !strings.Contains(name, "/")
}

func (e nfsExports) Export(path string) (nfsroot.Export, bool) {
	name, ok := e.name(path)
	if !ok {
		return nfsroot.Export{}, false
	}
	v, err := e.images.Current(name)
	if err != nil {
		return nfsroot.Export{}, false
	}
	return nfsroot.Export{Path: path, Root: v.Rootfs, Version: v.Number}, true
}

func (e nfsExports) Version(path string, version uint64) (nfsroot.Export, bool) {
	name, ok := e.name(path)
	if !ok {
		return nfsroot.Export{}, false
	}
	v, err := e.images.Get(name, version)
	if err != nil {
		return nfsroot.Export{}, false
	}
	return nfsroot.Export{Path: path, Root: v.Rootfs, Version: v.Number}, true
}

func (e nfsExports) List() []nfsroot.Export {
	var out []nfsroot.Export
	for _, name := range e.images.Names() {
		if v, err := e.images.Current(name); err == nil {
			out = append(out, nfsroot.Export{Path: "/images/" + name, Root: v.Rootfs, Version: v.Number})
		}
	}
	return out
}
