// Package api serves the public REST API under /api/v1, authenticated with
// a bearer JWT: organizations, projects, gateways and their tokens, APIs and
// their deployments.
//
// Handlers return an error; one adapter writes every failure as the
// contract's error body (see httpx.ErrorStatus for the one table of statuses).
package api

import (
	"log/slog"
	"net/http"

	"platform-api/auth"
	"platform-api/document"
	"platform-api/fleet"
	"platform-api/httpx"
	"platform-api/metrics"
	"platform-api/openapi"
	"platform-api/rollout"
	"platform-api/store"
)

// Options are what the public API needs from the rest of the program.
type Options struct {
	Store   *store.DB
	Auth    *auth.Authenticator
	Fleet   *fleet.Fleet
	Docs    *document.Source
	Metrics *metrics.Registry
	Logger  *slog.Logger
	// Rollouts drives the rollouts this replica holds.
	Rollouts *rollout.Driver
	// MaxBodyBytes limits JSON request bodies (413 above it).
	MaxBodyBytes int64
	// MaxOpenAPIBytes limits imported OpenAPI documents (0: 10 MiB).
	MaxOpenAPIBytes int64
}

// Server holds the handlers of the public API.
type Server struct {
	store   *store.DB
	auth    *auth.Authenticator
	log     *slog.Logger
	maxBody int64
	fleet   *fleet.Fleet
	docs    *document.Source
	apiJSON *apiJSONCache // APIs as answered, for pages of APIs
	metrics *metrics.Registry
	// maxOpenAPI limits imported OpenAPI documents; openAPISlots bounds
	// how many are parsed at once (each holds several times its size).
	maxOpenAPI   int64
	openAPISlots chan struct{}
	// rollouts drives the rollouts this replica holds.
	rollouts *rollout.Driver
}

// New builds the public API's handlers.
func New(o Options) *Server {
	if o.MaxOpenAPIBytes <= 0 {
		o.MaxOpenAPIBytes = openapi.DefaultMaxBytes
	}
	return &Server{store: o.Store, auth: o.Auth, log: o.Logger, maxBody: o.MaxBodyBytes, fleet: o.Fleet,
		docs: o.Docs, apiJSON: newAPIJSONCache(apiJSONCacheBytes), metrics: o.Metrics,
		maxOpenAPI: o.MaxOpenAPIBytes, openAPISlots: make(chan struct{}, openAPIParallel), rollouts: o.Rollouts}
}

// openAPIParallel is how many OpenAPI documents are parsed at once; more
// wait their turn.
const openAPIParallel = 2

// userHandler is a handler of the public API, called with the verified caller.
type userHandler func(w http.ResponseWriter, r *http.Request, p auth.Principal) error

// user wraps a public-API handler with bearer JWT authentication and the
// check of the ids in its path and query.
func (s *Server) user(h userHandler) http.Handler {
	return httpx.Handle(s.log, func(w http.ResponseWriter, r *http.Request) error {
		raw, ok := httpx.BearerToken(r)
		if !ok {
			w.Header().Set("WWW-Authenticate", `Bearer`)
			return httpx.Errorf(http.StatusUnauthorized, "missing bearer token: send Authorization: Bearer <JWT>")
		}
		p, err := s.auth.Authenticate(raw)
		if err != nil {
			w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
			return httpx.Errorf(http.StatusUnauthorized, "%v", err)
		}
		if err := httpx.CheckIDs(r); err != nil {
			return err
		}
		// A lost database is a 503 whichever path its error took.
		return s.store.Classify(r.Context(), h(w, r, p))
	})
}
