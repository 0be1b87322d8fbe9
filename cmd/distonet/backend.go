package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/distonet/distonet/internal/api"
	"github.com/distonet/distonet/internal/appliance"
	"github.com/distonet/distonet/internal/config"
	"github.com/distonet/distonet/internal/registry"
)

// registryBackend is what the node commands need. The daemon owns the registry while it
// runs, so commands then go through its API; otherwise they open the store directly. Both
// paths run the same registry functions.
type registryBackend interface {
	AddNode(req api.NodeRequest) (api.NodeView, error)
	RemoveNode(name string) error
	ListNodes() ([]api.NodeView, error)
	ShowNode(name string, secrets bool) (api.NodeView, error)
	PoolStatus() ([]byte, error)
	ChangeVolume(name, action string, size int64) error
	Close() error
}

// openBackend opens the registry locally, or reaches the running daemon's API when the
// daemon holds the store.
func openBackend(cfg config.Config) (registryBackend, error) {
	st, err := registry.Open(cfg.StateDir, 300*time.Millisecond)
	if err == nil {
		return &localBackend{st: st, cfg: cfg}, nil
	}
	if !errors.Is(err, registry.ErrLocked) {
		return nil, err
	}
	token, err := os.ReadFile(filepath.Join(cfg.StateDir, appliance.AdminTokenFile))
	if err != nil {
		return nil, fmt.Errorf("the daemon is running; reaching its API needs the admin token: %w", err)
	}
	return &remoteBackend{newAPIClient(cfg.LocalURL(), string(token))}, nil
}

type localBackend struct {
	st  *registry.Store
	cfg config.Config
}

func (b *localBackend) Close() error { return b.st.Close() }

func (b *localBackend) AddNode(req api.NodeRequest) (api.NodeView, error) {
	n, err := b.st.AddNode(req.Node())
	if err != nil {
		return api.NodeView{}, err
	}
	return api.ViewOf(n, registry.Timeline{}, b.cfg.ISCSIAddr(), false), nil
}

func (b *localBackend) RemoveNode(name string) error {
	return api.RemoveNode(b.st, name, appliance.VolumeRemover(b.cfg.StateDir))
}

func (b *localBackend) ListNodes() ([]api.NodeView, error) {
	return api.ListViews(b.st, b.cfg.ISCSIAddr())
}

func (b *localBackend) ShowNode(name string, secrets bool) (api.NodeView, error) {
	n, err := b.st.Node(name)
	if err != nil {
		return api.NodeView{}, err
	}
	tl, err := b.st.Timeline(name)
	if err != nil {
		return api.NodeView{}, err
	}
	return api.ViewOf(n, tl, b.cfg.ISCSIAddr(), secrets), nil
}

func (b *localBackend) ChangeVolume(name, action string, size int64) error {
	if _, err := b.st.Node(name); err != nil {
		return err
	}
	return appliance.ChangeVolume(b.cfg.StateDir, name, action, size)
}

func (b *localBackend) PoolStatus() ([]byte, error) { return appliance.PoolStatus(b.st) }

// remoteBackend goes through the running daemon's API.
type remoteBackend struct{ *apiClient }

func (b *remoteBackend) Close() error { return nil }

func (b *remoteBackend) AddNode(req api.NodeRequest) (api.NodeView, error) {
	var v api.NodeView
	err := b.do(context.Background(), http.MethodPost, "/api/nodes", req, &v)
	return v, err
}

func (b *remoteBackend) RemoveNode(name string) error {
	return b.do(context.Background(), http.MethodDelete, "/api/nodes/"+url.PathEscape(name), nil, nil)
}

func (b *remoteBackend) ListNodes() ([]api.NodeView, error) {
	var v []api.NodeView
	err := b.do(context.Background(), http.MethodGet, "/api/nodes", nil, &v)
	return v, err
}

func (b *remoteBackend) ShowNode(name string, secrets bool) (api.NodeView, error) {
	var v api.NodeView
	q := ""
	if secrets {
		q = "?secrets=1"
	}
	err := b.do(context.Background(), http.MethodGet, "/api/nodes/"+url.PathEscape(name)+q, nil, &v)
	return v, err
}

func (b *remoteBackend) PoolStatus() ([]byte, error) {
	var raw json.RawMessage
	if err := b.do(context.Background(), http.MethodGet, api.PoolStatusPath, nil, &raw); err != nil {
		return nil, err
	}
	return append([]byte(raw), '\n'), nil
}

func (b *remoteBackend) ChangeVolume(name, action string, size int64) error {
	return b.do(context.Background(), http.MethodPost, "/api/nodes/"+url.PathEscape(name)+"/volume", api.VolumeRequest{Action: action, Size: size}, nil)
}
