package nfsroot

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"
)

// BenchmarkIndex200k measures the inode index of a rootfs of 200,000 files (the bound the
// design promises): memory held, build time, and the cost of turning a handle's inode back
// into a path. It only runs with -bench (building the tree takes a while).
func BenchmarkIndex200k(b *testing.B) {
	index200k.once.Do(func() { index200k.tr, index200k.stats = buildIndex200k(b) })
	tr := index200k.tr
	if tr == nil {
		b.Fatal("index not built")
	}
	files := len(tr.inos)
	b.ResetTimer()
	for i := range b.N {
		ino := tr.inos[(i*7919)%files]
		j, ok := tr.lookupIno(ino)
		if !ok || tr.pathOf(j) == "" {
			b.Fatal("lookup failed")
		}
	}
	b.ReportMetric(float64(files), "files")
	b.ReportMetric(float64(tr.memBytes())/float64(files), "index-bytes/file")
	b.ReportMetric(index200k.stats.heapMiB, "heap-MiB")
	b.ReportMetric(index200k.stats.build.Seconds(), "build-s")
}

var index200k struct {
	once  sync.Once
	tr    *tree
	stats indexStats
}

type indexStats struct {
	heapMiB float64
	build   time.Duration
}

func buildIndex200k(b *testing.B) (*tree, indexStats) {
	root, err := os.MkdirTemp("", "index200k-")
	if err != nil {
		b.Fatal(err)
	}
	// Not b.TempDir: the tree outlives this benchmark run; the files go once built.
	defer os.RemoveAll(root)
	const dirs, perDir = 400, 500
	for d := range dirs {
		dir := filepath.Join(root, fmt.Sprintf("usr/share/pkg%03d/sub", d))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			b.Fatal(err)
		}
		for i := range perDir {
			f, err := os.Create(filepath.Join(dir, fmt.Sprintf("file-%04d.txt", i)))
			if err != nil {
				b.Fatal(err)
			}
			f.Close()
		}
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	start := time.Now()
	tr, err := buildTree(Export{Path: "/images/big", Root: root, Version: 1})
	if err != nil {
		b.Fatal(err)
	}
	build := time.Since(start)
	runtime.GC()
	runtime.ReadMemStats(&after)
	if files := len(tr.inos); files < dirs*perDir {
		b.Fatalf("indexed %d files", files)
	}
	return tr, indexStats{heapMiB: float64(after.HeapAlloc-before.HeapAlloc) / (1 << 20), build: build}
}
