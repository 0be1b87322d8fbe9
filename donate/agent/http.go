package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// HTTPAppliance talks to the appliance's agent API. Every request carries
// "Authorization: Bearer <agent token>" and a JSON body:
//
//	POST /api/agent/register   Export   -> 204 (or 200)
//	POST /api/agent/heartbeat  Status   -> 200 Reply
//	POST /api/agent/withdraw   {"state":"withdrawn"} -> 204 (or 200)
//
// The appliance knows the node from its token; 401 means the token is wrong or revoked.
type HTTPAppliance struct {
	BaseURL string // e.g. http://10.202.0.1
	Token   string
	Client  *http.Client // default: 10s timeout
}

// NewHTTPAppliance returns a client for the appliance at baseURL.
func NewHTTPAppliance(baseURL, token string) *HTTPAppliance {
	return &HTTPAppliance{BaseURL: strings.TrimSuffix(baseURL, "/"), Token: token, Client: &http.Client{Timeout: 10 * time.Second}}
}

func (h *HTTPAppliance) post(ctx context.Context, path string, in, out any) error {
	body, err := json.Marshal(in)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.BaseURL+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+h.Token)
	c := h.Client
	if c == nil {
		c = http.DefaultClient
	}
	resp, err := c.Do(req)
	if err != nil {
		return fmt.Errorf("appliance %s: %w", path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("appliance %s: %s: %s", path, resp.Status, bytes.TrimSpace(msg))
	}
	if out == nil {
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("appliance %s: decode reply: %w", path, err)
	}
	return nil
}

// Register reports a started export.
func (h *HTTPAppliance) Register(ctx context.Context, e Export) error {
	return h.post(ctx, "/api/agent/register", e, nil)
}

// Heartbeat reports the agent's state and returns the appliance's reply.
func (h *HTTPAppliance) Heartbeat(ctx context.Context, s Status) (Reply, error) {
	var r Reply
	err := h.post(ctx, "/api/agent/heartbeat", s, &r)
	return r, err
}

// Withdrawn reports that the export stopped.
func (h *HTTPAppliance) Withdrawn(ctx context.Context) error {
	return h.post(ctx, "/api/agent/withdraw", map[string]string{"state": "withdrawn"}, nil)
}
