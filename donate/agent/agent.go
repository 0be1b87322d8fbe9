// Package agent is the donation loop a booted node runs: it learns its policy from the
// appliance, picks and checks the disk (donate/disk), exports it inside its window (AoE via
// donate/aoe, or an iSCSI exporter the integrator provides), registers the export, heartbeats,
// registers again after an appliance restart, and withdraws cleanly: it tells the appliance
// first, waits until the pool head released the member, then stops exporting.
package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"
	_ "time/tzdata" // a diskless node may have no zoneinfo, the policy names the appliance's zone

	"github.com/distonet/distonet/donate/disk"
	"github.com/distonet/distonet/donate/window"
)

// Policy is the node's donation policy as the appliance sends it (bootconfig.Donate's JSON).
type Policy struct {
	Mode      string   `json:"mode"`             // none | aoe | iscsi
	Device    string   `json:"device,omitempty"` // path or LABEL=...; empty: the largest safe spare disk
	Wipe      bool     `json:"wipe,omitempty"`
	Window    string   `json:"window,omitempty"` // HH:MM-HH:MM; empty: always
	Shelf     int      `json:"shelf,omitempty"`
	Slot      int      `json:"slot,omitempty"`
	AllowMACs []string `json:"allow_macs,omitempty"`
	// iSCSI export (for the integrator's Exporter). CHAPSecret is a secret: never logged.
	ISCSITarget     string   `json:"iscsi_target,omitempty"`
	ISCSIInitiators []string `json:"iscsi_initiators,omitempty"`
	CHAPUser        string   `json:"chap_user,omitempty"`
	CHAPSecret      string   `json:"chap_secret,omitempty"`
	// TimeZone is the appliance's IANA time zone (e.g. "Europe/Paris"): windows are read in
	// it, whatever the node's own clock zone. Empty: Config.Location.
	TimeZone string `json:"time_zone,omitempty"`
	// AfterWindow is what the node does once it withdrew at the window's close: "poweroff",
	// "reboot" (to its local OS) or "" (stay up, diskless).
	AfterWindow string `json:"after_window,omitempty"`
}

// State is where the agent's donation stands.
type State string

const (
	StateIdle        State = "idle"        // nothing exported
	StateOnline      State = "online"      // exported and registered
	StateWithdrawing State = "withdrawing" // asked the appliance to release the member
)

// Export describes an export to the appliance (field names as registry.DonatedDisk).
type Export struct {
	Device    string `json:"device"`
	Transport string `json:"transport"` // aoe | iscsi
	Address   string `json:"address"`   // e<shelf>.<slot> or the target IQN
	SizeBytes int64  `json:"size_bytes"`
	MAC       string `json:"mac,omitempty"`
	Window    string `json:"window,omitempty"`
}

// Status is what a heartbeat reports.
type Status struct {
	State  State   `json:"state"`
	Export *Export `json:"export,omitempty"`
	Error  string  `json:"error,omitempty"` // why nothing is exported (refused disk...), for the UI
}

// Reply is the appliance's answer to a heartbeat.
type Reply struct {
	Policy     Policy `json:"policy"`
	Registered bool   `json:"registered"` // false: the appliance does not know our export (it restarted)
	Released   bool   `json:"released"`   // the pool head released the member: stop exporting now
	Withdraw   bool   `json:"withdraw"`   // the appliance asks for a withdrawal (e.g. admin action)
}

// Appliance is the agent's view of the appliance (the HTTP client in http.go, a fake in tests).
type Appliance interface {
	Register(ctx context.Context, e Export) error
	Heartbeat(ctx context.Context, s Status) (Reply, error)
	Withdrawn(ctx context.Context) error
}

// Exporter starts serving a checked device.
type Exporter interface {
	Start(device string, p Policy) (Running, error)
}

// Running is a started export.
type Running interface {
	Export() Export
	Stop() error
}

// Config wires an Agent. Zero durations take the documented defaults.
type Config struct {
	Appliance Appliance
	AoE       Exporter // e.g. AoEExporter; nil: mode aoe is refused
	ISCSI     Exporter // the integrator's iSCSI exporter; nil: mode iscsi is refused
	// StateDir keeps which devices this node donated before, so the pool head's own md
	// superblock on them is not taken for foreign data (persistent overlay root on a node).
	StateDir          string
	Now               func() time.Time // default time.Now; the window is read in Location
	Location          *time.Location   // the appliance's time zone; default time.Local
	HeartbeatInterval time.Duration    // default 10s
	ReleasePoll       time.Duration    // heartbeat period while withdrawing; default 1s
	ReleaseTimeout    time.Duration    // stop anyway after this long without a release; default 2m
	MinSize           int64            // disk.Policy.MinSize
	// Power runs Policy.AfterWindow ("poweroff" or "reboot") after a withdrawal caused by the
	// window closing. nil: the agent only logs it (the node init provides the real action).
	Power  func(action string) error
	System disk.System
	Logger *slog.Logger
}

// Agent runs the donation loop.
type Agent struct {
	cfg Config
	log *slog.Logger

	mu      sync.Mutex
	state   State
	running Running
	export  *Export
	lastErr string
}

// New checks the configuration and returns an agent.
func New(cfg Config) (*Agent, error) {
	if cfg.Appliance == nil {
		return nil, errors.New("agent: an Appliance is required")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Location == nil {
		cfg.Location = time.Local
	}
	if cfg.HeartbeatInterval <= 0 {
		cfg.HeartbeatInterval = 10 * time.Second
	}
	if cfg.ReleasePoll <= 0 {
		cfg.ReleasePoll = time.Second
	}
	if cfg.ReleaseTimeout <= 0 {
		cfg.ReleaseTimeout = 2 * time.Minute
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Agent{cfg: cfg, log: cfg.Logger.With("stage", "donate"), state: StateIdle}, nil
}

// State returns the current state and export.
func (a *Agent) State() (State, *Export) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.state, a.export
}

func (a *Agent) status() Status {
	a.mu.Lock()
	defer a.mu.Unlock()
	return Status{State: a.state, Export: a.export, Error: a.lastErr}
}

// Run loops until ctx ends; it then withdraws (bounded by ReleaseTimeout) and returns nil.
func (a *Agent) Run(ctx context.Context) error {
	var policy Policy
	known := false
	for {
		reply, err := a.cfg.Appliance.Heartbeat(ctx, a.status())
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			// Keep exporting through an appliance outage: the pool head still uses the disk.
			a.log.Warn("heartbeat failed", "err", err)
		} else {
			policy, known = reply.Policy, true
			if st, exp := a.State(); st == StateOnline && !reply.Registered && exp != nil {
				a.log.Info("appliance does not know our export (restarted?): registering again", "address", exp.Address)
				if err := a.cfg.Appliance.Register(ctx, *exp); err != nil {
					a.log.Warn("register failed", "err", err)
				}
			}
		}
		want, why := a.wanted(known, policy, reply.Withdraw && err == nil)
		switch st, _ := a.State(); {
		case st == StateIdle && want:
			if err := a.start(ctx, policy); err != nil {
				a.mu.Lock()
				repeated := a.lastErr == err.Error()
				a.lastErr = err.Error()
				a.mu.Unlock()
				if !repeated { // retried every heartbeat: say it once
					a.log.Warn("not donating", "err", err)
				}
			}
		case st == StateOnline && !want:
			a.log.Info("withdrawing", "reason", why)
			a.withdraw(ctx)
			if closed := known && a.windowClosed(policy); closed && policy.AfterWindow != "" {
				a.log.Info("window closed: power action", "action", policy.AfterWindow)
				if a.cfg.Power != nil {
					if err := a.cfg.Power(policy.AfterWindow); err != nil {
						a.log.Warn("power action failed", "action", policy.AfterWindow, "err", err)
					}
				}
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(a.sleep(policy)):
			continue
		}
		break
	}
	// Shutdown: the node is going away; give the pool its chance to release the member.
	if st, _ := a.State(); st == StateOnline {
		wctx, cancel := context.WithTimeout(context.Background(), a.cfg.ReleaseTimeout)
		defer cancel()
		a.log.Info("withdrawing", "reason", "agent stopping")
		a.withdraw(wctx)
	}
	return nil
}

// wanted says whether the disk should be exported now, and if not, why.
func (a *Agent) wanted(known bool, p Policy, asked bool) (bool, string) {
	switch {
	case !known:
		return false, "no policy yet"
	case p.Mode != "aoe" && p.Mode != "iscsi":
		return false, "policy donates nothing"
	case asked:
		return false, "appliance asked"
	}
	w, err := window.Parse(p.Window)
	if err != nil {
		return false, err.Error()
	}
	if !w.Contains(a.now(p)) {
		return false, "outside the donation window " + p.Window
	}
	return true, ""
}

// now is the current time in the zone the policy's window is written in.
func (a *Agent) now(p Policy) time.Time {
	loc := a.cfg.Location
	if p.TimeZone != "" {
		if l, err := time.LoadLocation(p.TimeZone); err == nil {
			loc = l
		} else {
			a.log.Warn("unknown time zone in policy: using the configured one", "time_zone", p.TimeZone, "err", err)
		}
	}
	return a.cfg.Now().In(loc)
}

// windowClosed reports whether the policy's window is closed now (not merely withdrawn for
// another reason).
func (a *Agent) windowClosed(p Policy) bool {
	w, err := window.Parse(p.Window)
	return err == nil && !w.Contains(a.now(p))
}

// sleep is the time to the next heartbeat, shortened to wake right at a window edge.
func (a *Agent) sleep(p Policy) time.Duration {
	d := a.cfg.HeartbeatInterval
	w, err := window.Parse(p.Window)
	if err != nil || w.IsAlways() {
		return d
	}
	now := a.now(p)
	for _, edge := range []time.Time{w.NextOpen(now), w.NextClose(now)} {
		if until := edge.Sub(now); until > 0 && until < d {
			d = until
		}
	}
	return d
}

func (a *Agent) start(ctx context.Context, p Policy) error {
	ex := a.cfg.AoE
	if p.Mode == "iscsi" {
		ex = a.cfg.ISCSI
	}
	if ex == nil {
		return fmt.Errorf("no exporter for mode %q on this node", p.Mode)
	}
	dp := disk.Policy{Wipe: p.Wipe, MinSize: a.cfg.MinSize, System: a.cfg.System}
	if p.Device != "" {
		dp.Devices = []string{p.Device}
	}
	dev, err := a.chooseDevice(dp)
	if err != nil {
		return err
	}
	if p.Wipe && !slices.Contains(a.donatedBefore(), dev) {
		if err := disk.CheckDonatable(dev, disk.Policy{MinSize: -1, AllowRemovable: true, System: a.cfg.System}); errors.Is(err, disk.ErrSignature) {
			a.log.Warn("wiping signatures as the policy allows", "device", dev)
			if err := disk.Wipe(dev); err != nil {
				return err
			}
		}
	}
	r, err := ex.Start(dev, p)
	if err != nil {
		return fmt.Errorf("export %s: %w", dev, err)
	}
	e := r.Export()
	e.Window = p.Window
	a.rememberDonated(dev)
	a.mu.Lock()
	a.running, a.export, a.state, a.lastErr = r, &e, StateOnline, ""
	a.mu.Unlock()
	a.log.Info("donating", "device", dev, "transport", e.Transport, "address", e.Address, "size_bytes", e.SizeBytes)
	if err := a.cfg.Appliance.Register(ctx, e); err != nil {
		// The next heartbeat says Registered=false and we try again.
		a.log.Warn("register failed", "err", err)
	}
	return nil
}

// chooseDevice prefers a disk this node donated before (allowed by the policy): it carries
// the pool head's RAID superblock, which is accepted there and only there, so the member
// re-adds with its write-intent bitmap. Otherwise the policy's normal choice.
func (a *Agent) chooseDevice(dp disk.Policy) (string, error) {
	named := func(dev string) bool {
		for _, d := range dp.Devices {
			if label, ok := strings.CutPrefix(d, "LABEL="); ok {
				if p, err := disk.FindByLabel(dp.System, label); err == nil && p == dev {
					return true
				}
			} else if d == dev {
				return true
			}
		}
		return len(dp.Devices) == 0
	}
	for _, dev := range a.donatedBefore() {
		if !named(dev) {
			continue
		}
		again := dp
		again.Devices = []string{dev}
		again.AcceptSignatures = []string{"linux_raid_member"}
		if err := disk.CheckDonatable(dev, again); err == nil {
			return dev, nil
		}
	}
	return disk.Choose(dp)
}

// withdraw asks the appliance to release the member, waits for the release (or the
// timeout), stops the export and reports the withdrawal.
func (a *Agent) withdraw(ctx context.Context) {
	a.mu.Lock()
	a.state = StateWithdrawing
	a.mu.Unlock()
	deadline := time.Now().Add(a.cfg.ReleaseTimeout)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		reply, err := a.cfg.Appliance.Heartbeat(ctx, a.status())
		if err == nil && reply.Released {
			break
		}
		select {
		case <-ctx.Done():
		case <-time.After(a.cfg.ReleasePoll):
		}
	}
	if time.Now().After(deadline) || ctx.Err() != nil {
		a.log.Warn("pool did not confirm the release in time: stopping the export anyway")
	}
	a.mu.Lock()
	r := a.running
	a.running, a.export, a.state = nil, nil, StateIdle
	a.mu.Unlock()
	if r != nil {
		if err := r.Stop(); err != nil {
			a.log.Warn("stop export", "err", err)
		}
	}
	rctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := a.cfg.Appliance.Withdrawn(rctx); err != nil {
		a.log.Warn("report withdrawal", "err", err)
	}
	a.log.Info("withdrawn")
}

type donatedFile struct {
	Devices []string `json:"devices"`
}

func (a *Agent) donatedBefore() []string {
	if a.cfg.StateDir == "" {
		return nil
	}
	b, err := os.ReadFile(filepath.Join(a.cfg.StateDir, "donated.json"))
	if err != nil {
		return nil
	}
	var f donatedFile
	_ = json.Unmarshal(b, &f)
	return f.Devices
}

func (a *Agent) rememberDonated(dev string) {
	if a.cfg.StateDir == "" {
		return
	}
	prev := a.donatedBefore()
	if slices.Contains(prev, dev) {
		return
	}
	b, _ := json.Marshal(donatedFile{Devices: append(prev, dev)})
	p := filepath.Join(a.cfg.StateDir, "donated.json")
	if err := os.MkdirAll(a.cfg.StateDir, 0o700); err == nil {
		tmp := p + ".tmp"
		if err := os.WriteFile(tmp, b, 0o600); err == nil {
			_ = os.Rename(tmp, p)
		}
	}
}
