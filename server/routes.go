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
	s.operational(m, s.operator)

	public.Register(m)
	gateways.Register(m)

	// The operational listener: the same endpoints, and health and
	// readiness for probes that reach only it.
	s.ops.Handle("GET /health", s.handle(s.health))
	s.ops.Handle("GET /ready", s.handle(s.ready))
	s.operational(s.ops, s.opsOnly)
}

// operational registers the metrics and the profiles of the running
// server (go tool pprof) behind guard.
func (s *Server) operational(m *http.ServeMux, guard func(http.Handler) http.Handler) {
	m.Handle("GET /metrics", guard(s.handle(s.serveMetrics)))
	m.Handle("GET /debug/pprof/", guard(http.HandlerFunc(pprof.Index)))
	m.Handle("GET /debug/pprof/profile", guard(http.HandlerFunc(pprof.Profile)))
	m.Handle("GET /debug/pprof/trace", guard(http.HandlerFunc(pprof.Trace)))
	m.Handle("GET /debug/pprof/symbol", guard(http.HandlerFunc(pprof.Symbol)))
}

// Ops is the handler of the operational listener (PLATFORM_OPS_ADDR):
// metrics, profiles, health and readiness, plain HTTP, meant for loopback.
// Without a metrics token it is the only place metrics and profiles are
// served.
func (s *Server) Ops() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, pattern := s.ops.Handler(r); pattern == "" {
			httpx.WriteError(w, r, s.log, httpx.Errorf(http.StatusNotFound, "no route for %s %s on the operational listener: it serves /metrics, /debug/pprof/, /health and /ready", r.Method, r.URL.Path))
			return
		}
		s.ops.ServeHTTP(w, r)
	})
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
