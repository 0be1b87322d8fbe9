package nfsroot

import (
	"io/fs"
	"path/filepath"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	nfs "github.com/willscott/go-nfs"
)

// The Prometheus series count mounts by result, calls by procedure and bytes read.
func TestMetrics(t *testing.T) {
	t.Parallel()
	im := newImage(t, "metrics\n")
	ex := newFakeExports()
	ex.publish(Export{Path: exportPath, Root: im.root, Version: 1})
	reg := prometheus.NewRegistry()
	s := serveLoopback(t, Config{Metrics: reg}, ex)

	c := dialNFS(t, nil, s.Addr().String(), 0, 0)
	root := c.mustMount(exportPath)
	if st, _, _ := c.mount("/nope"); st != nfs.MountStatusErrNoEnt {
		t.Fatalf("mount /nope: %d", st)
	}
	st, data := c.readAll(c.walk(root, "etc/issue"), 4096)
	if st != nfs.NFSStatusOk {
		t.Fatal(st)
	}
	for _, tc := range []struct {
		name string
		c    prometheus.Collector
		want float64
	}{
		{"mounts ok", s.m.mounts.WithLabelValues("ok"), 1},
		{"mounts noent", s.m.mounts.WithLabelValues("noent"), 1},
		{"lookups", s.m.calls.WithLabelValues("nfs", "lookup"), 2},
		{"reads", s.m.calls.WithLabelValues("nfs", "read"), 1},
		{"read bytes", s.m.readBytes, float64(len(data))},
		{"indexed files", s.m.indexFiles, float64(countFiles(t, im.root))},
	} {
		if got := value(t, tc.c); got != tc.want {
			t.Errorf("%s = %v, want %v", tc.name, got, tc.want)
		}
	}
	if fams, err := reg.Gather(); err != nil || len(fams) < 5 {
		t.Errorf("registry gathers %d families: %v", len(fams), err)
	}
}

// value reads a single counter or gauge.
func value(t *testing.T, c prometheus.Collector) float64 {
	t.Helper()
	ch := make(chan prometheus.Metric, 1)
	c.Collect(ch)
	var m dto.Metric
	if err := (<-ch).Write(&m); err != nil {
		t.Fatal(err)
	}
	if m.Counter != nil {
		return m.Counter.GetValue()
	}
	return m.Gauge.GetValue()
}

// countFiles counts the names under root, root included (the image has no hard links).
func countFiles(t *testing.T, root string) int {
	n := 0
	if err := filepath.WalkDir(root, func(string, fs.DirEntry, error) error { n++; return nil }); err != nil {
		t.Fatal(err)
	}
	return n
}
