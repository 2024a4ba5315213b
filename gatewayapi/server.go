// Package gatewayapi serves everything a gateway calls, both generations:
// the WebSocket channel, the /api/internal/v1 downloads, reports, manifest,
// startup sync, fetch-batch and import. Every route but the channel's
// upgrade authenticates the gateway token in the api-key header; the
// channel's handshake does too, before the upgrade.
package gatewayapi

import (
	"log/slog"
	"time"

	"platform-api/document"
	"platform-api/fleet"
	"platform-api/httpx"
	"platform-api/hub"
	"platform-api/metrics"
	"platform-api/store"
)

// DefaultWSRateLimitPerMinute is the default cap on gateway connection
// attempts per client address. It is generous because a fleet behind one
// NAT reconnects at once after a control-plane restart.
const DefaultWSRateLimitPerMinute = 600

// Options are what the gateway side needs from the rest of the program.
type Options struct {
	Store   *store.DB
	Fleet   *fleet.Fleet
	Docs    *document.Source
	Metrics *metrics.Registry
	Logger  *slog.Logger
	// MaxBodyBytes limits JSON request bodies (413 above it).
	MaxBodyBytes int64
	// WSRateLimitPerMinute caps connection attempts and failed token
	// checks per client address (0: the default).
	WSRateLimitPerMinute int
	// TrustForwardedFor takes the client address from X-Forwarded-For.
	TrustForwardedFor bool
	// MaxDocumentAnswers and MaxDocumentAnswersPerGateway bound the answers
	// of many documents (GET /apis, fetch-batch) running at once, in all
	// and per gateway (0: the defaults).
	MaxDocumentAnswers           int
	MaxDocumentAnswersPerGateway int
}

// Server holds the gateway-facing handlers.
type Server struct {
	store    *store.DB
	fleet    *fleet.Fleet
	hub      *hub.Hub
	docs     *document.Source
	metrics  *metrics.Registry
	log      *slog.Logger
	maxBody  int64
	limiter  *httpx.RateLimiter
	trustXFF bool
	answers  *answerLimiter
}

// New builds the gateway-facing handlers.
func New(o Options) *Server {
	rate := o.WSRateLimitPerMinute
	if rate <= 0 {
		rate = DefaultWSRateLimitPerMinute
	}
	return &Server{store: o.Store, fleet: o.Fleet, hub: o.Fleet.Hub(), docs: o.Docs, metrics: o.Metrics,
		log: o.Logger, maxBody: o.MaxBodyBytes, limiter: httpx.NewRateLimiter(rate, time.Minute),
		trustXFF: o.TrustForwardedFor, answers: newAnswerLimiter(o.MaxDocumentAnswers, o.MaxDocumentAnswersPerGateway)}
}
