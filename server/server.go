// Package server composes platform-api's HTTP surface: the public API
// (package api), the gateway side (package gatewayapi) and the operational
// endpoints (health, readiness, metrics, profiles), behind one handler that
// adds the request id, the access log, request metrics and CORS.
package server

import (
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path"
	"platform-api/api"
	"platform-api/auth"
	"platform-api/document"
	"platform-api/fleet"
	"platform-api/gatewayapi"
	"platform-api/httpx"
	"platform-api/hub"
	"platform-api/metrics"
	"platform-api/rollout"
	"platform-api/store"
	"slices"
	"strings"
	"sync/atomic"
	"time"
)

// Options are what the HTTP layer needs from the rest of the program.
type Options struct {
	Store  *store.DB
	Auth   *auth.Authenticator
	Logger *slog.Logger
	// MaxBodyBytes limits JSON request bodies (413 above it).
	MaxBodyBytes int64
	// MaxOpenAPIBytes limits imported OpenAPI documents (0: 10 MiB).
	MaxOpenAPIBytes int64
	// CORSOrigins are the browser origins allowed to call the API; none by
	// default. "*" allows any origin.
	CORSOrigins []string
	// Hub configures the gateway channel; its callbacks are the fleet's.
	Hub hub.Config
	// GenerationGrace is how long a new gateway connection waits for its
	// manifest, and DeliveryWait how long a deploy waits for other
	// replicas' reports (fleet.Options).
	GenerationGrace time.Duration
	DeliveryWait    time.Duration
	// WSRateLimitPerMinute caps gateway connection attempts per client
	// address (0: the default).
	WSRateLimitPerMinute int
	// TrustForwardedFor takes the client address from X-Forwarded-For, for
	// a server behind a reverse proxy that sets it.
	TrustForwardedFor bool
	// MaxDocumentAnswers and MaxDocumentAnswersPerGateway bound the
	// gateways' answers of many documents running at once (0: defaults).
	MaxDocumentAnswers           int
	MaxDocumentAnswersPerGateway int
	// MetricsToken, if set, is the bearer token GET /metrics and the
	// profiles require, on the public port and the operational listener;
	// without it they are served on the operational listener (Ops) only.
	MetricsToken string
	// Version is reported by platform_build_info.
	Version string
}

// Server is the HTTP handler of platform-api.
type Server struct {
	store   *store.DB
	log     *slog.Logger
	origins []string
	fleet   *fleet.Fleet
	hub     *hub.Hub
	mux     *http.ServeMux
	ops     *http.ServeMux // the operational listener's (Ops)
	public  *api.Server
	docs    *document.Source
	// rollouts drives the rollouts this replica holds.
	rollouts *rollout.Driver

	metrics      *metrics.Registry
	metricsToken string
	shuttingDown atomic.Bool
}

// DefaultMaxBodyBytes is the contract's default JSON body limit.
const DefaultMaxBodyBytes = 1 << 20

// New builds the handler.
func New(o Options) *Server {
	s := &Server{
		store:        o.Store,
		log:          o.Logger,
		origins:      o.CORSOrigins,
		mux:          http.NewServeMux(),
		ops:          http.NewServeMux(),
		metrics:      metrics.New(o.Version),
		metricsToken: o.MetricsToken,
	}
	if o.MaxBodyBytes <= 0 {
		o.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.fleet = fleet.New(fleet.Options{Store: o.Store, Hub: o.Hub, Log: s.log, GenerationGrace: o.GenerationGrace,
		DeliveryWait: o.DeliveryWait, Consumers: consumerSources(o.Store)})
	s.hub = s.fleet.Hub()
	// A store already observed (shared by another Server) keeps its hook.
	if o.Store != nil && o.Store.OnTx == nil {
		o.Store.OnTx = s.metrics.ObserveTx
	}
	s.docs = document.NewSource(o.Store, document.CacheBytes)
	s.rollouts = rollout.New(rollout.Options{Store: o.Store, Fleet: s.fleet, Log: s.log})
	s.public = api.New(api.Options{Store: o.Store, Auth: o.Auth, Fleet: s.fleet, Docs: s.docs, Metrics: s.metrics,
		Logger: s.log, MaxBodyBytes: o.MaxBodyBytes, MaxOpenAPIBytes: o.MaxOpenAPIBytes, Rollouts: s.rollouts})
	s.routes(
		s.public,
		gatewayapi.New(gatewayapi.Options{Store: o.Store, Fleet: s.fleet, Docs: s.docs, Metrics: s.metrics,
			Logger: s.log, MaxBodyBytes: o.MaxBodyBytes, WSRateLimitPerMinute: o.WSRateLimitPerMinute,
			TrustForwardedFor: o.TrustForwardedFor, MaxDocumentAnswers: o.MaxDocumentAnswers,
			MaxDocumentAnswersPerGateway: o.MaxDocumentAnswersPerGateway}),
	)
	if o.Store != nil {
		s.rollouts.Start()
	}
	return s
}

// Rollouts is the driver of the rollouts this replica holds.
func (s *Server) Rollouts() *rollout.Driver { return s.rollouts }

// Hub is the gateway connection registry, for shutdown and metrics.
func (s *Server) Hub() *hub.Hub { return s.hub }

// Close stops the background work of the server, once its hub has shut
// down.
func (s *Server) Close() {
	if s.store != nil {
		s.rollouts.Close() // before the fleet: a wave's deploy may be under way
	}
	s.fleet.Close()
}

// SetShuttingDown makes GET /ready answer 503 from now on, so that a load
// balancer stops sending traffic while in-flight requests finish.
func (s *Server) SetShuttingDown() { s.shuttingDown.Store(true) }

func (s *Server) handle(h httpx.HandlerFunc) http.Handler { return httpx.Handle(s.log, h) }

// ServeHTTP adds the request ID, the access log, the request metrics and
// CORS, answers unknown routes and wrong methods with the JSON error body,
// and dispatches.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	id := httpx.NewRequestID()
	rec := httpx.NewStatusWriter(w)
	rec.Header().Set("X-Request-Id", id)
	// The mux pattern, never the path, labels the metrics: the label set
	// stays bounded whatever clients request.
	route := "unmatched"
	defer func() {
		s.metrics.ObserveRequest(route, rec.Status, time.Since(start))
		level := slog.LevelInfo
		if rec.Status >= 500 && rec.Status != http.StatusServiceUnavailable {
			level = slog.LevelError
		}
		// The path only: query strings and headers may carry secrets.
		s.log.Log(r.Context(), level, "request", "method", r.Method, "path", r.URL.Path,
			"status", rec.Status, "bytes", rec.Bytes, "duration", time.Since(start), "requestId", id,
			"remote", r.RemoteAddr)
	}()
	if s.cors(rec, r) {
		return
	}
	_, pattern := s.mux.Handler(r)
	if pattern == "" || r.Method != http.MethodConnect && cleanPath(r.URL.Path) != r.URL.Path {
		s.notRouted(rec, r)
		return
	}
	route = pattern
	s.mux.ServeHTTP(rec, r)
}

// notRouted answers a request no route takes with the status the mux would
// give (404, or 405 with Allow), in JSON; where the mux would redirect to a
// cleaned path, a 404 naming the problem.
func (s *Server) notRouted(w http.ResponseWriter, r *http.Request) {
	if clean := cleanPath(r.URL.Path); r.Method != http.MethodConnect && clean != r.URL.Path {
		// The mux would redirect to the cleaned path. An empty segment is
		// most often a shell variable that was not set (/gateways//tokens),
		// and following a redirect would send the request, token and body
		// included, somewhere the caller never named: a 404 in JSON says
		// what is wrong instead.
		httpx.WriteError(w, r, s.log, httpx.Errorf(http.StatusNotFound, "%s", uncleanPath(r.URL.Path, clean)))
		return
	}
	h, _ := s.mux.Handler(r)
	probe := httptest.NewRecorder()
	h.ServeHTTP(probe, r)
	switch {
	case probe.Code == http.StatusMethodNotAllowed:
		w.Header().Set("Allow", probe.Header().Get("Allow"))
		httpx.WriteError(w, r, s.log, httpx.Errorf(probe.Code, "method %s is not allowed on %s; allowed: %s", r.Method, r.URL.Path, probe.Header().Get("Allow")))
	case probe.Code >= 300 && probe.Code < 400:
		// A missing trailing slash of a subtree (/debug/pprof): the
		// redirect is what a browser needs.
		h.ServeHTTP(w, r)
	case strings.HasPrefix(r.URL.Path, "/api/internal/"):
		httpx.WriteError(w, r, s.log, httpx.Errorf(http.StatusNotFound, "%s", gatewayapi.NotRouted(r.URL.Path)))
	default:
		httpx.WriteError(w, r, s.log, httpx.Errorf(http.StatusNotFound, "no route for %s %s", r.Method, r.URL.Path))
	}
}

// cleanPath is the canonical form of p, as the mux computes it: rooted,
// no empty, "." or ".." segment, a trailing slash kept.
func cleanPath(p string) string {
	if p == "" {
		return "/"
	}
	if p[0] != '/' {
		p = "/" + p
	}
	np := path.Clean(p)
	if p[len(p)-1] == '/' && np != "/" {
		np += "/"
	}
	return np
}

// uncleanPath describes a path that is not in canonical form.
func uncleanPath(p, clean string) string {
	if strings.Contains(p, "//") {
		return fmt.Sprintf("no route for %s: the path has an empty segment (//); is a variable in it unset?", p)
	}
	return fmt.Sprintf("no route for %s: the path is not in canonical form; use %s", p, clean)
}

// cors applies the configured origins. It reports true when it answered a
// preflight request, which needs no token.
func (s *Server) cors(w http.ResponseWriter, r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" || len(s.origins) == 0 {
		return false
	}
	w.Header().Add("Vary", "Origin")
	if !slices.Contains(s.origins, "*") && !slices.Contains(s.origins, origin) {
		return false
	}
	w.Header().Set("Access-Control-Allow-Origin", origin)
	if r.Method != http.MethodOptions || r.Header.Get("Access-Control-Request-Method") == "" {
		return false
	}
	w.Header().Set("Access-Control-Allow-Methods", "GET, POST, PUT, DELETE, OPTIONS")
	w.Header().Set("Access-Control-Allow-Headers", "Authorization, Content-Type")
	w.Header().Set("Access-Control-Max-Age", "600")
	w.WriteHeader(http.StatusNoContent)
	return true
}
