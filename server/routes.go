package server

import (
	"context"
	"net/http"
	"net/http/pprof"
	"platform-api/api"
	"platform-api/gatewayapi"
	"platform-api/httpx"
	"time"
)

// routes is the whole HTTP surface, in the contract's order: the
// operational endpoints, then the public API, then the gateways'.
func (s *Server) routes(public *api.Server, gateways *gatewayapi.Server) {
	m := s.mux
	m.Handle("GET /health", s.handle(s.health))
	m.Handle("GET /ready", s.handle(s.ready))
	m.Handle("GET /metrics", s.operator(s.handle(s.serveMetrics)))
	// Profiles of the running server (go tool pprof), for the operator.
	m.Handle("GET /debug/pprof/", s.operator(http.HandlerFunc(pprof.Index)))
	m.Handle("GET /debug/pprof/profile", s.operator(http.HandlerFunc(pprof.Profile)))
	m.Handle("GET /debug/pprof/trace", s.operator(http.HandlerFunc(pprof.Trace)))
	m.Handle("GET /debug/pprof/symbol", s.operator(http.HandlerFunc(pprof.Symbol)))

	public.Register(m)
	gateways.Register(m)
}

func (s *Server) health(w http.ResponseWriter, r *http.Request) error {
	httpx.WriteJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	return nil
}

// ready tells a load balancer whether to send traffic: unlike /health it
// asks the database, and it fails as soon as shutdown begins.
func (s *Server) ready(w http.ResponseWriter, r *http.Request) error {
	if s.shuttingDown.Load() {
		return httpx.Errorf(http.StatusServiceUnavailable, "the server is shutting down")
	}
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if err := s.store.Ping(ctx); err != nil {
		s.log.Warn("readiness check: database does not answer", "err", err)
		return httpx.Errorf(http.StatusServiceUnavailable, "the database does not answer")
	}
	httpx.WriteJSON(w, http.StatusOK, map[string]string{"status": "ready"})
	return nil
}
