// Package initramfs builds the appliance's initramfs for an image: a compressed newc cpio
// holding the distonet binary as /init (the node init runs when it is PID 1), /sbin/modprobe
// pointing at it (the kernel's request_module calls that path), and exactly the kernel modules
// a diskless boot needs with their dependencies, taken from the image's own module tree.
// The image's kernel, rootfs and NFS export are other packages' business.
package initramfs

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strings"

	kgzip "github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

// DefaultModules are the modules a node needs: NIC drivers of QEMU and common PCs, a
// hardware RNG (DHCP needs random numbers early), NFS v3, overlayfs, the iSCSI initiator with
// SCSI disks, ext4 for the upper layer, AoE and disk controllers for donation, and the CRC
// implementations iscsi_tcp and ext4 look up by name at load time (iscsi_tcp fails with
// "crc32c loading error" without one). The node init loads device drivers only for devices
// present.
var DefaultModules = []string{
	// CRC algorithms first: modules that look one up by name at load time (iscsi_tcp, ext4,
	// sd_mod's t10-pi via crc64-rocksoft) otherwise wait for the kernel to run modprobe.
	"crc32c_generic", "crct10dif_generic", "crc64_rocksoft_generic", "libcrc32c",
	"virtio_pci", "virtio_net", "virtio_blk", "virtio_rng", "e1000", "e1000e", "r8169", "igb", "tg3",
	"af_packet", "sunrpc", "nfs", "nfsv3", "overlay",
	"scsi_transport_iscsi", "libiscsi", "libiscsi_tcp", "iscsi_tcp", "sd_mod",
	"ext4", "aoe",
	// Disk controllers, so the donation agent sees the spare internal disk: the image's own
	// init may start no udev. The node init loads them only for controllers present.
	// (Not ata_piix: every QEMU pc machine has a PIIX IDE, and probing it costs seconds.)
	"ahci", "nvme", "virtio_scsi", "mpt3sas", "megaraid_sas",
}

// Files the node init reads inside the initramfs.
const (
	// LoadList names the modules to load at boot, one per line, under lib/modules/<version>/.
	LoadList = "distonet.load"
)

// Options says what goes into an initramfs.
type Options struct {
	// Binary is the program placed as /init (default: the running executable, which is
	// static so it needs no libraries).
	Binary string
	// ModulesDir is the kernel's module tree, lib/modules/<version>, with modules.dep.
	// Empty builds an initramfs without modules (for kernels with everything built in).
	ModulesDir string
	// Modules to include with their dependencies (default DefaultModules). A module that is
	// neither in the tree nor built in is reported in Result.Missing, not an error, since
	// NIC drivers differ between kernels.
	Modules []string
	// Compression is "gzip" (default) or "zstd"; the kernel needs CONFIG_RD_GZIP or
	// CONFIG_RD_ZSTD (Debian's kernels have both).
	Compression string
	// Extra files to add, archive path -> content (mode 0644), e.g. a default config.
	Extra map[string][]byte
}

// Result reports what Build put in.
type Result struct {
	KernelVersion string
	Modules       []string // module paths in load order
	Missing       []string // requested modules neither in the tree nor built in
	Builtin       []string // requested modules built into the kernel
}

// Build writes the compressed archive to w.
func Build(ctx context.Context, w io.Writer, opts Options) (Result, error) {
	var res Result
	bin := opts.Binary
	if bin == "" {
		exe, err := os.Executable()
		if err != nil {
			return res, fmt.Errorf("initramfs: find own executable: %w", err)
		}
		bin = exe
	}
	initData, err := os.ReadFile(bin)
	if err != nil {
		return res, fmt.Errorf("initramfs: read init binary: %w", err)
	}

	var cw io.WriteCloser
	switch opts.Compression {
	case "", "gzip":
		cw, err = kgzip.NewWriterLevel(w, gzip.DefaultCompression)
	case "zstd":
		// The kernel's decompressor is streaming; a bounded window keeps its memory small.
		cw, err = zstd.NewWriter(w, zstd.WithWindowSize(1<<22), zstd.WithEncoderLevel(zstd.SpeedDefault))
	default:
		return res, fmt.Errorf("initramfs: compression %q: want gzip or zstd", opts.Compression)
	}
	if err != nil {
		return res, fmt.Errorf("initramfs: compressor: %w", err)
	}
	a := NewWriter(cw)
	dirs := map[string]bool{}
	mkdirs := func(p string) error {
		var parts []string
		for d := path.Dir(p); d != "." && d != "/" && !dirs[d]; d = path.Dir(d) {
			parts = append(parts, d)
		}
		for i := len(parts) - 1; i >= 0; i-- {
			dirs[parts[i]] = true
			if err := a.Write(Entry{Name: parts[i], Mode: TypeDir | 0o755}); err != nil {
				return err
			}
		}
		return nil
	}
	add := func(e Entry) error {
		if err := mkdirs(e.Name); err != nil {
			return err
		}
		if e.Mode&TypeMask == TypeDir {
			if dirs[e.Name] {
				return nil
			}
			dirs[e.Name] = true
		}
		return a.Write(e)
	}
	base := []Entry{
		{Name: "dev", Mode: TypeDir | 0o755},
		// The kernel opens /dev/console for init's stdio before devtmpfs is mounted.
		{Name: "dev/console", Mode: TypeChar | 0o600, RMajor: 5, RMinor: 1},
		{Name: "dev/null", Mode: TypeChar | 0o666, RMajor: 1, RMinor: 3},
		{Name: "proc", Mode: TypeDir | 0o555},
		{Name: "sys", Mode: TypeDir | 0o555},
		{Name: "run", Mode: TypeDir | 0o755},
		{Name: "tmp", Mode: TypeDir | 0o1777},
		{Name: "newroot", Mode: TypeDir | 0o755},
		{Name: "init", Mode: TypeReg | 0o755, Data: initData},
		{Name: "sbin/modprobe", Mode: TypeSymlink | 0o777, Data: []byte("/init")},
	}
	for _, e := range base {
		if err := add(e); err != nil {
			return res, fmt.Errorf("initramfs: %w", err)
		}
	}
	if opts.ModulesDir != "" {
		if err := addModules(ctx, add, opts, &res); err != nil {
			return res, err
		}
	}
	extra := make([]string, 0, len(opts.Extra))
	for name := range opts.Extra {
		extra = append(extra, name)
	}
	sort.Strings(extra)
	for _, name := range extra {
		if err := add(Entry{Name: strings.TrimPrefix(path.Clean(name), "/"), Mode: TypeReg | 0o644, Data: opts.Extra[name]}); err != nil {
			return res, fmt.Errorf("initramfs: %w", err)
		}
	}
	if err := a.Close(); err != nil {
		return res, fmt.Errorf("initramfs: %w", err)
	}
	if err := cw.Close(); err != nil {
		return res, fmt.Errorf("initramfs: compress: %w", err)
	}
	return res, nil
}

func addModules(ctx context.Context, add func(Entry) error, opts Options, res *Result) error {
	dir := filepath.Clean(opts.ModulesDir)
	res.KernelVersion = filepath.Base(dir)
	depData, err := os.ReadFile(filepath.Join(dir, "modules.dep"))
	if err != nil {
		return fmt.Errorf("initramfs: %w (run depmod on the module tree)", err)
	}
	md, err := ParseModulesDep(bytes.NewReader(depData))
	if err != nil {
		return fmt.Errorf("initramfs: %s: %w", dir, err)
	}
	builtin := map[string]bool{}
	if b, err := os.ReadFile(filepath.Join(dir, "modules.builtin")); err == nil {
		for _, l := range strings.Fields(string(b)) {
			builtin[ModuleName(l)] = true
		}
	}
	want := opts.Modules
	if want == nil {
		want = DefaultModules
	}
	paths, missing := md.Closure(want)
	for _, m := range missing {
		if builtin[ModuleName(m)] {
			res.Builtin = append(res.Builtin, m)
		} else {
			res.Missing = append(res.Missing, m)
		}
	}
	prefix := "lib/modules/" + res.KernelVersion + "/"
	// Compressed modules are stored decompressed: the kernel loads .ko files only when
	// it was built with module decompression, and an uncompressed module always loads.
	rename := map[string]string{}
	for _, p := range paths {
		data, err := readModule(ctx, filepath.Join(dir, filepath.FromSlash(p)))
		if err != nil {
			return fmt.Errorf("initramfs: module %s: %w", p, err)
		}
		plain := stripCompression(p)
		rename[p] = plain
		if err := add(Entry{Name: prefix + plain, Mode: TypeReg | 0o644, Data: data}); err != nil {
			return fmt.Errorf("initramfs: %w", err)
		}
		res.Modules = append(res.Modules, plain)
	}
	dep := md.Subset(paths)
	for from, to := range rename {
		dep = strings.ReplaceAll(dep, from, to)
	}
	files := []Entry{
		{Name: prefix + "modules.dep", Mode: TypeReg | 0o644, Data: []byte(dep)},
		{Name: prefix + LoadList, Mode: TypeReg | 0o644, Data: []byte(strings.Join(want, "\n") + "\n")},
	}
	if alias, err := os.ReadFile(filepath.Join(dir, "modules.alias")); err == nil {
		files = append(files, Entry{Name: prefix + "modules.alias", Mode: TypeReg | 0o644, Data: subsetAlias(alias, res.Modules)})
	}
	for _, name := range []string{"modules.builtin", "modules.order"} {
		if b, err := os.ReadFile(filepath.Join(dir, name)); err == nil {
			files = append(files, Entry{Name: prefix + name, Mode: TypeReg | 0o644, Data: b})
		}
	}
	for _, e := range files {
		if err := add(e); err != nil {
			return fmt.Errorf("initramfs: %w", err)
		}
	}
	return nil
}

// subsetAlias keeps the alias lines of modules that are in the archive, so modprobe-by-alias
// (crypto-crc32c, fs-overlay, ...) finds them without the whole 1 MB file.
func subsetAlias(alias []byte, paths []string) []byte {
	have := map[string]bool{}
	for _, p := range paths {
		have[ModuleName(p)] = true
	}
	var b bytes.Buffer
	for _, line := range strings.Split(string(alias), "\n") {
		f := strings.Fields(line)
		if len(f) == 3 && f[0] == "alias" && have[ModuleName(f[2])] {
			b.WriteString(line + "\n")
		}
	}
	return b.Bytes()
}

func stripCompression(p string) string {
	for _, suf := range []string{".xz", ".zst", ".gz"} {
		if strings.HasSuffix(p, ".ko"+suf) {
			return strings.TrimSuffix(p, suf)
		}
	}
	return p
}

func readModule(ctx context.Context, file string) ([]byte, error) {
	switch {
	case strings.HasSuffix(file, ".ko.gz"):
		f, err := os.Open(file)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		zr, err := kgzip.NewReader(f)
		if err != nil {
			return nil, err
		}
		return io.ReadAll(zr)
	case strings.HasSuffix(file, ".ko.zst"):
		f, err := os.Open(file)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		zr, err := zstd.NewReader(f)
		if err != nil {
			return nil, err
		}
		defer zr.Close()
		return io.ReadAll(zr)
	case strings.HasSuffix(file, ".ko.xz"):
		// No xz decoder among the module's dependencies; xz-utils is on every Debian host.
		out, err := exec.CommandContext(ctx, "xz", "-dc", file).Output()
		if err != nil {
			return nil, fmt.Errorf("xz -dc: %w", err)
		}
		return out, nil
	}
	return os.ReadFile(file)
}

// BuildFile builds the initramfs into file atomically (temporary file, fsync, rename).
func BuildFile(ctx context.Context, file string, opts Options) (Result, error) {
	tmp, err := os.CreateTemp(filepath.Dir(file), ".initramfs-*")
	if err != nil {
		return Result{}, fmt.Errorf("initramfs: %w", err)
	}
	defer os.Remove(tmp.Name())
	res, err := Build(ctx, tmp, opts)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil && cerr != nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp.Name(), 0o644)
	}
	if err == nil {
		err = os.Rename(tmp.Name(), file)
	}
	if err != nil {
		return res, fmt.Errorf("initramfs: write %s: %w", file, err)
	}
	return res, nil
}
