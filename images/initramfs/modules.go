package initramfs

import (
	"bufio"
	"fmt"
	"io"
	"path"
	"strings"
)

// ModuleDeps is a parsed modules.dep: a module's path (relative to lib/modules/<version>)
// and the paths it needs loaded first, in modprobe's order (the last one loads first).
type ModuleDeps struct {
	deps   map[string][]string // path -> dependency paths
	byName map[string]string   // module name -> path
	order  []string            // paths in file order
}

// ModuleName turns a module path or name into the name the kernel uses: base name without
// the .ko[.xz|.zst|.gz] suffix, dashes folded to underscores.
func ModuleName(p string) string {
	b := path.Base(p)
	for _, suf := range []string{".xz", ".zst", ".gz"} {
		b = strings.TrimSuffix(b, suf)
	}
	b = strings.TrimSuffix(b, ".ko")
	return strings.ReplaceAll(b, "-", "_")
}

// ParseModulesDep reads modules.dep ("kernel/a.ko: kernel/b.ko kernel/c.ko" per line).
func ParseModulesDep(r io.Reader) (*ModuleDeps, error) {
	md := &ModuleDeps{deps: map[string][]string{}, byName: map[string]string{}}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64*1024), 1024*1024)
	line := 0
	for sc.Scan() {
		line++
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		mod, rest, ok := strings.Cut(text, ":")
		mod = strings.TrimSpace(mod)
		if !ok || mod == "" || !strings.Contains(path.Base(mod), ".ko") {
			return nil, fmt.Errorf("modules.dep line %d: %q is not \"module.ko: deps\"", line, text)
		}
		if _, dup := md.deps[mod]; dup {
			continue
		}
		md.deps[mod] = strings.Fields(rest)
		md.order = append(md.order, mod)
		if _, seen := md.byName[ModuleName(mod)]; !seen {
			md.byName[ModuleName(mod)] = mod
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read modules.dep: %w", err)
	}
	return md, nil
}

// Path returns the path of the module with the given name.
func (md *ModuleDeps) Path(name string) (string, bool) {
	p, ok := md.byName[ModuleName(name)]
	return p, ok
}

// Closure returns the paths of the named modules and everything they need, ordered so each
// module comes after all its dependencies (the order to load them in). Names the tree does
// not have are returned in missing (a module built into the kernel is not an error for the
// caller to fail on: it checks modules.builtin).
func (md *ModuleDeps) Closure(names []string) (paths, missing []string) {
	seen := map[string]bool{}
	var visit func(p string, stack map[string]bool)
	visit = func(p string, stack map[string]bool) {
		if seen[p] || stack[p] {
			return
		}
		stack[p] = true
		// modules.dep lists dependencies so that loading them from last to first works;
		// visiting each recursively gives a correct order whatever the file's order.
		deps := md.deps[p]
		for i := len(deps) - 1; i >= 0; i-- {
			visit(deps[i], stack)
		}
		delete(stack, p)
		seen[p] = true
		paths = append(paths, p)
	}
	for _, n := range names {
		p, ok := md.Path(n)
		if !ok {
			missing = append(missing, n)
			continue
		}
		visit(p, map[string]bool{})
	}
	return paths, missing
}

// Subset renders modules.dep restricted to the given module paths.
func (md *ModuleDeps) Subset(paths []string) string {
	keep := map[string]bool{}
	for _, p := range paths {
		keep[p] = true
	}
	var b strings.Builder
	for _, p := range md.order {
		if !keep[p] {
			continue
		}
		b.WriteString(p + ":")
		for _, d := range md.deps[p] {
			b.WriteString(" " + d)
		}
		b.WriteString("\n")
	}
	return b.String()
}
