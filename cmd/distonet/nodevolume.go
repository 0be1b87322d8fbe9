package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/distonet/distonet/internal/config"
)

func newNodeResetCommand(g *globalFlags) *cobra.Command {
	var yes bool
	cmd := &cobra.Command{
		Use:   "reset NAME",
		Short: "Empty a node's overlay volume: its root is the pristine image again",
		Long: `Replace the node's overlay volume by an empty file system of the same size: everything
the node wrote under / is gone and it boots the pristine image (useful after an image update
when copied-up files shadow the new ones). Power the node off first: its volume stops being
served while it is rewritten.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !yes && !confirm(cmd, fmt.Sprintf("Erase everything node %s wrote under / ?", args[0])) {
				return errors.New("not reset")
			}
			return withBackend(g, cmd, func(b registryBackend, _ config.Config) error {
				if err := b.ChangeVolume(args[0], "reset", 0); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "volume of %s reset\n", args[0])
				return nil
			})
		},
	}
	cmd.Flags().BoolVarP(&yes, "yes", "y", false, "do not ask for confirmation")
	return cmd
}

func newNodeResizeCommand(g *globalFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "resize NAME SIZE",
		Short: "Grow a node's overlay volume (e.g. 16GiB); shrinking is refused",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			size, err := config.ParseByteSize(args[1])
			if err != nil {
				return err
			}
			return withBackend(g, cmd, func(b registryBackend, _ config.Config) error {
				if err := b.ChangeVolume(args[0], "resize", size); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "volume of %s is now %d bytes\n", args[0], size)
				return nil
			})
		},
	}
}

// confirm asks on a terminal; a script (no terminal) has asked by running the command, as
// with node rm.
func confirm(cmd *cobra.Command, question string) bool {
	if !isTerminal(os.Stdin) {
		return true
	}
	fmt.Fprintf(cmd.OutOrStdout(), "%s [y/N] ", question)
	var answer string
	fmt.Fscanln(cmd.InOrStdin(), &answer)
	return answer == "y" || answer == "yes"
}
