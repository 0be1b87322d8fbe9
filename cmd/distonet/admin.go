package main

import (
	"bufio"
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/distonet/distonet/internal/web"
)

func newAdminCommand(g *globalFlags) *cobra.Command {
	cmd := &cobra.Command{Use: "admin", Short: "Administer the web UI"}
	cmd.AddCommand(&cobra.Command{
		Use:   "passwd",
		Short: "Set the web UI admin password (read from standard input)",
		Long: `Set the web UI admin password. The password is read from the first line of standard
input (so it never appears in the process list or shell history) and stored as a bcrypt
hash in state_dir/admin.passwd. A running daemon uses it at the next login.`,
		Example: `  read -rs PW && printf '%s\n' "$PW" | distonet admin passwd`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := g.loadConfig(cmd)
			if err != nil {
				return err
			}
			line, err := bufio.NewReader(cmd.InOrStdin()).ReadString('\n')
			if err != nil && line == "" {
				return errors.New("admin passwd: no password on standard input")
			}
			pw := strings.TrimRight(line, "\r\n")
			if len(pw) < 8 {
				return errors.New("admin passwd: the password must have at least 8 characters")
			}
			if err := web.SetPassword(cfg.StateDir, []byte(pw)); err != nil {
				return fmt.Errorf("admin passwd: %w", err)
			}
			fmt.Fprintln(cmd.OutOrStdout(), "admin password set")
			return nil
		},
	})
	return cmd
}
