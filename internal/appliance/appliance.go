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

	"github.com/distonet/distonet/donate/pool"
	"github.com/distonet/distonet/internal/api"
	"github.com/distonet/distonet/internal/atomicfile"
	"github.com/distonet/distonet/internal/bootconfig"
	"github.com/distonet/distonet/internal/config"
	"github.com/distonet/distonet/internal/registry"
	"github.com/distonet/distonet/internal/web"
	"github.com/distonet/distonet/templates"
)

// AdminTokenFile holds the API's admin bearer token inside state_dir (mode 0600).
const AdminTokenFile = "admin.token"

// VolumeDir holds per-node overlay volumes inside state_dir.
const VolumeDir = "volumes"

// ImagesDir holds the image store inside state_dir.
func ImagesDir(stateDir string) string { return filepath.Join(stateDir, "images") }

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
	if err := atomicfile.Write(path, []byte(tok+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("admin token: %w", err)
	}
	return tok, nil
}

// Appliance is the running daemon's shared state.
type Appliance struct {
	cfg     config.Config
	log     *slog.Logger
	store   *registry.Store
	metrics *prometheus.Registry
	api     *api.Server
	boot    *bootScripts
	mux     *http.ServeMux
	version string
}

// Options are the parts of the daemon that tests and the demo replace.
type Options struct {
	Images Catalog     // required: the image store
	Volume VolumeMaker // creates a node's volume; default: sparse file + mkfs.ext4
	Window Window      // default: inside the node's donation window (appliance's time zone)
	Now    func() time.Time
}

// Run starts every configured server and blocks until ctx ends, then shuts them down.
func Run(ctx context.Context, cfg config.Config, log *slog.Logger, version string, opts Options) error {
	if err := os.MkdirAll(filepath.Join(cfg.StateDir, VolumeDir), 0o700); err != nil {
		return fmt.Errorf("state_dir: %w", err)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Window == nil {
		loc, err := cfg.Location()
		if err != nil {
			return fmt.Errorf("time_zone: %w", err)
		}
		opts.Window = insideWindow(loc)
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
	a.boot = &bootScripts{cfg: cfg, store: store, images: opts.Images, tmpl: templates.Load(cfg.StateDir), window: opts.Window, now: opts.Now,
		onStage: func(node string, st registry.Stage) {
			if err := store.RecordStage(node, st, ""); err != nil {
				log.Warn("record stage", "node", node, "err", err)
			}
		}}
	boots := newBootMetrics(a.metrics)
	a.metrics.MustRegister(newInventoryCollector(store))
	a.api = &api.Server{Store: store, Boot: a.boot, AdminToken: token, Portal: cfg.ISCSIAddr(), RemoveVolume: VolumeRemover(cfg.StateDir), Log: log,
		Pool: poolHooks(store), InUse: inUse(store),
		OnEvent: func(node string, ev bootconfig.Event) { boots.observe(store, node, ev) }}
	if sc, ok := opts.Images.(StoreCatalog); ok {
		a.api.Images = func() (any, error) { return sc.List() }
	}

	ui, err := web.New(web.Options{Store: store, API: a.api, StateDir: cfg.StateDir, Log: log.With("svc", "web"), Now: opts.Now, Metrics: a.metrics,
		Images: func() ([]web.ImageInfo, error) { return imageInfos(opts.Images), nil },
		Pool:   func() (pool.Status, error) { return poolStatus(store) }})
	if err != nil {
		return err
	}
	defer ui.Close()
	a.api.Session = ui.Session
	if !web.HasPassword(cfg.StateDir) {
		tok, err := web.FirstRunToken(cfg.StateDir)
		if err != nil {
			return fmt.Errorf("web first-run token: %w", err)
		}
		if tok != "" {
			// Printed once, on purpose not through the log: it is a credential.
			fmt.Fprintf(os.Stderr, "distonet: no admin password yet: open %s/setup?token=%s or run 'distonet admin passwd'\n", cfg.BaseURL(), tok)
		}
	}
	a.mux.Handle("/api/", a.api.Handler())
	a.mux.Handle("/", ui)
	a.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		fmt.Fprintln(w, "ok")
	})
	a.mux.Handle("GET /metrics", promhttp.HandlerFor(a.metrics, promhttp.HandlerOpts{}))
	if err := a.mountBoot(); err != nil {
		return fmt.Errorf("http boot: %w", err)
	}

	var services []namedService
	add := func(name string, svc service, err error) error {
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		services = append(services, namedService{name, svc})
		return nil
	}
	if cfg.DHCP.Mode != "off" {
		svc, err := a.newDHCP()
		if err := add("dhcp", svc, err); err != nil {
			return err
		}
		if cfg.DHCP.RouterAdvertisement {
			svc, err := a.newRA()
			if err := add("ra", svc, err); err != nil {
				return err
			}
		}
	}
	if cfg.TFTP.Listen != "" {
		images, err := os.OpenRoot(ImagesDir(cfg.StateDir))
		if err != nil {
			return fmt.Errorf("tftp: %w", err)
		}
		defer images.Close()
		svc, err := a.newTFTP(tftpFiles{root: images})
		if err := add("tftp", svc, err); err != nil {
			return err
		}
	}
	if cfg.NFS.Listen != "" {
		svc, err := a.newNFS(nfsExports{opts.Images})
		if err := add("nfs", svc, err); err != nil {
			return err
		}
	}
	target, err := a.newISCSI()
	if err := add("iscsi", target, err); err != nil {
		return err
	}
	volumes := &volumeTargets{a: a, target: target, make: opts.Volume, current: map[string]string{}}
	if volumes.make == nil {
		volumes.make = MakeVolume
	}
	a.api.Volume = volumes.changeVolume

	httpLn, err := net.Listen("tcp", cfg.HTTP.Listen)
	if err != nil {
		return fmt.Errorf("http.listen %s: %w", cfg.HTTP.Listen, err)
	}
	srv := &http.Server{Handler: a.mux, ReadHeaderTimeout: 10 * time.Second}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errc := make(chan error, len(services)+1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := srv.Serve(httpLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			errc <- fmt.Errorf("http: %w", err)
		}
	}()
	for _, s := range services {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.svc.Serve(ctx); err != nil && ctx.Err() == nil {
				errc <- fmt.Errorf("%s: %w", s.name, err)
			}
		}()
	}
	wg.Add(1)
	go func() { defer wg.Done(); volumes.run(ctx) }()
	wg.Add(1)
	go func() { defer wg.Done(); a.planLoop(ctx) }()
	sched := a.newScheduler(opts.Now)
	wg.Add(1)
	go func() { defer wg.Done(); _ = sched.Run(ctx) }()

	names := make([]string, len(services))
	for i, s := range services {
		names[i] = s.name
	}
	bootNet := ""
	if n := cfg.Subnet(); n != nil {
		bootNet = n.String()
	}
	address := ""
	if ip := cfg.ServerIP(); ip != nil {
		address = ip.String()
	}
	tcpHint(log, os.ReadFile, cfg.Interface, bootNet, address)
	log.Info("distonet serving", "version", version, "http", httpLn.Addr().String(), "interface", cfg.Interface,
		"address", cfg.Address, "dhcp", cfg.DHCP.Mode, "services", strings.Join(names, ","), "state_dir", cfg.StateDir)

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errc:
		log.Error("server failed, shutting down", "err", runErr)
	}
	cancel()
	shutCtx, cancelShut := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancelShut()
	ui.Close() // ends live event streams, which Shutdown would wait for
	_ = srv.Shutdown(shutCtx)
	for i := len(services) - 1; i >= 0; i-- {
		if err := services[i].svc.Close(); err != nil {
			log.Warn("close", "svc", services[i].name, "err", err)
		}
	}
	wg.Wait()
	log.Info("distonet stopped")
	return runErr
}

// imageInfos lists the images for the web UI.
func imageInfos(images Catalog) []web.ImageInfo {
	var out []web.ImageInfo
	for _, name := range images.Names() {
		v, err := images.Current(name)
		if err != nil {
			continue
		}
		info := web.ImageInfo{Name: name, Version: v.Version, Kernel: filepath.Base(v.Kernel)}
		if st, err := os.Stat(v.Rootfs); err == nil {
			info.Imported = st.ModTime()
		}
		out = append(out, info)
	}
	return out
}
