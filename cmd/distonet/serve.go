package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/distonet/distonet/internal/appliance"
)

func newServeCommand(g *globalFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "serve",
		Short: "Run the appliance in the foreground",
		Long: `Run the appliance in the foreground: DHCP/proxyDHCP, TFTP, HTTP boot, web UI and API,
NFS root, iSCSI overlay volumes and the pool inventory. SIGINT or SIGTERM stops it cleanly
(leases, registry and volumes flushed). Logs go to standard error.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := g.loadConfig(cmd)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return appliance.Run(ctx, cfg, newLogger(cfg.LogLevel), version, appliance.Options{Images: appliance.NewStoreCatalog(cfg.StateDir)})
		},
	}
}
