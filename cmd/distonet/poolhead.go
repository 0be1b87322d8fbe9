package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/distonet/distonet/donate/pool"
	"github.com/distonet/distonet/donate/pool/head"
	"github.com/distonet/distonet/internal/api"
	"github.com/distonet/distonet/internal/appliance"
	"github.com/distonet/distonet/internal/bootconfig"
)

func newPoolHeadCommand(g *globalFlags) *cobra.Command {
	var (
		server, tokenFile, bootConfig, filesystem, name, export string
		keep                                                    bool
		interval                                                time.Duration
	)
	cmd := &cobra.Command{
		Use:   "head",
		Short: "Assemble the planned md RAID6 arrays from the donated disks, on this machine",
		Long: `Run the pool head: attach the members of the appliance's plan (AoE discovery, iSCSI
login), create the arrays with mdadm (RAID6, internal write-intent bitmap) or assemble them
(degraded within parity when members are missing), re-add a member that comes back (bitmap
resync), fail a member promptly when its agent withdraws, stop overnight arrays cleanly
before their window closes, and report array state to the appliance. Needs mdadm, aoetools
and the kernel's aoe and raid456 modules. Runs on the appliance host (admin token) or on a
node enrolled with --role pool-head (its boot config).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c := &headClient{newAPIClient("", "")}
			var (
				stopBefore, grace time.Duration
				exp               head.Exporter
			)
			log := slog.New(slog.NewTextHandler(os.Stderr, nil))
			// The same kernel set-up wherever the head runs: aoe and raid456 loaded, then
			// the aoe dead timer shortened (its parameter exists only once aoe is loaded).
			prepareHead(log)
			switch {
			case bootConfig != "":
				raw, err := os.ReadFile(bootConfig)
				if err != nil {
					return err
				}
				var bc bootconfig.Config
				if err := json.Unmarshal(raw, &bc); err != nil {
					return fmt.Errorf("boot config: %w", err)
				}
				c.apiClient = newAPIClient(bc.Server, bc.AgentToken)
				if name == "" {
					name = bc.Node
				}
				if bc.Pool != nil {
					stopBefore = time.Duration(bc.Pool.StopBeforeSeconds) * time.Second
					grace = time.Duration(bc.Pool.AssembleGraceSeconds) * time.Second
					if export == "" {
						export = bc.Pool.Export
					}
				}
				if exp, err = nodeExporter(cmd.Context(), export, log); err != nil {
					return err
				}
			default:
				cfg, err := g.loadConfig(cmd)
				if err != nil {
					return err
				}
				if tokenFile == "" {
					tokenFile = filepath.Join(cfg.StateDir, appliance.AdminTokenFile)
				}
				tok, err := os.ReadFile(tokenFile)
				if err != nil {
					return fmt.Errorf("pool head: the appliance's admin token: %w", err)
				}
				c.apiClient = newAPIClient(cfg.LocalURL(), string(tok))
				stopBefore, grace = cfg.Donate.PoolStopBefore, cfg.Donate.PoolAssembleGrace
				if export == "" {
					export = cfg.Donate.PoolExport
				}
				// The host's own nfs-kernel-server (systemd) serves; we only add exports.
				if exp, err = nfsExporter(export, cfg.Subnet().String()); err != nil {
					return err
				}
			}
			if server != "" {
				c.base = strings.TrimRight(server, "/")
			}
			srv, err := head.NewServer(head.ServerConfig{
				Head:     head.New(head.Config{Filesystem: filesystem, Logger: log, Exporter: exp}),
				Registry: c, Interval: interval, KeepOnExit: keep, Name: name, Logger: log,
				StopBefore: stopBefore, AssembleGrace: grace,
			})
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			log.Info("pool head running", "appliance", c.base)
			return srv.Serve(ctx)
		},
	}
	f := cmd.Flags()
	f.StringVar(&server, "server", "", "the appliance's URL (default: from --config, or the boot config)")
	f.StringVar(&tokenFile, "token-file", "", "admin token file (default state_dir/admin.token)")
	f.StringVar(&bootConfig, "boot-config", "", "on a pool-head node: the boot config the node init fetched (/run/distonet/boot.json)")
	f.StringVar(&filesystem, "filesystem", "ext4", "file system made on each new array: ext4, or none to leave it raw")
	f.StringVar(&name, "name", "", "this head's name in reports")
	f.StringVar(&export, "export", "", "serve each array's filesystem over NFS (nfs: the kernel NFS server, to the boot network) or not (none); default donate.pool_export")
	f.BoolVar(&keep, "keep-running", false, "leave arrays running when the head stops (default: stop them cleanly)")
	f.DurationVar(&interval, "interval", 10*time.Second, "time between reconcile passes")
	return cmd
}

// headClient is the appliance as the pool head sees it, over the API.
type headClient struct{ *apiClient }

func (c *headClient) Layout(ctx context.Context) (pool.Layout, error) {
	var l pool.Layout
	err := c.do(ctx, http.MethodGet, api.PoolLayoutPath, nil, &l)
	return l, err
}

func (c *headClient) Members(ctx context.Context) ([]pool.Member, error) {
	var st pool.Status
	if err := c.do(ctx, http.MethodGet, api.PoolStatusPath, nil, &st); err != nil {
		return nil, err
	}
	out := make([]pool.Member, 0, len(st.Disks))
	for _, d := range st.Disks {
		out = append(out, pool.Member{Node: d.Node, Group: d.Group, Transport: d.Transport, Address: d.Address,
			SizeBytes: d.SizeBytes, Window: d.Window, State: d.State})
	}
	return out, nil
}

func (c *headClient) Report(ctx context.Context, st pool.ArrayStatus) error {
	return c.do(ctx, http.MethodPost, api.PoolReportPath, st, nil)
}
