package main

import (
	"fmt"
	"io/fs"
	"os"
	"text/template"

	"github.com/spf13/cobra"

	"github.com/distonet/distonet/templates"
)

func newUnitCommand(g *globalFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "unit",
		Short: "Print a systemd unit that runs this binary with this config",
		Example: `  distonet unit --config /etc/distonet/distonet.yaml > /etc/systemd/system/distonet.service
  systemctl daemon-reload && systemctl enable --now distonet`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			raw, err := fs.ReadFile(templates.Embedded(), "systemd/distonet.service")
			if err != nil {
				return err
			}
			t, err := template.New("unit").Option("missingkey=error").Parse(string(raw))
			if err != nil {
				return fmt.Errorf("unit template: %w", err)
			}
			bin, err := os.Executable()
			if err != nil {
				return err
			}
			return t.Execute(cmd.OutOrStdout(), map[string]string{"Binary": bin, "Config": g.configPath})
		},
	}
}
