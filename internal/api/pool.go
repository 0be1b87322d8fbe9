package api

import (
	"io"
	"net/http"
)

// Pool routes: the inventory and plan for admins, and the pool head's side (the layout to
// build, and reports of what it built). A head is the appliance host (admin token) or a
// node enrolled with the pool-head role (its node token).
const (
	PoolStatusPath = "/api/pool"
	PoolLayoutPath = "/api/pool/layout"
	PoolReportPath = "/api/pool/report"
)

// PoolHooks connect the pool routes to the appliance.
type PoolHooks struct {
	Status func() ([]byte, error)    // `pool status --json`
	Layout func() ([]byte, error)    // the planned arrays (pool.Layout JSON)
	Report func(report []byte) error // one pool.ArrayStatus JSON from a head
}

func (s *Server) poolRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET "+PoolStatusPath, s.poolHead(s.rawJSON(func() ([]byte, error) { return s.Pool.Status() })))
	mux.HandleFunc("GET "+PoolLayoutPath, s.poolHead(s.rawJSON(func() ([]byte, error) { return s.Pool.Layout() })))
	mux.HandleFunc("POST "+PoolReportPath, s.poolHead(func(w http.ResponseWriter, r *http.Request) {
		raw, err := io.ReadAll(io.LimitReader(r.Body, 4<<20))
		if err == nil {
			err = s.Pool.Report(raw)
		}
		if err != nil {
			writeErr(w, http.StatusBadRequest, "", err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
}

// poolHead admits the admin token, a web session, or a pool-head node's token.
func (s *Server) poolHead(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if n, ok := s.Store.NodeByToken(bearer(r)); ok && n.Role == "pool-head" {
			h(w, r)
			return
		}
		s.admin(h)(w, r)
	}
}

func (s *Server) rawJSON(get func() ([]byte, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if s.Pool.Status == nil {
			writeErr(w, http.StatusServiceUnavailable, "", errNoPool)
			return
		}
		raw, err := get()
		if err != nil {
			writeErr(w, http.StatusInternalServerError, "", err)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		_, _ = w.Write(raw)
	}
}
