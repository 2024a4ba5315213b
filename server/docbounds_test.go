package server

import (
	"archive/zip"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"platform-api/gatewayapi"
	"platform-api/store"
)

// importArtifacts posts an import of n artifacts named prefix-0 … to the
// gateway with key, each carrying a policy parameter of padding bytes of
// incompressible text, and returns the decoded answer.
func importArtifacts(t *testing.T, e *testEnv, key, prefix string, n, padding int) (int, importAnswer, []byte) {
	t.Helper()
	arts := make([]map[string]any, n)
	for i := range arts {
		pad := make([]byte, padding*3/4)
		rand.Read(pad)
		name := fmt.Sprintf("%s-%d", prefix, i)
		arts[i] = map[string]any{"dpid": "dp-" + name, "status": "deployed",
			"configuration": map[string]any{"apiVersion": "gateway.api-platform.wso2.com/v1", "kind": "RestApi",
				"metadata": map[string]any{"name": name},
				"spec": map[string]any{"displayName": name, "version": "v1", "context": "/" + name,
					"upstream": map[string]any{"main": map[string]any{"url": "https://backend.internal"}},
					"operations": []any{map[string]any{"method": "GET", "path": "/x", "policies": []any{
						map[string]any{"name": "pad", "params": map[string]any{"p": base64.StdEncoding.EncodeToString(pad)}}}}}}}}
	}
	js, _ := json.Marshal(arts)
	var zbuf bytes.Buffer
	zw := zip.NewWriter(&zbuf)
	w, _ := zw.Create("artifacts.json")
	w.Write(js)
	zw.Close()
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	fw, _ := mw.CreateFormFile("artifacts", "artifacts.zip")
	fw.Write(zbuf.Bytes())
	mw.WriteField("total", strconv.Itoa(n))
	mw.Close()
	req, _ := http.NewRequest("POST", e.srv.URL+"/api/internal/v1/artifacts/import-gateway-artifacts", &body)
	req.Header.Set("api-key", key)
	req.Header.Set("Content-Type", mw.FormDataContentType())
	resp, err := e.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	var res importAnswer
	if resp.StatusCode == 200 {
		if err := json.Unmarshal(data, &res); err != nil {
			t.Fatalf("import answer %s: %v", data, err)
		}
	}
	return resp.StatusCode, res, data
}

type importAnswer struct {
	Total, Success, Failed int
	Artifacts              map[string]gatewayapi.ImportResult
}

// http1Client speaks HTTP/1.1 to the test server: what it has not read
// stays in socket buffers, not in this process's heap (an HTTP/2 client
// buffers up to its flow-control window), so the heap shows the server's
// side alone.
func (e *testEnv) http1Client() *http.Client {
	return e.http1ClientBuffer(0)
}

// http1ClientBuffer is http1Client with a socket receive buffer of
// readBuffer bytes (the system's when 0), set as each connection is made.
func (e *testEnv) http1ClientBuffer(readBuffer int) *http.Client {
	tr := e.client.Transport.(*http.Transport).Clone()
	tr.ForceAttemptHTTP2 = false
	tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	tr.TLSClientConfig.NextProtos = []string{"http/1.1"}
	if readBuffer > 0 {
		tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
			if err == nil {
				err = c.(*net.TCPConn).SetReadBuffer(readBuffer)
			}
			return c, err
		}
	}
	return &http.Client{Transport: tr}
}

// startDownload sends a gateway's document request and returns the answer
// with its body unread (the caller closes it).
func startDownload(t *testing.T, c *http.Client, e *testEnv, key, method, path, body string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest(method, e.srv.URL+path, strings.NewReader(body))
	req.Header.Set("api-key", key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// totalAlloc is the bytes allocated by this process so far (server and
// client alike), which no collection lowers: what an answer allocates is
// counted whether or not it is still held when measured.
func totalAlloc() uint64 {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.TotalAlloc
}

// TestGatewayDocumentAnswersAreStreamed: GET /apis and fetch-batch built
// their whole zip or tar.gz in a buffer before the first byte went out, so
// a gateway that imported many large APIs to itself, asking four times at
// once, held four whole answers in the server's memory (661 MB for 20,000
// APIs; 775 MB for four fetch-batches of 100 large documents). Scaled
// down: 32 documents of 128 KiB of incompressible text, four answers of
// ~3.2 MiB each at once. The documents are rendered and cached first, and
// the client reads into a fixed buffer, so what is allocated meanwhile is
// what the answers themselves take. (Allocation, not the heap at a moment:
// an answer that fits in loopback socket buffers is gone before a reader
// that stalls could show it.)
func TestGatewayDocumentAnswersAreStreamed(t *testing.T) {
	e := newEnvWith(t, func(o *Options) { fastHub(o); o.MaxDocumentAnswers = 8; o.MaxDocumentAnswersPerGateway = 8 })
	f := newFleet(t, e, 1)
	const n, padding = 20, 128 << 10
	code, res, data := importArtifacts(t, e, f.keys[0], "big", n, padding)
	if code != 200 || res.Success != n {
		t.Fatalf("import: %d %.300s", code, data)
	}
	var ids []string
	for i := range n {
		ids = append(ids, fmt.Sprintf("dp-big-%d", i))
	}
	batch, _ := json.Marshal(map[string]any{"deploymentIds": ids})
	// A second-generation gateway: both routes serve the same documents.
	if code, data := newGen2(t, e, f.keys[0], f.gws[0].ID).call("POST", "/api/internal/v1/gateways/"+f.gws[0].ID+"/manifest",
		`{"version":"1.2.0","functionalityType":"regular","policies":[]}`); code != 204 {
		t.Fatalf("manifest: %d %s", code, data)
	}
	c := e.http1Client()
	// Whole once: every document rendered and cached, and the answer's
	// size known.
	resp := startDownload(t, c, e, f.keys[0], "GET", "/api/internal/v1/apis", "")
	whole, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || len(whole) < n*padding/2 {
		t.Fatalf("all APIs: %d, %d bytes", resp.StatusCode, len(whole))
	}
	routes := []struct{ name, method, path, body string }{
		{"AllAPIs", "GET", "/api/internal/v1/apis", ""},
		{"FetchBatch", "POST", "/api/internal/v1/deployments/fetch-batch", string(batch)},
	}
	for _, rt := range routes {
		t.Run(rt.name, func(t *testing.T) {
			before := totalAlloc()
			var wg sync.WaitGroup
			for range 4 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					resp := startDownload(t, c, e, f.keys[0], rt.method, rt.path, rt.body)
					defer resp.Body.Close()
					if n, err := io.Copy(io.Discard, resp.Body); resp.StatusCode != 200 || err != nil || n < int64(len(whole))/2 {
						t.Errorf("%s: %d, %d bytes, %v", rt.path, resp.StatusCode, n, err)
					}
				}()
			}
			wg.Wait()
			allocated := totalAlloc() - before
			t.Logf("%s: answer ~%d bytes; %d bytes allocated for 4 answers", rt.name, len(whole), allocated)
			// A buffered answer allocates more than its size (twice, as the
			// buffer doubles); a streamed one its buffers, whatever its
			// size: fetch-batch's compressor ~1 MiB, TLS and HTTP's. So
			// each may take 2 MiB and half its size, not more.
			if limit := 4 * uint64(2<<20+len(whole)/2); allocated > limit {
				t.Fatalf("%d bytes allocated for 4 answers of ~%d bytes: the answers are built in memory", allocated, len(whole))
			}
		})
	}
}

// TestGatewayDocumentAnswersAreBounded: any number of document answers ran
// at once. Over 2 per gateway or the total, the next is refused at once
// with 429 (this gateway) or 503 (the server), Retry-After and a JSON
// error that says to retry, never fatal to a second-generation gateway;
// once one ends, the next is served.
//
// An answer holds its slot until the server has written it all, so the
// answers held here must not fit in what lies between the server and a
// client that does not read: socket buffers, which the kernel grows (on
// loopback, the server's send buffer to megabytes), and the client's and
// server's own buffers (a TLS record, a few KiB each). The test failed
// now and then on a loaded machine: an unread answer of ~400 KiB went
// into those buffers whole, its handler ended, and the next request that
// was to be refused was served. So both ends' socket buffers are fixed
// at 16 KiB (the kernel doubles them: 64 KiB in all, with ~40 KiB of
// buffers in the processes), far below the answers' ~400 KiB (8 documents
// of 64 KiB of incompressible text).
func TestGatewayDocumentAnswersAreBounded(t *testing.T) {
	const socketBuffer = 16 << 10
	e := newEnvListener(t, nil, func(o *Options) { fastHub(o); o.MaxDocumentAnswers = 3; o.MaxDocumentAnswersPerGateway = 2 }, socketBuffer)
	f := newFleet(t, e, 2)
	for i, key := range f.keys {
		if code, res, data := importArtifacts(t, e, key, fmt.Sprintf("g%d", i), 8, 64<<10); code != 200 || res.Success != 8 {
			t.Fatalf("import: %d %.300s", code, data)
		}
	}
	c := e.http1ClientBuffer(socketBuffer)
	held := func(key string) *http.Response {
		resp := startDownload(t, c, e, key, "GET", "/api/internal/v1/apis", "")
		if resp.StatusCode != 200 {
			b, _ := io.ReadAll(resp.Body)
			t.Fatalf("download: %d %s", resp.StatusCode, b)
		}
		return resp
	}
	refused := func(key, method, path, body string, want int, substr string) {
		t.Helper()
		resp := startDownload(t, c, e, key, method, path, body)
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		wantError(t, resp.StatusCode, b, want, substr)
		if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err != nil || s < 1 {
			t.Fatalf("Retry-After %q", resp.Header.Get("Retry-After"))
		}
	}
	batch := `{"deploymentIds":["dp-g0-0","dp-g0-1"]}`
	a1, a2 := held(f.keys[0]), held(f.keys[0])
	refused(f.keys[0], "GET", "/api/internal/v1/apis", "", 429, "retry")
	refused(f.keys[0], "POST", "/api/internal/v1/deployments/fetch-batch", batch, 429, "per gateway")
	b1 := held(f.keys[1]) // the third in all
	refused(f.keys[1], "GET", "/api/internal/v1/apis", "", 503, "retry")
	// One document is not bounded: a fleet downloads a deployed revision
	// all at once.
	if resp, _ := download(t, e, f.keys[0], "/api/internal/v1/apis/"+f.api); resp.StatusCode != 404 {
		t.Fatalf("single document: %d", resp.StatusCode)
	}
	for _, r := range []*http.Response{a1, a2, b1} {
		r.Body.Close()
	}
	// The slots come back as the answers end (the server sees the closed
	// connections on its next write).
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp := startDownload(t, c, e, f.keys[0], "POST", "/api/internal/v1/deployments/fetch-batch", batch)
		data, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no slot came back: %d %s", resp.StatusCode, data)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestGatewayImportQuota: a gateway token imported 20,000 APIs to itself;
// nothing bounded what one gateway can create in its organization. Past
// the quota (5 here), each further new artifact is a failed one in the
// import's answer naming the setting, a first-generation report is a 4xx
// naming it, repeats still succeed, and deleting an API makes room again.
func TestGatewayImportQuota(t *testing.T) {
	e := newEnvStore(t, func(c *store.Config) { c.MaxGatewayCreatedAPIs = 5 }, fastHub)
	f := newFleet(t, e, 2)
	for round := range 2 { // the second time, the first five are repeats
		code, res, data := importArtifacts(t, e, f.keys[0], "q", 8, 16)
		if code != 200 || res.Total != 8 || res.Success != 5 || res.Failed != 3 {
			t.Fatalf("round %d: %d %s", round, code, data)
		}
		for dpid, r := range res.Artifacts {
			if r.Status == "failed" && !strings.Contains(r.Error, "PLATFORM_MAX_GATEWAY_CREATED_APIS") {
				t.Fatalf("%s: %q does not name the setting", dpid, r.Error)
			}
		}
	}
	// A first-generation report counts against the same quota.
	report := func(key, apiID string) (int, []byte) {
		req, _ := http.NewRequest("POST", e.srv.URL+"/api/internal/v1/apis/"+apiID+"/gateway-deployments", strings.NewReader(
			`{"configuration":{"data":{"name":"rep`+apiID[:8]+`","version":"v1","context":"/rep`+apiID[:8]+`","upstream":[{"url":"https://b.internal"}],"operations":[{"method":"GET","path":"/"}]}},"projectIdentifier":"default"}`))
		req.Header.Set("api-key", key)
		req.Header.Set("Content-Type", "application/json")
		resp, err := e.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	code, data := report(f.keys[0], "11111111-1111-4111-8111-111111111111")
	wantError(t, code, data, 400, "PLATFORM_MAX_GATEWAY_CREATED_APIS")
	// The quota is the gateway's own: another gateway of the organization
	// still imports.
	if code, res, data := importArtifacts(t, e, f.keys[1], "other", 1, 16); code != 200 || res.Success != 1 {
		t.Fatalf("other gateway: %d %s", code, data)
	}
	// Deleting an API it created makes room for one more.
	_, res, _ := importArtifacts(t, e, f.keys[0], "q", 5, 16)
	e.must(204, "DELETE", "/api/v1/apis/"+res.Artifacts["dp-q-0"].ID, f.tok, nil, nil)
	if code, data := report(f.keys[0], "11111111-1111-4111-8111-111111111111"); code != 201 {
		t.Fatalf("report after a delete: %d %s", code, data)
	}
}
