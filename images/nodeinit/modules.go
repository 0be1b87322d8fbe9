package nodeinit

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/distonet/distonet/images/initramfs"
)

// ModulesDir is the module tree of the running kernel.
func ModulesDir() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "/lib/modules"
	}
	return filepath.Join("/lib/modules", unix.ByteSliceToString(u.Release[:]))
}

// ModuleLoader loads modules with their dependencies from one module tree.
type ModuleLoader struct {
	Dir  string
	Sys  string // sysfs mount point (default /sys)
	deps *initramfs.ModuleDeps
	// Took records how long each module took to load, for the console's "slowest" note.
	Took map[string]time.Duration
}

// NewModuleLoader reads dir/modules.dep.
func NewModuleLoader(dir string) (*ModuleLoader, error) {
	f, err := os.Open(filepath.Join(dir, "modules.dep"))
	if err != nil {
		return nil, fmt.Errorf("modules: %w", err)
	}
	defer f.Close()
	md, err := initramfs.ParseModulesDep(f)
	if err != nil {
		return nil, fmt.Errorf("modules: %w", err)
	}
	return &ModuleLoader{Dir: dir, deps: md}, nil
}

// Load loads the named modules and their dependencies in order. It returns how many
// it loaded and an error naming each module that failed (others still load).
func (l *ModuleLoader) Load(names []string) (int, error) {
	paths, missing := l.deps.Closure(names)
	var errs []error
	n := 0
	if l.Took == nil {
		l.Took = map[string]time.Duration{}
	}
	for _, p := range paths {
		t0 := time.Now()
		err := finitModule(filepath.Join(l.Dir, p))
		l.Took[initramfs.ModuleName(p)] += time.Since(t0)
		switch {
		case err == nil:
			n++
		case errors.Is(err, unix.EEXIST):
		default:
			errs = append(errs, fmt.Errorf("%s: %w", initramfs.ModuleName(p), err))
		}
	}
	_ = missing // not in this tree: built in, or a NIC this kernel lacks
	return n, errors.Join(errs...)
}

func finitModule(file string) error {
	f, err := os.Open(file)
	if err != nil {
		return err
	}
	defer f.Close()
	return unix.FinitModule(int(f.Fd()), "", 0)
}

// Coldplug loads the named modules the way udev would at boot: a module whose
// modules.alias entries name PCI or virtio devices is loaded only when such a device is
// present (NIC drivers for other machines are skipped), every other module always. PCI
// matches are loaded first, since virtio devices appear only once virtio_pci runs. Without
// readable PCI modaliases everything is loaded.
func (l *ModuleLoader) Coldplug(names []string) (loaded int, skipped []string, err error) {
	sys := l.Sys
	if sys == "" {
		sys = "/sys"
	}
	gated := busAliases(l.Dir)
	first, virtio, skipped := planColdplug(names, gated, modaliases(sys+"/bus/pci/devices/*/modalias"))
	loaded, err = l.Load(first)
	if len(virtio) > 0 {
		want, skip := planVirtio(virtio, gated, modaliases(sys+"/bus/virtio/devices/*/modalias"))
		skipped = append(skipped, skip...)
		n, err2 := l.Load(want)
		loaded += n
		err = errors.Join(err, err2)
	}
	return loaded, skipped, err
}

// planColdplug splits names into those to load now, virtio drivers to decide once the
// virtio bus is populated, and drivers for PCI devices that are absent.
func planColdplug(names []string, gated map[string][]string, pci []string) (now, virtio, skipped []string) {
	if len(pci) == 0 {
		return names, nil, nil
	}
	for _, n := range names {
		pats := gated[initramfs.ModuleName(n)]
		switch {
		case len(pats) == 0, matchAny(pats, pci):
			now = append(now, n)
		case hasPrefix(pats, "virtio:"):
			virtio = append(virtio, n)
		default:
			skipped = append(skipped, n)
		}
	}
	return now, virtio, skipped
}

func planVirtio(names []string, gated map[string][]string, present []string) (want, skipped []string) {
	for _, n := range names {
		if matchAny(gated[initramfs.ModuleName(n)], present) {
			want = append(want, n)
		} else {
			skipped = append(skipped, n)
		}
	}
	return want, skipped
}

// busAliases maps module names to their pci: and virtio: alias patterns.
func busAliases(dir string) map[string][]string {
	out := map[string][]string{}
	b, err := os.ReadFile(filepath.Join(dir, "modules.alias"))
	if err != nil {
		return out
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) == 3 && f[0] == "alias" && (strings.HasPrefix(f[1], "pci:") || strings.HasPrefix(f[1], "virtio:")) {
			name := initramfs.ModuleName(f[2])
			out[name] = append(out[name], f[1])
		}
	}
	return out
}

func modaliases(glob string) []string {
	files, _ := filepath.Glob(glob)
	var out []string
	for _, f := range files {
		if b, err := os.ReadFile(f); err == nil {
			out = append(out, strings.TrimSpace(string(b)))
		}
	}
	return out
}

func matchAny(patterns, aliases []string) bool {
	for _, p := range patterns {
		for _, a := range aliases {
			if ok, _ := path.Match(p, a); ok {
				return true
			}
		}
	}
	return false
}

func hasPrefix(patterns []string, prefix string) bool {
	for _, p := range patterns {
		if strings.HasPrefix(p, prefix) {
			return true
		}
	}
	return false
}

// Slowest names the n modules that took longest to load, with their times.
func (l *ModuleLoader) Slowest(n int) string {
	names := make([]string, 0, len(l.Took))
	for m := range l.Took {
		names = append(names, m)
	}
	sort.Slice(names, func(i, j int) bool { return l.Took[names[i]] > l.Took[names[j]] })
	if len(names) > n {
		names = names[:n]
	}
	parts := make([]string, len(names))
	for i, m := range names {
		parts[i] = fmt.Sprintf("%s %.1fs", m, l.Took[m].Seconds())
	}
	return strings.Join(parts, ", ")
}

// LoadList reads the initramfs's list of modules to load at boot.
func LoadList(dir string) ([]string, error) {
	b, err := os.ReadFile(filepath.Join(dir, initramfs.LoadList))
	if err != nil {
		return nil, err
	}
	return strings.Fields(string(b)), nil
}

// resolveAlias maps a modprobe argument (module name or alias such as crypto-crc32c or
// fs-overlay) to module names using modules.alias.
func resolveAlias(dir, name string) []string {
	f, err := os.Open(filepath.Join(dir, "modules.alias"))
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) != 3 || fs[0] != "alias" {
			continue
		}
		if ok, _ := path.Match(fs[1], name); ok {
			out = append(out, fs[2])
		}
	}
	return out
}

// Modprobe is the /sbin/modprobe the kernel's request_module() runs inside the initramfs
// ("modprobe -q -- NAME"). It returns the process exit status.
func Modprobe(args []string) int {
	dir := ModulesDir()
	l, err := NewModuleLoader(dir)
	if err != nil {
		return 1
	}
	mods, unknown := l.modprobeTargets(args)
	status := 0
	if len(unknown) > 0 {
		status = 1
	}
	for _, m := range mods {
		if _, err := l.Load([]string{m}); err != nil {
			status = 1
		}
	}
	// The kernel runs modprobe with no output; its log is where a slow boot is explained
	// (each call starts this whole binary).
	kmsg(fmt.Sprintf("distonet modprobe: loaded %v, no module for %v", mods, unknown))
	return status
}

func kmsg(line string) {
	if f, err := os.OpenFile("/dev/kmsg", os.O_WRONLY, 0); err == nil {
		_, _ = f.WriteString(line + "\n")
		f.Close()
	}
}

// modprobeTargets turns modprobe's arguments (options, module names, aliases such as
// crypto-crc32c or fs-overlay) into module names the tree has.
func (l *ModuleLoader) modprobeTargets(args []string) (mods, unknown []string) {
	for _, a := range args {
		if strings.HasPrefix(a, "-") {
			continue
		}
		if _, ok := l.deps.Path(a); ok {
			mods = append(mods, a)
			continue
		}
		if alias := resolveAlias(l.Dir, a); len(alias) > 0 {
			mods = append(mods, alias[0])
			continue
		}
		unknown = append(unknown, a)
	}
	return mods, unknown
}
