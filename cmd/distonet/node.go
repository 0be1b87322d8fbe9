package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/distonet/distonet/internal/api"
	"github.com/distonet/distonet/internal/config"
)

func newNodeCommand(g *globalFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "node",
		Short: "Enroll, list, show and remove nodes",
		Long: `Manage enrolled nodes. These commands work whether or not 'distonet serve' runs:
while it runs they go through its API (with state_dir/admin.token), and it sees the change at once.`,
	}
	cmd.AddCommand(newNodeAddCommand(g), newNodeListCommand(g), newNodeShowCommand(g), newNodeRmCommand(g),
		newNodeResetCommand(g), newNodeResizeCommand(g))
	return cmd
}

// withBackend loads the config, opens the registry (or the daemon's API) and runs fn.
func withBackend(g *globalFlags, cmd *cobra.Command, fn func(registryBackend, config.Config) error) error {
	cfg, err := g.loadConfig(cmd)
	if err != nil {
		return err
	}
	b, err := openBackend(cfg)
	if err != nil {
		return err
	}
	defer b.Close()
	return fn(b, cfg)
}

func newNodeAddCommand(g *globalFlags) *cobra.Command {
	var req api.NodeRequest
	var volumeSize string
	cmd := &cobra.Command{
		Use:   "add NAME --mac MAC --image IMAGE",
		Short: "Enroll a node",
		Long: `Enroll a node: its MAC boots IMAGE with a persistent overlay volume, and its spare
disk is donated per --donate inside --window (e.g. 20:00-07:00, in the appliance's time zone).
NAME becomes the node's hostname: lower-case letters, digits and '-'.`,
		Example: `  distonet node add sun01 --mac 00:03:ba:12:34:56 --image debian --group rack1 --donate aoe
  distonet node add pc-b12 --mac 52:54:00:aa:bb:cc --image debian --group room-b --donate aoe --window 20:00-07:00`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req.Name = args[0]
			if volumeSize != "" {
				n, err := config.ParseByteSize(volumeSize)
				if err != nil {
					return fmt.Errorf("--volume-size: %w", err)
				}
				req.VolumeSize = n
			}
			return withBackend(g, cmd, func(b registryBackend, _ config.Config) error {
				v, err := b.AddNode(req)
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "enrolled %s (%s) image=%s donate=%s\n", v.Name, v.MAC, v.Image, v.Donate.Mode)
				return nil
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&req.MAC, "mac", "", "the node's boot NIC MAC address (required)")
	f.StringVar(&req.Image, "image", "", "image to boot (required; see 'distonet image list')")
	f.StringVar(&req.Group, "group", "", "group or room (a failure domain for the pool)")
	f.StringVar(&req.Donate.Mode, "donate", "none", "donate the spare disk: none, aoe or iscsi")
	f.StringVar(&req.Donate.Window, "window", "", "donation window HH:MM-HH:MM (empty: always)")
	f.StringVar(&req.Donate.Device, "donate-device", "", "device or LABEL=... to donate (empty: the spare disk the agent finds)")
	f.BoolVar(&req.Donate.Wipe, "donate-wipe", false, "allow donating a device that holds a partition table or filesystem")
	f.StringVar(&req.Role, "role", "", "node role: pool-head (assembles the pool) or empty")
	f.StringVar(&req.IP, "ip", "", "fixed IPv4 address (empty: from the DHCP range)")
	f.StringVar(&volumeSize, "volume-size", "", "overlay volume size, e.g. 16GiB (empty: volumes.size or the group's)")
	_ = cmd.MarkFlagRequired("mac")
	_ = cmd.MarkFlagRequired("image")
	return cmd
}

func newNodeListCommand(g *globalFlags) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List enrolled nodes and MACs seen at DHCP but not enrolled",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return withBackend(g, cmd, func(b registryBackend, _ config.Config) error {
				views, err := b.ListNodes()
				if err != nil {
					return err
				}
				if asJSON {
					return printJSON(cmd, views)
				}
				w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
				fmt.Fprintln(w, "NAME\tMAC\tSTATE\tIMAGE\tGROUP\tDONATE\tIP")
				for _, v := range views {
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", dash(v.Name), v.MAC, v.State, dash(v.Image), dash(v.Group), dash(v.Donate.Mode), dash(v.IP))
				}
				return w.Flush()
			})
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func newNodeShowCommand(g *globalFlags) *cobra.Command {
	var asJSON, secrets bool
	cmd := &cobra.Command{
		Use:   "show NAME",
		Short: "Show a node's record (--secrets adds its iSCSI credentials; root only)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if secrets && os.Geteuid() != 0 {
				return errors.New("--secrets: only root may read node secrets")
			}
			return withBackend(g, cmd, func(b registryBackend, _ config.Config) error {
				v, err := b.ShowNode(args[0], secrets)
				if err != nil {
					return err
				}
				if asJSON {
					return printJSON(cmd, v)
				}
				out := cmd.OutOrStdout()
				fmt.Fprintf(out, "name:    %s\nmac:     %s\nstate:   %s\nimage:   %s\ngroup:   %s\ndonate:  %s %s\n",
					v.Name, v.MAC, v.State, v.Image, dash(v.Group), v.Donate.Mode, v.Donate.Window)
				if v.AoE != nil {
					fmt.Fprintf(out, "aoe:     e%d.%d\n", v.AoE.Shelf, v.AoE.Slot)
				}
				if v.LastBoot != nil {
					fmt.Fprintf(out, "last boot %s from %s:\n", v.LastBoot.Started.Format("2006-01-02 15:04:05"), dash(v.LastBoot.IP))
					for _, st := range v.LastBoot.Stages {
						fmt.Fprintf(out, "  %+7.1fs  %-9s ok=%v %s\n", st.Since.Seconds(), st.Stage, st.OK, st.Message)
					}
				}
				if v.ISCSI != nil {
					fmt.Fprintf(out, "iscsi:   %s %s lun %d initiator %s chap %s/%s\n",
						v.ISCSI.Portal, v.ISCSI.Target, v.ISCSI.LUN, v.ISCSI.Initiator, v.ISCSI.CHAPUser, v.ISCSI.CHAPSecret)
				}
				return nil
			})
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.Flags().BoolVar(&secrets, "secrets", false, "include the node's iSCSI volume credentials (root only)")
	return cmd
}

func newNodeRmCommand(g *globalFlags) *cobra.Command {
	var yes bool
	cmd := &cobra.Command{
		Use:   "rm NAME",
		Short: "Remove a node and delete its overlay volume",
		Long: `Remove a node from the registry and DELETE its overlay volume: what the node wrote
under / is gone. Asks for confirmation on a terminal unless --yes is given.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !yes && isTerminal(os.Stdin) {
				fmt.Fprintf(cmd.OutOrStdout(), "Remove node %s and delete its volume's data? [y/N] ", args[0])
				var answer string
				fmt.Fscanln(cmd.InOrStdin(), &answer)
				if answer != "y" && answer != "yes" {
					return errors.New("not removed")
				}
			}
			return withBackend(g, cmd, func(b registryBackend, _ config.Config) error {
				if err := b.RemoveNode(args[0]); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "removed %s and its volume\n", args[0])
				return nil
			})
		},
	}
	cmd.Flags().BoolVarP(&yes, "yes", "y", false, "do not ask for confirmation")
	return cmd
}

func printJSON(cmd *cobra.Command, v any) error {
	enc := json.NewEncoder(cmd.OutOrStdout())
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// isTerminal reports whether f is a terminal (not merely a character device: /dev/null is one).
func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}
