package server

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// benchAPIBody is an API with 10 operations and 2 backend services.
func benchAPIBody(projectID string, n int64) []byte {
	ops := make([]any, 10)
	for i := range ops {
		ops[i] = map[string]any{"name": fmt.Sprintf("op%d", i), "request": map[string]any{
			"method": "GET", "path": fmt.Sprintf("/items%d/{id}", i),
			"backend-services": []any{map[string]any{"name": "primary", "weight": 90}, map[string]any{"name": "fallback", "weight": 10}},
			"requestPolicies":  []any{map[string]any{"name": "set-header", "params": map[string]any{"name": "X-Op", "value": i}}},
		}}
	}
	body, _ := json.Marshal(map[string]any{
		"name": fmt.Sprintf("bench-%d", n), "context": fmt.Sprintf("/bench%d", n), "version": "v1", "projectId": projectID,
		"backend-services": []any{
			map[string]any{"name": "primary", "endpoints": []any{map[string]any{"url": "https://primary.internal:8443", "weight": 100}},
				"timeout": map[string]any{"connect": 1000, "read": 5000}},
			map[string]any{"name": "fallback", "endpoints": []any{map[string]any{"url": "https://fallback.internal"}}},
		},
		"operations": ops,
	})
	return body
}

// latencies collects request durations from parallel workers.
type latencies struct {
	mu sync.Mutex
	d  []time.Duration
}

func (l *latencies) add(d time.Duration) {
	l.mu.Lock()
	l.d = append(l.d, d)
	l.mu.Unlock()
}

func (l *latencies) report(b *testing.B) {
	slices.Sort(l.d)
	if len(l.d) == 0 {
		return
	}
	at := func(q float64) float64 { return float64(l.d[int(q*float64(len(l.d)-1))].Microseconds()) / 1000 }
	b.ReportMetric(at(0.50), "p50-ms")
	b.ReportMetric(at(0.99), "p99-ms")
}

// BenchmarkCreateAPI creates APIs of 10 operations and 2 backends over HTTPS
// from 8 concurrent clients on a SQLite file.
func BenchmarkCreateAPI(b *testing.B) {
	e := newEnv(b)
	_, tok := e.newOrg()
	project := e.defaultProject(tok)
	var n, failures atomic.Int64
	var lat latencies
	b.SetParallelism(8 / max(1, runtimeProcs()))
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			body := benchAPIBody(project, n.Add(1))
			start := time.Now()
			req, _ := http.NewRequest("POST", e.srv.URL+"/api/v1/apis", strings.NewReader(string(body)))
			req.Header.Set("Authorization", "Bearer "+tok)
			resp, err := e.client.Do(req)
			if err != nil {
				failures.Add(1)
				continue
			}
			resp.Body.Close()
			lat.add(time.Since(start))
			if resp.StatusCode != 201 {
				failures.Add(1)
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "creates/s")
	b.ReportMetric(float64(failures.Load()), "errors")
	lat.report(b)
}

// BenchmarkListAPIs pages through a project of 1,000 APIs, 100 per page.
func BenchmarkListAPIs(b *testing.B) {
	e := newEnv(b)
	_, tok := e.newOrg()
	project := e.defaultProject(tok)
	for i := range 1000 {
		e.must(201, "POST", "/api/v1/apis", tok, benchAPIBody(project, int64(i)), nil)
	}
	var lat latencies
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		start := time.Now()
		code, _ := e.do("GET", fmt.Sprintf("/api/v1/apis?projectId=%s&limit=100&offset=%d", project, (i%10)*100), tok, nil)
		lat.add(time.Since(start))
		if code != 200 {
			b.Fatalf("status %d", code)
		}
	}
	lat.report(b)
}
