package nodeinit

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/distonet/distonet/internal/bootconfig"
)

// ErrRefused marks a boot config request the appliance answered with a 4xx: retrying the
// same token cannot help.
var ErrRefused = errors.New("refused by the appliance")

// FetchConfig GETs the node's boot config with its token.
func FetchConfig(ctx context.Context, client *http.Client, server, token string) (bootconfig.Config, []byte, error) {
	var cfg bootconfig.Config
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, server+bootconfig.ConfigPath, nil)
	if err != nil {
		return cfg, nil, fmt.Errorf("boot config: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := client.Do(req)
	if err != nil {
		return cfg, nil, fmt.Errorf("boot config: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return cfg, nil, fmt.Errorf("boot config: read: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		err := fmt.Errorf("boot config: HTTP %d: %s", resp.StatusCode, strings.TrimSpace(string(body)))
		if resp.StatusCode >= 400 && resp.StatusCode < 500 {
			err = fmt.Errorf("%w (%w)", err, ErrRefused)
		}
		return cfg, nil, err
	}
	if err := json.Unmarshal(body, &cfg); err != nil {
		return cfg, nil, fmt.Errorf("boot config: %w", err)
	}
	if err := Validate(cfg); err != nil {
		return cfg, nil, err
	}
	return cfg, body, nil
}

// Validate checks the fields the node init acts on.
func Validate(c bootconfig.Config) error {
	var errs []error
	if c.Node == "" && c.Hostname == "" {
		errs = append(errs, errors.New("node and hostname are empty"))
	}
	if c.NFS.Server == "" || !strings.HasPrefix(c.NFS.Path, "/") {
		errs = append(errs, fmt.Errorf("nfs: server %q path %q", c.NFS.Server, c.NFS.Path))
	}
	if c.ISCSI.Portal == "" || c.ISCSI.Target == "" || c.ISCSI.Initiator == "" {
		errs = append(errs, fmt.Errorf("iscsi: portal %q target %q initiator %q", c.ISCSI.Portal, c.ISCSI.Target, c.ISCSI.Initiator))
	}
	if len(errs) > 0 {
		return fmt.Errorf("boot config: %w", errors.Join(errs...))
	}
	return nil
}

// Reporter POSTs stage events to the appliance in the background: a boot never waits on
// the timeline. Token is the boot token until the boot config names an agent token, which
// is meant to last the whole boot; set it before reporting, not concurrently.
type Reporter struct {
	Client *http.Client
	Server string
	Token  string
	wg     sync.WaitGroup
}

// Report sends one event, best effort.
func (r *Reporter) Report(stage string, ok bool, msg string) {
	if r == nil || r.Server == "" {
		return
	}
	ev := bootconfig.Event{Stage: stage, OK: ok, Message: msg, Time: time.Now().UTC(), Uptime: Uptime()}
	body, _ := json.Marshal(ev)
	token := r.Token
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, r.Server+bootconfig.EventPath, bytes.NewReader(body))
		if err != nil {
			return
		}
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Content-Type", "application/json")
		if resp, err := r.Client.Do(req); err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}()
}

// Flush waits a bounded time for events still in flight.
func (r *Reporter) Flush(max time.Duration) {
	if r == nil {
		return
	}
	done := make(chan struct{})
	go func() { r.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(max):
	}
}

// Uptime is the seconds since the kernel started, from /proc/uptime.
func Uptime() float64 {
	b, err := os.ReadFile("/proc/uptime")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	v, _ := strconv.ParseFloat(f[0], 64)
	return v
}
