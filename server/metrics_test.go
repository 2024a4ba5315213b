package server

import (
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// promSample is one parsed line of the text format.
type promSample struct {
	name   string
	labels map[string]string
	value  float64
}

var sampleLine = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$`)

// parseProm parses the Prometheus text format strictly enough to catch what
// a scraper would reject: malformed lines, non-float values, samples without
// a preceding # TYPE, and histograms whose buckets are not cumulative or do
// not end with +Inf equal to _count.
func parseProm(t *testing.T, text string) []promSample {
	t.Helper()
	if !strings.HasSuffix(text, "\n") {
		t.Fatal("exposition does not end with a newline")
	}
	types := map[string]string{}
	var out []promSample
	for i, line := range strings.Split(strings.TrimSuffix(text, "\n"), "\n") {
		if f := strings.Fields(line); len(f) >= 3 && f[0] == "#" {
			switch f[1] {
			case "TYPE":
				if len(f) != 4 || !strings.Contains(" counter gauge histogram summary untyped ", " "+f[3]+" ") {
					t.Fatalf("line %d: bad TYPE line %q", i+1, line)
				}
				if _, dup := types[f[2]]; dup {
					t.Fatalf("line %d: second TYPE for %s", i+1, f[2])
				}
				types[f[2]] = f[3]
			case "HELP":
			default:
				t.Fatalf("line %d: unknown comment %q", i+1, line)
			}
			continue
		}
		m := sampleLine.FindStringSubmatch(line)
		if m == nil {
			t.Fatalf("line %d: not a sample: %q", i+1, line)
		}
		v, err := strconv.ParseFloat(m[3], 64)
		if err != nil {
			t.Fatalf("line %d: value %q is not a float", i+1, m[3])
		}
		s := promSample{name: m[1], labels: parseLabels(t, m[2]), value: v}
		if _, ok := types[s.name]; !ok {
			base := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(s.name, "_bucket"), "_sum"), "_count")
			if types[base] != "histogram" {
				t.Fatalf("line %d: %s has no preceding # TYPE", i+1, s.name)
			}
		}
		out = append(out, s)
	}
	checkHistograms(t, out)
	return out
}

// parseLabels parses `a="x",b="y \"quoted\""`, undoing the escapes.
func parseLabels(t *testing.T, s string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for s != "" {
		name, rest, ok := strings.Cut(s, `="`)
		if !ok {
			t.Fatalf("labels %q: no =\"", s)
		}
		var v strings.Builder
		i := 0
		for ; i < len(rest) && rest[i] != '"'; i++ {
			if rest[i] == '\\' && i+1 < len(rest) {
				i++
				switch rest[i] {
				case 'n':
					v.WriteByte('\n')
				case '\\', '"':
					v.WriteByte(rest[i])
				default:
					t.Fatalf("labels %q: bad escape", s)
				}
				continue
			}
			v.WriteByte(rest[i])
		}
		if i == len(rest) {
			t.Fatalf("labels %q: unterminated value", s)
		}
		out[name] = v.String()
		s = strings.TrimPrefix(rest[i+1:], ",")
	}
	return out
}

// checkHistograms checks each histogram series: le ascending, cumulative
// counts, +Inf last and equal to _count.
func checkHistograms(t *testing.T, samples []promSample) {
	t.Helper()
	type series struct {
		le    []float64
		count []float64
	}
	key := func(s promSample) string {
		var parts []string
		for k, v := range s.labels {
			if k != "le" {
				parts = append(parts, k+"="+v)
			}
		}
		slices.Sort(parts)
		return strings.TrimSuffix(s.name, "_bucket") + "|" + strings.Join(parts, ",")
	}
	buckets := map[string]*series{}
	for _, s := range samples {
		if !strings.HasSuffix(s.name, "_bucket") {
			continue
		}
		le, err := strconv.ParseFloat(s.labels["le"], 64)
		if err != nil {
			t.Fatalf("%s: le %q", s.name, s.labels["le"])
		}
		b := buckets[key(s)]
		if b == nil {
			b = &series{}
			buckets[key(s)] = b
		}
		if n := len(b.le); n > 0 && (le <= b.le[n-1] || s.value < b.count[n-1]) {
			t.Fatalf("%s %v: buckets not ascending and cumulative", s.name, s.labels)
		}
		b.le, b.count = append(b.le, le), append(b.count, s.value)
	}
	counts := 0
	for _, s := range samples {
		if !strings.HasSuffix(s.name, "_count") {
			continue
		}
		b := buckets[key(promSample{name: strings.TrimSuffix(s.name, "_count") + "_bucket", labels: s.labels})]
		if b == nil || !math.IsInf(b.le[len(b.le)-1], 1) || b.count[len(b.count)-1] != s.value {
			t.Fatalf("%s %v: last bucket must be +Inf and equal _count %v", s.name, s.labels, s.value)
		}
		counts++
	}
	if counts != len(buckets) {
		t.Fatalf("%d histogram series but %d _count lines", len(buckets), counts)
	}
}

// value returns the sample with the name and exactly these labels, or 0.
func value(samples []promSample, name string, kv ...string) float64 {
next:
	for _, s := range samples {
		if s.name != name || len(s.labels) != len(kv)/2 {
			continue
		}
		for i := 0; i < len(kv); i += 2 {
			if s.labels[kv[i]] != kv[i+1] {
				continue next
			}
		}
		return s.value
	}
	return 0
}

func (e *testEnv) scrape(t *testing.T) []promSample {
	t.Helper()
	resp, err := http.Get(e.ops.URL + "/metrics") // the operational listener
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/plain; version=0.0.4; charset=utf-8" {
		t.Fatalf("GET /metrics = %d %s %s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	if !utf8.Valid(body) {
		t.Fatal("exposition is not valid UTF-8: Prometheus refuses the whole scrape")
	}
	return parseProm(t, string(body))
}

func TestMetricsFormat(t *testing.T) {
	version := "v1.2 \"dev\"\\build\nx" // every character that needs escaping
	e := newEnvWith(t, func(o *Options) { fastHub(o); o.Version = version })
	f := newFleet(t, e, 1)
	mustDial(t, e.srv.URL, f.keys[0])
	f.deploy(t, "", 0)
	e.do("GET", "/no/such/route", "", nil)
	s := e.scrape(t)
	if value(s, "platform_build_info", "version", version) != 1 {
		t.Fatalf("build_info with version %q missing", version)
	}
	for _, kind := range []string{"read", "write"} {
		if value(s, "platform_store_transaction_duration_seconds_count", "kind", kind) == 0 {
			t.Fatalf("no %s transactions observed", kind)
		}
	}
	if value(s, "platform_http_requests_total", "route", "unmatched", "code", "404") != 1 {
		t.Fatal("unknown route not counted as unmatched")
	}
	if value(s, "platform_http_request_duration_seconds_count", "route", "POST /api/v1/apis") != 1 {
		t.Fatal("API create not in the duration histogram")
	}
}

func TestMetricsCountDeployment(t *testing.T) {
	e := newEnvWith(t, fastHub)
	f := newFleet(t, e, 1)
	const route = "POST /api/v1/apis/{apiId}/deploy-revision"
	before := e.scrape(t)
	c, _ := mustDial(t, e.srv.URL, f.keys[0])
	f.deploy(t, "", 0)
	c.next(2 * time.Second)
	after := e.scrape(t)
	for _, m := range []struct {
		name string
		kv   []string
	}{
		{"platform_gateway_events_total", []string{"type", "api.deployed"}},
		{"platform_deployments_total", []string{"status", "DELIVERED"}},
		{"platform_gateway_handshakes_total", []string{"result", "ok"}},
		{"platform_http_requests_total", []string{"route", route, "code", "200"}},
		{"platform_http_request_duration_seconds_count", []string{"route", route}},
	} {
		if b, a := value(before, m.name, m.kv...), value(after, m.name, m.kv...); a != b+1 {
			t.Errorf("%s%v: %v then %v; want one more", m.name, m.kv, b, a)
		}
	}
	if n := value(after, "platform_gateway_connections"); n != 1 {
		t.Errorf("connections gauge %v; want 1", n)
	}
	if n := value(after, "platform_deployments_total", "status", "PENDING"); n != 0 {
		t.Errorf("PENDING deployments %v; want 0", n)
	}
}

func TestMetricsAuth(t *testing.T) {
	e := newEnvWith(t, func(o *Options) { o.MetricsToken = "s3cret" })
	code, body := e.do("GET", "/metrics", "", nil)
	wantError(t, code, body, 401, "PLATFORM_METRICS_TOKEN")
	code, body = e.do("GET", "/metrics", "wrong", nil)
	wantError(t, code, body, 401, "PLATFORM_METRICS_TOKEN")
	if code, body = e.do("GET", "/metrics", "s3cret", nil); code != 200 || !strings.Contains(string(body), "platform_build_info") {
		t.Fatalf("right token: %d %s", code, body)
	}
	// Profiles are the operator's too.
	code, body = e.do("GET", "/debug/pprof/heap", "", nil)
	wantError(t, code, body, 401, "PLATFORM_METRICS_TOKEN")
	if code, body = e.do("GET", "/debug/pprof/heap?debug=1", "s3cret", nil); code != 200 || !strings.Contains(string(body), "heap profile") {
		t.Fatalf("heap profile: %d %.200s", code, body)
	}

	// Without a token, the public port serves them to nobody, a loopback
	// peer included (TestOperationalEndpointsBehindARelay has the relay);
	// the operational listener serves them.
	open := newEnv(t)
	open.scrape(t)
	for name, mod := range map[string]func(*http.Request){
		"Remote":   func(r *http.Request) { r.RemoteAddr = "203.0.113.5:1234" },
		"Proxied":  func(r *http.Request) { r.RemoteAddr = "127.0.0.1:1234"; r.Header.Set("X-Forwarded-For", "203.0.113.5") },
		"Loopback": func(r *http.Request) { r.RemoteAddr = "127.0.0.1:1234" },
	} {
		for _, path := range []string{"/metrics", "/debug/pprof/goroutine"} {
			t.Run(name+path, func(t *testing.T) {
				req := httptest.NewRequest("GET", path, nil)
				mod(req)
				rec := httptest.NewRecorder()
				open.api.ServeHTTP(rec, req)
				wantError(t, rec.Code, rec.Body.Bytes(), 403, "set PLATFORM_METRICS_TOKEN")
			})
		}
	}
}

func TestReady(t *testing.T) {
	e := newEnv(t)
	e.must(200, "GET", "/ready", "", nil, nil)
	if body := e.must(200, "GET", "/ready", "", nil, nil); strings.TrimSpace(string(body)) != `{"status":"ready"}` {
		t.Fatalf("ready body %s", body)
	}
	e.api.SetShuttingDown()
	code, body := e.do("GET", "/ready", "", nil)
	wantError(t, code, body, 503, "shutting down")
	e.must(200, "GET", "/health", "", nil, nil) // liveness is not readiness

	closed := newEnv(t)
	closed.db.Close()
	code, body = closed.do("GET", "/ready", "", nil)
	wantError(t, code, body, 503, "database")
}
