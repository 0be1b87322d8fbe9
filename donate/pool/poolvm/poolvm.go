// Package poolvm boots a pool-head QEMU guest for tests and benchmarks that need the kernel's
// md and aoe drivers, which the host lacks: Debian's kernel (TCG), an initramfs with busybox,
// mdadm, e2fsprogs and aoetools, and a Go test binary that plays the head inside the guest.
// The donors are vblade processes exporting files over AoE on a bridge in a test namespace.
//
// Host and guest talk over a second serial port: the guest writes lines (STEP/CHECK/RESULT
// for the log, NEED kill|start <shelf> to have a donor killed or restarted) and the host
// answers DONE. NEED crash 0 has the host SIGKILL the guest at once (a power cut of the head:
// no answer comes, Run returns Crashed); a second Run over the same Config.Disks then boots
// the head again on the donors' disks as the crash left them. Nothing here is used by the
// appliance itself.
package poolvm

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/distonet/distonet/internal/lab"
	"golang.org/x/sys/unix"
)

// Config describes the guest.
type Config struct {
	// Package is the directory of the Go package whose test binary runs in the guest (built
	// static with go test -c). Its TestMain must dispatch on GuestEnv.
	Package string
	// GuestEnv is set to GuestArg in the guest; the binary runs the guest side when it is set.
	GuestEnv, GuestArg string
	Donors             int   // vblade donors e1.0 .. eN.0 (default 4)
	DonorBytes         int64 // size of each donor's file (default 96 MiB)
	MemoryMB           int   // default 768
	// Timeout bounds the whole guest run (default 30 min).
	Timeout time.Duration
	// OnLine, when set, sees every other line the guest sends (e.g. its measurements).
	OnLine func(line string)

	// Debs are Debian packages unpacked (without their dependencies) into a staging tree;
	// DebBinaries are paths in that tree copied into the guest with their libraries (looked
	// up in the staging tree first, then on the host).
	Debs, DebBinaries []string
	// ExtraModules are loaded after Modules.
	ExtraModules []string
	// Files are written into the guest's root (path -> content).
	Files map[string]string
	// BridgeAddr and GuestAddr (CIDR) give the host's bridge and the guest's eth0 addresses
	// when the guest needs IP (iSCSI); empty leaves them without (AoE is layer 2).
	BridgeAddr, GuestAddr string
	// Setup starts other donors on the bridge (for example tgtd) before the guest boots.
	Setup func(t lab.T, ns *lab.Netns, bridge string)
	// OnNeed answers the guest's other NEED verbs (kill, start and crash are built in): a nil
	// error answers DONE, an error makes the guest's Need fail with it.
	OnNeed func(ns *lab.Netns, verb string, arg int) error

	// Disks is the directory of the donors' files (donor<N>.img). Set, it outlives Run and
	// files already there are kept as they are, so a second Run boots the guest again over
	// the disks a first one left (after NEED crash, say). Empty: a temporary directory.
	Disks string
	// Absent lists donors not started at boot (their nodes are gone); NEED start still can.
	Absent []int
}

// Crashed is what Run returns when the guest asked for NEED crash and was killed.
const Crashed = "crashed on request"

// Modules are loaded in the guest in this order (dependencies first, from modules.dep);
// crc32c first: libcrc32c asks the crypto API for it at load time.
var Modules = []string{"crc32c_generic", "virtio_pci", "virtio_net", "raid456", "ext4", "aoe"}

// Binaries are copied into the guest with the shared libraries ldd lists.
var Binaries = []string{"/sbin/mdadm", "/sbin/mke2fs", "/sbin/e2fsck", "/sbin/blkid", "/bin/bash"}

// Tools lists what the host needs.
var Tools = []string{"qemu-system-x86_64", "vblade", "mdadm", "cpio", "gzip", "apt-get", "apt-cache", "dpkg", "depmod", "ldd", "busybox", "go"}

// Run boots the guest, serves its NEED requests until it prints RESULT, and returns what
// followed RESULT ("ok" on success). The guest's console is logged if the test fails.
func Run(t lab.T, cfg Config) string {
	t.Helper()
	lab.Require(t, Tools...)
	if cfg.Donors < 0 {
		cfg.Donors = 0
	} else if cfg.Donors == 0 {
		cfg.Donors = 4
	}
	if cfg.DonorBytes == 0 {
		cfg.DonorBytes = 96 << 20
	}
	if cfg.MemoryMB == 0 {
		cfg.MemoryMB = 768
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 30 * time.Minute
	}
	dir, err := os.MkdirTemp("", "poolvm")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	disks := dir
	if cfg.Disks != "" {
		disks = cfg.Disks
		if err := os.MkdirAll(disks, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	absent := map[int]bool{}
	for _, s := range cfg.Absent {
		absent[s] = true
	}
	kernel, modDir := Kernel(t)
	initrd := Initrd(t, dir, modDir, cfg)

	ns := lab.NewNetns(t)
	br := ns.Bridge(cfg.BridgeAddr)
	tap := ns.Tap(br)
	if cfg.Setup != nil {
		cfg.Setup(t, ns, br)
	}
	var mu sync.Mutex
	donors := map[int]*exec.Cmd{}
	start := func(shelf int) {
		img := filepath.Join(disks, fmt.Sprintf("donor%d.img", shelf))
		if _, err := os.Stat(img); err != nil {
			f, err := os.Create(img)
			if err != nil {
				t.Fatal(err)
			}
			if err := f.Truncate(cfg.DonorBytes); err != nil {
				t.Fatal(err)
			}
			f.Close()
		}
		mu.Lock()
		donors[shelf] = ns.Start("vblade", fmt.Sprint(shelf), "0", br, img)
		mu.Unlock()
	}
	kill := func(shelf int) {
		mu.Lock()
		c := donors[shelf]
		mu.Unlock()
		if c != nil && c.Process != nil {
			_ = syscall.Kill(-c.Process.Pid, syscall.SIGKILL)
			_ = c.Wait()
		}
	}
	for s := 1; s <= cfg.Donors; s++ {
		if !absent[s] {
			start(s)
		}
	}
	// The donors stop with this Run, not at the test's end: a next Run may reuse their files.
	defer func() {
		mu.Lock()
		shelves := make([]int, 0, len(donors))
		for s := range donors {
			shelves = append(shelves, s)
		}
		mu.Unlock()
		for _, s := range shelves {
			kill(s)
		}
	}()

	ctlPath := filepath.Join(dir, "ctl.sock")
	console := filepath.Join(dir, "console.log")
	qemu := ns.Start("qemu-system-x86_64", "-accel", "tcg", "-m", fmt.Sprint(cfg.MemoryMB), "-smp", "1", "-display", "none", "-no-reboot",
		"-kernel", kernel, "-initrd", initrd,
		"-append", "console=ttyS0 quiet no_timer_check panic=-1",
		"-serial", "file:"+console,
		"-chardev", "socket,id=ctl,path="+ctlPath+",server=on,wait=off",
		"-device", "isa-serial,chardev=ctl",
		"-netdev", "tap,id=n0,ifname="+tap+",script=no,downscript=no", "-device", "virtio-net-pci,netdev=n0",
		"-nic", "none")
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(console)
			t.Logf("guest console:\n%s", b)
		}
	})

	var conn net.Conn
	for i := 0; i < 300 && conn == nil; i++ { // QEMU makes the socket within a second or two
		if c, err := net.Dial("unix", ctlPath); err == nil {
			conn = c
		} else {
			time.Sleep(100 * time.Millisecond)
		}
	}
	if conn == nil {
		t.Fatalf("poolvm: guest control socket %s never appeared", ctlPath)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(cfg.Timeout))

	need := func(verb string, shelf int) string {
		switch {
		case verb == "kill":
			kill(shelf)
		case verb == "start":
			start(shelf)
		case cfg.OnNeed != nil:
			if err := cfg.OnNeed(ns, verb, shelf); err != nil {
				return "FAILED " + strings.ReplaceAll(err.Error(), "\n", " | ")
			}
		default:
			t.Fatalf("poolvm: guest asked NEED %s %d", verb, shelf)
		}
		return "DONE"
	}
	crash := func() {
		// A power cut: nothing the guest has not yet written reaches the donors.
		_ = syscall.Kill(-qemu.Process.Pid, syscall.SIGKILL)
		_ = qemu.Process.Kill()
	}
	result := serveControl(t, conn, need, crash, cfg.OnLine)
	done := make(chan error, 1)
	go func() { done <- qemu.Wait() }()
	select {
	case <-done:
	case <-time.After(2 * time.Minute):
		t.Errorf("poolvm: guest did not power off")
	}
	return result
}

// serveControl is the host's end of the control channel: it logs the guest's lines (and
// hands them to onLine), answers NEED requests with what need returns, and ends with what
// followed RESULT, with Crashed once crash has run for NEED crash, or with why the channel
// closed first.
func serveControl(t lab.T, conn io.ReadWriter, need func(verb string, arg int) string, crash func(), onLine func(string)) string {
	t.Helper()
	sc := bufio.NewScanner(conn)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "NEED crash 0":
			crash()
			t.Logf("host: guest killed (SIGKILL) on its request")
			return Crashed
		case strings.HasPrefix(line, "NEED "):
			var verb string
			var arg int
			if _, err := fmt.Sscanf(line, "NEED %s %d", &verb, &arg); err != nil {
				t.Fatalf("poolvm: guest asked %q: %v", line, err)
			}
			answer := need(verb, arg)
			t.Logf("host: %s %d: %s", verb, arg, answer)
			if _, err := io.WriteString(conn, answer+"\n"); err != nil {
				t.Fatal(err)
			}
		case strings.HasPrefix(line, "RESULT "):
			return strings.TrimPrefix(line, "RESULT ")
		case line != "":
			t.Logf("guest: %s", line)
			if onLine != nil {
				onLine(line)
			}
		}
	}
	return fmt.Sprintf("no RESULT from the guest (control channel: %v)", sc.Err())
}

// Kernel returns Debian's kernel and its depmod'ed module tree, downloaded once into the
// shared cache ($DISTONET_CACHE, default /var/cache/distonet/debian).
func Kernel(t lab.T) (kernel, modDir string) {
	t.Helper()
	cache := os.Getenv("DISTONET_CACHE")
	if cache == "" {
		cache = "/var/cache/distonet/debian"
	}
	out, err := exec.Command("apt-cache", "depends", "linux-image-amd64").Output()
	if err != nil {
		t.Fatalf("poolvm: apt-cache depends linux-image-amd64: %v (run apt-get update)", err)
	}
	var pkg string
	for _, l := range strings.Split(string(out), "\n") {
		if f := strings.Fields(l); len(f) == 2 && f[0] == "Depends:" && strings.HasPrefix(f[1], "linux-image-") {
			pkg = f[1]
		}
	}
	if pkg == "" {
		t.Fatalf("poolvm: linux-image-amd64 depends on no kernel package:\n%s", out)
	}
	tree := filepath.Join(cache, "pool-e2e", pkg)
	version := strings.TrimPrefix(pkg, "linux-image-")
	kernel = filepath.Join(tree, "boot", "vmlinuz-"+version)
	modDir = filepath.Join(tree, "lib", "modules", version)
	if _, err := os.Stat(filepath.Join(modDir, "modules.dep")); err == nil {
		return kernel, modDir
	}
	if err := os.MkdirAll(cache, 0o755); err != nil {
		t.Fatal(err)
	}
	debs, _ := filepath.Glob(filepath.Join(cache, pkg+"_*.deb"))
	if len(debs) == 0 {
		cmd := exec.Command("apt-get", "download", "-q", pkg)
		cmd.Dir = cache
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("poolvm: apt-get download %s: %v: %s", pkg, err, out)
		}
		debs, _ = filepath.Glob(filepath.Join(cache, pkg+"_*.deb"))
	}
	if len(debs) == 0 {
		t.Fatalf("poolvm: no %s .deb in %s", pkg, cache)
	}
	tmp := fmt.Sprintf("%s.tmp%d", tree, os.Getpid())
	_ = os.RemoveAll(tmp)
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, argv := range [][]string{{"dpkg", "-x", debs[0], tmp}, {"depmod", "-b", tmp, version}} {
		if out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("poolvm: %v: %v: %s", argv, err, out)
		}
	}
	if err := os.Rename(tmp, tree); err != nil {
		// Another test process won the race: use its tree.
		_ = os.RemoveAll(tmp)
		if _, serr := os.Stat(filepath.Join(modDir, "modules.dep")); serr != nil {
			t.Fatal(err)
		}
	}
	return kernel, modDir
}

const initScript = `#!/bin/sh
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
for m in $(cat /modules/order); do insmod /modules/$m || echo "insmod $m failed"; done
ip link set lo up; ip link set eth0 up
%s
echo 200000 > /proc/sys/dev/raid/speed_limit_min
%s=%s /guest.test
echo "guest program exited $?"
sync
poweroff -f
`

// debFile returns the cached .deb of pkg's candidate version, downloading it once.
func debFile(t lab.T, pkg string) string {
	t.Helper()
	cache := os.Getenv("DISTONET_CACHE")
	if cache == "" {
		cache = "/var/cache/distonet/debian"
	}
	if err := os.MkdirAll(cache, 0o755); err != nil {
		t.Fatal(err)
	}
	if m, _ := filepath.Glob(filepath.Join(cache, pkg+"_*.deb")); len(m) > 0 {
		return m[len(m)-1]
	}
	cmd := exec.Command("apt-get", "download", "-q", pkg)
	cmd.Dir = cache
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("poolvm: apt-get download %s: %v: %s", pkg, err, out)
	}
	m, _ := filepath.Glob(filepath.Join(cache, pkg+"_*.deb"))
	if len(m) == 0 {
		t.Fatalf("poolvm: apt-get download %s left no .deb in %s", pkg, cache)
	}
	return m[len(m)-1]
}

// Initrd packs busybox, Binaries with their libraries, aoetools, Modules and the guest test
// binary into a gzip'd newc cpio under dir.
func Initrd(t lab.T, dir, modDir string, cfg Config) string {
	t.Helper()
	root := filepath.Join(dir, "root")
	for _, d := range []string{"bin", "sbin", "lib", "lib64", "proc", "sys", "dev", "tmp", "mnt", "run", "etc", "modules"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	copyFile := func(src, dst string, mode os.FileMode) {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst, b, mode); err != nil {
			t.Fatal(err)
		}
	}
	bb, err := exec.LookPath("busybox")
	if err != nil {
		t.Fatal(err)
	}
	copyFile(bb, filepath.Join(root, "bin", "busybox"), 0o755)
	for _, a := range []string{"sh", "mount", "umount", "insmod", "sleep", "cat", "echo", "ls", "mkdir", "sync", "grep", "poweroff",
		"sed", "awk", "cut", "tr", "basename", "test", "expr", "sort", "head", "ip", "sha256sum", "dd", "wc", "find", "dirname", "printf", "dmesg"} {
		if err := os.Symlink("busybox", filepath.Join(root, "bin", a)); err != nil {
			t.Fatal(err)
		}
	}
	for _, b := range Binaries {
		copyFile(b, filepath.Join(root, b), 0o755)
		out, err := exec.Command("ldd", b).Output()
		if err != nil {
			t.Fatalf("poolvm: ldd %s: %v", b, err)
		}
		for _, f := range strings.Fields(string(out)) {
			if strings.HasPrefix(f, "/") {
				copyFile(f, filepath.Join(root, f), 0o755)
			}
		}
	}
	if _, err := os.Stat("/etc/mke2fs.conf"); err == nil {
		copyFile("/etc/mke2fs.conf", filepath.Join(root, "etc", "mke2fs.conf"), 0o644)
	}
	for _, s := range []string{"aoe-discover", "aoe-flush", "aoe-stat"} {
		p, err := exec.LookPath(s)
		if err != nil {
			t.Fatal(err)
		}
		copyFile(p, filepath.Join(root, "sbin", s), 0o755)
	}
	if len(cfg.Debs) > 0 {
		stage := filepath.Join(dir, "debs")
		for _, pkg := range cfg.Debs {
			deb := debFile(t, pkg)
			if out, err := exec.Command("dpkg", "-x", deb, stage).CombinedOutput(); err != nil {
				t.Fatalf("poolvm: dpkg -x %s: %v: %s", deb, err, out)
			}
		}
		libdirs, _ := filepath.Glob(filepath.Join(stage, "usr", "lib", "*-linux-gnu"))
		libdirs2, _ := filepath.Glob(filepath.Join(stage, "lib", "*-linux-gnu"))
		ldpath := strings.Join(append(libdirs, libdirs2...), ":")
		for _, b := range cfg.DebBinaries {
			copyFile(filepath.Join(stage, b), filepath.Join(root, b), 0o755)
			ldd := exec.Command("ldd", filepath.Join(stage, b))
			ldd.Env = append(os.Environ(), "LD_LIBRARY_PATH="+ldpath)
			out, err := ldd.Output()
			if err != nil {
				t.Fatalf("poolvm: ldd %s: %v", b, err)
			}
			for _, f := range strings.Fields(string(out)) {
				if !strings.HasPrefix(f, "/") {
					continue
				}
				dst := f
				if rel, err := filepath.Rel(stage, f); err == nil && !strings.HasPrefix(rel, "..") {
					dst = "/" + rel
				}
				copyFile(f, filepath.Join(root, dst), 0o755)
			}
		}
	}
	for p, content := range cfg.Files {
		if err := os.MkdirAll(filepath.Join(root, filepath.Dir(p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, p), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	order, err := moduleOrder(modDir, append(append([]string(nil), Modules...), cfg.ExtraModules...))
	if err != nil {
		t.Fatal(err)
	}
	var list bytes.Buffer
	for _, p := range order {
		copyFile(filepath.Join(modDir, p), filepath.Join(root, "modules", filepath.Base(p)), 0o644)
		fmt.Fprintln(&list, filepath.Base(p))
	}
	if err := os.WriteFile(filepath.Join(root, "modules", "order"), list.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	arg := cfg.GuestArg
	if arg == "" {
		arg = "1"
	}
	addr := ""
	if cfg.GuestAddr != "" {
		addr = "ip addr add " + cfg.GuestAddr + " dev eth0"
	}
	if err := os.WriteFile(filepath.Join(root, "init"), []byte(fmt.Sprintf(initScript, addr, cfg.GuestEnv, arg)), 0o755); err != nil {
		t.Fatal(err)
	}
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Fatal(err)
	}
	build := exec.Command(gobin, "test", "-c", "-o", filepath.Join(root, "guest.test"), ".")
	build.Dir = cfg.Package
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("poolvm: build guest binary: %v: %s", err, out)
	}
	initrd := filepath.Join(dir, "initrd.gz")
	pack := exec.Command("sh", "-c", "find . | cpio -o -H newc --quiet | gzip -1 > "+initrd)
	pack.Dir = root
	if out, err := pack.CombinedOutput(); err != nil {
		t.Fatalf("poolvm: pack initramfs: %v: %s", err, out)
	}
	return initrd
}

// moduleOrder resolves names (as modprobe spells them, _ for -) to .ko paths relative to
// modDir, dependencies first.
func moduleOrder(modDir string, names []string) ([]string, error) {
	dep, err := os.ReadFile(filepath.Join(modDir, "modules.dep"))
	if err != nil {
		return nil, fmt.Errorf("poolvm: %w", err)
	}
	deps := map[string][]string{}
	byName := map[string]string{}
	for _, l := range strings.Split(string(dep), "\n") {
		k, v, ok := strings.Cut(l, ":")
		if !ok {
			continue
		}
		deps[k] = strings.Fields(v)
		byName[strings.ReplaceAll(strings.TrimSuffix(filepath.Base(k), ".ko"), "-", "_")] = k
	}
	var order []string
	seen := map[string]bool{}
	var add func(string)
	add = func(p string) {
		if seen[p] {
			return
		}
		seen[p] = true
		for i := len(deps[p]) - 1; i >= 0; i-- { // modules.dep lists the deepest last
			add(deps[p][i])
		}
		order = append(order, p)
	}
	for _, m := range names {
		p, ok := byName[m]
		if !ok {
			return nil, fmt.Errorf("poolvm: module %s not in %s", m, modDir)
		}
		add(p)
	}
	return order, nil
}

// Control is the guest's end of the control channel (/dev/ttyS1).
type Control struct {
	f         io.Writer
	in        *bufio.Reader
	crashWait time.Duration // how long Crash waits to be killed (default a minute)
}

// OpenControl opens the control port in raw mode (no echo of the host's answers).
func OpenControl() (*Control, error) {
	f, err := os.OpenFile("/dev/ttyS1", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		return nil, fmt.Errorf("poolvm: control port: %w", err)
	}
	if tio, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS); err == nil {
		tio.Iflag &^= unix.ICRNL | unix.IXON | unix.INLCR | unix.IGNCR
		tio.Oflag &^= unix.OPOST
		tio.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
		tio.Cc[unix.VMIN], tio.Cc[unix.VTIME] = 1, 0
		_ = unix.IoctlSetTermios(int(f.Fd()), unix.TCSETS, tio)
	}
	return &Control{f: f, in: bufio.NewReader(f)}, nil
}

// Say prints a line on the console and sends it to the host.
func (c *Control) Say(line string) {
	fmt.Println(line)
	_, _ = io.WriteString(c.f, line+"\n")
}

// Need asks the host to do verb (kill or start donor arg, or a verb the test's OnNeed
// knows) and waits until it has.
func (c *Control) Need(verb string, shelf int) error {
	c.Say(fmt.Sprintf("NEED %s %d", verb, shelf))
	line, err := c.in.ReadString('\n')
	if err != nil || strings.TrimSpace(line) != "DONE" {
		return fmt.Errorf("poolvm: host did not %s %d: %q %v", verb, shelf, strings.TrimSpace(line), err)
	}
	return nil
}

// Crash asks the host to kill the guest at once (SIGKILL to QEMU: a power cut). It returns
// only if the host does not do it within a minute; whatever the guest's other goroutines
// are doing meanwhile goes on, so a crash can land in the middle of their writes.
func (c *Control) Crash() error {
	c.Say("NEED crash 0")
	wait := c.crashWait
	if wait == 0 {
		wait = time.Minute
	}
	time.Sleep(wait)
	return errors.New("poolvm: the host did not kill the guest")
}

// Result reports the outcome: "ok" or the error.
func (c *Control) Result(err error) {
	if err != nil {
		c.Say("RESULT " + strings.ReplaceAll(err.Error(), "\n", " | "))
		return
	}
	c.Say("RESULT ok")
}
