// Command guestcheck is the init of the QEMU guest in nfsroot's kernel test: it loads the
// NFS client modules, mounts the export with the options the node init uses (no
// portmapper), runs checks through the Linux NFS client and prints one line per result on
// the console for the host to compare. It is built by the test, never shipped.
package main

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

func say(format string, args ...any) { fmt.Printf(format+"\n", args...) }

func must(what string, err error) {
	if err != nil {
		say("FAIL %s: %v", what, err)
		poweroff()
	}
}

func poweroff() {
	unix.Sync()
	_ = unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	select {}
}

func loadModules() {
	f, err := os.Open("/modules.order")
	must("modules.order", err)
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		name := strings.TrimSpace(sc.Text())
		if name == "" {
			continue
		}
		m, err := os.Open("/lib/modules/" + name + ".ko")
		must("open module "+name, err)
		if err := unix.FinitModule(int(m.Fd()), "", 0); err != nil && !errors.Is(err, unix.EEXIST) {
			must("load module "+name, err)
		}
		m.Close()
	}
}

func busybox(args ...string) {
	out, err := exec.Command("/bin/busybox", args...).CombinedOutput()
	must(fmt.Sprintf("busybox %v: %s", args, out), err)
}

func mountNFS(server, path, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	opts := "vers=3,proto=tcp,port=2049,mountport=2049,mountproto=tcp,nolock,addr=" + server
	var err error
	for range 30 {
		if err = unix.Mount(server+":"+path, dir, "nfs", unix.MS_RDONLY, opts); err == nil {
			return nil
		}
		time.Sleep(time.Second)
	}
	return err
}

func sum(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return "error:" + errName(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "error:" + errName(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func errName(err error) string {
	if err == nil {
		return "ok"
	}
	var errno unix.Errno
	if errors.As(err, &errno) {
		return unix.ErrnoName(errno)
	}
	return err.Error()
}

func main() {
	_ = os.MkdirAll("/proc", 0o755)
	_ = os.MkdirAll("/sys", 0o755)
	_ = os.MkdirAll("/dev", 0o755)
	must("mount proc", unix.Mount("proc", "/proc", "proc", 0, ""))
	must("mount sys", unix.Mount("sys", "/sys", "sysfs", 0, ""))
	_ = unix.Mount("dev", "/dev", "devtmpfs", 0, "")
	loadModules()
	busybox("ip", "link", "set", "lo", "up")
	busybox("ip", "link", "set", "eth0", "up")
	busybox("ip", "addr", "add", "10.41.9.2/24", "dev", "eth0")
	say("GUEST UP")
	must("mount", mountNFS("10.41.9.1", "/images/test", "/mnt"))
	say("MOUNTED")

	// Files, modes and checksums as the kernel sees them.
	paths, err := os.ReadFile("/checks")
	must("checks", err)
	for _, p := range strings.Fields(string(paths)) {
		var st unix.Stat_t
		if err := unix.Lstat("/mnt/"+p, &st); err != nil {
			say("STAT %s error:%s", p, errName(err))
			continue
		}
		kind := "file"
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFDIR:
			kind = "dir"
		case unix.S_IFLNK:
			kind = "link"
		}
		line := fmt.Sprintf("STAT %s %s %o %d %d ino=%d", p, kind, st.Mode&0o7777, st.Uid, st.Size, st.Ino)
		if kind == "file" {
			line += " sha=" + sum("/mnt/"+p)
		}
		if kind == "link" {
			t, _ := os.Readlink("/mnt/" + p)
			line += " target=" + t
		}
		say("%s", line)
	}
	n := 0
	_ = filepath.WalkDir("/mnt", func(string, fs.DirEntry, error) error { n++; return nil })
	say("WALK %d", n)
	err = os.WriteFile("/mnt/etc/new", []byte("x"), 0o644)
	say("CREATE %s", errName(err))
	err = os.Remove("/mnt/etc/issue")
	say("REMOVE %s", errName(err))
	err = os.Mkdir("/mnt/newdir", 0o755)
	say("MKDIR %s", errName(err))
	say("ESCAPE %s", sum("/mnt/etc/escape-rel"))

	// A file kept open across the server's restart and an image update.
	f, err := os.Open("/mnt/etc/issue")
	must("open issue", err)
	say("PHASE1 DONE")
	// The host restarts the server and publishes version 2 now; the hard mount waits.
	time.Sleep(20 * time.Second)
	// Forget cached pages and attributes: what follows must go to the new server with
	// the handles taken from the old one.
	must("drop caches", os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0o200))
	buf := make([]byte, 100)
	k, err := f.ReadAt(buf, 0)
	if err != nil && err != io.EOF {
		say("AFTER open-fd error:%s", errName(err))
	} else {
		say("AFTER open-fd %q", buf[:k])
	}
	data, err := os.ReadFile("/mnt/etc/issue")
	if err != nil {
		say("AFTER path error:%s", errName(err))
	} else {
		say("AFTER path %q", data)
	}
	say("AFTER busybox %s", sum("/mnt/bin/busybox"))
	must("mount again", mountNFS("10.41.9.1", "/images/test", "/mnt2"))
	data, err = os.ReadFile("/mnt2/etc/issue")
	if err != nil {
		say("NEWMOUNT error:%s", errName(err))
	} else {
		say("NEWMOUNT %q", data)
	}

	// Permission checks as uid 1000.
	must("setgid", unix.Setgid(1000))
	must("setuid", unix.Setuid(1000))
	_, err = os.ReadFile("/mnt/root/secret")
	say("UID1000 secret %s", errName(err))
	_, err = os.ReadFile("/mnt/home/user/f")
	say("UID1000 own %s", errName(err))
	say("DONE")
	poweroff()
}
