// Package nodeinit is the node side of a diskless boot: the distonet binary running as PID 1
// in the initramfs the appliance builds. It loads the kernel modules, brings up the boot NIC
// by DHCP, fetches the node's boot config with its one-time token, mounts the image read-only
// over NFS, logs in to the node's iSCSI volume with CHAP (kernel iscsi_tcp over netlink),
// stacks an overlayfs of the two, writes the node's runtime files, starts the relogin watcher
// and the donation agent so that they survive switch_root, and hands over to the image's
// /sbin/init. Every step prints one console line; failures retry with backoff and, once the
// image is reachable, offer its busybox as a rescue shell. What the agent does is not here.
package nodeinit

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/distonet/distonet/images/nodeinit/iscsi"
	"github.com/distonet/distonet/internal/bootconfig"
)

// Paths the node init leaves for the processes that run after switch_root.
const (
	RunDir         = "/run/distonet"
	BootConfigFile = RunDir + "/boot.json"    // the boot config (0600: it holds secrets)
	BinaryCopy     = RunDir + "/bin/distonet" // this binary, kept from the initramfs
	ISCSIStateFile = RunDir + "/iscsi.json"   // the kernel session, for the relogin watcher
	LeaseFile      = RunDir + "/lease.json"   // the DHCP lease, for its renewal
	LowerDir       = RunDir + "/lower"        // the image over NFS (read-only)
	UpperMount     = RunDir + "/upper"        // the node's volume (ext4 on iSCSI)
	newRoot        = "/newroot"
)

// DefaultOverlayOptions keep overlayfs from recording anything that ties the upper layer to
// one version of the image, so a new image version can be stacked on an existing upper.
const DefaultOverlayOptions = "index=off,xino=off,redirect_dir=off,metacopy=off"

// DefaultNFSOptions mount the image without mount.nfs, statd or a local portmapper.
const DefaultNFSOptions = "vers=3,proto=tcp,mountproto=tcp,nolock,ro"

// ISCSIDName is argv[0] of the relogin watcher, AgentArgs the agent's arguments.
const ISCSIDName = "distonet-iscsid"

// AgentArgs are the arguments StartAgent passes to the binary.
var AgentArgs = []string{"agent", "--boot-config", BootConfigFile}

// Config tunes Run; the zero value is what a node uses.
type Config struct {
	Console io.Writer // default os.Stdout (the kernel's /dev/console)
	// NoAgent skips StartAgent (a binary without the agent command, tests).
	NoAgent bool
	// MaxTries before a failing step offers the rescue shell (default 5).
	MaxTries int
}

// Dispatch runs the node-side role this binary was started for and does not return:
// the node init (PID 1 as /init), modprobe (the kernel's request_module inside the
// initramfs) or the iSCSI relogin watcher (argv[0] distonet-iscsid). It returns false when
// the binary runs as the ordinary CLI. main calls it first thing.
func Dispatch() bool {
	switch base := filepath.Base(os.Args[0]); {
	// PID 1 started as /init is the initramfs; PID 1 under another name is the appliance
	// itself run as a container's entry point, which must stay the CLI.
	case os.Getpid() == 1 && base == "init":
		Main()
	case base == "modprobe":
		os.Exit(Modprobe(os.Args[1:]))
	case strings.TrimPrefix(base, "@") == ISCSIDName:
		os.Exit(RunISCSID(os.Args[1:]))
	default:
		return false
	}
	return true
}

// Main is the node init; it never returns.
func Main() { Run(Config{}) }

type node struct {
	cfg     Config
	con     io.Writer
	start   time.Time
	cmd     Cmdline
	rep     *Reporter
	boot    bootconfig.Config
	client  *http.Client
	session *iscsi.Session
	// loggedIn: the session's connection is up, so a retry only rescans and mounts.
	loggedIn bool
	nic      *net.Interface
	lease    Lease
}

// Run performs the boot; it ends by exec'ing the image's /sbin/init.
func Run(c Config) {
	if c.Console == nil {
		c.Console = os.Stdout
	}
	if c.MaxTries == 0 {
		c.MaxTries = 5
	}
	n := &node{cfg: c, con: c.Console, start: time.Now(),
		client: &http.Client{Timeout: 10 * time.Second}}
	n.mountBase()
	n.say("init", "distonet node init starting (kernel up %.1fs)", Uptime())
	n.run()
}

func (n *node) say(stage, format string, a ...any) {
	fmt.Fprintf(n.con, "distonet-init: %s: %s\n", stage, fmt.Sprintf(format, a...))
}

// mountBase mounts the API filesystems the rest needs; a failure here is printed and the
// boot goes on, since the step that needs the mount will say what is missing.
func (n *node) mountBase() {
	for _, m := range []struct{ src, dst, fs, opts string }{
		{"devtmpfs", "/dev", "devtmpfs", "mode=0755"},
		{"proc", "/proc", "proc", ""},
		{"sysfs", "/sys", "sysfs", ""},
		{"tmpfs", "/run", "tmpfs", "mode=0755,size=50%"},
	} {
		_ = os.MkdirAll(m.dst, 0o755)
		if err := unix.Mount(m.src, m.dst, m.fs, unix.MS_NOSUID, m.opts); err != nil && !errors.Is(err, unix.EBUSY) {
			n.say("init", "mount %s on %s failed: %v", m.fs, m.dst, err)
		}
	}
	_ = os.MkdirAll(RunDir, 0o700)
}

func (n *node) run() {
	ctx := context.Background()
	b, err := os.ReadFile("/proc/cmdline")
	if err == nil {
		n.cmd, err = ParseCmdline(string(b))
	}
	if err != nil {
		n.fatal("cmdline", fmt.Errorf("%w: the iPXE script must pass %s= and %s=", err, bootconfig.ArgServer, bootconfig.ArgToken))
	}
	n.rep = &Reporter{Client: n.client, Server: n.cmd.Server, Token: n.cmd.Token}
	kernelUp := Uptime()

	n.step(ctx, "modules", "", n.loadModules)
	n.waitEntropy()
	n.step(ctx, "network", "", n.network)
	n.rep.Report(bootconfig.StageKernel, true, fmt.Sprintf("node init started %.1fs after kernel start", kernelUp))
	n.step(ctx, "config", "", n.fetchConfig)
	n.step(ctx, "nfs", bootconfig.StageNFS, n.mountNFS)
	n.step(ctx, "iscsi", bootconfig.StageISCSI, n.loginISCSI)
	n.step(ctx, "overlay", bootconfig.StageOverlay, n.mountOverlay)
	n.step(ctx, "root", "", n.writeRuntimeFiles)
	if n.cmd.Rescue {
		n.rescue("distonet.rescue on the command line")
	}
	n.switchRoot()
}

// step runs fn until it succeeds, printing one line per attempt, with backoff; after
// MaxTries failures it offers the rescue shell, then keeps trying.
func (n *node) step(ctx context.Context, name, stage string, fn func(context.Context) (string, error)) {
	backoff := time.Second
	for try := 1; ; try++ {
		t0 := time.Now()
		sctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		stop := n.stillWorking(name, t0)
		msg, err := fn(sctx)
		stop()
		cancel()
		if err == nil {
			n.say(name, "%s (%.1fs)", msg, time.Since(t0).Seconds())
			if stage != "" {
				n.rep.Report(stage, true, msg)
			}
			return
		}
		n.say(name, "FAILED (try %d): %v", try, err)
		if stage != "" {
			n.rep.Report(stage, false, err.Error())
		}
		if errors.Is(err, ErrRefused) {
			n.say(name, "the appliance refused this boot token; rebooting in 30s to get a new one")
			time.Sleep(30 * time.Second)
			n.reboot()
		}
		if try%n.cfg.MaxTries == 0 {
			n.rescue(fmt.Sprintf("%s failed %d times", name, try))
		}
		n.say(name, "retrying in %s", backoff)
		time.Sleep(backoff)
		if backoff < 30*time.Second {
			backoff *= 2
		}
	}
}

// stillWorking prints a line every 20 s while a step runs, so a step blocked in the kernel
// (an NFS mount of a server that does not answer, say) is never a silent hang.
func (n *node) stillWorking(name string, t0 time.Time) (stop func()) {
	done := make(chan struct{})
	go func() {
		tick := time.NewTicker(20 * time.Second)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				n.say(name, "still working (%.0fs)", time.Since(t0).Seconds())
			}
		}
	}()
	return func() { close(done) }
}

func (n *node) fatal(name string, err error) {
	n.say(name, "FAILED: %v", err)
	n.rescue(err.Error())
	n.say(name, "cannot continue; rebooting in 30s")
	time.Sleep(30 * time.Second)
	n.reboot()
}

func (n *node) reboot() {
	unix.Sync()
	_ = unix.Reboot(unix.LINUX_REBOOT_CMD_RESTART)
	select {} // PID 1 must not exit: the kernel would panic
}

// rescue runs a shell from the image (static busybox) if the image is mounted, and returns
// when the shell exits.
func (n *node) rescue(why string) {
	for _, sh := range []string{LowerDir + "/bin/busybox", LowerDir + "/usr/bin/busybox"} {
		if _, err := os.Stat(sh); err != nil {
			continue
		}
		n.say("rescue", "%s: starting a shell (%s sh); exit it to retry", why, sh)
		cmd := exec.Command(sh, "sh")
		cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
		cmd.Env = []string{"PATH=" + LowerDir + "/bin:" + LowerDir + "/sbin:" + LowerDir + "/usr/bin", "PS1=distonet-rescue# "}
		if err := cmd.Run(); err != nil {
			n.say("rescue", "shell: %v", err)
		}
		return
	}
	n.say("rescue", "%s: no rescue shell yet (the image is not mounted); retrying", why)
}

func (n *node) loadModules(ctx context.Context) (string, error) {
	dir := ModulesDir()
	names, err := LoadList(dir)
	if err != nil {
		return "none in the initramfs (" + err.Error() + ")", nil
	}
	l, err := NewModuleLoader(dir)
	if err != nil {
		return "", err
	}
	count, skipped, err := l.Coldplug(names)
	if err != nil {
		// Some modules failing (a CPU without crc32c-intel, say) does not stop the boot;
		// the step that needs one says so.
		n.say("modules", "some failed: %v", err)
	}
	msg := fmt.Sprintf("loaded %d for kernel %s", count, filepath.Base(dir))
	if len(skipped) > 0 {
		msg += " (no device for " + strings.Join(skipped, " ") + ")"
	}
	if slow := l.Slowest(3); slow != "" {
		msg += "; slowest " + slow
	}
	return msg, nil
}

// waitEntropy waits for the kernel's random pool, which DHCP's transaction ids need, and
// says so on the console instead of failing DHCP in a loop. RDRAND or a hardware RNG make it
// instant; a VM without either can take minutes.
func (n *node) waitEntropy() {
	buf := make([]byte, 1)
	if _, err := unix.Getrandom(buf, unix.GRND_NONBLOCK); err == nil {
		return
	}
	t0 := time.Now()
	n.say("random", "waiting for the kernel's random number generator (no RDRAND or hardware RNG?)")
	if _, err := unix.Getrandom(buf, 0); err != nil {
		n.say("random", "getrandom: %v", err)
		return
	}
	n.say("random", "ready (%.1fs)", time.Since(t0).Seconds())
}

func (n *node) network(ctx context.Context) (string, error) {
	fctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	_ = linkUp("lo")
	ifi, err := findNIC(fctx, n.cmd.MAC)
	if err != nil {
		return "", err
	}
	if err := linkUp(ifi.Name); err != nil {
		return "", err
	}
	lease, err := dhcp(ctx, ifi.Name, nil)
	if err != nil {
		return "", err
	}
	if err := configure(ifi, lease); err != nil {
		return "", err
	}
	n.nic, n.lease = ifi, lease
	if b, err := json.Marshal(lease); err == nil {
		_ = os.WriteFile(LeaseFile, b, 0o600)
	}
	ones, _ := lease.Mask.Size()
	return fmt.Sprintf("%s (%s) is %s/%d from DHCP server %s", ifi.Name, ifi.HardwareAddr, lease.IP, ones, lease.Server), nil
}

func (n *node) fetchConfig(ctx context.Context) (string, error) {
	cfg, raw, err := FetchConfig(ctx, n.client, n.cmd.Server, n.cmd.Token)
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(BootConfigFile, raw, 0o600); err != nil {
		return "", fmt.Errorf("save %s: %w", BootConfigFile, err)
	}
	n.boot = cfg
	if n.cmd.Debug {
		// Everything but the secrets.
		n.say("config", "nfs %s:%s options %q; iscsi %s %s LUN %d as %s (CHAP user %q); overlay %q; donate %s",
			cfg.NFS.Server, cfg.NFS.Path, NFSMountData(cfg.NFS), cfg.ISCSI.Portal, cfg.ISCSI.Target, cfg.ISCSI.LUN,
			cfg.ISCSI.Initiator, cfg.ISCSI.CHAPUser, cfg.Overlay.Options, cfg.Donate.Mode)
	}
	if cfg.AgentToken != "" {
		// The boot token may be single-use; the agent token lasts the whole boot.
		n.rep.Token = cfg.AgentToken
	}
	return fmt.Sprintf("node %s from %s", cfg.Node, n.cmd.Server), nil
}

// NFSMountData returns the kernel's text mount options for the boot config's export.
func NFSMountData(c bootconfig.NFS) string {
	opts := c.Options
	if opts == "" {
		opts = DefaultNFSOptions
	}
	if !strings.Contains(","+opts, ",addr=") {
		// The kernel's text mount needs the server address: there is no mount.nfs to resolve it.
		opts += ",addr=" + c.Server
	}
	return opts
}

func (n *node) mountNFS(ctx context.Context) (string, error) {
	if err := os.MkdirAll(LowerDir, 0o755); err != nil {
		return "", err
	}
	src := n.boot.NFS.Server + ":" + n.boot.NFS.Path
	if err := unix.Mount(src, LowerDir, "nfs", unix.MS_RDONLY, NFSMountData(n.boot.NFS)); err != nil {
		return "", fmt.Errorf("mount %s: %w", src, err)
	}
	return "mounted " + src + " read-only", nil
}

func (n *node) loginISCSI(ctx context.Context) (string, error) {
	c := n.boot.ISCSI
	if n.session == nil {
		k, err := iscsi.OpenKernel()
		if err != nil {
			return "", err
		}
		s, err := iscsi.NewSession(k, iscsi.Target{Portal: c.Portal, Name: c.Target, LUN: c.LUN,
			Initiator: c.Initiator, CHAPUser: c.CHAPUser, CHAPSecret: c.CHAPSecret})
		if err != nil {
			k.Close()
			return "", err
		}
		n.session = s
	}
	if !n.loggedIn {
		if err := n.session.Connect(ctx); err != nil {
			return "", err
		}
		n.loggedIn = true
	}
	if err := n.session.Scan(); err != nil {
		return "", err
	}
	dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	dev, err := n.session.Device(dctx)
	if err != nil {
		return "", err
	}
	if err := n.session.Save(ISCSIStateFile); err != nil {
		return "", fmt.Errorf("save session state: %w", err)
	}
	if err := os.MkdirAll(UpperMount, 0o755); err != nil {
		return "", err
	}
	if err := unix.Mount(dev, UpperMount, "ext4", unix.MS_NOATIME, ""); err != nil {
		return "", fmt.Errorf("mount %s (LUN %d) as ext4: %w (the appliance formats volumes at enrollment)", dev, c.LUN, err)
	}
	return fmt.Sprintf("logged in to %s at %s as %s; LUN %d is %s, mounted", c.Target, c.Portal, c.Initiator, c.LUN, dev), nil
}

func (n *node) mountOverlay(ctx context.Context) (string, error) {
	upper, work := UpperMount+"/upper", UpperMount+"/work"
	for _, d := range []string{upper, work, newRoot} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return "", err
		}
	}
	opts := n.boot.Overlay.Options
	if opts == "" {
		opts = DefaultOverlayOptions
	}
	data := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s,%s", LowerDir, upper, work, opts)
	if err := unix.Mount("overlay", newRoot, "overlay", 0, data); err != nil {
		return "", fmt.Errorf("mount overlay (%s): %w", data, err)
	}
	return "root is overlay of the image (NFS) and the node's volume (" + opts + ")", nil
}

// MachineID is the node's stable /etc/machine-id: derived from its name, so the same node
// gets the same id even after its volume is reset.
func MachineID(node string) string {
	h := sha256.Sum256([]byte("distonet machine-id " + node))
	return hex.EncodeToString(h[:16])
}

func (n *node) hostname() string {
	if n.boot.Hostname != "" {
		return n.boot.Hostname
	}
	return n.boot.Node
}

func (n *node) writeRuntimeFiles(ctx context.Context) (string, error) {
	host := n.hostname()
	for _, d := range []string{"etc", "dev", "proc", "sys", "run", "tmp"} {
		if err := os.MkdirAll(filepath.Join(newRoot, d), 0o755); err != nil {
			return "", err
		}
	}
	files := map[string]string{
		"etc/hostname": host + "\n",
		"etc/fstab": "# Written by the DiStoNet node init at every boot: / is assembled before the\n" +
			"# image's init runs (overlay of the image over NFS and the node's iSCSI volume).\n" +
			"overlay / overlay defaults 0 0\nproc /proc proc defaults 0 0\nsysfs /sys sysfs defaults 0 0\n",
	}
	if b, err := os.ReadFile(filepath.Join(newRoot, "etc/machine-id")); err != nil || len(strings.TrimSpace(string(b))) != 32 {
		files["etc/machine-id"] = MachineID(n.boot.Node) + "\n"
	}
	if _, err := os.Stat(filepath.Join(newRoot, "etc/hosts")); err != nil {
		files["etc/hosts"] = "127.0.0.1\tlocalhost\n127.0.1.1\t" + host + "\n"
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(newRoot, name), []byte(content), 0o644); err != nil {
			return "", fmt.Errorf("write /%s: %w", name, err)
		}
	}
	// Debian links /etc/mtab to the kernel's table; programs that read it without checking
	// (rpc.mountd on a pool head dereferences a NULL setmntent) crash on an image without it.
	if _, err := os.Lstat(filepath.Join(newRoot, "etc/mtab")); errors.Is(err, os.ErrNotExist) {
		if err := os.Symlink("../proc/self/mounts", filepath.Join(newRoot, "etc/mtab")); err != nil {
			return "", fmt.Errorf("link /etc/mtab: %w", err)
		}
	}
	if err := unix.Sethostname([]byte(host)); err != nil {
		return "", fmt.Errorf("set hostname: %w", err)
	}
	if err := keepBinary(); err != nil {
		return "", fmt.Errorf("keep the node binary at %s: %w", BinaryCopy, err)
	}
	return fmt.Sprintf("hostname %s, /etc/fstab, /etc/machine-id written", host), nil
}

// keptDir holds a hard link to /init inside the initramfs; it is bind-mounted at
// /run/distonet/bin and spared when the initramfs is emptied, so the agent and the root
// keeper run from it after switch_root without copying tens of megabytes (which costs
// seconds on an emulated CPU).
const keptDir = "/.distonet"

func keepBinary() error {
	dir := filepath.Dir(BinaryCopy)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if err := os.MkdirAll(keptDir, 0o700); err != nil {
		return err
	}
	kept := filepath.Join(keptDir, filepath.Base(BinaryCopy))
	if err := os.Link("/init", kept); err == nil || errors.Is(err, os.ErrExist) {
		if err := unix.Mount(keptDir, dir, "", unix.MS_BIND, ""); err == nil {
			return nil
		}
	}
	// Fall back to a copy in /run.
	return copyFile("/init", BinaryCopy)
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o700)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// switchRoot moves the API filesystems into the new root, frees the initramfs, makes the
// overlay the root, starts the watcher and the agent there, and execs the image's init.
func (n *node) switchRoot() {
	for _, d := range []string{"/dev", "/proc", "/sys", "/run"} {
		if err := unix.Mount(d, newRoot+d, "", unix.MS_MOVE, ""); err != nil {
			n.fatal("switch_root", fmt.Errorf("move %s: %w", d, err))
		}
	}
	if err := unix.Chdir(newRoot); err != nil {
		n.fatal("switch_root", err)
	}
	var st unix.Stat_t
	if err := unix.Stat("/", &st); err == nil {
		removeTree("/", st.Dev)
	}
	if err := unix.Mount(".", "/", "", unix.MS_MOVE, ""); err != nil {
		n.fatal("switch_root", fmt.Errorf("move the new root to /: %w", err))
	}
	if err := unix.Chroot("."); err != nil {
		n.fatal("switch_root", fmt.Errorf("chroot: %w", err))
	}
	_ = unix.Chdir("/")
	// A leading '@' in argv[0] marks a root-storage daemon: systemd spares it in its final
	// killing spree at shutdown, so the root disk can still recover until it is unmounted.
	if err := startHelper("@"+ISCSIDName, ISCSIStateFile); err != nil {
		n.say("iscsi", "relogin watcher not started: %v (an appliance restart will stall this node)", err)
	}
	if !n.cfg.NoAgent {
		if err := StartAgent(); err != nil {
			n.say("agent", "not started: %v", err)
		}
	}
	msg := fmt.Sprintf("handing over to /sbin/init of the image, %.1fs after kernel start", Uptime())
	n.say("ready", "%s", msg)
	n.rep.Report(bootconfig.StageReady, true, msg)
	n.rep.Flush(2 * time.Second)
	env := []string{"HOME=/", "TERM=linux", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	err := unix.Exec("/sbin/init", []string{"/sbin/init"}, env)
	n.say("switch_root", "exec /sbin/init: %v", err)
	n.rescue("the image has no usable /sbin/init")
	n.reboot()
}

// removeTree deletes the initramfs's files (on device dev) so their memory is freed; other
// filesystems (the new root) are left alone.
func removeTree(dir string, dev uint64) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		p := filepath.Join(dir, e.Name())
		var st unix.Stat_t
		if unix.Lstat(p, &st) != nil || st.Dev != dev || p == keptDir {
			continue
		}
		if e.IsDir() {
			removeTree(p, dev)
			_ = unix.Rmdir(p)
		} else {
			_ = unix.Unlink(p)
		}
	}
}

// startHelper starts this binary (its copy in /run) under another name, in its own session
// so the image's shell job control never signals it.
func startHelper(argv0 string, args ...string) error {
	cmd := &exec.Cmd{Path: BinaryCopy, Args: append([]string{argv0}, args...),
		Stdout: os.Stdout, Stderr: os.Stderr, SysProcAttr: &unix.SysProcAttr{Setsid: true}}
	return cmd.Start()
}

// StartAgent starts `<binary> agent --boot-config /run/distonet/boot.json` after switch_root;
// the agent's body is the CLI's.
func StartAgent() error {
	return startHelper(BinaryCopy, AgentArgs...)
}

// RunISCSID is the node's root keeper after switch_root: it reads the session the init
// logged in and logs in again whenever the kernel reports the connection lost (an appliance
// restart), so the root's I/O resumes instead of failing after the recovery timeout; and it
// renews the DHCP lease the root's NFS and iSCSI connections run over.
func RunISCSID(args []string) int {
	file := ISCSIStateFile
	if len(args) > 0 {
		file = args[0]
	}
	// The watcher must outlive memory pressure: without it the root disk cannot recover.
	_ = os.WriteFile("/proc/self/oom_score_adj", []byte("-1000"), 0o644)
	say := func(format string, a ...any) {
		fmt.Fprintf(os.Stdout, "distonet-iscsid: "+format+"\n", a...)
	}
	ctx := context.Background()
	if b, err := os.ReadFile(LeaseFile); err == nil {
		var l Lease
		if err := json.Unmarshal(b, &l); err == nil && l.Ifname != "" {
			go keepLease(ctx, l, say)
		}
	}
	k, err := iscsi.OpenKernel()
	if err != nil {
		say("%v", err)
		return 1
	}
	s, err := iscsi.LoadSession(k, file)
	if err != nil {
		say("%v", err)
		return 1
	}
	err = s.Watch(ctx, func(msg string, err error) {
		if err != nil {
			say("session %d: %s: %v", s.SID, msg, err)
			return
		}
		say("session %d: %s", s.SID, msg)
	})
	say("stopped: %v", err)
	return 1
}
