package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/distonet/distonet/donate"
	"github.com/distonet/distonet/overlay/iscsit"
)

func newDonateCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "donate", Short: "Export a disk to the pool by hand (as the node agent does)"}
	cmd.AddCommand(newDonateExportCommand())
	return cmd
}

func newDonateExportCommand() *cobra.Command {
	var (
		opts                      donate.ExportOptions
		aoeAddr                   string
		allow                     []string
		iqn, chapUser, chapSecret string
		initiators                []string
		listen                    string
	)
	cmd := &cobra.Command{
		Use:   "export --device PATH (--interface IF --aoe SHELF.SLOT | --iscsi IQN --chap-user U --chap-secret S)",
		Short: "Export one device or file over AoE (like vblade) or iSCSI, in the foreground",
		Long: `Export one device or file to the pool until interrupted. Over AoE (the default) it is
durable: a write is acknowledged only once it is on stable storage (vblade needs -s for
that). It refuses a device that carries a partition table or a filesystem signature unless
--wipe is given (the signatures are then erased), and a device that is mounted or in use,
always. The MAC allow-list and reservations persist in --state-file.`,
		Example: `  distonet donate export --device /dev/sdb --interface eth0 --aoe 145.0 --allow-mac 52:54:00:12:34:56
  distonet donate export --device /dev/sdb --iscsi iqn.2011-06.org.distonet:donate.sun01 --chap-user sun01 --chap-secret "$S"`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			log := slog.New(slog.NewTextHandler(os.Stderr, nil))
			opts.Logger = log
			for _, m := range allow {
				hw, err := net.ParseMAC(m)
				if err != nil {
					return fmt.Errorf("--allow-mac %q: want a MAC address such as 52:54:00:12:34:56", m)
				}
				opts.AllowMACs = append(opts.AllowMACs, hw)
			}
			switch {
			case iqn != "":
				if chapUser == "" || chapSecret == "" {
					return errors.New("--iscsi needs --chap-user and --chap-secret")
				}
				opts.ISCSI = &iscsiDonation{spec: iscsit.TargetSpec{IQN: iqn, CHAPUser: chapUser, CHAPSecret: chapSecret, AllowedInitiators: initiators},
					listen: listen, log: log}
			case aoeAddr != "":
				shelf, slot, err := donate.ParseAoEAddress(aoeAddr)
				if err != nil {
					return fmt.Errorf("--aoe: %w", err)
				}
				opts.Shelf, opts.Slot = shelf, slot
			default:
				return errors.New("say how to export: --aoe SHELF.SLOT (with --interface) or --iscsi IQN")
			}
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return donate.Export(ctx, opts)
		},
	}
	f := cmd.Flags()
	f.StringVar(&opts.Device, "device", "", "device or file to export (required)")
	f.StringVar(&opts.Interface, "interface", "", "AoE: the network interface")
	f.StringVar(&aoeAddr, "aoe", "", "AoE: shelf.slot, e.g. 145.0")
	f.StringArrayVar(&allow, "allow-mac", nil, "AoE: MAC allowed to read and write (repeatable; none: everyone)")
	f.StringVar(&opts.StateFile, "state-file", "", "AoE: where the MAC allow-list, reservations and config string persist")
	f.BoolVar(&opts.Unsafe, "unsafe", false, "AoE: acknowledge writes before they are on stable storage (faster, loses data on power loss)")
	f.BoolVar(&opts.Wipe, "wipe", false, "erase the partition table and filesystem signatures of the device first")
	f.StringVar(&iqn, "iscsi", "", "export over iSCSI with this target IQN instead of AoE")
	f.StringVar(&chapUser, "chap-user", "", "iSCSI: CHAP user name")
	f.StringVar(&chapSecret, "chap-secret", "", "iSCSI: CHAP secret (12-16 characters or more)")
	f.StringArrayVar(&initiators, "allow-initiator", nil, "iSCSI: initiator IQN allowed to log in (repeatable; none: any with the CHAP secret)")
	f.StringVar(&listen, "listen", "0.0.0.0:3260", "iSCSI: address to listen on")
	_ = cmd.MarkFlagRequired("device")
	return cmd
}

// iscsiDonation serves the device with our iSCSI target until ctx ends.
type iscsiDonation struct {
	spec   iscsit.TargetSpec
	listen string
	log    *slog.Logger
}

func (d *iscsiDonation) ExportISCSI(ctx context.Context, device string) error {
	srv, err := iscsit.NewServer(iscsit.Config{Addr: d.listen}, d.log.With("svc", "iscsi"))
	if err != nil {
		return err
	}
	spec := d.spec
	spec.LUNs = []string{device}
	if err := srv.AddTarget(spec); err != nil {
		srv.Close()
		return err
	}
	go func() { <-ctx.Done(); srv.Close() }()
	if err := srv.Serve(ctx); err != nil && ctx.Err() == nil {
		return err
	}
	return nil
}
