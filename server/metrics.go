package server

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	"crypto/subtle"
	"net/http"
	"platform-api/fleet"
	"platform-api/httpx"
	"platform-api/metrics"
	"platform-api/store"
	"slices"
	"strings"
)

// serveMetrics answers GET /metrics, behind operator or opsOnly.
func (s *Server) serveMetrics(w http.ResponseWriter, r *http.Request) error {
	var b bytes.Buffer
	s.writeMetrics(&b)
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	w.Write(b.Bytes())
	return nil
}

// operator serves h (metrics and profiles) on the public port to the
// operator only: with the metrics token, and never without one. A peer
// address proves nothing there: a same-host relay (nginx stream, a
// sidecar) makes every client a loopback one. Without a token they are
// read on the operational listener (Ops).
func (s *Server) operator(h http.Handler) http.Handler {
	return s.handle(func(w http.ResponseWriter, r *http.Request) error {
		if s.metricsToken == "" {
			return httpx.Errorf(http.StatusForbidden, "metrics and profiles are not served on this port without a token: read them on the operational listener (PLATFORM_OPS_ADDR, for example 127.0.0.1:9090), or set PLATFORM_METRICS_TOKEN and send it as Authorization: Bearer <token>")
		}
		if err := s.checkToken(w, r); err != nil {
			return err
		}
		h.ServeHTTP(w, r)
		return nil
	})
}

// opsOnly serves h on the operational listener: to anyone who reaches it
// (it listens on loopback unless a token is set), with the token when one
// is set.
func (s *Server) opsOnly(h http.Handler) http.Handler {
	return s.handle(func(w http.ResponseWriter, r *http.Request) error {
		if s.metricsToken != "" {
			if err := s.checkToken(w, r); err != nil {
				return err
			}
		}
		h.ServeHTTP(w, r)
		return nil
	})
}

func (s *Server) checkToken(w http.ResponseWriter, r *http.Request) error {
	// Hashing first makes the comparison constant-time in the length too.
	tok, _ := httpx.BearerToken(r)
	got, want := sha256.Sum256([]byte(tok)), sha256.Sum256([]byte(s.metricsToken))
	if subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
		w.Header().Set("WWW-Authenticate", `Bearer`)
		return httpx.Errorf(http.StatusUnauthorized, "missing or wrong metrics token: send Authorization: Bearer <PLATFORM_METRICS_TOKEN>")
	}
	return nil
}

// writeMetrics renders every family in a fixed order, each family's series
// sorted by label values, so that the output is deterministic.
func (s *Server) writeMetrics(b *bytes.Buffer) {
	m, h := s.metrics, s.hub
	metrics.Family(b, "platform_build_info", "gauge", "Build information; the value is always 1.")
	metrics.Sample(b, "platform_build_info", metrics.Labels("version", m.Version()), 1)

	metrics.Family(b, "platform_gateway_connections", "gauge", "Live gateway WebSocket connections.")
	metrics.Sample(b, "platform_gateway_connections", "", float64(h.Count()))

	metrics.Family(b, "platform_gateway_handshakes_total", "counter", "Gateway WebSocket handshakes by result.")
	for _, x := range []struct {
		result string
		n      int64
	}{
		{"bad_key", m.BadKey.Load()}, {"not_websocket", m.NotWebSocket.Load()}, {"ok", h.Accepted.Load()},
		{"over_limit", h.RefusedLimit.Load()}, {"rate_limited", m.RateLimited.Load()},
	} {
		metrics.Sample(b, "platform_gateway_handshakes_total", metrics.Labels("result", x.result), float64(x.n))
	}

	events := h.EventCounts()
	metrics.Family(b, "platform_gateway_events_total", "counter", "Events queued to gateway connections, by type (one per connection).")
	for _, e := range events {
		metrics.Sample(b, "platform_gateway_events_total", metrics.Labels("type", e.Type), float64(e.Queued))
	}
	metrics.Family(b, "platform_gateway_events_dropped_total", "counter", "Events that could not be queued to a connection (full queue or closing), by type.")
	for _, e := range events {
		metrics.Sample(b, "platform_gateway_events_dropped_total", metrics.Labels("type", e.Type), float64(e.Dropped))
	}
	metrics.Family(b, "platform_gateway_slow_disconnects_total", "counter", "Gateway connections closed because their send queue was full.")
	metrics.Sample(b, "platform_gateway_slow_disconnects_total", "", float64(h.Dropped.Load()))
	metrics.Family(b, "platform_gateway_timeouts_total", "counter", "Gateway connections closed for silence past the timeout.")
	metrics.Sample(b, "platform_gateway_timeouts_total", "", float64(h.TimedOut.Load()))

	metrics.Family(b, "platform_deployments_total", "counter", "Deployment items by the status they were answered with.")
	for _, st := range []string{store.StatusDelivered, store.StatusPending, store.StatusDeploying, store.StatusDeployed, store.StatusFailed} {
		metrics.Sample(b, "platform_deployments_total", metrics.Labels("status", st), float64(m.Deployments(st)))
	}

	acks, malformed := s.fleet.AckCounts()
	slices.SortFunc(acks, func(a, b fleet.AckCount) int {
		return cmp.Or(strings.Compare(a.Status, b.Status), strings.Compare(a.ErrorCode, b.ErrorCode))
	})
	metrics.Family(b, "platform_gateway_acks_total", "counter", "Deployment acknowledgements from second-generation gateways, by status and error code.")
	for _, a := range acks {
		metrics.Sample(b, "platform_gateway_acks_total", metrics.Labels("status", a.Status, "error_code", a.ErrorCode), float64(a.N))
	}
	metrics.Family(b, "platform_gateway_frames_ignored_total", "counter", "Frames from gateways that were not a well-formed acknowledgement, ignored.")
	metrics.Sample(b, "platform_gateway_frames_ignored_total", "", float64(malformed))
	rateLimited, refused, shed := s.fleet.AckDrops()
	metrics.Family(b, "platform_gateway_acks_dropped_total", "counter", "Acknowledgements not recorded: over a connection's allowance of unexpected ones (rate_limited), refused by the database (refused), shed while the database was unavailable (shed).")
	metrics.Sample(b, "platform_gateway_acks_dropped_total", metrics.Labels("reason", "rate_limited"), float64(rateLimited))
	metrics.Sample(b, "platform_gateway_acks_dropped_total", metrics.Labels("reason", "refused"), float64(refused))
	metrics.Sample(b, "platform_gateway_acks_dropped_total", metrics.Labels("reason", "shed"), float64(shed))
	metrics.Family(b, "platform_replica_changes_overflowed_total", "counter", "Other replicas' changes the follow-up queue had no room for; their gateways were sent their state again.")
	metrics.Sample(b, "platform_replica_changes_overflowed_total", "", float64(s.fleet.Overflowed.Load()))
	metrics.Family(b, "platform_gateway_ack_write_retries_total", "counter", "Writes of acknowledgements tried again because the database was unavailable.")
	metrics.Sample(b, "platform_gateway_ack_write_retries_total", "", float64(s.fleet.AckRetries()))
	if s.store != nil {
		deadlocks, serialization := s.store.Aborts()
		metrics.Family(b, "platform_db_transactions_aborted_total", "counter", "Write transactions PostgreSQL aborted and that were run again, by cause (deadlock, serialization).")
		metrics.Sample(b, "platform_db_transactions_aborted_total", metrics.Labels("cause", "deadlock"), float64(deadlocks))
		metrics.Sample(b, "platform_db_transactions_aborted_total", metrics.Labels("cause", "serialization"), float64(serialization))
	}

	m.WriteHTTP(b)
}
