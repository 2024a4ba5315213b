package api

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"platform-api/fleet"
	"platform-api/store"
)

// metrics is the registry behind GET /metrics, written in the Prometheus
// text format by hand to need no client library. Counters that sit on hot
// paths are atomics; the labelled HTTP and store series sit behind one
// mutex, as their label sets are bounded (mux patterns, status codes, two
// transaction kinds). Gateway connection and event counts live in the hub
// and are read at scrape time.
type metrics struct {
	version string

	// Handshake refusals decided by the api layer; ok and over_limit are
	// counted by the hub, which alone knows whether registration succeeded.
	badKey, rateLimited, notWebSocket atomic.Int64
	// Deployment items by the status they were answered with.
	deployments sync.Map // status -> *atomic.Int64

	mu         sync.Mutex
	requests   map[requestKey]uint64
	requestDur map[string]*histogram // by route
	txDur      map[string]*histogram // by kind
}

type requestKey struct {
	route string
	code  int
}

func newMetrics(version string) *metrics {
	if version == "" {
		version = "unknown"
	}
	return &metrics{version: version, requests: map[requestKey]uint64{},
		requestDur: map[string]*histogram{}, txDur: map[string]*histogram{}}
}

// durationBuckets are the upper bounds (seconds) of every duration histogram.
var durationBuckets = []float64{.001, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

// histogram keeps per-bucket (not cumulative) counts; the last one is +Inf.
type histogram struct {
	counts []uint64
	sum    float64
}

func observe(m map[string]*histogram, label string, d time.Duration) {
	h := m[label]
	if h == nil {
		h = &histogram{counts: make([]uint64, len(durationBuckets)+1)}
		m[label] = h
	}
	v := d.Seconds()
	h.counts[sort.SearchFloat64s(durationBuckets, v)]++ // first bound >= v
	h.sum += v
}

// observeRequest records one answered request. A WebSocket upgrade (101)
// is recorded when the connection is handed to the hub, so its duration is
// the verification and hand-over, not the connection's lifetime.
func (m *metrics) observeRequest(route string, code int, d time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.requests[requestKey{route, code}]++
	observe(m.requestDur, route, d)
}

// observeTx is the store's OnTx hook.
func (m *metrics) observeTx(kind string, d time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	observe(m.txDur, kind, d)
}

// deployed counts a deployment item answered with status.
func (m *metrics) deployed(status string) {
	v, _ := m.deployments.LoadOrStore(status, new(atomic.Int64))
	v.(*atomic.Int64).Add(1)
}

// handshakeRefused counts a gateway handshake refused by verifyGateway.
// Other failures (a database error, a 500) are not a handshake result.
func (m *metrics) handshakeRefused(err error) {
	switch status, _ := errorStatus(err); status {
	case http.StatusUnauthorized:
		m.badKey.Add(1)
	case http.StatusTooManyRequests:
		m.rateLimited.Add(1)
	}
}

// serveMetrics answers GET /metrics. With a token configured it is required;
// without one only the local host may scrape, since the metrics describe the
// fleet. A request relayed by a proxy is not local even from loopback.
func (s *Server) serveMetrics(w http.ResponseWriter, r *http.Request) error {
	var b bytes.Buffer
	s.writeMetrics(&b)
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	w.Write(b.Bytes())
	return nil
}

// operator serves h to the operator only: with the metrics token when one
// is set, else to loopback clients (metrics and profiles).
func (s *Server) operator(h http.Handler) http.Handler {
	return s.handle(func(w http.ResponseWriter, r *http.Request) error {
		if err := s.checkOperator(w, r); err != nil {
			return err
		}
		h.ServeHTTP(w, r)
		return nil
	})
}

func (s *Server) checkOperator(w http.ResponseWriter, r *http.Request) error {
	if s.metricsToken != "" {
		// Hashing first makes the comparison constant-time in the length too.
		tok, _ := bearerToken(r)
		got, want := sha256.Sum256([]byte(tok)), sha256.Sum256([]byte(s.metricsToken))
		if subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer`)
			return errorf(http.StatusUnauthorized, "missing or wrong metrics token: send Authorization: Bearer <PLATFORM_METRICS_TOKEN>")
		}
	} else if !isLoopback(r) {
		return errorf(http.StatusForbidden, "metrics and profiles are served only to loopback clients when no token is configured; set PLATFORM_METRICS_TOKEN to reach them from elsewhere")
	}
	return nil
}

// proxyHeaders mark a request relayed by a proxy: its peer address is the
// proxy's, not the client's.
var proxyHeaders = []string{"Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto",
	"X-Real-Ip", "X-Client-Ip", "True-Client-Ip", "Cf-Connecting-Ip", "Via"}

func isLoopback(r *http.Request) bool {
	for _, h := range proxyHeaders {
		if _, ok := r.Header[h]; ok {
			return false
		}
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return false
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

// writeMetrics renders every family in a fixed order, each family's series
// sorted by label values, so that the output is deterministic.
func (s *Server) writeMetrics(b *bytes.Buffer) {
	m, h := s.metrics, s.hub
	family(b, "platform_build_info", "gauge", "Build information; the value is always 1.")
	sample(b, "platform_build_info", labels("version", m.version), 1)

	family(b, "platform_gateway_connections", "gauge", "Live gateway WebSocket connections.")
	sample(b, "platform_gateway_connections", "", float64(h.Count()))

	family(b, "platform_gateway_handshakes_total", "counter", "Gateway WebSocket handshakes by result.")
	for _, x := range []struct {
		result string
		n      int64
	}{
		{"bad_key", m.badKey.Load()}, {"not_websocket", m.notWebSocket.Load()}, {"ok", h.Accepted.Load()},
		{"over_limit", h.RefusedLimit.Load()}, {"rate_limited", m.rateLimited.Load()},
	} {
		sample(b, "platform_gateway_handshakes_total", labels("result", x.result), float64(x.n))
	}

	events := h.EventCounts()
	family(b, "platform_gateway_events_total", "counter", "Events queued to gateway connections, by type (one per connection).")
	for _, e := range events {
		sample(b, "platform_gateway_events_total", labels("type", e.Type), float64(e.Queued))
	}
	family(b, "platform_gateway_events_dropped_total", "counter", "Events that could not be queued to a connection (full queue or closing), by type.")
	for _, e := range events {
		sample(b, "platform_gateway_events_dropped_total", labels("type", e.Type), float64(e.Dropped))
	}
	family(b, "platform_gateway_slow_disconnects_total", "counter", "Gateway connections closed because their send queue was full.")
	sample(b, "platform_gateway_slow_disconnects_total", "", float64(h.Dropped.Load()))
	family(b, "platform_gateway_timeouts_total", "counter", "Gateway connections closed for silence past the timeout.")
	sample(b, "platform_gateway_timeouts_total", "", float64(h.TimedOut.Load()))

	family(b, "platform_deployments_total", "counter", "Deployment items by the status they were answered with.")
	for _, st := range []string{store.StatusDelivered, store.StatusPending, store.StatusDeploying, store.StatusDeployed, store.StatusFailed} {
		var n int64
		if v, ok := m.deployments.Load(st); ok {
			n = v.(*atomic.Int64).Load()
		}
		sample(b, "platform_deployments_total", labels("status", st), float64(n))
	}

	acks, malformed := s.fleet.AckCounts()
	slices.SortFunc(acks, func(a, b fleet.AckCount) int {
		return cmp.Or(strings.Compare(a.Status, b.Status), strings.Compare(a.ErrorCode, b.ErrorCode))
	})
	family(b, "platform_gateway_acks_total", "counter", "Deployment acknowledgements from second-generation gateways, by status and error code.")
	for _, a := range acks {
		sample(b, "platform_gateway_acks_total", labels("status", a.Status, "error_code", a.ErrorCode), float64(a.N))
	}
	family(b, "platform_gateway_frames_ignored_total", "counter", "Frames from gateways that were not a well-formed acknowledgement, ignored.")
	sample(b, "platform_gateway_frames_ignored_total", "", float64(malformed))

	m.mu.Lock()
	defer m.mu.Unlock()
	family(b, "platform_http_requests_total", "counter", "HTTP requests by route (mux pattern) and status code.")
	keys := slices.SortedFunc(maps.Keys(m.requests), func(a, b requestKey) int {
		return cmp.Or(strings.Compare(a.route, b.route), cmp.Compare(a.code, b.code))
	})
	for _, k := range keys {
		sample(b, "platform_http_requests_total", labels("route", k.route, "code", strconv.Itoa(k.code)), float64(m.requests[k]))
	}
	writeHistograms(b, "platform_http_request_duration_seconds", "HTTP request duration by route (WebSocket upgrades excluded).", "route", m.requestDur)
	writeHistograms(b, "platform_store_transaction_duration_seconds", "Database transaction duration, waiting for a connection included.", "kind", m.txDur)
}

func writeHistograms(b *bytes.Buffer, name, help, label string, hs map[string]*histogram) {
	family(b, name, "histogram", help)
	for _, v := range slices.Sorted(maps.Keys(hs)) {
		h := hs[v]
		var cum uint64
		for i, n := range h.counts {
			cum += n
			le := "+Inf"
			if i < len(durationBuckets) {
				le = strconv.FormatFloat(durationBuckets[i], 'f', -1, 64)
			}
			sample(b, name+"_bucket", labels(label, v, "le", le), float64(cum))
		}
		sample(b, name+"_sum", labels(label, v), h.sum)
		sample(b, name+"_count", labels(label, v), float64(cum))
	}
}

func family(b *bytes.Buffer, name, typ, help string) {
	fmt.Fprintf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, typ)
}

func sample(b *bytes.Buffer, name, labels string, v float64) {
	// 'f' keeps counts integral (1000000, not 1e+06).
	fmt.Fprintf(b, "%s%s %s\n", name, labels, strconv.FormatFloat(v, 'f', -1, 64))
}

// labelEscaper escapes a label value as the text format requires.
var labelEscaper = strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)

// labels renders name/value pairs as {a="x",b="y"}.
func labels(kv ...string) string {
	var b strings.Builder
	b.WriteByte('{')
	for i := 0; i < len(kv); i += 2 {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `%s="%s"`, kv[i], labelEscaper.Replace(kv[i+1]))
	}
	b.WriteByte('}')
	return b.String()
}
