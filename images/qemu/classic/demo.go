package classic

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/distonet/distonet/images/debian"
	"github.com/distonet/distonet/images/initramfs"
)

// Demo is a built demo image and the initramfs for it.
type Demo struct {
	Rootfs string
	Kernel string
	Initrd string
	Init   string // the node init binary inside the initramfs
}

// BuildDemo builds the Debian demo rootfs, a static node init binary (the package named
// by initPkg, default the standalone distonet-init command), and the initramfs, under dir.
func BuildDemo(t testing.TB, dir, initPkg string) Demo {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	d := Demo{Rootfs: filepath.Join(dir, "rootfs"), Init: filepath.Join(dir, "distonet-init"), Initrd: filepath.Join(dir, "initramfs.img")}
	var progress bytes.Buffer
	if err := debian.Build(ctx, debian.Options{Dir: d.Rootfs, CacheDir: debian.CacheDirForTests(), Progress: &progress}); err != nil {
		t.Fatalf("demo image: %v\n%s", err, progress.String())
	}
	if initPkg == "" {
		initPkg = "github.com/distonet/distonet/images/nodeinit/cmd/distonet-init"
	}
	gobin, err := exec.LookPath("go")
	if err != nil {
		gobin = "/usr/local/go/bin/go"
	}
	build := exec.CommandContext(ctx, gobin, "build", "-trimpath", "-ldflags=-s -w", "-o", d.Init, initPkg)
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build node init: %v: %s", err, out)
	}
	kernels, _ := filepath.Glob(filepath.Join(d.Rootfs, "boot/vmlinuz-*"))
	mods, _ := filepath.Glob(filepath.Join(d.Rootfs, "lib/modules/*"))
	if len(kernels) != 1 || len(mods) != 1 {
		t.Fatalf("demo image has kernels %v and module trees %v, want one each", kernels, mods)
	}
	d.Kernel = kernels[0]
	// DISTONET_INITRAMFS_COMPRESSION=zstd tries the other compressor the kernel supports.
	res, err := initramfs.BuildFile(ctx, d.Initrd, initramfs.Options{Binary: d.Init, ModulesDir: mods[0],
		Compression: os.Getenv("DISTONET_INITRAMFS_COMPRESSION")})
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(d.Initrd); err == nil {
		t.Logf("initramfs: %d modules for %s, missing %v, %d KiB", len(res.Modules), res.KernelVersion, res.Missing, fi.Size()>>10)
	}
	return d
}
