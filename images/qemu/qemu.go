// Package qemu runs a QEMU guest for end-to-end boot tests and benchmarks: direct kernel
// boot or network boot through the iPXE ROM, a NIC on a tap device (inside a network
// namespace when asked), the serial console captured with a timestamp per line, and helpers
// to wait for console output and to type into the console. It knows nothing of DiStoNet.
package qemu

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Options describe a guest.
type Options struct {
	Binary  string // default qemu-system-x86_64
	Netns   string // run QEMU inside this network namespace (where the tap is)
	Kernel  string // direct kernel boot when set
	Initrd  string
	Append  string
	Tap     string // tap device for the NIC; no NIC when empty
	MAC     string // the NIC's MAC (default QEMU's)
	NIC     string // device model, default virtio-net-pci (e1000 for a non-iPXE PXE ROM path)
	NetBoot bool   // boot from the network with the NIC's option ROM (-boot n)
	// ROM overrides the NIC's option ROM file (NetBoot); empty keeps QEMU's default
	// (ipxe-qemu's iPXE). Without NetBoot the ROM is left out: direct boot does not need it.
	ROM      string
	Disks    []string // raw disk images attached as virtio disks
	MemoryMB int      // default 512
	CPUs     int      // default 1
	Accel    string   // default tcg (KVM is not available on the test machines)
	// NoRNG leaves out the virtio RNG. With it the guest kernel's random pool is ready at
	// once; under TCG without it, the first getrandom() of a boot can block for minutes.
	NoRNG  bool
	Serial io.Writer
	Extra  []string // more QEMU arguments
}

// Line is one console line with the time since Start.
type Line struct {
	At   time.Duration
	Text string
}

// VM is a running guest.
type VM struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	start time.Time

	mu     sync.Mutex
	cond   *sync.Cond
	out    strings.Builder
	cursor int
	lines  []Line
	cur    strings.Builder
	exited bool
	err    error
}

// Args returns QEMU's command line for opts (without the binary).
func Args(o Options) []string {
	mem, cpus, accel := o.MemoryMB, o.CPUs, o.Accel
	if mem == 0 {
		mem = 512
	}
	if cpus == 0 {
		cpus = 1
	}
	if accel == "" {
		accel = "tcg"
	}
	args := []string{
		"-machine", "pc,graphics=off", "-accel", accel, "-m", strconv.Itoa(mem), "-smp", strconv.Itoa(cpus),
		"-nodefaults", "-no-user-config", "-display", "none", "-serial", "stdio", "-monitor", "none",
	}
	if !o.NoRNG {
		args = append(args, "-device", "virtio-rng-pci")
	}
	if o.Kernel != "" {
		args = append(args, "-kernel", o.Kernel)
		if o.Initrd != "" {
			args = append(args, "-initrd", o.Initrd)
		}
		if o.Append != "" {
			args = append(args, "-append", o.Append)
		}
	}
	if o.Tap != "" {
		nic := o.NIC
		if nic == "" {
			nic = "virtio-net-pci"
		}
		dev := nic + ",netdev=n0"
		if o.MAC != "" {
			dev += ",mac=" + o.MAC
		}
		switch {
		case o.NetBoot && o.ROM != "":
			dev += ",romfile=" + o.ROM
		case !o.NetBoot:
			dev += ",romfile="
		}
		args = append(args, "-netdev", "tap,id=n0,ifname="+o.Tap+",script=no,downscript=no", "-device", dev)
	}
	if o.NetBoot {
		args = append(args, "-boot", "n")
	}
	for i, d := range o.Disks {
		args = append(args, "-drive", fmt.Sprintf("file=%s,format=raw,if=virtio,index=%d", d, i))
	}
	return append(args, o.Extra...)
}

// Start launches the guest. The guest is killed when ctx ends or Close is called.
func Start(ctx context.Context, o Options) (*VM, error) {
	bin := o.Binary
	if bin == "" {
		bin = "qemu-system-x86_64"
	}
	argv := append([]string{bin}, Args(o)...)
	if o.Netns != "" {
		argv = append([]string{"ip", "netns", "exec", o.Netns}, argv...)
	}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	vm := &VM{cmd: cmd, stdin: stdin}
	vm.cond = sync.NewCond(&vm.mu)
	vm.start = time.Now()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	go vm.read(stdout, o.Serial, func() string { return stderr.String() })
	return vm, nil
}

func (vm *VM) read(r io.Reader, tee io.Writer, stderr func() string) {
	br := bufio.NewReader(r)
	buf := make([]byte, 4096)
	for {
		n, err := br.Read(buf)
		if n > 0 {
			chunk := buf[:n]
			if tee != nil {
				_, _ = tee.Write(chunk)
			}
			vm.mu.Lock()
			vm.out.Write(chunk)
			now := time.Since(vm.start)
			for _, c := range string(chunk) {
				if c == '\n' {
					vm.lines = append(vm.lines, Line{At: now, Text: strings.TrimRight(vm.cur.String(), "\r")})
					vm.cur.Reset()
					continue
				}
				vm.cur.WriteRune(c)
			}
			vm.cond.Broadcast()
			vm.mu.Unlock()
		}
		if err != nil {
			break
		}
	}
	werr := vm.cmd.Wait()
	vm.mu.Lock()
	vm.exited = true
	if werr != nil {
		vm.err = fmt.Errorf("qemu exited: %w: %s", werr, strings.TrimSpace(stderr()))
	} else {
		vm.err = errors.New("qemu exited")
	}
	vm.cond.Broadcast()
	vm.mu.Unlock()
}

// WaitFor waits until the console output after the previous match matches re, and returns
// the submatches. Output before the previous match is not searched again.
func (vm *VM) WaitFor(re *regexp.Regexp, timeout time.Duration) ([]string, error) {
	deadline := time.Now().Add(timeout)
	timer := time.AfterFunc(timeout, func() {
		vm.mu.Lock()
		vm.cond.Broadcast()
		vm.mu.Unlock()
	})
	defer timer.Stop()
	vm.mu.Lock()
	defer vm.mu.Unlock()
	for {
		rest := vm.out.String()[vm.cursor:]
		if loc := re.FindStringSubmatchIndex(rest); loc != nil {
			m := make([]string, len(loc)/2)
			for i := range m {
				if loc[2*i] >= 0 {
					m[i] = rest[loc[2*i]:loc[2*i+1]]
				}
			}
			vm.cursor += loc[1]
			return m, nil
		}
		if vm.exited {
			return nil, fmt.Errorf("waiting for %q: %w", re, vm.err)
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("waiting for %q: no match within %s", re, timeout)
		}
		vm.cond.Wait()
	}
}

// Send types s on the serial console.
func (vm *VM) Send(s string) error {
	_, err := io.WriteString(vm.stdin, s)
	return err
}

// Output returns the whole console output so far.
func (vm *VM) Output() string {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	return vm.out.String()
}

// Lines returns the complete console lines so far with their arrival times.
func (vm *VM) Lines() []Line {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	return append([]Line(nil), vm.lines...)
}

// Elapsed is the time since Start.
func (vm *VM) Elapsed() time.Duration { return time.Since(vm.start) }

// Close kills the guest and waits for QEMU to exit.
func (vm *VM) Close() error {
	if vm.cmd.Process != nil {
		_ = syscall.Kill(-vm.cmd.Process.Pid, syscall.SIGKILL)
	}
	vm.mu.Lock()
	for !vm.exited {
		vm.cond.Wait()
	}
	vm.mu.Unlock()
	return nil
}
