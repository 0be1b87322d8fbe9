// Package appliance wires the protocol servers to the registry and runs them as one daemon.
// It owns the process-wide concerns: the state directory's layout, the admin token, the HTTP
// listener (boot scripts, web UI, API, /metrics), and orderly shutdown.
package appliance

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/distonet/distonet/internal/api"
	"github.com/distonet/distonet/internal/config"
	"github.com/distonet/distonet/internal/registry"
)

// AdminTokenFile holds the API's admin bearer token inside state_dir (mode 0600).
const AdminTokenFile = "admin.token"

// VolumeDir holds per-node overlay volumes inside state_dir.
const VolumeDir = "volumes"

// VolumePath is where a node's overlay volume lives.
func VolumePath(stateDir, node string) string {
	return filepath.Join(stateDir, VolumeDir, node+".img")
}

// VolumeRemover deletes a removed node's volume.
func VolumeRemover(stateDir string) func(string) error {
	return func(node string) error {
		err := os.Remove(VolumePath(stateDir, node))
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return err
	}
}

// ensureAdminToken creates state_dir/admin.token at first start, readable by root only.
func ensureAdminToken(stateDir string) (string, error) {
	path := filepath.Join(stateDir, AdminTokenFile)
	raw, err := os.ReadFile(path)
	if err == nil && len(strings.TrimSpace(string(raw))) >= 16 {
		return strings.TrimSpace(string(raw)), nil
	}
	tok := registry.NewSecret(24)
	if err := writeFileAtomic(path, []byte(tok+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("admin token: %w", err)
	}
	return tok, nil
}

// writeFileAtomic writes a file so that a crash leaves the old or the new content, never half.
func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// Appliance is the running daemon's shared state.
type Appliance struct {
	cfg     config.Config
	log     *slog.Logger
	store   *registry.Store
	metrics *prometheus.Registry
	api     *api.Server
	mux     *http.ServeMux
	version string
}

// Run starts every configured server and blocks until ctx ends, then shuts them down.
func Run(ctx context.Context, cfg config.Config, log *slog.Logger, version string) error {
	if err := os.MkdirAll(filepath.Join(cfg.StateDir, VolumeDir), 0o700); err != nil {
		return fmt.Errorf("state_dir: %w", err)
	}
	store, err := registry.Open(cfg.StateDir, 2*time.Second)
	if err != nil {
		return err
	}
	defer store.Close()
	token, err := ensureAdminToken(cfg.StateDir)
	if err != nil {
		return err
	}
	a := &Appliance{cfg: cfg, log: log, store: store, metrics: prometheus.NewRegistry(), mux: http.NewServeMux(), version: version}
	a.metrics.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	a.api = &api.Server{Store: store, AdminToken: token, Portal: cfg.ISCSIAddr(), RemoveVolume: VolumeRemover(cfg.StateDir), Log: log}

	a.mux.Handle("/api/", a.api.Handler())
	a.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		fmt.Fprintln(w, "ok")
	})
	a.mux.Handle("GET /metrics", promhttp.HandlerFor(a.metrics, promhttp.HandlerOpts{}))

	httpLn, err := net.Listen("tcp", cfg.HTTP.Listen)
	if err != nil {
		return fmt.Errorf("http.listen %s: %w", cfg.HTTP.Listen, err)
	}
	srv := &http.Server{Handler: a.mux, ReadHeaderTimeout: 10 * time.Second}

	var wg sync.WaitGroup
	errc := make(chan error, 8)
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := srv.Serve(httpLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			errc <- fmt.Errorf("http: %w", err)
		}
	}()
	log.Info("distonet serving", "version", version, "http", httpLn.Addr().String(), "interface", cfg.Interface,
		"address", cfg.Address, "dhcp", cfg.DHCP.Mode, "state_dir", cfg.StateDir)

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errc:
		log.Error("server failed, shutting down", "err", runErr)
	}
	shutCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = srv.Shutdown(shutCtx)
	wg.Wait()
	log.Info("distonet stopped")
	return runErr
}
