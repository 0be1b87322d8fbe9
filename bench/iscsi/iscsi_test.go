// Package iscsibench compares DiStoNet's iSCSI target (overlay/iscsit) with tgt (tgtd) on
// this machine, in the same run, through the same clients: qemu-img bench for sequential
// 1 MiB reads and writes at queue depth 16, iscsi-perf for random 4 KiB reads at queue
// depth 32, and iscsi-test-cu for conformance. Both targets serve a file-backed LUN with
// CHAP from their own network namespace; the clients run in another one, over a veth pair.
// It prints a table of figures and ratios (ours / tgt).
//
// It is slow and noisy on shared cores, so it runs only when DISTONET_BENCH=1 (make bench).
package iscsibench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/distonet/distonet/internal/lab"
	"github.com/distonet/distonet/overlay/iscsit"
)

func TestMain(m *testing.M) {
	_ = lab.Sweep()
	os.Exit(m.Run())
}

const (
	diskSize  = 1 << 30
	seqCount  = 1024 // 1 MiB requests: one pass over the disk
	perfTime  = 8 * time.Second
	rounds    = 3
	chapUser  = "bench"
	chapPass  = "bench-secret-0123456"
	initiator = "iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-test"
)

type figures struct {
	readMBs, writeMBs, iops float64
}

type peer struct {
	name string
	url  string // iscsi:// URL of the LUN
}

func TestBenchVsTgt(t *testing.T) {
	if os.Getenv("DISTONET_BENCH") != "1" {
		t.Skip("benchmark: set DISTONET_BENCH=1 (make bench)")
	}
	lab.Require(t, "tgtd", "tgtadm", "qemu-img", "iscsi-perf", "iscsi-test-cu")
	srvNS, cliNS := lab.NewNetns(t), lab.NewNetns(t)
	lab.Veth(t, srvNS, "10.54.0.1/24", cliNS, "10.54.0.2/24")
	dir := t.TempDir()

	// tgt: its own control port, target 1, LUN 1 (tgt keeps LUN 0 for its controller).
	tgtFile, ourFile := filepath.Join(dir, "tgt.img"), filepath.Join(dir, "ours.img")
	mkfile(t, tgtFile)
	mkfile(t, ourFile)
	const ctl = "13555"
	srvNS.Start("tgtd", "-f", "-C", ctl, "--iscsi", "portal=10.54.0.1:3261")
	tgtIQN := "iqn.2026-01.org.distonet.bench:tgt"
	tgtadm := func(args ...string) {
		t.Helper()
		var err error
		for range 50 { // tgtd needs a moment to open its control socket
			if _, err = srvNS.Exec("tgtadm", append([]string{"-C", ctl, "--lld", "iscsi"}, args...)...); err == nil {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Fatal(err)
	}
	tgtadm("--op", "new", "--mode", "target", "--tid", "1", "-T", tgtIQN)
	tgtadm("--op", "new", "--mode", "logicalunit", "--tid", "1", "--lun", "1", "-b", tgtFile)
	tgtadm("--op", "bind", "--mode", "target", "--tid", "1", "-I", "ALL")
	tgtadm("--op", "new", "--mode", "account", "--user", chapUser, "--password", chapPass)
	tgtadm("--op", "bind", "--mode", "account", "--tid", "1", "--user", chapUser)

	// Ours, in-process, listening inside the server namespace.
	srv, err := iscsit.NewServer(iscsit.Config{Addr: "10.54.0.1:3260"}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ourIQN := iscsit.IQNForNode("bench")
	if err := srv.AddTarget(iscsit.TargetSpec{IQN: ourIQN, LUNs: []string{ourFile}, CHAPUser: chapUser,
		CHAPSecret: chapPass}); err != nil {
		t.Fatal(err)
	}
	ln, err := srvNS.Listen("tcp", "10.54.0.1:3260")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() { _ = srv.ServeListener(ctx, ln) }()
	t.Cleanup(func() { cancel(); _ = srv.Close() })

	peers := []peer{
		{"tgt", fmt.Sprintf("iscsi://%s%%%s@10.54.0.1:3261/%s/1", chapUser, chapPass, tgtIQN)},
		{"distonet", fmt.Sprintf("iscsi://%s%%%s@10.54.0.1:3260/%s/0", chapUser, chapPass, ourIQN)},
	}
	for _, p := range peers {
		waitReady(t, cliNS, p.url)
	}
	all := map[string][]figures{}
	for round := range rounds {
		for _, p := range peers {
			f := figures{
				writeMBs: qemuBench(t, cliNS, p.url, true),
				readMBs:  qemuBench(t, cliNS, p.url, false),
				iops:     perf(t, cliNS, p.url),
			}
			t.Logf("round %d %s: read %.0f MB/s, write %.0f MB/s, %.0f IOPS", round+1, p.name, f.readMBs, f.writeMBs, f.iops)
			all[p.name] = append(all[p.name], f)
		}
	}
	cu := map[string][2]string{}
	for _, p := range peers {
		cu[p.name] = [2]string{conformance(t, cliNS, p.url, "SCSI"), conformance(t, cliNS, p.url, "iSCSI")}
	}
	med := func(name string, get func(figures) float64) float64 {
		var v []float64
		for _, f := range all[name] {
			v = append(v, get(f))
		}
		slices.Sort(v)
		return v[len(v)/2]
	}
	var b strings.Builder
	w := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(w, "figure (median of %d)\ttgt\tdistonet\tratio\t\n", rounds)
	for _, row := range []struct {
		name string
		get  func(figures) float64
	}{
		{"seq read 1 MiB QD16 (MB/s)", func(f figures) float64 { return f.readMBs }},
		{"seq write 1 MiB QD16 (MB/s)", func(f figures) float64 { return f.writeMBs }},
		{"rand read 4 KiB QD32 (IOPS)", func(f figures) float64 { return f.iops }},
	} {
		a, o := med("tgt", row.get), med("distonet", row.get)
		fmt.Fprintf(w, "%s\t%.0f\t%.0f\t%.2fx\t\n", row.name, a, o, o/a)
	}
	fmt.Fprintf(w, "iscsi-test-cu SCSI passed\t%s\t%s\t\t\n", cu["tgt"][0], cu["distonet"][0])
	fmt.Fprintf(w, "iscsi-test-cu iSCSI passed\t%s\t%s\t\t\n", cu["tgt"][1], cu["distonet"][1])
	w.Flush()
	t.Logf("\n%s", b.String())
	fmt.Print(b.String())
}

// mkfile writes the whole disk with a non-zero pattern: every block is allocated, so no
// initiator can skip reading holes (QEMU answers known-unmapped blocks itself when the
// target reports LBPRZ, which ours does and tgt does not).
func mkfile(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := bytes.Repeat([]byte{0x5a}, 4<<20)
	for off := int64(0); off < diskSize; off += int64(len(chunk)) {
		if _, err := f.WriteAt(chunk, off); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
}

// waitReady waits until an INQUIRY through the URL succeeds (tgtd and the page cache need a
// moment after the disks were written).
func waitReady(t *testing.T, ns *lab.Netns, url string) {
	t.Helper()
	var err error
	for range 60 {
		if _, err = ns.Exec("iscsi-inq", url); err == nil {
			return
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Fatalf("target not ready: %v", err)
}

var runCompleted = regexp.MustCompile(`Run completed in ([0-9.]+) seconds`)

// qemuBench runs one sequential pass of 1 MiB requests, 16 in flight, and returns MB/s.
func qemuBench(t *testing.T, ns *lab.Netns, url string, write bool) float64 {
	t.Helper()
	args := []string{"bench", "-f", "raw", "-t", "none", "-n", "-c", strconv.Itoa(seqCount), "-d", "16", "-s", "1M"}
	if write {
		args = append(args, "-w", "--pattern=165")
	}
	var out string
	var err error
	for attempt := range 3 { // tgtd sometimes drops the first login after a quiet spell
		if out, err = ns.Exec("qemu-img", append(args, url)...); err == nil {
			break
		}
		t.Logf("attempt %d: %v", attempt+1, err)
		time.Sleep(time.Second)
	}
	if err != nil {
		t.Fatal(err)
	}
	m := runCompleted.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no timing in qemu-img output: %s", out)
	}
	secs, _ := strconv.ParseFloat(m[1], 64)
	return float64(seqCount) * (1 << 20) / 1e6 / secs
}

var iopsAverage = regexp.MustCompile(`iops average ([0-9]+)`)

// perf runs iscsi-perf random 4 KiB reads with 32 in flight for perfTime and returns the
// average IOPS it reports when interrupted.
func perf(t *testing.T, ns *lab.Netns, url string) float64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), perfTime+20*time.Second)
	defer cancel()
	cmd := ns.Command(ctx, "iscsi-perf", "-i", initiator, "-m", "32", "-b", "8", "-r", url)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(perfTime)
	_ = cmd.Process.Signal(os.Interrupt)
	_ = cmd.Wait()
	m := iopsAverage.FindAllStringSubmatch(out.String(), -1)
	if len(m) == 0 {
		t.Fatalf("no IOPS in iscsi-perf output: %s", out.String())
	}
	v, _ := strconv.ParseFloat(m[len(m)-1][1], 64)
	return v
}

// conformance runs one iscsi-test-cu family and returns "passed/total".
func conformance(t *testing.T, ns *lab.Netns, url, family string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	out, _ := ns.Command(ctx, "iscsi-test-cu", "-d", "-n", "--test="+family, url).CombinedOutput()
	for _, l := range strings.Split(string(out), "\n") {
		f := strings.Fields(l)
		if len(f) == 6 && f[0] == "tests" {
			return f[3] + "/" + f[1]
		}
	}
	t.Errorf("no iscsi-test-cu summary for %s: %s", family, out)
	return "?"
}
