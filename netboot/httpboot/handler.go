// Package httpboot serves what iPXE fetches over HTTP: the per-node boot script at
// /boot/<mac>.ipxe and the boot files (kernels, initramfs) under /files/, with Range,
// ETag and Last-Modified, confined to one directory and sent with sendfile(2). Rendering
// scripts is left to the Scripts implementation the daemon passes in; listening, TLS and
// the rest of the web UI are the daemon's.
package httpboot

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"os"
	"path"
	"strconv"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"
)

// Scripts renders a node's iPXE script (its node script, or the enrollment script for an
// unknown MAC). An error is logged and answered 500.
type Scripts interface {
	BootScript(mac net.HardwareAddr, r *http.Request) (string, error)
}

// Config configures the handler.
type Config struct {
	// Root is the directory served under /files/ (e.g. state_dir/images, holding
	// <image>/<version>/vmlinuz and initramfs). "" answers 404 to every /files/ request.
	Root    string
	Metrics prometheus.Registerer // nil: metrics are kept but not registered
}

// Handler serves /boot/ and /files/. Mount it on both prefixes:
//
//	mux.Handle(httpboot.BootPrefix, h)
//	mux.Handle(httpboot.FilesPrefix, h)
//
// sendfile needs the connection to reach net/http as a *net.TCPConn: a listener that wraps
// connections falls back to copying.
type Handler struct {
	scripts Scripts
	root    *os.Root
	log     *slog.Logger
	metrics *metrics
}

// NewHandler builds the handler; Close releases the files root.
func NewHandler(cfg Config, scripts Scripts, logger *slog.Logger) (*Handler, error) {
	if scripts == nil {
		return nil, errors.New("httpboot: nil Scripts")
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	h := &Handler{scripts: scripts, log: logger.With("stage", "http")}
	if cfg.Root != "" {
		root, err := os.OpenRoot(cfg.Root)
		if err != nil {
			return nil, fmt.Errorf("httpboot root: %w", err)
		}
		h.root = root
	}
	m, err := newMetrics(cfg.Metrics)
	if err != nil {
		h.Close()
		return nil, err
	}
	h.metrics = m
	return h, nil
}

// Close releases the files root.
func (h *Handler) Close() error {
	if h.root != nil {
		return h.root.Close()
	}
	return nil
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	route := routeOther
	switch {
	case len(r.URL.Path) >= len(BootPrefix) && r.URL.Path[:len(BootPrefix)] == BootPrefix:
		route = routeScript
	case len(r.URL.Path) >= len(FilesPrefix) && r.URL.Path[:len(FilesPrefix)] == FilesPrefix:
		route = routeFile
	}
	cw := &countingWriter{ResponseWriter: w, status: http.StatusOK}
	defer func() { h.metrics.observe(route, cw.status, cw.n) }()
	w = cw
	w.Header().Set("X-Content-Type-Options", "nosniff")
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed: boot files are read-only", http.StatusMethodNotAllowed)
		return
	}
	switch route {
	case routeScript:
		h.serveScript(w, r)
	case routeFile:
		h.serveFile(w, r)
	default:
		http.NotFound(w, r)
	}
}

func (h *Handler) serveScript(w http.ResponseWriter, r *http.Request) {
	mac, err := ParseBootPath(r.URL.Path)
	if err != nil {
		http.Error(w, "no boot script: "+err.Error(), http.StatusNotFound)
		return
	}
	script, err := h.scripts.BootScript(mac, r)
	if err != nil {
		h.log.Error("boot script", "mac", mac.String(), "ip", remoteIP(r), "err", err)
		http.Error(w, "boot script unavailable", http.StatusInternalServerError)
		return
	}
	// A script carries a one-time boot token: never cache it anywhere.
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Content-Length", strconv.Itoa(len(script)))
	h.log.Debug("boot script served", "mac", mac.String(), "ip", remoteIP(r))
	if r.Method == http.MethodHead {
		return
	}
	_, _ = io.WriteString(w, script)
}

func (h *Handler) serveFile(w http.ResponseWriter, r *http.Request) {
	name, err := parseFilePath(r.URL.Path)
	if err != nil {
		h.log.Info("boot file refused", "ip", remoteIP(r), "path", r.URL.Path, "err", err)
		http.Error(w, "not found", http.StatusNotFound)
		return
	}
	if h.root == nil {
		http.NotFound(w, r)
		return
	}
	// O_NONBLOCK: a FIFO in the tree must not hang the request; it is refused below.
	f, err := h.root.OpenFile(name, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			// Symlinks out of the root land here: log them, answer as for a missing file.
			h.log.Info("boot file refused", "ip", remoteIP(r), "path", name, "err", err)
		}
		http.Error(w, "not found", http.StatusNotFound)
		return
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		http.Error(w, "not found", http.StatusNotFound)
		return
	}
	// Strong enough for read-only image files: size and modification time change when
	// an image is rebuilt, and versions live in their own directories anyway.
	w.Header().Set("ETag", fmt.Sprintf(`"%x-%x"`, fi.Size(), fi.ModTime().UnixNano()))
	ctype := mime.TypeByExtension(path.Ext(name))
	if ctype == "" {
		ctype = "application/octet-stream" // set, so ServeContent does not read to sniff
	}
	w.Header().Set("Content-Type", ctype)
	// ServeContent copies with io.CopyN: the writer's ReadFrom reaches
	// (*net.TCPConn).ReadFrom with the *os.File, which uses sendfile(2).
	http.ServeContent(w, r, name, fi.ModTime(), f)
}

func remoteIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// countingWriter records status and bytes for the metrics. It forwards ReadFrom so the
// sendfile path of the underlying writer is kept.
type countingWriter struct {
	http.ResponseWriter
	status      int
	wroteHeader bool
	n           int64
}

func (c *countingWriter) WriteHeader(code int) {
	if !c.wroteHeader {
		c.status, c.wroteHeader = code, true
	}
	c.ResponseWriter.WriteHeader(code)
}

func (c *countingWriter) Write(b []byte) (int, error) {
	c.wroteHeader = true
	n, err := c.ResponseWriter.Write(b)
	c.n += int64(n)
	return n, err
}

func (c *countingWriter) ReadFrom(src io.Reader) (int64, error) {
	c.wroteHeader = true
	var n int64
	var err error
	if rf, ok := c.ResponseWriter.(io.ReaderFrom); ok {
		n, err = rf.ReadFrom(src)
	} else {
		n, err = io.Copy(c.ResponseWriter, src)
	}
	c.n += n
	return n, err
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (c *countingWriter) Unwrap() http.ResponseWriter { return c.ResponseWriter }
