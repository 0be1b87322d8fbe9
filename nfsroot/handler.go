package nfsroot

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	billy "github.com/go-git/go-billy/v5"
	nfs "github.com/willscott/go-nfs"
	"golang.org/x/sys/unix"
)

// errStale is returned for a handle that names no file any more (or never did).
var errStale = errors.New("stale file handle")

type treeKey struct {
	id      uint64
	version uint64
}

type treeEntry struct {
	ready   chan struct{}
	t       *tree
	err     error
	lastUse atomic.Int64
}

// handler is the go-nfs Handler of the server: it answers MOUNT, makes stable handles
// out of (export, version, inode) and turns them back into files through each version's
// inode index. It holds no per-handle state, so it has no handle limit and nothing to
// lose on restart.
type handler struct {
	exports Exports
	allowed func(net.Addr) bool
	log     *slog.Logger
	onBuild func(t *tree, d time.Duration)

	mu    sync.RWMutex
	trees map[treeKey]*treeEntry
	paths map[uint64]string // export id -> export path
}

var _ nfs.Handler = (*handler)(nil)

func newHandler(exports Exports, allowed func(net.Addr) bool, log *slog.Logger) *handler {
	return &handler{exports: exports, allowed: allowed, log: log, trees: map[treeKey]*treeEntry{}, paths: map[uint64]string{}}
}

// tree returns the index of an export version, building it on first use; concurrent
// callers wait for the one build.
func (h *handler) tree(exp Export) (*tree, error) {
	key := treeKey{exportID(exp.Path), exp.Version}
	h.mu.Lock()
	e, ok := h.trees[key]
	if !ok {
		e = &treeEntry{ready: make(chan struct{})}
		h.trees[key] = e
		h.paths[key.id] = exp.Path
	}
	h.mu.Unlock()
	e.lastUse.Store(time.Now().UnixNano())
	if ok {
		<-e.ready
		return e.t, e.err
	}
	start := time.Now()
	e.t, e.err = buildTree(exp)
	close(e.ready)
	if e.err != nil {
		h.mu.Lock()
		delete(h.trees, key) // let a later request retry
		h.mu.Unlock()
		h.log.Error("nfs export index failed", "stage", "nfs", "export", exp.Path, "version", exp.Version, "err", e.err)
		return nil, e.err
	}
	d := time.Since(start)
	h.log.Info("nfs export indexed", "stage", "nfs", "export", exp.Path, "version", exp.Version,
		"files", len(e.t.inos), "index_bytes", e.t.memBytes(), "duration", d)
	if h.onBuild != nil {
		h.onBuild(e.t, d)
	}
	return e.t, nil
}

// treeOf finds the tree a handle points into.
func (h *handler) treeOf(fh fileHandle) (*tree, error) {
	key := treeKey{fh.ExportID, fh.Version}
	h.mu.RLock()
	e, ok := h.trees[key]
	path, known := h.paths[fh.ExportID]
	h.mu.RUnlock()
	if ok {
		e.lastUse.Store(time.Now().UnixNano())
		<-e.ready
		if e.err == nil {
			return e.t, nil
		}
	}
	if !known {
		// After a restart: learn the export paths again.
		for _, exp := range h.exports.List() {
			if exportID(exp.Path) == fh.ExportID {
				path, known = exp.Path, true
				h.mu.Lock()
				h.paths[fh.ExportID] = exp.Path
				h.mu.Unlock()
				break
			}
		}
		if !known {
			return nil, fmt.Errorf("%w: unknown export %x", errStale, fh.ExportID)
		}
	}
	exp, ok := h.exports.Version(path, fh.Version)
	if !ok {
		return nil, fmt.Errorf("%w: %s version %d is gone", errStale, path, fh.Version)
	}
	return h.tree(exp)
}

// resolve turns a handle into its tree, index entry and path.
func (h *handler) resolve(raw []byte) (*tree, uint32, string, error) {
	var fh fileHandle
	if err := fh.UnmarshalBinary(raw); err != nil {
		return nil, 0, "", fmt.Errorf("%w: %w", errStale, err)
	}
	t, err := h.treeOf(fh)
	if err != nil {
		return nil, 0, "", err
	}
	if fh.Gen != t.gen {
		return nil, 0, "", fmt.Errorf("%w: %s version %d was re-created", errStale, t.exp.Path, t.exp.Version)
	}
	i, ok := t.lookupIno(fh.Ino)
	if !ok {
		return nil, 0, "", fmt.Errorf("%w: inode %d not in %s version %d", errStale, fh.Ino, t.exp.Path, t.exp.Version)
	}
	return t, i, t.pathOf(i), nil
}

func (t *tree) handle(ino uint64) []byte {
	return fileHandle{ExportID: t.id, Version: t.exp.Version, Gen: t.gen, Ino: ino}.appendTo(make([]byte, 0, handleLen))
}

// expire drops the indexes of versions nobody used for idle, except current versions.
func (h *handler) expire(idle time.Duration) {
	cutoff := time.Now().Add(-idle).UnixNano()
	h.mu.Lock()
	defer h.mu.Unlock()
	for key, e := range h.trees {
		select {
		case <-e.ready:
		default:
			continue
		}
		if e.lastUse.Load() > cutoff || e.t == nil {
			continue
		}
		if cur, ok := h.exports.Export(e.t.exp.Path); ok && cur.Version == e.t.exp.Version {
			continue
		}
		// The root fd closes when the last request holding the tree lets go of it.
		delete(h.trees, key)
		h.log.Info("nfs export index dropped", "stage", "nfs", "export", e.t.exp.Path, "version", e.t.exp.Version)
	}
}

// mountTarget finds the export and the directory a MOUNT path names: the export itself or
// a directory below it, reached without symlinks or "..".
func (h *handler) mountTarget(dirpath string) (*tree, string, nfs.MountStatus) {
	if !strings.HasPrefix(dirpath, "/") || len(dirpath) > nfs.MntPathLen {
		return nil, "", nfs.MountStatusErrNoEnt
	}
	clean := strings.TrimRight(dirpath, "/")
	for prefix := clean; prefix != ""; prefix = prefix[:strings.LastIndexByte(prefix, '/')] {
		exp, ok := h.exports.Export(prefix)
		if !ok {
			continue
		}
		sub := strings.TrimPrefix(clean[len(prefix):], "/")
		rel := "."
		if sub != "" {
			for _, part := range strings.Split(sub, "/") {
				if part == "" || part == "." || part == ".." {
					return nil, "", nfs.MountStatusErrNoEnt
				}
			}
			rel = sub
		}
		t, err := h.tree(exp)
		if err != nil {
			return nil, "", nfs.MountStatusErrServerFault
		}
		st, err := t.lstat(rel)
		if err != nil {
			return nil, "", nfs.MountStatusErrNoEnt
		}
		if st.Mode&unix.S_IFMT != unix.S_IFDIR {
			return nil, "", nfs.MountStatusErrNotDir
		}
		return t, rel, nfs.MountStatusOk
	}
	return nil, "", nfs.MountStatusErrNoEnt
}

// Mount implements nfs.Handler. A refused or unknown path returns a status and a nil
// filesystem; ToHandle copes with that (go-nfs v0.0.4 panics on it with its own helpers).
func (h *handler) Mount(_ context.Context, conn net.Conn, req nfs.MountRequest) (nfs.MountStatus, billy.Filesystem, []nfs.AuthFlavor) {
	if conn != nil && !h.allowed(conn.RemoteAddr()) {
		return nfs.MountStatusErrAcces, nil, nil
	}
	t, rel, status := h.mountTarget(string(req.Dirpath))
	if status != nfs.MountStatusOk {
		return status, nil, nil
	}
	return status, &rofs{t: t, base: rel}, []nfs.AuthFlavor{nfs.AuthFlavorUnix}
}

// Change implements nfs.Handler: the filesystem is read-only.
func (h *handler) Change(billy.Filesystem) billy.Change { return nil }

// FSStat implements nfs.Handler from statfs of the version's root.
func (h *handler) FSStat(_ context.Context, fs billy.Filesystem, s *nfs.FSStat) error {
	r, ok := fs.(*rofs)
	if !ok {
		return errors.New("fsstat: not an nfsroot filesystem")
	}
	return r.t.fsstat(s)
}

func (t *tree) fsstat(s *nfs.FSStat) error {
	var st unix.Statfs_t
	if err := unix.Fstatfs(t.rootFD, &st); err != nil {
		return fmt.Errorf("statfs %s: %w", t.exp.Root, err)
	}
	bs := uint64(st.Bsize)
	*s = nfs.FSStat{
		TotalSize: st.Blocks * bs, FreeSize: st.Bfree * bs, AvailableSize: 0,
		TotalFiles: st.Files, FreeFiles: st.Ffree, AvailableFiles: 0,
	}
	return nil
}

// ToHandle implements nfs.Handler; it returns nil for a filesystem it did not make.
func (h *handler) ToHandle(fs billy.Filesystem, path []string) []byte {
	r, ok := fs.(*rofs)
	if !ok || r == nil {
		return nil
	}
	st, err := r.t.lstat(r.join(path...))
	if err != nil {
		return nil
	}
	return r.t.handle(st.Ino)
}

// FromHandle implements nfs.Handler.
func (h *handler) FromHandle(fh []byte) (billy.Filesystem, []string, error) {
	t, _, rel, err := h.resolve(fh)
	if err != nil {
		return nil, nil, err
	}
	if rel == "." {
		return &rofs{t: t, base: "."}, []string{}, nil
	}
	return &rofs{t: t, base: "."}, strings.Split(rel, "/"), nil
}

// InvalidateHandle implements nfs.Handler: handles hold no state to invalidate.
func (h *handler) InvalidateHandle(billy.Filesystem, []byte) error { return nil }

// HandleLimit implements nfs.Handler: handles are computed, not cached.
func (h *handler) HandleLimit() int { return math.MaxInt32 }
