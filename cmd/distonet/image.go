package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/distonet/distonet/images/debian"
	"github.com/distonet/distonet/images/store"
	"github.com/distonet/distonet/internal/appliance"
)

func newImageCommand(g *globalFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "image",
		Short: "Import, build and list boot images",
		Long: `Boot images are versioned: each import is a new version under state_dir/images/NAME/vN
(rootfs served read-only over NFS at /images/NAME, kernel and an initramfs the appliance
builds). New boots get the current version; running nodes keep the version they booted.
A running daemon sees a new version at once.`,
	}
	cmd.AddCommand(newImageImportCommand(g), newImageListCommand(g), newImageDebianCommand(g))
	return cmd
}

func newImageImportCommand(g *globalFlags) *cobra.Command {
	var opts store.ImportOptions
	cmd := &cobra.Command{
		Use:   "import NAME --rootfs DIR [--kernel FILE] [--modules DIR]",
		Short: "Import a root filesystem tree as the next version of image NAME",
		Long: `Copy DIR as the next version of image NAME, build its initramfs (the node init plus
the kernel modules a diskless boot needs, from --modules or the rootfs's /lib/modules) and
make it current. Without --kernel the newest /boot/vmlinuz-* of the rootfs is used.`,
		Example: `  distonet image import debian12 --rootfs /srv/rootfs/debian12`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := g.loadConfig(cmd)
			if err != nil {
				return err
			}
			opts.Progress = cmd.ErrOrStderr()
			v, err := appliance.NewStoreCatalog(cfg.StateDir).Store.Import(cmd.Context(), args[0], opts)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "image %s %s is current (kernel %s, NFS export /images/%s)\n", v.Name, v.Label(), v.KernelVersion, v.Name)
			return nil
		},
	}
	cmd.Flags().StringVar(&opts.Rootfs, "rootfs", "", "root filesystem tree to import (required)")
	cmd.Flags().StringVar(&opts.Kernel, "kernel", "", "kernel image (default: the rootfs's newest /boot/vmlinuz-*)")
	cmd.Flags().StringVar(&opts.Modules, "modules", "", "the kernel's module tree lib/modules/<version> with modules.dep (default: from the rootfs)")
	_ = cmd.MarkFlagRequired("rootfs")
	return cmd
}

func newImageListCommand(g *globalFlags) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List images and their versions",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := g.loadConfig(cmd)
			if err != nil {
				return err
			}
			rows, err := appliance.NewStoreCatalog(cfg.StateDir).List()
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(rows)
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "NAME\tVERSION\tCURRENT\tKERNEL\tIMPORTED\tROOTFS")
			for _, r := range rows {
				for _, v := range r.Versions {
					cur := ""
					if v.Version == r.Current {
						cur = "*"
					}
					fmt.Fprintf(w, "%s\tv%d\t%s\t%s\t%s\t%d MiB\n", r.Name, v.Version, cur, v.KernelVersion, v.Imported.Format("2006-01-02 15:04"), v.RootfsBytes>>20)
				}
			}
			return w.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func newImageDebianCommand(g *globalFlags) *cobra.Command {
	var opts debian.Options
	cmd := &cobra.Command{
		Use:   "debian NAME",
		Short: "Build a minimal Debian image from Debian's archive and import it",
		Long: `Build a minimal image (Debian's kernel and busybox-static, plus --package ones) with
apt-get download and dpkg -x — nothing is installed on this machine — then import it as
the next version of NAME. Downloads are cached in --cache.`,
		Example: `  distonet image debian demo
  distonet image debian head --package mdadm --package libc6`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := g.loadConfig(cmd)
			if err != nil {
				return err
			}
			if err := store.ValidateName(args[0]); err != nil {
				return err
			}
			dir, err := os.MkdirTemp("", "distonet-rootfs-")
			if err != nil {
				return err
			}
			defer os.RemoveAll(dir)
			opts.Dir = filepath.Join(dir, "rootfs")
			opts.Progress = cmd.ErrOrStderr()
			if err := debian.Build(cmd.Context(), opts); err != nil {
				return err
			}
			v, err := appliance.NewStoreCatalog(cfg.StateDir).Store.Import(cmd.Context(), args[0], store.ImportOptions{Rootfs: opts.Dir, Progress: cmd.ErrOrStderr()})
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "image %s %s is current (kernel %s)\n", v.Name, v.Label(), v.KernelVersion)
			return nil
		},
	}
	cmd.Flags().StringArrayVar(&opts.Packages, "package", nil, "extra Debian package to unpack (repeatable; dependencies are not resolved)")
	cmd.Flags().StringVar(&opts.CacheDir, "cache", "", "download cache (default /var/cache/distonet/debian)")
	cmd.Flags().StringVar(&opts.Hostname, "hostname", "", "the image's default hostname")
	return cmd
}
