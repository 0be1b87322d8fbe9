package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/distonet/distonet/internal/registry"
)

// Routes the donation agent on a booted node calls with its agent token.
const (
	AgentRegisterPath  = "/api/agent/register"
	AgentHeartbeatPath = "/api/agent/heartbeat"
	AgentWithdrawPath  = "/api/agent/withdraw"
)

// agentExport is an export as the agent reports it.
type agentExport struct {
	Device    string `json:"device"`
	Transport string `json:"transport"`
	Address   string `json:"address"`
	SizeBytes int64  `json:"size_bytes"`
	MAC       string `json:"mac,omitempty"`
	Window    string `json:"window,omitempty"`
}

type agentStatus struct {
	State  string       `json:"state"` // idle | online | withdrawing
	Export *agentExport `json:"export,omitempty"`
	Error  string       `json:"error,omitempty"`
}

type agentReply struct {
	Policy     json.RawMessage `json:"policy"`
	Registered bool            `json:"registered"`
	Released   bool            `json:"released"`
	Withdraw   bool            `json:"withdraw"`
}

func (s *Server) agentRoutes(mux *http.ServeMux) {
	mux.HandleFunc("POST "+AgentRegisterPath, s.nodeAuth(s.agentRegister))
	mux.HandleFunc("POST "+AgentHeartbeatPath, s.nodeAuth(s.agentHeartbeat))
	mux.HandleFunc("POST "+AgentWithdrawPath, s.nodeAuth(s.agentWithdraw))
}

func decode(r *http.Request, v any) error {
	if err := json.NewDecoder(io.LimitReader(r.Body, 64<<10)).Decode(v); err != nil {
		return fmt.Errorf("body: %w", err)
	}
	return nil
}

func (s *Server) putExport(n registry.Node, e agentExport, state, remote string) error {
	switch e.Transport {
	case "aoe", "iscsi":
	default:
		return fmt.Errorf("transport %q: want aoe or iscsi", e.Transport)
	}
	if e.Device == "" || e.Address == "" || e.SizeBytes <= 0 {
		return errors.New("export: device, address and size_bytes are required")
	}
	d := registry.DonatedDisk{
		Node: n.Name, Group: n.Group, Device: e.Device, Transport: e.Transport, Address: e.Address,
		SizeBytes: e.SizeBytes, State: state, Window: n.Donate.Window, MAC: e.MAC, LastSeen: time.Now().UTC(),
	}
	if e.Transport == "iscsi" {
		// The agent's target listens on the node's own address, the one it calls us from.
		if ip, _, err := net.SplitHostPort(remote); err == nil {
			d.Portal = net.JoinHostPort(ip, "3260")
		}
	}
	return s.Store.PutDisk(d)
}

func (s *Server) agentRegister(w http.ResponseWriter, r *http.Request, n registry.Node) {
	var e agentExport
	if err := decode(r, &e); err != nil {
		writeErr(w, http.StatusBadRequest, "", err)
		return
	}
	if err := s.putExport(n, e, "online", r.RemoteAddr); err != nil {
		writeErr(w, http.StatusBadRequest, "", err)
		return
	}
	s.Log.Info("disk donated", "node", n.Name, "transport", e.Transport, "address", e.Address, "size", e.SizeBytes)
	_ = s.Store.RecordStage(n.Name, registry.Stage{Stage: "donated", OK: true, Message: e.Transport + " " + e.Address}, "")
	w.WriteHeader(http.StatusNoContent)
}

// agentHeartbeat refreshes the inventory and answers with the node's current policy.
func (s *Server) agentHeartbeat(w http.ResponseWriter, r *http.Request, n registry.Node) {
	var st agentStatus
	if err := decode(r, &st); err != nil {
		writeErr(w, http.StatusBadRequest, "", err)
		return
	}
	disks, err := s.Store.Disks()
	if err != nil {
		writeErr(w, http.StatusInternalServerError, "", err)
		return
	}
	var known *registry.DonatedDisk
	for i := range disks {
		if st.Export != nil && disks[i].Node == n.Name && disks[i].Address == st.Export.Address && disks[i].State != "withdrawn" {
			known = &disks[i]
		}
	}
	reply := agentReply{Registered: known != nil}
	if known != nil {
		state := "online"
		if st.State == "withdrawing" {
			state = "withdrawing"
		}
		_ = s.Store.UpdateDisks(n.Name, func(d *registry.DonatedDisk) {
			if d.Address == known.Address {
				d.LastSeen, d.State = time.Now().UTC(), state
			}
		})
		// The member may go once no assembled array still uses it.
		reply.Released = st.State == "withdrawing" && (s.InUse == nil || !s.InUse(n.Name, known.Address))
	}
	if s.Boot != nil {
		cfg, err := s.Boot.BootConfig(n)
		if err != nil {
			writeErr(w, http.StatusInternalServerError, "", err)
			return
		}
		reply.Policy, _ = json.Marshal(cfg.Donate)
	}
	writeJSON(w, http.StatusOK, reply)
}

func (s *Server) agentWithdraw(w http.ResponseWriter, r *http.Request, n registry.Node) {
	if err := s.Store.UpdateDisks(n.Name, func(d *registry.DonatedDisk) {
		d.State, d.LastSeen = "withdrawn", time.Now().UTC()
	}); err != nil {
		writeErr(w, http.StatusInternalServerError, "", err)
		return
	}
	s.Log.Info("donation withdrawn", "node", n.Name)
	w.WriteHeader(http.StatusNoContent)
}
