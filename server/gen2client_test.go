package server

import (
	"archive/zip"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"platform-api/httpx"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// gen2Gateway plays a second-generation gateway (contract §6) over a real
// WebSocket: it posts its manifest as it connects, applies an event only
// when its performedAt is newer than what it holds, downloads what it
// deploys and checks it is a RestApi document, and acknowledges what it
// applied.
type gen2Gateway struct {
	t       testing.TB
	e       *testEnv
	key, id string
	c       *wsClient

	mu      sync.Mutex
	held    map[string]time.Time // API -> performedAt applied
	applied []map[string]any     // events applied, in order
	// fail, when set for an API, makes its next deploy fail with this
	// error code.
	fail map[string]string
	// ignoreAcks drops acknowledgements (a gateway that applies but never
	// answers).
	ignoreAcks bool
	// noDownload skips the download of what it deploys (a race may have
	// undeployed it meanwhile, and only the order of events is checked).
	noDownload bool
	// dropsConns: the test closes its connections at will (or has the
	// server close them: a revoked token, a deleted gateway), so an
	// acknowledgement written on a closed one is lost, as a real gateway's
	// would be.
	dropsConns bool
	// patient: handleAll waits for events as long as the connection lasts,
	// not 10 s at most (a long run may leave a gateway quiet for longer).
	patient bool
	// readBuffer, when set, is its socket's receive buffer in bytes.
	readBuffer int
}

func newGen2(t testing.TB, e *testEnv, key, gatewayID string) *gen2Gateway {
	return &gen2Gateway{t: t, e: e, key: key, id: gatewayID, held: map[string]time.Time{}, fail: map[string]string{}}
}

// connect dials the channel and posts the manifest at once, as the gateway
// does, in parallel.
func (g *gen2Gateway) connect() map[string]any {
	g.t.Helper()
	posted := make(chan int, 1)
	go func() {
		code, _ := g.call("POST", "/api/internal/v1/gateways/"+g.id+"/manifest",
			`{"version":"1.2.0","functionalityType":"regular","policies":[{"name":"cors","version":"v1","parameters":{"type":"object"}},{"name":"rate-limit","version":"v2"},{"name":"api-key-auth","version":"v1"}]}`)
		posted <- code
	}()
	c, ack := mustDialBuffer(g.t, g.e.srv.URL, g.key, g.readBuffer)
	g.mu.Lock()
	g.c = c
	g.mu.Unlock()
	if code := <-posted; code != 204 {
		g.t.Fatalf("manifest answered %d", code)
	}
	return ack
}

// call makes a gateway-facing request with the api-key.
func (g *gen2Gateway) call(method, path, body string) (int, []byte) {
	req, _ := http.NewRequest(method, g.e.srv.URL+path, strings.NewReader(body))
	req.Header.Set("api-key", g.key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := g.e.client.Do(req)
	if err != nil {
		g.t.Error(err)
		return 0, nil
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, data
}

// next handles the next event as the gateway would and returns it.
func (g *gen2Gateway) next(timeout time.Duration) map[string]any {
	g.t.Helper()
	ev := g.c.next(timeout)
	g.handle(ev)
	return ev
}

// handleAll handles events as they come until the connection is quiet for
// 10 s or ends; run it on a goroutine of its own.
func (g *gen2Gateway) handleAll() {
	g.mu.Lock()
	c := g.c // a reconnect replaces it; this loop ends with its connection
	quiet := 10 * time.Second
	if g.patient {
		quiet = time.Hour
	}
	g.mu.Unlock()
	for {
		ev, err := c.tryNext(quiet)
		if err != nil {
			return
		}
		g.handle(ev)
	}
}

func (g *gen2Gateway) handle(ev map[string]any) {
	g.t.Helper()
	p, _ := ev["payload"].(map[string]any)
	api, _ := p["apiId"].(string)
	switch ev["type"] {
	case "api.deleted":
		g.mu.Lock()
		delete(g.held, api)
		g.applied = append(g.applied, ev)
		g.mu.Unlock()
		return
	case "api.deployed", "api.undeployed":
	default:
		return
	}
	dep, _ := p["deploymentId"].(string)
	at, err := time.Parse(time.RFC3339Nano, p["performedAt"].(string))
	if err != nil || dep == "" {
		g.t.Fatalf("event without deploymentId or performedAt: %v", ev)
	}
	g.mu.Lock()
	held, ok := g.held[api]
	g.mu.Unlock()
	if ok && !at.After(held) {
		return // not newer: ignored, not acknowledged
	}
	action, status, code := "deploy", "success", ""
	if ev["type"] == "api.undeployed" {
		action = "undeploy"
	} else if !g.noDownload {
		g.downloadRestAPI(api)
	}
	g.mu.Lock()
	if c := g.fail[api]; c != "" && action == "deploy" {
		status, code = "failed", c
		delete(g.fail, api)
	} else {
		g.held[api] = at
		g.applied = append(g.applied, ev)
	}
	ignore := g.ignoreAcks
	g.mu.Unlock()
	if !ignore {
		g.ack(dep, api, action, status, code, p["performedAt"].(string))
	}
}

func (g *gen2Gateway) ack(dep, api, action, status, code, performedAt string) {
	payload := map[string]any{"deploymentId": dep, "artifactId": api, "resourceType": "api", "action": action,
		"status": status, "performedAt": performedAt}
	if code != "" {
		payload["errorCode"] = code
	}
	frame, _ := json.Marshal(map[string]any{"type": "deployment.ack", "payload": payload})
	g.mu.Lock()
	c := g.c
	g.mu.Unlock()
	if err := c.writeFrame(opText, frame); err != nil && !(g.dropsConns && connGone(err)) {
		g.t.Errorf("ack: %v", err)
	}
}

// connGone is whether a write failed because the connection was closed,
// by this end or the server's.
func connGone(err error) bool {
	return errors.Is(err, net.ErrClosed) || errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET)
}

// downloadRestAPI fetches the API's zip and checks it holds a RestApi.
func (g *gen2Gateway) downloadRestAPI(api string) map[string]any {
	g.t.Helper()
	code, data := g.call("GET", "/api/internal/v1/apis/"+api, "")
	if code != 200 {
		g.t.Fatalf("download of %s: %d %s", api, code, data)
	}
	zr, err := zip.NewReader(bytes.NewReader(data), int64(len(data)))
	if err != nil || len(zr.File) != 1 {
		g.t.Fatalf("download of %s is not a zip of one document: %v", api, err)
	}
	rc, _ := zr.File[0].Open()
	doc, _ := io.ReadAll(rc)
	rc.Close()
	var d map[string]any
	if err := yaml.Unmarshal(doc, &d); err != nil || d["kind"] != "RestApi" {
		g.t.Fatalf("second-generation download is not a RestApi document: %v\n%s", err, doc)
	}
	return d
}

// deploymentStatus returns the stored deployment of an API to a gateway.
func deploymentStatus(t testing.TB, e *testEnv, tok, api, gateway string) map[string]any {
	t.Helper()
	var l httpx.List[map[string]any]
	e.must(200, "GET", "/api/v1/apis/"+api+"/deployments", tok, nil, &l)
	for _, d := range l.List {
		if d["gatewayId"] == gateway {
			return d
		}
	}
	return nil
}

// waitStatus waits, on the server's own signal (a deploy with ?wait), or by
// re-reading after each event the gateway handles, until the deployment of
// api to gateway has status want.
func waitStatus(t testing.TB, e *testEnv, tok, api, gateway, want string) map[string]any {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		changed := e.api.fleet.StatusChange(api)
		d := deploymentStatus(t, e, tok, api, gateway)
		if d != nil && d["status"] == want {
			return d
		}
		select {
		case <-changed:
		case <-time.After(time.Until(deadline)):
			t.Fatalf("deployment of %s to %s is %v, want %s", api, gateway, d, want)
		}
	}
}
