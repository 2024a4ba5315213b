package server

import (
	"archive/zip"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"platform-api/api"
	"platform-api/document"
	"platform-api/fleet"
	"platform-api/httpx"
	"platform-api/hub"
	"platform-api/store"
)

// testFleet is an organization with a deployable API and gateways with tokens.
type testFleet struct {
	e     *testEnv
	tok   string // the organization's JWT
	api   string // API id
	gws   []store.Gateway
	keys  []string // one gateway token per gateway
	keyID []string
}

func newFleet(t *testing.T, e *testEnv, gateways int) *testFleet {
	t.Helper()
	_, tok := e.newOrg()
	f := &testFleet{e: e, tok: tok}
	body := fixture(t, "api_maximal.json", e.defaultProject(tok))
	f.api = asMap(t, e.must(201, "POST", "/api/v1/apis", tok, body, nil))["id"].(string)
	for i := range gateways {
		g := e.newGateway(tok, "gw-"+string(rune('a'+i)))
		var issued struct{ ID, Token string }
		e.must(201, "POST", "/api/v1/gateways/"+g.ID+"/tokens", tok, nil, &issued)
		f.gws = append(f.gws, g)
		f.keys = append(f.keys, issued.Token)
		f.keyID = append(f.keyID, issued.ID)
	}
	return f
}

func (f *testFleet) deploy(t *testing.T, query string, gws ...int) []fleet.Result {
	t.Helper()
	var items []map[string]any
	for _, i := range gws {
		items = append(items, map[string]any{"gatewayId": f.gws[i].ID, "vhost": "api.example.com"})
	}
	var out []fleet.Result
	f.e.must(200, "POST", "/api/v1/apis/"+f.api+"/deploy-revision"+query, f.tok, items, &out)
	return out
}

func fastHub(o *Options) {
	o.Hub = hub.Config{PingInterval: 200 * time.Millisecond, Timeout: 1 * time.Second, QueueSize: 8}
}

func TestHandshakeErrors(t *testing.T) {
	e := newEnvWith(t, func(o *Options) { fastHub(o); o.Hub.MaxPerGateway = 1; o.WSRateLimitPerMinute = 20 })
	f := newFleet(t, e, 2)
	check := func(name, key string, want int, desc string) {
		t.Run(name, func(t *testing.T) {
			c, resp := dialWS(t, e.srv.URL, key)
			if c != nil {
				t.Fatal("handshake accepted")
			}
			body, _ := io.ReadAll(resp.Body)
			wantError(t, resp.StatusCode, body, want, desc)
		})
	}
	check("NoKey", "", 401, "missing api-key")
	check("BadKey", "gwt_nonsense", 401, "api-key")
	check("UnknownKey", strings.Replace(f.keys[0], f.keys[0][4:12], "00000000", 1), 401, "api-key")
	e.must(200, "DELETE", "/api/v1/gateways/"+f.gws[1].ID+"/tokens/"+f.keyID[1], f.tok, nil, nil)
	check("RevokedKey", f.keys[1], 401, "api-key")

	t.Run("NotAnUpgrade", func(t *testing.T) {
		req, _ := http.NewRequest("GET", e.srv.URL+"/api/internal/v1/ws/gateways/connect", nil)
		req.Header.Set("api-key", f.keys[0])
		resp, err := e.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		wantError(t, resp.StatusCode, body, 400, "HTTP/1.1") // the test client speaks HTTP/2
	})
	t.Run("PerGatewayLimit", func(t *testing.T) {
		mustDial(t, e.srv.URL, f.keys[0])
		c, _ := dialWS(t, e.srv.URL, f.keys[0])
		m := c.next(time.Second)
		if m["type"] != "error" || !strings.Contains(m["message"].(string), "maximum of 1") {
			t.Fatalf("over the limit: %v", m)
		}
		if code := c.closeCode(time.Second); code != hub.ClosePolicy {
			t.Fatalf("close code %d", code)
		}
	})
	t.Run("RateLimited", func(t *testing.T) {
		var last *http.Response
		for range 25 {
			c, resp := dialWS(t, e.srv.URL, "")
			if c != nil {
				t.Fatal("accepted without a key")
			}
			last = resp
			if resp.StatusCode == 429 {
				break
			}
		}
		body, _ := io.ReadAll(last.Body)
		wantError(t, last.StatusCode, body, 429, "too many")
	})
}

func TestGlobalConnectionLimit(t *testing.T) {
	e := newEnvWith(t, func(o *Options) { fastHub(o); o.Hub.MaxConnections = 1 })
	f := newFleet(t, e, 2)
	mustDial(t, e.srv.URL, f.keys[0])
	c, _ := dialWS(t, e.srv.URL, f.keys[1])
	if m := c.next(time.Second); m["type"] != "error" {
		t.Fatalf("over the global limit: %v", m)
	}
}

func TestAckAndFanOut(t *testing.T) {
	e := newEnvWith(t, fastHub)
	f := newFleet(t, e, 2)
	a1, ack := mustDial(t, e.srv.URL, f.keys[0])
	if ack["gatewayId"] != f.gws[0].ID || ack["connectionId"] == "" || ack["timestamp"] == "" {
		t.Fatalf("ack %v", ack)
	}
	a2, _ := mustDial(t, e.srv.URL, f.keys[0])
	b, _ := mustDial(t, e.srv.URL, f.keys[1])
	// A connection still learning its generation (PLATFORM_WS_GENERATION_GRACE
	// after its connect) gets the deployment in its initial state, and the
	// answer counts only the ready ones: the answer's count is about ready
	// connections, so wait until every one is.
	waitReady(t, e, f.gws[0].ID)

	out := f.deploy(t, "", 0)
	if out[0].Status != "DELIVERED" || out[0].DeliveredConnections != 2 || out[0].RevisionID == "" {
		t.Fatalf("deploy result %+v", out)
	}
	for _, c := range []*wsClient{a1, a2} {
		ev := c.next(2 * time.Second)
		p := ev["payload"].(map[string]any)
		if ev["type"] != "api.deployed" || p["apiId"] != f.api || p["revisionId"] != out[0].RevisionID ||
			p["vhost"] != "api.example.com" || p["environment"] != "production" || ev["correlationId"] == "" || ev["timestamp"] == "" {
			t.Fatalf("event %v", ev)
		}
	}
	// Gateway b got nothing of a's: its next frame is its own deployment.
	out = f.deploy(t, "", 1)
	if ev := b.next(2 * time.Second); ev["payload"].(map[string]any)["revisionId"] != out[0].RevisionID {
		t.Fatalf("gateway b saw %v", ev)
	}
	var st httpx.List[api.GatewayStatus]
	e.must(200, "GET", "/api/v1/status/gateways?gatewayId="+f.gws[0].ID, f.tok, nil, &st)
	if !st.List[0].IsActive || st.List[0].Connections != 2 || st.List[0].LastSeenAt == nil {
		t.Fatalf("status %+v", st.List[0])
	}
	var deps httpx.List[store.Deployment]
	e.must(200, "GET", "/api/v1/apis/"+f.api+"/deployments", f.tok, nil, &deps)
	if deps.Count != 2 || deps.List[0].Status != "DELIVERED" || deps.List[0].DeliveredAt == nil {
		t.Fatalf("deployments %+v", deps)
	}
	var gws httpx.List[store.Gateway]
	e.must(200, "GET", "/api/v1/apis/"+f.api+"/gateways", f.tok, nil, &gws)
	if gws.Count != 2 || !gws.List[0].IsActive {
		t.Fatalf("api gateways %+v", gws)
	}
}

func TestPartialDeliveryIsDelivered(t *testing.T) {
	e := newEnvWith(t, fastHub)
	f := newFleet(t, e, 1)
	broken, _ := mustDial(t, e.srv.URL, f.keys[0])
	live, _ := mustDial(t, e.srv.URL, f.keys[0])
	broken.conn.Close()
	out := f.deploy(t, "", 0)
	if out[0].Status != "DELIVERED" || out[0].DeliveredConnections < 1 {
		t.Fatalf("deploy %+v", out)
	}
	if ev := live.next(2 * time.Second); ev["type"] != "api.deployed" {
		t.Fatalf("live connection got %v", ev)
	}
}

func TestDeployValidation(t *testing.T) {
	e := newEnvWith(t, fastHub)
	f := newFleet(t, e, 1)
	c, _ := mustDial(t, e.srv.URL, f.keys[0])
	path := "/api/v1/apis/" + f.api + "/deploy-revision"
	_, otherTok := e.newOrg()
	other := e.newGateway(otherTok, "foreign")
	for _, tc := range []struct {
		name, body, desc string
	}{
		{"Empty", `[]`, "non-empty"},
		{"NotArray", `{"gatewayId":"x"}`, "array"},
		{"BadID", `[{"gatewayId":"nope"}]`, "[0].gatewayId"},
		{"Duplicate", `[{"gatewayId":"` + f.gws[0].ID + `"},{"gatewayId":"` + f.gws[0].ID + `"}]`, "[1].gatewayId"},
		{"BadVhost", `[{"gatewayId":"` + f.gws[0].ID + `","vhost":"a b"}]`, "[0].vhost"},
		{"ForeignGateway", `[{"gatewayId":"` + f.gws[0].ID + `"},{"gatewayId":"` + other.ID + `"}]`, "[1].gatewayId"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, data := e.do("POST", path, f.tok, tc.body)
			wantError(t, code, data, 400, tc.desc)
		})
	}
	// No backend: gateways cannot run it.
	bare := asMap(t, e.must(201, "POST", "/api/v1/apis", f.tok, fixture(t, "api_minimal.json", e.defaultProject(f.tok)), nil))
	code, data := e.do("POST", "/api/v1/apis/"+bare["id"].(string)+"/deploy-revision", f.tok, `[{"gatewayId":"`+f.gws[0].ID+`"}]`)
	wantError(t, code, data, 400, "upstream")
	code, data = e.do("POST", path+"?revisionId=00000000-0000-4000-8000-000000000000", f.tok, `[{"gatewayId":"`+f.gws[0].ID+`"}]`)
	wantError(t, code, data, 404, "revision")

	// Nothing was recorded and nothing was sent.
	var deps httpx.List[store.Deployment]
	e.must(200, "GET", "/api/v1/apis/"+f.api+"/deployments", f.tok, nil, &deps)
	if deps.Count != 0 {
		t.Fatalf("a refused deploy recorded %+v", deps)
	}
	if m, err := c.tryNext(300 * time.Millisecond); err == nil {
		t.Fatalf("a refused deploy sent %v", m)
	}
	// The deployed vhost defaults to the gateway's own.
	var out []fleet.Result
	e.must(200, "POST", path, f.tok, `[{"gatewayId":"`+f.gws[0].ID+`"}]`, &out)
	if out[0].Vhost != "gw.example.com" {
		t.Fatalf("vhost %q", out[0].Vhost)
	}
}

func TestSilentClientIsDropped(t *testing.T) {
	e := newEnvWith(t, fastHub)
	f := newFleet(t, e, 1)
	c, _ := mustDial(t, e.srv.URL, f.keys[0])
	c.noPong.Store(true)
	start := time.Now()
	// The client reads (so it sees the close) but never answers a ping.
	code := c.closeCode(5 * time.Second)
	if code != hub.ClosePolicy {
		t.Fatalf("close code %d", code)
	}
	if took := time.Since(start); took < 900*time.Millisecond || took > 3*time.Second {
		t.Fatalf("dropped after %s; want about the 1s timeout", took)
	}
	if e.api.Hub().TimedOut.Load() != 1 {
		t.Fatal("timeout not counted")
	}
}

func TestAnsweringClientStays(t *testing.T) {
	e := newEnvWith(t, fastHub)
	f := newFleet(t, e, 1)
	c, _ := mustDial(t, e.srv.URL, f.keys[0])
	// Three timeouts long, answering pings all the while.
	if _, err := c.tryNext(3 * time.Second); err == nil || !strings.Contains(err.Error(), "timeout") {
		t.Fatalf("a client answering pings was disturbed: %v", err)
	}
	if n, _ := e.api.Hub().Presence(f.gws[0].ID); n != 1 {
		t.Fatalf("connections %d", n)
	}
}

func TestStalledClientDoesNotDelayOthers(t *testing.T) {
	// The 100 clients read nothing (not even pings) until every deploy is
	// done, and dialing them can take over fastHub's 1 s silence timeout
	// under -race on a small machine; this test is about the full queue.
	e := newEnvWith(t, func(o *Options) { fastHub(o); o.Hub.Timeout = 30 * time.Second })
	f := newFleet(t, e, 2)
	// Gateway 0 has one connection that never reads; gateway 1 has 100.
	stalled, _ := dialWS(t, e.srv.URL, f.keys[0]) // reads nothing, not even its ack
	_ = stalled
	others := make([]*wsClient, 100)
	var wg sync.WaitGroup
	for i := range others {
		others[i], _ = mustDial(t, e.srv.URL, f.keys[1])
	}
	// A connection still learning its generation would get the last
	// deployment in its initial state, not every one live.
	waitReady(t, e, f.gws[1].ID)
	const deploys = 20
	start := time.Now()
	for range deploys {
		reqStart := time.Now()
		f.deploy(t, "", 0, 1)
		if took := time.Since(reqStart); took > time.Second {
			t.Fatalf("a deploy took %s with a stalled gateway", took)
		}
	}
	errs := make(chan error, len(others))
	for _, c := range others {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range deploys {
				if _, err := c.tryNext(5 * time.Second); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	t.Logf("%d deployments reached 100 connections in %s", deploys, time.Since(start))
}

func TestReconnectConverges(t *testing.T) {
	e := newEnvWith(t, fastHub)
	f := newFleet(t, e, 1)
	out := f.deploy(t, "", 0)
	if out[0].Status != "PENDING" || out[0].DeliveredConnections != 0 {
		t.Fatalf("offline deploy %+v", out)
	}
	for range 2 { // the gateway, then a new replica of it
		c, _ := mustDial(t, e.srv.URL, f.keys[0])
		ev := c.next(2 * time.Second)
		if ev["type"] != "api.deployed" || ev["payload"].(map[string]any)["revisionId"] != out[0].RevisionID {
			t.Fatalf("initial state %v", ev)
		}
	}
	waitFor(t, func() bool {
		var deps httpx.List[store.Deployment]
		e.must(200, "GET", "/api/v1/apis/"+f.api+"/deployments", f.tok, nil, &deps)
		return deps.List[0].Status == "DELIVERED"
	})
}

// waitReady waits until every connection of the gateways knows its
// generation (live events pass by those that do not) and has had its
// initial state handed over (hub.Conn.InitialStateSent): a change committed
// while a connection's initial state is read may reach it twice, in that
// state and as its live event. A test that counts the events of the
// changes it makes waits for this first.
func waitReady(t *testing.T, e *testEnv, gatewayIDs ...string) {
	t.Helper()
	timeout := time.After(5 * time.Second)
	for _, id := range gatewayIDs {
		for _, c := range e.api.Hub().Conns(id) {
			for _, ch := range []<-chan struct{}{c.GenerationKnown(), c.InitialStateSent()} {
				select {
				case <-ch:
				case <-c.Context().Done(): // ended: it takes no event
				case <-timeout:
					t.Fatalf("a connection of gateway %s was not ready within 5s (generation %d)", id, c.Generation())
				}
			}
		}
	}
}

// waitFor polls cond until it holds, failing after 5 seconds.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestRevokeAndDeleteCloseConnections: a revoked token's connections and a
// deleted gateway's are closed at once (1008), not left to the silence
// check: the clients answer every ping, and the close must come well within
// the 1 s silence timeout, with no connection counted as timed out.
func TestRevokeAndDeleteCloseConnections(t *testing.T) {
	e := newEnvWith(t, fastHub)
	f := newFleet(t, e, 2)
	const within = 500 * time.Millisecond // half the silence timeout
	c, _ := mustDial(t, e.srv.URL, f.keys[0])
	start := time.Now()
	e.must(200, "DELETE", "/api/v1/gateways/"+f.gws[0].ID+"/tokens/"+f.keyID[0], f.tok, nil, nil)
	if code := c.closedBy(start, within); code != hub.ClosePolicy {
		t.Fatalf("revoked token's connection: code %d", code)
	}
	d1, _ := mustDial(t, e.srv.URL, f.keys[1])
	d2, _ := mustDial(t, e.srv.URL, f.keys[1])
	start = time.Now()
	e.must(204, "DELETE", "/api/v1/gateways/"+f.gws[1].ID, f.tok, nil, nil)
	for _, c := range []*wsClient{d1, d2} {
		if code := c.closedBy(start, within); code != hub.ClosePolicy {
			t.Fatalf("deleted gateway's connection: code %d", code)
		}
	}
	if n := e.api.Hub().TimedOut.Load(); n != 0 {
		t.Fatalf("%d connections were closed for silence: the close was not the revocation's", n)
	}
}

// download fetches the zip of one API or all of them as a gateway and
// returns its entries.
func download(t *testing.T, e *testEnv, key, path string) (*http.Response, map[string][]byte) {
	t.Helper()
	req, _ := http.NewRequest("GET", e.srv.URL+path, nil)
	req.Header.Set("api-key", key)
	resp, err := e.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		resp.Body = io.NopCloser(bytes.NewReader(data))
		return resp, nil
	}
	zr, err := zip.NewReader(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{}
	for _, zf := range zr.File {
		rc, _ := zf.Open()
		files[zf.Name], _ = io.ReadAll(rc)
		rc.Close()
	}
	return resp, files
}

func docDescription(t *testing.T, doc []byte) string {
	t.Helper()
	var d struct {
		Data struct{ Description string } `yaml:"data"`
	}
	if err := yaml.Unmarshal(doc, &d); err != nil {
		t.Fatal(err)
	}
	return d.Data.Description
}

func TestDownloadsFollowRevisionsAndRollback(t *testing.T) {
	e := newEnvWith(t, fastHub)
	f := newFleet(t, e, 2)
	apiPath := "/api/v1/apis/" + f.api
	original := asMap(t, e.must(200, "GET", apiPath, f.tok, nil, nil))["description"].(string)
	first := f.deploy(t, "", 0)[0].RevisionID

	// Edits do not reach gateways until deployed again.
	e.must(200, "PUT", apiPath, f.tok, map[string]any{"description": "second"}, nil)
	resp, files := download(t, e, f.keys[0], "/api/internal/v1/apis/"+f.api)
	if resp.Header.Get("Content-Type") != "application/zip" ||
		resp.Header.Get("Content-Disposition") != `attachment; filename="api-`+f.api+`.zip"` {
		t.Fatalf("headers %v", resp.Header)
	}
	doc := files["api-"+f.api+".yaml"]
	if len(files) != 1 || docDescription(t, doc) != original {
		t.Fatalf("download after an edit: %q", doc)
	}
	want, _ := document.RenderHTTPRest(mustStoredRevision(t, e, f, 0))
	if !bytes.Equal(doc, want) {
		t.Fatal("downloaded YAML differs from the rendered revision")
	}

	second := f.deploy(t, "", 0)[0].RevisionID
	_, files = download(t, e, f.keys[0], "/api/internal/v1/apis/"+f.api)
	if docDescription(t, files["api-"+f.api+".yaml"]) != "second" || second == first {
		t.Fatal("a new deployment did not change the download")
	}
	// Rollback: redeploy the first revision.
	if rb := f.deploy(t, "?revisionId="+first, 0)[0].RevisionID; rb != first {
		t.Fatalf("rollback deployed %s, want %s", rb, first)
	}
	_, files = download(t, e, f.keys[0], "/api/internal/v1/apis/"+f.api)
	if docDescription(t, files["api-"+f.api+".yaml"]) != original {
		t.Fatal("rollback did not restore the first revision")
	}
	var deps httpx.List[store.Deployment]
	e.must(200, "GET", apiPath+"/deployments", f.tok, nil, &deps)
	if deps.List[0].FetchedAt == nil {
		t.Fatal("fetchedAt not recorded")
	}

	// Gateway 1 has nothing deployed: 404 for the API, an empty zip for all.
	resp, _ = download(t, e, f.keys[1], "/api/internal/v1/apis/"+f.api)
	if resp.StatusCode != 404 {
		t.Fatalf("undeployed API download: %d", resp.StatusCode)
	}
	resp, files = download(t, e, f.keys[1], "/api/internal/v1/apis")
	if len(files) != 0 || !strings.Contains(resp.Header.Get("Content-Disposition"), "apis-org-") {
		t.Fatalf("all-APIs download %v %v", files, resp.Header)
	}
	resp, files = download(t, e, f.keys[0], "/api/internal/v1/apis")
	if len(files) != 1 {
		t.Fatalf("all-APIs download has %d entries", len(files))
	}
	// Without or with a bad key: 401.
	resp, _ = download(t, e, "bad", "/api/internal/v1/apis")
	if resp.StatusCode != 401 {
		t.Fatalf("bad key download: %d", resp.StatusCode)
	}
}

func mustStoredRevision(t *testing.T, e *testEnv, f *testFleet, gw int) *store.API {
	t.Helper()
	d, _, err := e.db.DeployedRevision(t.Context(), f.gws[gw].ID, f.api)
	if err != nil {
		t.Fatal(err)
	}
	rev, err := e.db.Revision(t.Context(), f.api, d.RevisionID)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.db.OpenSecrets(rev.API); err != nil {
		t.Fatal(err)
	}
	return rev.API
}

func TestUndeployAndDeleteAPI(t *testing.T) {
	e := newEnvWith(t, fastHub)
	f := newFleet(t, e, 2)
	c0, _ := mustDial(t, e.srv.URL, f.keys[0])
	c1, _ := mustDial(t, e.srv.URL, f.keys[1])
	f.deploy(t, "", 0, 1)
	c0.next(time.Second)
	c1.next(time.Second)

	e.must(204, "DELETE", "/api/v1/apis/"+f.api+"/deployments/"+f.gws[0].ID, f.tok, nil, nil)
	ev := c0.next(time.Second)
	if ev["type"] != "api.undeployed" || ev["payload"].(map[string]any)["apiId"] != f.api {
		t.Fatalf("undeploy event %v", ev)
	}
	code, data := e.do("DELETE", "/api/v1/apis/"+f.api+"/deployments/"+f.gws[0].ID, f.tok, nil)
	wantError(t, code, data, 404, "not deployed")

	var arts httpx.List[api.ProxyArtifact]
	e.must(200, "GET", "/api/v1/gateways/"+f.gws[1].ID+"/live-proxy-artifacts", f.tok, nil, &arts)
	if arts.Count != 1 || arts.List[0].ID != f.api || arts.List[0].Type != "API" || arts.List[0].SubType != "REST" {
		t.Fatalf("artifacts %+v", arts)
	}
	e.must(200, "GET", "/api/v1/gateways/"+f.gws[1].ID+"/live-proxy-artifacts?artifactType=MCP", f.tok, nil, &arts)
	if arts.Count != 0 {
		t.Fatalf("MCP artifacts %+v", arts)
	}
	code, data = e.do("GET", "/api/v1/gateways/"+f.gws[1].ID+"/live-proxy-artifacts?artifactType=WIDGET", f.tok, nil)
	wantError(t, code, data, 400, "artifactType")

	// Deleting a deployed API undeploys it from its gateways first.
	e.must(204, "DELETE", "/api/v1/apis/"+f.api, f.tok, nil, nil)
	if ev := c1.next(time.Second); ev["type"] != "api.undeployed" {
		t.Fatalf("delete event %v", ev)
	}
	resp, _ := download(t, e, f.keys[1], "/api/internal/v1/apis/"+f.api)
	if resp.StatusCode != 404 {
		t.Fatalf("deleted API still downloadable: %d", resp.StatusCode)
	}
}

func TestGatewayReportsDeployment(t *testing.T) {
	e := newEnvWith(t, fastHub)
	f := newFleet(t, e, 1)
	apiID := "7d1f5c3e-2b4a-4c6d-8e9f-0a1b2c3d4e5f"
	report := map[string]any{
		"id": apiID,
		"configuration": map[string]any{"version": "api-platform.wso2.com/v1", "kind": "http/rest", "data": map[string]any{
			"name": "edge-local", "version": "v1", "context": "/edge-local",
			"upstream":   []any{map[string]any{"url": "https://a.internal"}, map[string]any{"url": "https://b.internal"}},
			"operations": []any{map[string]any{"method": "GET", "path": "/x"}},
		}},
		"status": "deployed", "createdAt": "2025-10-30T09:00:00Z", "updatedAt": "2025-10-30T09:00:00Z",
		"deployedAt": "2025-10-30T09:00:00Z", "deployedVersion": 1, "projectIdentifier": "default",
	}
	post := func(key string, body any, id ...string) (int, []byte) {
		path := apiID
		if len(id) > 0 {
			path = id[0]
		}
		data, _ := json.Marshal(body)
		req, _ := http.NewRequest("POST", e.srv.URL+"/api/internal/v1/apis/"+path+"/gateway-deployments", bytes.NewReader(data))
		req.Header.Set("api-key", key)
		resp, err := e.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		out, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, out
	}
	if code, body := post(f.keys[0], report); code != 201 || !strings.Contains(string(body), "API deployment registered successfully") {
		t.Fatalf("first report: %d %s", code, body)
	}
	if code, body := post(f.keys[0], report); code != 200 {
		t.Fatalf("repeat report: %d %s", code, body)
	}
	a := asMap(t, e.must(200, "GET", "/api/v1/apis/"+apiID, f.tok, nil, nil))
	if len(a["backend-services"].([]any)) != 2 || a["context"] != "/edge-local" {
		t.Fatalf("reported API %v", a)
	}
	var deps httpx.List[store.Deployment]
	e.must(200, "GET", "/api/v1/apis/"+apiID+"/deployments", f.tok, nil, &deps)
	if deps.Count != 1 || deps.List[0].GatewayID != f.gws[0].ID || deps.List[0].Status != "DELIVERED" {
		t.Fatalf("reported deployment %+v", deps)
	}
	bad := map[string]any{"projectIdentifier": "nope", "configuration": report["configuration"]}
	code, body := post(f.keys[0], bad, "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d")
	if code != 400 || !strings.Contains(string(body), "projectIdentifier") {
		t.Fatalf("unknown project: %d %s", code, body)
	}
	if code, _ := post("nope", report); code != 401 {
		t.Fatalf("bad key: %d", code)
	}
}

func TestShutdownSendsGoingAway(t *testing.T) {
	e := newEnvWith(t, fastHub)
	f := newFleet(t, e, 1)
	clients := []*wsClient{}
	for range 3 {
		c, _ := mustDial(t, e.srv.URL, f.keys[0])
		clients = append(clients, c)
	}
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		done <- e.api.Hub().Shutdown(ctx)
	}()
	for _, c := range clients {
		if code := c.closeCode(2 * time.Second); code != hub.CloseGoingAway {
			t.Fatalf("close code %d, want 1001", code)
		}
	}
	// Shutdown returns only once every connection goroutine has ended.
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if e.api.Hub().Count() != 0 {
		t.Fatal("connections left after shutdown")
	}
	if c, resp := dialWS(t, e.srv.URL, f.keys[0]); c != nil {
		if m := c.next(time.Second); m["type"] != "error" {
			t.Fatalf("connection accepted during shutdown: %v", m)
		}
	} else {
		resp.Body.Close()
	}
}

func TestOversizedFrameClosesConnection(t *testing.T) {
	e := newEnvWith(t, fastHub)
	f := newFleet(t, e, 1)
	c, _ := mustDial(t, e.srv.URL, f.keys[0])
	// Announce a 64 KiB frame but send only its start: the server must
	// refuse it from the header alone, before reading the payload.
	frame := encodeFrame(opText, bytes.Repeat([]byte("x"), 64<<10))
	if _, err := c.conn.Write(frame[:1024]); err != nil {
		t.Fatal(err)
	}
	if code := c.closeCode(2 * time.Second); code != hub.CloseTooBig {
		t.Fatalf("close code %d, want 1009", code)
	}
}

// TestGatewayPingIsAnswered has a gateway ping the server after being idle
// for longer than the write timeout: the pong comes back and the connection
// stays up (the library writes pongs outside the hub's writer, and must not
// inherit a stale write deadline).
func TestGatewayPingIsAnswered(t *testing.T) {
	e := newEnvWith(t, func(o *Options) { fastHub(o); o.Hub.WriteTimeout = 100 * time.Millisecond })
	f := newFleet(t, e, 1)
	c, _ := mustDial(t, e.srv.URL, f.keys[0])
	// Idle past several write timeouts, answering the server's pings.
	if _, err := c.tryNext(500 * time.Millisecond); err == nil || !strings.Contains(err.Error(), "timeout") {
		t.Fatalf("idle: %v", err)
	}
	if err := c.writeFrame(opPing, []byte("hi")); err != nil {
		t.Fatal(err)
	}
	for {
		op, payload, err := c.readFrame(2 * time.Second)
		if err != nil {
			t.Fatalf("no pong: %v", err)
		}
		if op == opPong && string(payload) == "hi" {
			break
		}
		if op == opPing {
			c.writeFrame(opPong, payload)
		}
	}
	if n, _ := e.api.Hub().Presence(f.gws[0].ID); n != 1 {
		t.Fatal("the connection dropped after the gateway's ping")
	}
}

func TestSmallListsArePaged(t *testing.T) {
	e := newEnvWith(t, fastHub)
	f := newFleet(t, e, 3)
	f.deploy(t, "", 0, 1, 2)
	for _, path := range []string{"/api/v1/apis/" + f.api + "/deployments", "/api/v1/apis/" + f.api + "/gateways",
		"/api/v1/gateways/" + f.gws[0].ID + "/live-proxy-artifacts"} {
		var l httpx.List[map[string]any]
		e.must(200, "GET", path+"?limit=1&offset=1", f.tok, nil, &l)
		wantTotal := 3
		if strings.Contains(path, "artifacts") {
			wantTotal = 1
		}
		if l.Pagination.Total != wantTotal || l.Pagination.Limit != 1 || l.Pagination.Offset != 1 || l.Count != min(1, wantTotal-1) {
			t.Fatalf("%s: %+v", path, l)
		}
		code, data := e.do("GET", path+"?limit=abc", f.tok, nil)
		wantError(t, code, data, 400, "limit")
	}
}

func TestForwardedForUsesTheProxysEntry(t *testing.T) {
	e := newEnvWith(t, func(o *Options) { fastHub(o); o.WSRateLimitPerMinute = 3; o.TrustForwardedFor = true })
	codes := map[int]int{}
	for i := range 10 {
		req, _ := http.NewRequest("GET", e.srv.URL+"/api/internal/v1/ws/gateways/connect", nil)
		// A client-chosen first entry changes every time; the proxy's last one does not.
		req.Header.Set("X-Forwarded-For", fmt.Sprintf("10.0.0.%d, 192.0.2.7", i))
		resp, err := e.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		codes[resp.StatusCode]++
	}
	if codes[429] < 6 {
		t.Fatalf("statuses %v: spoofed X-Forwarded-For entries escaped the limit", codes)
	}
}

// TestBadKeysAreRateLimited: a client trying api-keys is answered 429 after a
// few failures, on the channel and on the gateway REST routes alike, while
// another address is unaffected.
func TestBadKeysAreRateLimited(t *testing.T) {
	e := newEnvWith(t, func(o *Options) { fastHub(o); o.WSRateLimitPerMinute = 5 })
	f := newFleet(t, e, 1)
	bad := f.keys[0][:len(f.keys[0])-4] + "AAAA"
	var last int
	for range 8 {
		resp, _ := download(t, e, bad, "/api/internal/v1/apis")
		last = resp.StatusCode
	}
	if last != 429 {
		t.Fatalf("after 8 bad keys: %d, want 429", last)
	}
	if c, resp := dialWS(t, e.srv.URL, f.keys[0]); c != nil || resp.StatusCode != 429 {
		t.Fatal("the limited address could still open the channel")
	}
}
