package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/distonet/distonet/images/debian"
	"github.com/distonet/distonet/images/qemu"
	"github.com/distonet/distonet/internal/api"
	"github.com/distonet/distonet/internal/demolab"
)

func newDemoCommand() *cobra.Command {
	var (
		dir      string
		nodes    int
		keep     bool
		webPort  string
		timeout  time.Duration
		password string
	)
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run a demo lab: the appliance in a network namespace PXE-boots QEMU nodes",
		Long: `Build the demo image from Debian's archive (cached), create a boot network in a
network namespace of its own, start 'distonet serve' there, enroll the nodes and PXE-boot
them as QEMU guests (software emulation: a boot takes about a minute). Prints each node's
boot timeline and where to look. Nothing leaves the namespace; everything is removed at the
end (Ctrl-C). Needs root, qemu-system-x86, ipxe-qemu (make demo installs them).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if os.Geteuid() != 0 {
				return errors.New("demo: needs root (network namespaces, tap devices)")
			}
			bin, err := os.Executable()
			if err != nil {
				return err
			}
			if dir == "" {
				if dir, err = os.MkdirTemp("", "distonet-demo-"); err != nil {
					return err
				}
				defer os.RemoveAll(dir)
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			t := &demolab.T{Out: cmd.ErrOrStderr()}
			defer t.Done()
			return runDemo(ctx, t, bin, dir, nodes, keep, webPort, password, timeout, cmd.OutOrStdout())
		},
	}
	f := cmd.Flags()
	f.StringVar(&dir, "dir", "", "keep the lab's config, state and console logs here (default: a temporary directory)")
	f.IntVar(&nodes, "nodes", 2, "how many nodes to boot")
	f.BoolVar(&keep, "keep", isTerminal(os.Stdin), "keep the lab running after the boots until Ctrl-C (default when run from a terminal)")
	f.StringVar(&webPort, "web", "127.0.0.1:8080", "loopback address that forwards to the lab's web UI")
	f.StringVar(&password, "password", "distonet-demo", "web UI admin password for the demo")
	f.DurationVar(&timeout, "timeout", 15*time.Minute, "give up on the boots after this long")
	return cmd
}

func runDemo(ctx context.Context, t *demolab.T, bin, dir string, nodes int, keep bool, webAddr, password string, timeout time.Duration, out io.Writer) (err error) {
	defer func() {
		if r := recover(); r != nil {
			f, ok := r.(demolab.Fatal)
			if !ok {
				panic(r)
			}
			err = f.Err
		}
	}()
	fmt.Fprintln(out, "== DiStoNet demo: building the demo image (Debian kernel + busybox, cached after the first run)")
	rootfs, err := demolab.Rootfs(ctx, out)
	if err != nil {
		return fmt.Errorf("demo image: %w", err)
	}
	d := demolab.New(t, bin, dir, out)
	fmt.Fprintf(out, "== lab: namespace %s, boot network %s on bridge %s\n", d.NS.Name(), demolab.Address, d.Bridge)
	if err := d.ImportImage("demo", rootfs); err != nil {
		return err
	}
	type node struct{ name, mac string }
	var ns []node
	for i := 1; i <= nodes; i++ {
		n := node{fmt.Sprintf("demo%d", i), fmt.Sprintf("52:54:00:d5:00:%02x", i)}
		if _, err := d.CLI("node", "add", n.name, "--mac", n.mac, "--image", "demo", "--group", "room-a", "--donate", "none"); err != nil {
			return err
		}
		ns = append(ns, n)
	}
	setPW := d.NS.Command(ctx, bin, "admin", "passwd", "--config", d.CfgPath)
	setPW.Stdin = strings.NewReader(password + "\n")
	if raw, err := setPW.CombinedOutput(); err != nil {
		return fmt.Errorf("admin passwd: %w: %s", err, raw)
	}
	if err := d.Start(); err != nil {
		return err
	}
	fmt.Fprintf(out, "== appliance running (log: %s)\n", d.ServeLog.Name())
	if webAddr != "" {
		if ln, err := d.Proxy(ctx, webAddr); err == nil {
			fmt.Fprintf(out, "== web UI: http://%s/  (admin / %s)\n", ln.Addr(), password)
		} else {
			fmt.Fprintf(out, "== web UI proxy not started: %v\n", err)
		}
	}

	bootCtx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var wg sync.WaitGroup
	errs := make([]error, len(ns))
	for i, n := range ns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			logf, err := os.Create(filepath.Join(dir, n.name+".console.log"))
			if err != nil {
				errs[i] = err
				return
			}
			defer logf.Close()
			fmt.Fprintf(out, "== %s (%s): powering on, console in %s\n", n.name, n.mac, logf.Name())
			vm, err := d.BootNode(bootCtx, n.name, n.mac, qemu.Options{Serial: logf})
			if err != nil {
				errs[i] = err
				return
			}
			re := regexp.MustCompile(debian.InitMarker + ` hostname=(\S+) root=(\S+)\r?\n`)
			m, err := vm.WaitFor(re, timeout)
			if err != nil {
				errs[i] = fmt.Errorf("%s: %w (console: %s)", n.name, err, logf.Name())
				return
			}
			fmt.Fprintf(out, "== %s: the image's init runs after %s: hostname=%s root=%s\n", n.name, vm.Elapsed().Round(100*time.Millisecond), m[1], m[2])
		}()
	}
	wg.Wait()
	for _, n := range ns {
		raw, err := d.CLI("node", "show", n.name, "--json")
		if err != nil {
			fmt.Fprintln(out, err)
			continue
		}
		var v api.NodeView
		if json.Unmarshal([]byte(raw), &v) == nil && v.LastBoot != nil {
			fmt.Fprintf(out, "\n%s: %s, %s, image %s\n", v.Name, v.State, v.IP, v.Image)
			for _, st := range v.LastBoot.Stages {
				fmt.Fprintf(out, "  %+7.2fs  %-8s %s\n", st.Since.Seconds(), st.Stage, st.Message)
			}
		}
	}
	fmt.Fprintf(out, "\n== look around: ip netns exec %s %s --config %s node list\n", d.NS.Name(), bin, d.CfgPath)
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if keep {
		fmt.Fprintln(out, "== the lab keeps running; Ctrl-C removes it")
		<-ctx.Done()
	}
	return nil
}
