// Package debian builds the demo image from Debian's archive without installing anything on
// the host: `apt-get download` fetches the real kernel package behind linux-image-amd64 and
// busybox-static (plus what the caller names), `dpkg -x` unpacks them into a rootfs, depmod
// indexes the module tree, and a plain-shell /sbin/init reports the node's hostname and root.
// Importing the result as an image is the store's business.
package debian

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Options say where to build and what to put in.
type Options struct {
	Dir      string // rootfs to create (must not exist or be empty)
	CacheDir string // where .deb files are kept between builds (default /var/cache/distonet/debian)
	// Packages added to the base set (the kernel and busybox-static). They are unpacked
	// without their dependencies: name the libraries a dynamic program needs too.
	Packages []string
	Hostname string    // the image's default /etc/hostname (default "distonet-demo")
	Progress io.Writer // one line per step; nil is silent
}

// BasePackages are always unpacked. linux-image-amd64 is the metapackage; Build unpacks the
// versioned kernel package it depends on.
var BasePackages = []string{"linux-image-amd64", "busybox-static"}

// InitMarker starts the line the demo image's /sbin/init prints on the console.
const InitMarker = "DISTONET-IMAGE-INIT"

// InitScript is the demo image's /sbin/init: it starts nothing, prints who and where it is,
// and keeps a shell on the console.
const InitScript = `#!/bin/sh
# DiStoNet demo image init. The appliance's node init has already set the hostname, built
# the root (overlay of NFS and the node's iSCSI volume) and started the agent.
export PATH=/sbin:/bin:/usr/sbin:/usr/bin HOME=/root
# The node init moved /proc, /sys and /dev here already; mount them only when booted otherwise.
[ -e /proc/mounts ] || mount -t proc proc /proc
[ -d /sys/kernel ] || mount -t sysfs sysfs /sys
[ -e /dev/null ] || mount -t devtmpfs devtmpfs /dev
root=$(awk '$2=="/" {t=$3} END {print t}' /proc/mounts)
echo "` + InitMarker + ` hostname=$(hostname) root=$root"
while :; do
	setsid cttyhack sh -l
	sleep 1
done
`

// Build creates the rootfs.
func Build(ctx context.Context, opts Options) error {
	if opts.Dir == "" {
		return fmt.Errorf("debian: Options.Dir is empty")
	}
	if opts.CacheDir == "" {
		opts.CacheDir = "/var/cache/distonet/debian"
	}
	if opts.Hostname == "" {
		opts.Hostname = defaultHostname
	}
	progress := opts.Progress
	if progress == nil {
		progress = io.Discard
	}
	start := time.Now()
	step := func(format string, a ...any) {
		fmt.Fprintf(progress, "debian: %-60s %5.1fs\n", fmt.Sprintf(format, a...), time.Since(start).Seconds())
	}
	if ents, err := os.ReadDir(opts.Dir); err == nil && len(ents) > 0 {
		return fmt.Errorf("debian: %s is not empty", opts.Dir)
	}
	for _, d := range []string{opts.Dir, opts.CacheDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("debian: %w", err)
		}
	}
	pkgs := append(append([]string{}, BasePackages...), opts.Packages...)
	for i, p := range pkgs {
		if p == "linux-image-amd64" {
			real, err := kernelPackage(ctx, p)
			if err != nil {
				return err
			}
			step("%s is %s", p, real)
			pkgs[i] = real
		}
	}
	for i, p := range pkgs {
		deb, cached, err := download(ctx, opts.CacheDir, p)
		if err != nil {
			return err
		}
		how := "downloaded"
		if cached {
			how = "cached"
		}
		step("[%d/%d] %s (%s)", i+1, len(pkgs), filepath.Base(deb), how)
		if out, err := exec.CommandContext(ctx, "dpkg", "-x", deb, opts.Dir).CombinedOutput(); err != nil {
			return fmt.Errorf("debian: dpkg -x %s: %w: %s", deb, err, bytes.TrimSpace(out))
		}
		step("[%d/%d] unpacked %s", i+1, len(pkgs), p)
	}
	vers, _ := filepath.Glob(filepath.Join(opts.Dir, "lib/modules/*"))
	for _, v := range vers {
		ver := filepath.Base(v)
		// The kernel package ships no modules.dep; the node init and modprobe need it.
		if out, err := exec.CommandContext(ctx, "depmod", "-b", opts.Dir, ver).CombinedOutput(); err != nil {
			return fmt.Errorf("debian: depmod %s: %w: %s", ver, err, bytes.TrimSpace(out))
		}
		step("depmod %s", ver)
	}
	n, err := busyboxLinks(ctx, opts.Dir)
	if err != nil {
		return err
	}
	step("busybox: %d applets linked", n)
	if err := skeleton(opts.Dir, opts.Hostname); err != nil {
		return err
	}
	step("skeleton, /sbin/init written")
	return nil
}

// kernelPackage resolves the metapackage to the versioned kernel package it depends on.
func kernelPackage(ctx context.Context, meta string) (string, error) {
	out, err := exec.CommandContext(ctx, "apt-cache", "depends", meta).Output()
	if err != nil {
		return "", fmt.Errorf("debian: apt-cache depends %s: %w (run apt-get update)", meta, err)
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 2 && f[0] == "Depends:" && strings.HasPrefix(f[1], "linux-image-") {
			return f[1], nil
		}
	}
	return "", fmt.Errorf("debian: %s depends on no linux-image package: %s", meta, out)
}

// download fetches a package's candidate version into the cache unless it is there.
func download(ctx context.Context, cache, pkg string) (string, bool, error) {
	out, err := exec.CommandContext(ctx, "apt-cache", "policy", pkg).Output()
	if err != nil {
		return "", false, fmt.Errorf("debian: apt-cache policy %s: %w", pkg, err)
	}
	var version string
	for _, l := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), "Candidate:"); ok {
			version = strings.TrimSpace(v)
		}
	}
	if version == "" || version == "(none)" {
		return "", false, fmt.Errorf("debian: package %s has no candidate version (apt-get update?)", pkg)
	}
	// apt-get download names files pkg_version_arch.deb with the epoch colon escaped.
	pattern := fmt.Sprintf("%s_%s_*.deb", pkg, strings.ReplaceAll(version, ":", "%3a"))
	if m, _ := filepath.Glob(filepath.Join(cache, pattern)); len(m) > 0 {
		return m[0], true, nil
	}
	cmd := exec.CommandContext(ctx, "apt-get", "download", "-q", pkg+"="+version)
	cmd.Dir = cache
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", false, fmt.Errorf("debian: apt-get download %s: %w: %s", pkg, err, bytes.TrimSpace(out))
	}
	m, _ := filepath.Glob(filepath.Join(cache, pattern))
	if len(m) == 0 {
		return "", false, fmt.Errorf("debian: apt-get download %s left no %s in %s", pkg, pattern, cache)
	}
	return m[0], false, nil
}

// busyboxLinks links every applet of the unpacked static busybox (it runs on the host too).
func busyboxLinks(ctx context.Context, root string) (int, error) {
	bb := filepath.Join(root, "bin/busybox")
	out, err := exec.CommandContext(ctx, bb, "--list-full").Output()
	if err != nil {
		return 0, fmt.Errorf("debian: %s --list-full: %w", bb, err)
	}
	n := 0
	for _, app := range strings.Fields(string(out)) {
		p := filepath.Join(root, app)
		if _, err := os.Lstat(p); err == nil {
			continue
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return n, fmt.Errorf("debian: %w", err)
		}
		if err := os.Symlink("/bin/busybox", p); err != nil {
			return n, fmt.Errorf("debian: link %s: %w", app, err)
		}
		n++
	}
	return n, nil
}

func skeleton(root, hostname string) error {
	for _, d := range []struct {
		name string
		mode os.FileMode
	}{{"proc", 0o555}, {"sys", 0o555}, {"dev", 0o755}, {"run", 0o755}, {"tmp", 0o1777},
		{"root", 0o700}, {"etc", 0o755}, {"var/tmp", 0o1777}, {"var/log", 0o755}, {"mnt", 0o755}, {"sbin", 0o755}} {
		p := filepath.Join(root, d.name)
		if err := os.MkdirAll(p, d.mode); err != nil {
			return fmt.Errorf("debian: %w", err)
		}
		if err := os.Chmod(p, d.mode); err != nil {
			return fmt.Errorf("debian: %w", err)
		}
	}
	files := skeletonFiles(hostname)
	for _, n := range slices.Sorted(maps.Keys(files)) {
		mode := os.FileMode(0o644)
		switch n {
		case "sbin/init":
			mode = 0o755
		case "etc/shadow":
			mode = 0o640
		}
		p := filepath.Join(root, n)
		_ = os.Remove(p) // busybox may have linked sbin/init to itself
		if err := os.WriteFile(p, []byte(files[n]), mode); err != nil {
			return fmt.Errorf("debian: %w", err)
		}
	}
	return nil
}

// Fingerprint identifies what Build makes from these extra packages and hostname: the
// package lists and every file the skeleton writes. A cache of built rootfs trees keyed
// by it is rebuilt when any of them changes.
func Fingerprint(packages []string, hostname string) string {
	if hostname == "" {
		hostname = defaultHostname
	}
	h := sha256.New()
	for _, p := range append(append([]string{}, BasePackages...), packages...) {
		fmt.Fprintf(h, "pkg %s\n", p)
	}
	files := skeletonFiles(hostname)
	for _, n := range slices.Sorted(maps.Keys(files)) {
		fmt.Fprintf(h, "file %s %d\n%s", n, len(files[n]), files[n])
	}
	return hex.EncodeToString(h.Sum(nil))
}

const defaultHostname = "distonet-demo"

// skeletonFiles are the files skeleton writes over the unpacked packages.
func skeletonFiles(hostname string) map[string]string {
	return map[string]string{
		"etc/passwd":   "root:x:0:0:root:/root:/bin/sh\n",
		"etc/group":    "root:x:0:\n",
		"etc/shadow":   "root:*:19000:0:99999:7:::\n",
		"etc/hostname": hostname + "\n",
		"etc/fstab":    "# written by the DiStoNet node init at boot\n",
		"etc/profile":  "export PATH=/sbin:/bin:/usr/sbin:/usr/bin\nPS1='\\h:\\w# '\n",
		// glibc programs (mdadm, nfs-utils) look names up through it.
		"etc/nsswitch.conf": "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\nnetworks: files\nprotocols: files\nservices: files\nrpc: files\n",
		"sbin/init":         InitScript,
	}
}
