package iscsibench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/distonet/distonet/internal/lab"
	"github.com/distonet/distonet/overlay/iscsit"
)

// TestBenchManyVolumes serves 32 node volumes at once and checks the total: 32 iscsi-perf
// clients (random 4 KiB reads, one in flight each), each on its own volume, against the same
// 32 clients all on one volume. Same client work, so the ratio says what serving many
// volumes (targets, files, sessions) costs.
func TestBenchManyVolumes(t *testing.T) {
	if os.Getenv("DISTONET_BENCH") != "1" {
		t.Skip("benchmark: set DISTONET_BENCH=1 (make bench)")
	}
	lab.Require(t, "iscsi-perf")
	const volumes = 32
	srvNS, cliNS := lab.NewNetns(t), lab.NewNetns(t)
	lab.Veth(t, srvNS, "10.54.1.1/24", cliNS, "10.54.1.2/24")
	srv, err := iscsit.NewServer(iscsit.Config{Addr: "10.54.1.1:3260"}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	var urls []string
	for i := range volumes {
		name := fmt.Sprintf("n%02d", i)
		path := filepath.Join(dir, name+".img")
		f, err := os.Create(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := f.Truncate(64 << 20); err != nil {
			t.Fatal(err)
		}
		f.Close()
		secret := "secret-of-" + name + "-0123"
		if err := srv.AddTarget(iscsit.TargetSpec{IQN: iscsit.IQNForNode(name), LUNs: []string{path}, CHAPUser: name, CHAPSecret: secret}); err != nil {
			t.Fatal(err)
		}
		urls = append(urls, fmt.Sprintf("iscsi://%s%%%s@10.54.1.1:3260/%s/0", name, secret, iscsit.IQNForNode(name)))
	}
	ln, err := srvNS.Listen("tcp", "10.54.1.1:3260")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() { _ = srv.ServeListener(ctx, ln) }()
	t.Cleanup(func() { cancel(); _ = srv.Close() })

	same := make([]string, volumes)
	for i := range same {
		same[i] = urls[0]
	}
	one := perfMany(t, cliNS, same, 1)
	many := perfMany(t, cliNS, urls, 1)
	msg := fmt.Sprintf("random 4 KiB reads, 32 clients with 1 in flight each: all on 1 volume %.0f IOPS, on %d volumes %.0f IOPS (ratio %.2fx)",
		one, volumes, many, many/one)
	t.Log(msg)
	fmt.Println(msg)
}

// perfMany runs one iscsi-perf per URL at once, each with depth requests in flight, and
// returns the sum of their average IOPS.
func perfMany(t *testing.T, ns *lab.Netns, urls []string, depth int) float64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), perfTime+30*time.Second)
	defer cancel()
	type run struct {
		out strings.Builder
		err error
	}
	runs := make([]*run, len(urls))
	var wg sync.WaitGroup
	for i, u := range urls {
		r := &run{}
		runs[i] = r
		cmd := ns.Command(ctx, "iscsi-perf", "-i", initiator, "-m", strconv.Itoa(depth), "-b", "8", "-r", u)
		cmd.Stdout, cmd.Stderr = &r.out, &r.out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			time.Sleep(perfTime)
			_ = cmd.Process.Signal(os.Interrupt)
			r.err = cmd.Wait()
		}()
	}
	wg.Wait()
	total := 0.0
	for _, r := range runs {
		m := iopsAverage.FindAllStringSubmatch(r.out.String(), -1)
		if len(m) == 0 {
			t.Fatalf("no IOPS in iscsi-perf output (%v): %s", r.err, r.out.String())
		}
		v, _ := strconv.ParseFloat(m[len(m)-1][1], 64)
		total += v
	}
	return total
}
