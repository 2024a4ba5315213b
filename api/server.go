// Package api serves platform-api's HTTP interface: the public REST API under
// /api/v1 (bearer JWT), the gateway-facing routes under /api/internal/v1
// (gateway token in the api-key header) and the operational endpoints.
//
// Handlers return an error; one adapter writes every failure as the
// contract's error body (see errorStatus for the one table of statuses).
package api

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"platform-api/document"
	"platform-api/fleet"
	"platform-api/hub"
	"platform-api/store"
)

// Options are what the HTTP layer needs from the rest of the program.
type Options struct {
	Store  *store.DB
	Auth   *Authenticator
	Logger *slog.Logger
	// MaxBodyBytes limits JSON request bodies (413 above it).
	MaxBodyBytes int64
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
	// MetricsToken, if set, is the bearer token GET /metrics requires;
	// without it only loopback clients may read the metrics.
	MetricsToken string
	// Version is reported by platform_build_info.
	Version string
}

// Server is the HTTP handler of platform-api.
type Server struct {
	store    *store.DB
	auth     *Authenticator
	log      *slog.Logger
	maxBody  int64
	origins  []string
	fleet    *fleet.Fleet
	hub      *hub.Hub
	docs     *document.Cache // rendered revisions for gateway downloads
	limiter  *rateLimiter
	trustXFF bool
	mux      *http.ServeMux

	metrics      *metrics
	metricsToken string
	shuttingDown atomic.Bool
}

// DefaultMaxBodyBytes is the contract's default JSON body limit.
const DefaultMaxBodyBytes = 1 << 20

// New builds the handler.
func New(o Options) *Server {
	s := &Server{
		store:    o.Store,
		auth:     o.Auth,
		log:      o.Logger,
		maxBody:  o.MaxBodyBytes,
		origins:  o.CORSOrigins,
		mux:      http.NewServeMux(),
		trustXFF: o.TrustForwardedFor,
		docs:     document.NewCache(documentCacheBytes),

		metrics:      newMetrics(o.Version),
		metricsToken: o.MetricsToken,
	}
	if s.maxBody <= 0 {
		s.maxBody = DefaultMaxBodyBytes
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.fleet = fleet.New(fleet.Options{Store: o.Store, Hub: o.Hub, Log: s.log, GenerationGrace: o.GenerationGrace,
		DeliveryWait: o.DeliveryWait})
	s.hub = s.fleet.Hub()
	rate := o.WSRateLimitPerMinute
	if rate <= 0 {
		rate = DefaultWSRateLimitPerMinute
	}
	s.limiter = newRateLimiter(rate, time.Minute)
	// A store already observed (shared by another Server) keeps its hook.
	if o.Store != nil && o.Store.OnTx == nil {
		o.Store.OnTx = s.metrics.observeTx
	}
	s.routes()
	return s
}

// Hub is the gateway connection registry, for shutdown and metrics.
func (s *Server) Hub() *hub.Hub { return s.hub }

// Close stops the background work of the server, once its hub has shut
// down.
func (s *Server) Close() { s.fleet.Close() }

// SetShuttingDown makes GET /ready answer 503 from now on, so that a load
// balancer stops sending traffic while in-flight requests finish.
func (s *Server) SetShuttingDown() { s.shuttingDown.Store(true) }

// handlerFunc is a handler that returns its failure instead of writing it.
type handlerFunc func(w http.ResponseWriter, r *http.Request) error

// userHandler is a handler of the public API, called with the verified caller.
type userHandler func(w http.ResponseWriter, r *http.Request, p Principal) error

func (s *Server) handle(h handlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := h(w, r); err != nil {
			writeError(w, r, s.log, err)
		}
	})
}

// user wraps a public-API handler with bearer JWT authentication and the
// check of the ids in its path and query.
func (s *Server) user(h userHandler) http.Handler {
	return s.handle(func(w http.ResponseWriter, r *http.Request) error {
		raw, ok := bearerToken(r)
		if !ok {
			w.Header().Set("WWW-Authenticate", `Bearer`)
			return errorf(http.StatusUnauthorized, "missing bearer token: send Authorization: Bearer <JWT>")
		}
		p, err := s.auth.Authenticate(raw)
		if err != nil {
			w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
			return errorf(http.StatusUnauthorized, "%v", err)
		}
		if err := checkIDs(r); err != nil {
			return err
		}
		return h(w, r, p)
	})
}

func bearerToken(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	scheme, tok, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	tok = strings.TrimSpace(tok)
	return tok, tok != ""
}

// ServeHTTP adds the request ID, the access log, the request metrics and
// CORS, answers unknown routes and wrong methods with the JSON error body,
// and dispatches.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	id := newRequestID()
	rec := &statusWriter{ResponseWriter: w, status: http.StatusOK}
	rec.Header().Set("X-Request-Id", id)
	// The mux pattern, never the path, labels the metrics: the label set
	// stays bounded whatever clients request.
	route := "unmatched"
	defer func() {
		s.metrics.observeRequest(route, rec.status, time.Since(start))
		level := slog.LevelInfo
		if rec.status >= 500 && rec.status != http.StatusServiceUnavailable {
			level = slog.LevelError
		}
		// The path only: query strings and headers may carry secrets.
		s.log.Log(r.Context(), level, "request", "method", r.Method, "path", r.URL.Path,
			"status", rec.status, "bytes", rec.bytes, "duration", time.Since(start), "requestId", id,
			"remote", r.RemoteAddr)
	}()
	if s.cors(rec, r) {
		return
	}
	_, pattern := s.mux.Handler(r)
	if pattern == "" {
		s.notRouted(rec, r)
		return
	}
	route = pattern
	s.mux.ServeHTTP(rec, r)
}

// notRouted answers a request no route takes with the status the mux would
// give (404, 405 with Allow, or a redirect to the clean path), in JSON.
func (s *Server) notRouted(w http.ResponseWriter, r *http.Request) {
	h, _ := s.mux.Handler(r)
	probe := httptest.NewRecorder()
	h.ServeHTTP(probe, r)
	switch {
	case probe.Code == http.StatusMethodNotAllowed:
		w.Header().Set("Allow", probe.Header().Get("Allow"))
		writeError(w, r, s.log, errorf(probe.Code, "method %s is not allowed on %s; allowed: %s", r.Method, r.URL.Path, probe.Header().Get("Allow")))
	case probe.Code >= 300 && probe.Code < 400:
		h.ServeHTTP(w, r)
	case strings.HasPrefix(r.URL.Path, "/api/internal/"):
		writeError(w, r, s.log, errorf(http.StatusNotFound, "%s", notRoutedInternal(r.URL.Path)))
	default:
		writeError(w, r, s.log, errorf(http.StatusNotFound, "no route for %s %s", r.Method, r.URL.Path))
	}
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

func newRequestID() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// statusWriter records the status and size for the access log. It keeps the
// optional interfaces reachable through Unwrap (http.ResponseController) and
// Hijack (the WebSocket upgrade).
type statusWriter struct {
	http.ResponseWriter
	status      int
	bytes       int
	wroteHeader bool
}

func (w *statusWriter) WriteHeader(code int) {
	if !w.wroteHeader {
		w.status, w.wroteHeader = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	w.wroteHeader = true
	n, err := w.ResponseWriter.Write(b)
	w.bytes += n
	return n, err
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Hijack hands the connection to the WebSocket upgrade; the access log
// records it as 101.
func (w *statusWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, buf, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err == nil {
		w.status, w.wroteHeader = http.StatusSwitchingProtocols, true
	}
	return conn, buf, err
}

func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}
