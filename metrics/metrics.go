// Package metrics is the registry behind GET /metrics and the Prometheus
// text format, written by hand to need no client library. It imports
// nothing of the server's own: the server reads the hub's and the fleet's
// counts at scrape time and writes them with Family and Sample.
package metrics

import (
	"bytes"
	"cmp"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Registry holds what the HTTP layer counts. Counters that sit on hot
// paths are atomics; the labelled HTTP and store series sit behind one
// mutex, as their label sets are bounded (mux patterns, status codes, two
// transaction kinds). Gateway connection and event counts live in the hub
// and are read at scrape time.
type Registry struct {
	version string

	// Handshake refusals decided by the gateway API; ok and over_limit are
	// counted by the hub, which alone knows whether registration succeeded.
	BadKey, RateLimited, NotWebSocket atomic.Int64
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

// New is an empty registry; version labels platform_build_info.
func New(version string) *Registry {
	if version == "" {
		version = "unknown"
	}
	return &Registry{version: version, requests: map[requestKey]uint64{},
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

// ObserveRequest records one answered request. A WebSocket upgrade (101)
// is recorded when the connection is handed to the hub, so its duration is
// the verification and hand-over, not the connection's lifetime.
func (m *Registry) ObserveRequest(route string, code int, d time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.requests[requestKey{route, code}]++
	observe(m.requestDur, route, d)
}

// ObserveTx is the store's OnTx hook.
func (m *Registry) ObserveTx(kind string, d time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	observe(m.txDur, kind, d)
}

// Deployed counts a deployment item answered with status.
func (m *Registry) Deployed(status string) {
	v, _ := m.deployments.LoadOrStore(status, new(atomic.Int64))
	v.(*atomic.Int64).Add(1)
}

// WriteHistograms writes one histogram family, a series per label value.
func writeHistograms(b *bytes.Buffer, name, help, label string, hs map[string]*histogram) {
	Family(b, name, "histogram", help)
	for _, v := range slices.Sorted(maps.Keys(hs)) {
		h := hs[v]
		var cum uint64
		for i, n := range h.counts {
			cum += n
			le := "+Inf"
			if i < len(durationBuckets) {
				le = strconv.FormatFloat(durationBuckets[i], 'f', -1, 64)
			}
			Sample(b, name+"_bucket", Labels(label, v, "le", le), float64(cum))
		}
		Sample(b, name+"_sum", Labels(label, v), h.sum)
		Sample(b, name+"_count", Labels(label, v), float64(cum))
	}
}

// Family starts a metric family.
func Family(b *bytes.Buffer, name, typ, help string) {
	fmt.Fprintf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, typ)
}

// Sample writes one sample; labels come from Labels (or are empty).
func Sample(b *bytes.Buffer, name, labels string, v float64) {
	// 'f' keeps counts integral (1000000, not 1e+06).
	fmt.Fprintf(b, "%s%s %s\n", name, labels, strconv.FormatFloat(v, 'f', -1, 64))
}

// labelEscaper escapes a label value as the text format requires.
var labelEscaper = strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)

// Labels renders name/value pairs as {a="x",b="y"}. Values are made valid
// UTF-8 and escaped as the text format requires, whatever they hold.
func Labels(kv ...string) string {
	var b strings.Builder
	b.WriteByte('{')
	for i := 0; i < len(kv); i += 2 {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `%s="%s"`, kv[i], labelEscaper.Replace(strings.ToValidUTF8(kv[i+1], "\uFFFD")))
	}
	b.WriteByte('}')
	return b.String()
}

// Version is what platform_build_info reports.
func (m *Registry) Version() string { return m.version }

// Deployments is the number of deployment items answered with status.
func (m *Registry) Deployments(status string) int64 {
	if v, ok := m.deployments.Load(status); ok {
		return v.(*atomic.Int64).Load()
	}
	return 0
}

// WriteHTTP writes the request counts and the request and transaction
// duration histograms.
func (m *Registry) WriteHTTP(b *bytes.Buffer) {
	m.mu.Lock()
	defer m.mu.Unlock()
	Family(b, "platform_http_requests_total", "counter", "HTTP requests by route (mux pattern) and status code.")
	keys := slices.SortedFunc(maps.Keys(m.requests), func(a, b requestKey) int {
		return cmp.Or(strings.Compare(a.route, b.route), cmp.Compare(a.code, b.code))
	})
	for _, k := range keys {
		Sample(b, "platform_http_requests_total", Labels("route", k.route, "code", strconv.Itoa(k.code)), float64(m.requests[k]))
	}
	writeHistograms(b, "platform_http_request_duration_seconds", "HTTP request duration by route (WebSocket upgrades excluded).", "route", m.requestDur)
	writeHistograms(b, "platform_store_transaction_duration_seconds", "Database transaction duration, waiting for a connection included.", "kind", m.txDur)
}
