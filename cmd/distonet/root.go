package main

import (
	"log/slog"
	"os"

	"github.com/spf13/cobra"

	"github.com/distonet/distonet/internal/config"
)

// globalFlags are shared by every subcommand.
type globalFlags struct {
	configPath string
}

func newRootCommand() *cobra.Command {
	g := &globalFlags{}
	root := &cobra.Command{
		Use:   "distonet",
		Short: "Diskless nodes and a storage pool from one appliance",
		Long: `DiStoNet turns a room of PCs into diskless nodes and a storage pool.

'distonet serve' answers PXE boots (DHCP, TFTP, HTTP), serves each node's read-only NFS root
and its persistent iSCSI overlay volume, and keeps the inventory of the disks nodes donate.
The other commands manage its registry; they work whether or not the daemon runs.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().StringVar(&g.configPath, "config", config.DefaultPath, "configuration file (YAML)")
	root.AddCommand(
		newVersionCommand(),
		newServeCommand(g),
		newNodeCommand(g),
		newImageCommand(g),
		newPoolCommand(g),
		newUnitCommand(g),
		newDemoCommand(),
		newAgentCommand(),
		newDonateCommand(),
		newAdminCommand(g),
	)
	return root
}

// loadConfig reads the configuration. A missing file at the default path means defaults, so
// the CLI works on a fresh machine; a file named with --config must exist.
func (g *globalFlags) loadConfig(cmd *cobra.Command) (config.Config, error) {
	if !cmd.Flags().Changed("config") {
		if _, err := os.Stat(g.configPath); os.IsNotExist(err) {
			return config.Parse(nil, "defaults")
		}
	}
	return config.Load(g.configPath)
}

func newLogger(level string) *slog.Logger {
	var l slog.Level
	_ = l.UnmarshalText([]byte(level))
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: l}))
}
