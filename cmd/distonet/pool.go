package main

import (
	"encoding/json"
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/distonet/distonet/donate/pool"
	"github.com/distonet/distonet/internal/config"
)

func newPoolCommand(g *globalFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "pool",
		Short: "The storage pool: donated disks and the md RAID6 arrays planned over them",
	}
	cmd.AddCommand(newPoolStatusCommand(g), newPoolHeadCommand(g))
	return cmd
}

func newPoolStatusCommand(g *globalFlags) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "List donated disks and the arrays planned over them",
		Long: `List every donated disk (node, transport, address eS.s or IQN, size, state, and the
array and role the plan gives it) and the planned arrays with the pool head's last report
(state, members, resync progress, usable capacity).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return withBackend(g, cmd, func(b registryBackend, _ config.Config) error {
				raw, err := b.PoolStatus()
				if err != nil {
					return err
				}
				if asJSON {
					_, err := cmd.OutOrStdout().Write(raw)
					return err
				}
				var st pool.Status
				if err := json.Unmarshal(raw, &st); err != nil {
					return err
				}
				w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
				fmt.Fprintln(w, "NODE\tTRANSPORT\tADDRESS\tSIZE\tSTATE\tWINDOW\tARRAY\tROLE")
				for _, d := range st.Disks {
					fmt.Fprintf(w, "%s\t%s\t%s\t%d GiB\t%s\t%s\t%s\t%s\n", d.Node, d.Transport, d.Address, d.SizeBytes>>30, d.State, dash(d.Window), dash(d.Array), dash(d.Role))
				}
				fmt.Fprintln(w, "\nARRAY\tSTATE\tMEMBERS\tUSABLE\tSYNC\tWINDOW\tMOUNTED ON")
				for _, a := range st.Arrays {
					state := a.State
					if a.Degraded {
						state += ",degraded"
					}
					sync := "-"
					if a.SyncAction != "" {
						sync = fmt.Sprintf("%s %.1f%%", a.SyncAction, a.SyncPercent)
					}
					fmt.Fprintf(w, "%s\t%s\t%d/%d\t%d GiB\t%s\t%s\t%s\n", a.Name, state, a.Active, a.RaidDevices, a.UsableBytes>>30, sync, dash(a.Window), dash(a.MountPoint))
				}
				if err := w.Flush(); err != nil {
					return err
				}
				// Messages (a refused assembly names its recovery) are whole lines, not cells.
				out := cmd.OutOrStdout()
				for _, a := range st.Arrays {
					if a.Message != "" {
						fmt.Fprintf(out, "%s: %s\n", a.Name, a.Message)
					}
				}
				for _, r := range st.Reasons {
					fmt.Fprintf(out, "note: %s\n", r)
				}
				return nil
			})
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}
