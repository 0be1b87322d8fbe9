package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"syscall"
	"time"
	_ "time/tzdata" // nodes have no zoneinfo; windows are read in the appliance's zone

	"github.com/spf13/cobra"

	"github.com/distonet/distonet/donate/agent"
	"github.com/distonet/distonet/donate/pool/head"
	"github.com/distonet/distonet/images/nodeinit"
	"github.com/distonet/distonet/internal/bootconfig"
	"github.com/distonet/distonet/overlay/iscsit"
)

func newAgentCommand() *cobra.Command {
	var bootConfig, stateDir, iface, logFile string
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Run the donation agent on a booted node (the node init starts it)",
		Long: `Run the donation agent: find the node's spare disk, check it is safe to give, export it
over AoE or iSCSI inside the node's window, register it with the appliance, heartbeat, and
withdraw cleanly (the pool head releases the member first) when the window closes or the
node shuts down. The node init starts it with the boot config it fetched.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			raw, err := os.ReadFile(bootConfig)
			if err != nil {
				return fmt.Errorf("agent: %w", err)
			}
			var bc bootconfig.Config
			if err := json.Unmarshal(raw, &bc); err != nil {
				return fmt.Errorf("agent: boot config %s: %w", bootConfig, err)
			}
			loc := time.UTC
			if bc.Donate.TimeZone != "" {
				if l, err := time.LoadLocation(bc.Donate.TimeZone); err == nil {
					loc = l
				}
			}
			// The agent heartbeats every few seconds: its log goes to a file, not the console
			// a person types on.
			var logOut io.Writer = os.Stderr
			if logFile != "" {
				f, err := os.OpenFile(logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
				if err != nil {
					return fmt.Errorf("agent: log: %w", err)
				}
				defer f.Close()
				logOut = f
				fmt.Fprintf(os.Stderr, "distonet-agent: donation agent for %s (mode %s), log in %s\n", bc.Node, bc.Donate.Mode, logFile)
			}
			log := slog.New(slog.NewTextHandler(logOut, nil)).With("node", bc.Node)
			if iface == "" {
				iface = bootInterface()
			}
			if err := os.MkdirAll(stateDir, 0o700); err != nil {
				return fmt.Errorf("agent: %w", err)
			}
			a, err := agent.New(agent.Config{
				Appliance: agent.NewHTTPAppliance(bc.Server, bc.AgentToken),
				AoE:       agent.AoEExporter{Interface: iface, StateDir: stateDir, Logger: log},
				ISCSI:     &iscsiExporter{log: log},
				StateDir:  stateDir,
				Location:  loc,
				Power:     powerAction,
				Logger:    log,
			})
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			if bc.Role == "pool-head" {
				// This node assembles the pool: run the head beside the agent, on the
				// appliance's plan, with the node's own token.
				hlog := log.With("svc", "pool-head")
				prepareHead(hlog)
				mode := exportNFS
				if bc.Pool != nil && bc.Pool.Export != "" {
					mode = bc.Pool.Export
				}
				exp, err := nodeExporter(ctx, mode, hlog)
				if err != nil {
					// The arrays still come up, mounted on this node only.
					hlog.Error("pool arrays will not be exported", "err", err)
				}
				hc := head.ServerConfig{
					Head:     head.New(head.Config{Logger: hlog, Exporter: exp}),
					Registry: &headClient{newAPIClient(bc.Server, bc.AgentToken)},
					Location: loc, Name: bc.Node, Logger: hlog,
				}
				if bc.Pool != nil {
					hc.StopBefore = time.Duration(bc.Pool.StopBeforeSeconds) * time.Second
					hc.AssembleGrace = time.Duration(bc.Pool.AssembleGraceSeconds) * time.Second
				}
				srv, err := head.NewServer(hc)
				if err != nil {
					return err
				}
				go func() {
					if err := srv.Serve(ctx); err != nil {
						log.Error("pool head stopped", "err", err)
					}
				}()
				log.Info("pool head running on this node")
			}
			log.Info("donation agent running", "server", bc.Server, "interface", iface, "mode", bc.Donate.Mode)
			return a.Run(ctx)
		},
	}
	cmd.Flags().StringVar(&bootConfig, "boot-config", "/run/distonet/boot.json", "the boot config the node init fetched")
	cmd.Flags().StringVar(&stateDir, "state-dir", "/var/lib/distonet-agent", "where the agent keeps its AoE mask list and reservations (persistent on the overlay root)")
	cmd.Flags().StringVar(&logFile, "log", "/run/distonet/agent.log", "log file (\"\" logs to standard error)")
	cmd.Flags().StringVar(&iface, "interface", "", "the boot network interface (default: the one the node init got its DHCP lease on)")
	return cmd
}

// headModules are the kernel modules a pool-head node needs: the AoE initiator and md's
// RAID6 personality (raid456 pulls in the async xor/raid6 helpers).
var headModules = []string{"aoe", "raid456"}

// prepareHead readies a machine to run the pool head: on a booted node the node init starts
// the agent without a PATH (the kernel gives PID 1 none); nothing loads aoe or raid456 on
// demand; and the aoe dead timer can be set only once aoe is loaded.
func prepareHead(log *slog.Logger) {
	if os.Getenv("PATH") == "" {
		os.Setenv("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
	}
	for _, m := range headModules {
		if out, err := exec.Command("modprobe", m).CombinedOutput(); err != nil {
			// Built into the kernel, or missing from the image: mdadm and aoe-discover
			// will say which when the head first uses them.
			log.Warn("modprobe", "module", m, "err", err, "output", string(out))
		}
	}
	setAoEDeadline(log)
}

// aoeDeadSecs is how long the aoe driver lets I/O to a silent target wait before failing it
// (the driver's default is 180 s). md cannot cancel a request in flight to a member whose
// donor lost power: until the driver gives up, md — and every reader of the array — waits.
// The appliance counts a silent donor offline after 35 s; the head fails its member then,
// and the requests already sent to it fail at this deadline.
const aoeDeadSecs = 30

func setAoEDeadline(log *slog.Logger) {
	const param = "/sys/module/aoe/parameters/aoe_deadsecs"
	if err := os.WriteFile(param, []byte(strconv.Itoa(aoeDeadSecs)), 0o644); err != nil {
		log.Warn("aoe dead timer left at the driver's default", "param", param, "err", err)
	}
}

// bootInterface is the NIC the node booted from, as the node init recorded it with its DHCP
// lease; without that record, the first interface that is up, not loopback, with an address.
func bootInterface() string {
	if raw, err := os.ReadFile(nodeinit.LeaseFile); err == nil {
		var l nodeinit.Lease
		if json.Unmarshal(raw, &l) == nil && l.Ifname != "" {
			return l.Ifname
		}
	}
	ifs, _ := net.Interfaces()
	for _, ifi := range ifs {
		if ifi.Flags&net.FlagUp == 0 || ifi.Flags&net.FlagLoopback != 0 || len(ifi.HardwareAddr) != 6 {
			continue
		}
		if addrs, _ := ifi.Addrs(); len(addrs) > 0 {
			return ifi.Name
		}
	}
	return "eth0"
}

func powerAction(action string) error {
	switch action {
	case "poweroff":
		return exec.Command("poweroff").Run()
	case "reboot":
		return exec.Command("reboot").Run()
	}
	return fmt.Errorf("unknown power action %q", action)
}

// iscsiExporter serves the donated disk with our iSCSI target, CHAP-protected and open only
// to the pool head's initiator.
type iscsiExporter struct {
	log *slog.Logger
}

type iscsiRunning struct {
	srv    *iscsit.Server
	cancel context.CancelFunc
	done   chan error
	export agent.Export
}

func (x *iscsiExporter) Start(device string, p agent.Policy) (agent.Running, error) {
	if p.ISCSITarget == "" || p.CHAPSecret == "" {
		return nil, fmt.Errorf("iscsi donation: the policy names no target or CHAP secret")
	}
	srv, err := iscsit.NewServer(iscsit.Config{Addr: "0.0.0.0:3260"}, x.log.With("svc", "iscsi"))
	if err != nil {
		return nil, err
	}
	if err := srv.AddTarget(iscsit.TargetSpec{IQN: p.ISCSITarget, LUNs: []string{device}, CHAPUser: p.CHAPUser, CHAPSecret: p.CHAPSecret,
		AllowedInitiators: p.ISCSIInitiators}); err != nil {
		srv.Close()
		return nil, err
	}
	size, err := deviceSize(device)
	if err != nil {
		srv.Close()
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	return &iscsiRunning{srv: srv, cancel: cancel, done: done,
		export: agent.Export{Device: device, Transport: "iscsi", Address: p.ISCSITarget, SizeBytes: size}}, nil
}

func (r *iscsiRunning) Export() agent.Export { return r.export }

func (r *iscsiRunning) Stop() error {
	r.cancel()
	err := r.srv.Close()
	<-r.done
	return err
}

// deviceSize is a block device's or file's size in bytes.
func deviceSize(path string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	n, err := f.Seek(0, 2)
	if err != nil {
		return 0, fmt.Errorf("size of %s: %w", path, err)
	}
	return n, nil
}
