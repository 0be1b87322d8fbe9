package iscsit

import (
	"bytes"
	"encoding/binary"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/distonet/distonet/internal/lab"
)

// startChild runs the server as a separate process (this test binary in child mode) inside
// the server namespace, under strace counting fdatasync calls, and returns its PID.
func (n *testNet) startChild(t *testing.T, spec TargetSpec, straceLog string) (int, *exec.Cmd) {
	t.Helper()
	pidfile := filepath.Join(t.TempDir(), "pid")
	args := []string{"-f", "-qq", "-e", "trace=fdatasync", "-o", straceLog, "env",
		childEnv + "=1", "ISCSIT_PIDFILE=" + pidfile, "ISCSIT_ADDR=" + n.srvIP + ":3260",
		"ISCSIT_IQN=" + spec.IQN, "ISCSIT_FILE=" + spec.LUNs[0],
		"ISCSIT_USER=" + spec.CHAPUser, "ISCSIT_SECRET=" + spec.CHAPSecret, os.Args[0]}
	// Not lab's Start: its Pdeathsig fires when the OS thread that forked the child exits,
	// and the lab's namespace threads do exit; strace would die before flushing its log.
	cmd := exec.Command("ip", append([]string{"netns", "exec", n.srvNS.Name(), "strace"}, args...)...)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("child server output:\n%s", out.String())
		}
	})
	for range 200 {
		b, err := os.ReadFile(pidfile)
		if err == nil && len(b) > 0 {
			pid, _ := strconv.Atoi(string(b))
			// Listening yet?
			if err := n.cliNS.Do(func() error {
				c, err := net.DialTimeout("tcp", n.srvIP+":3260", time.Second)
				if err == nil {
					c.Close()
				}
				return err
			}); err == nil {
				return pid, cmd
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatal("child server did not start")
	return 0, nil
}

// block makes the content of a test block: its LBA and a generation, repeated.
func block(lba uint64, gen uint32) []byte {
	b := make([]byte, blockSize)
	for i := 0; i < blockSize; i += 12 {
		binary.BigEndian.PutUint64(b[i:], lba)
		if i+12 <= blockSize {
			binary.BigEndian.PutUint32(b[i+8:], gen)
		}
	}
	return b
}

// TestCrashSafety streams writes, each made durable by SYNCHRONIZE CACHE or FUA, kills the
// server with SIGKILL in the middle, restarts it and checks that every acknowledged write
// reads back. strace shows that each acknowledgement was preceded by an fdatasync.
func TestCrashSafety(t *testing.T) {
	lab.Require(t, "strace")
	n := newTestNet(t)
	spec := TargetSpec{IQN: IQNForNode("crash"), LUNs: []string{newVolume(t, 256<<20)}, CHAPUser: "crash", CHAPSecret: "crash-secret-012345"}
	o := loginOpts{initiator: initA, target: spec.IQN, user: spec.CHAPUser, secret: spec.CHAPSecret}
	straceLog := filepath.Join(t.TempDir(), "strace.log")
	pid, tracer := n.startChild(t, spec, straceLog)
	in, err := n.dial(t, o)
	if err != nil {
		t.Fatal(err)
	}
	type ack struct {
		lba uint64
		gen uint32
	}
	var acked []ack
	syncs := 0
	killAfter := 150 + int(time.Now().UnixNano()%100)
	done := make(chan struct{})
	var werr error
	go func() {
		defer close(done)
		for i := 0; i < 5000; i++ {
			if i == killAfter {
				// Kill from the writer's own rhythm so the kill lands between a write and
				// its flush as often as after the flush.
				go syscall.Kill(pid, syscall.SIGKILL)
			}
			lba := uint64(i*7) % (256 << 20 / blockSize)
			gen := uint32(i + 1)
			fua := i%3 == 0
			if werr = in.write16(lba, block(lba, gen), fua); werr != nil {
				return
			}
			if !fua {
				if werr = in.syncCache(); werr != nil {
					return
				}
				syncs++
			} else {
				syncs++
			}
			acked = append(acked, ack{lba, gen})
		}
	}()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("writer did not stop after the kill")
	}
	if werr == nil {
		t.Fatal("the server was never killed")
	}
	t.Logf("%d writes acknowledged before SIGKILL (%v)", len(acked), werr)
	if len(acked) < killAfter-1 {
		t.Fatalf("only %d acknowledgements before the kill at %d", len(acked), killAfter)
	}
	// strace exits (and flushes its log) once its tracee is gone.
	waited := make(chan error, 1)
	go func() { waited <- tracer.Wait() }()
	select {
	case <-waited:
	case <-time.After(10 * time.Second):
		t.Fatal("strace did not exit after the server was killed")
	}
	n.startChild(t, spec, straceLog+".2")
	in2, err := n.dial(t, o)
	if err != nil {
		t.Fatal(err)
	}
	latest := map[uint64]uint32{}
	for _, a := range acked {
		latest[a.lba] = a.gen
	}
	for lba, gen := range latest {
		got, err := in2.read16(lba, 1)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, block(lba, gen)) {
			t.Errorf("LBA %d: acknowledged generation %d did not read back", lba, gen)
		}
	}
	log, err := os.ReadFile(straceLog)
	if err != nil {
		t.Fatalf("strace log: %v", err)
	}
	calls := strings.Count(string(log), "fdatasync(")
	if calls < len(acked) {
		t.Errorf("%d fdatasync calls for %d acknowledged durable writes; strace log:\n%.2000s", calls, len(acked), log)
	}
	t.Logf("%d fdatasync calls for %d acknowledged writes", calls, len(acked))
}
