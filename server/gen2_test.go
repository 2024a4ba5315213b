package server

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"strings"
	"testing"
	"time"

	"platform-api/apidef"
	"platform-api/fleet"
	"platform-api/gatewayapi"
	"platform-api/httpx"
	"platform-api/hub"
	"platform-api/store"
)

// TestManifest: the manifest route records what a second-generation gateway
// reports; its answers are the ones that keep such a gateway running.
func TestManifest(t *testing.T) {
	e := newEnvWith(t, fastHub)
	f := newFleet(t, e, 2)
	g := newGen2(t, e, f.keys[0], f.gws[0].ID)
	post := func(id, body string) (int, []byte) {
		return g.call("POST", "/api/internal/v1/gateways/"+id+"/manifest", body)
	}
	if code, body := post(f.gws[0].ID, `{"version":"1.2.0","functionalityType":"regular","policies":[{"name":"cors","version":"v1"},{"name":"jwt"},"named"],"extra":{"a":1}}`); code != 204 {
		t.Fatalf("manifest: %d %s", code, body)
	}
	var gw store.Gateway
	e.must(200, "GET", "/api/v1/gateways/"+f.gws[0].ID, f.tok, nil, &gw)
	m := gw.Manifest
	if m == nil || m.Version != "1.2.0" || m.FunctionalityType != "regular" || strings.Join(m.Policies, ",") != "cors@v1,jwt,named" ||
		time.Since(m.ReportedAt) > time.Minute {
		t.Fatalf("manifest shown %+v", m)
	}
	var list httpx.List[store.Gateway]
	e.must(200, "GET", "/api/v1/gateways", f.tok, nil, &list)
	for _, x := range list.List {
		if (x.Manifest != nil) != (x.ID == f.gws[0].ID) {
			t.Fatalf("listed gateway %s manifest %+v", x.Name, x.Manifest)
		}
	}
	code, body := post(f.gws[1].ID, `{"version":"1"}`) // another gateway's id
	wantError(t, code, body, 404, "not found")
	code, body = post(f.gws[0].ID, `{"version":`)
	wantError(t, code, body, 400, "not valid JSON")
	// Not a 200: that would switch the gateway into another product mode.
	code, body = g.call("GET", "/internal/gateway/.well-known", "")
	wantError(t, code, body, 404, "no route")
	if code, body = g.call("GET", "/api/internal/v1/apis/api-keys", ""); code != 200 || strings.TrimSpace(string(body)) != "[]" {
		t.Fatalf("api-keys of a gateway running nothing: %d %s", code, body)
	}
	for _, kind := range []string{"mcps", "llm-providers", "llm-proxies", "websub-apis", "webbroker-apis"} {
		code, body = g.call("GET", "/api/internal/v1/"+kind+"/api-keys", "")
		wantError(t, code, body, 404, "serves API keys of REST APIs only")
	}
	// Nothing deployed, so no secret: an empty list, not an error.
	code, body = g.call("GET", "/api/internal/v1/secrets?includeValues=true", "")
	if code != 200 || strings.TrimSpace(string(body)) != `{"list":[],"count":0}` {
		t.Fatalf("secrets = %d %s", code, body)
	}
}

// TestSecondGenerationDeploys: events carry deploymentId and performedAt,
// the download is a RestApi, the acknowledgement makes the deployment
// DEPLOYED, and ?wait answers once it is.
func TestSecondGenerationDeploys(t *testing.T) {
	e := newEnvWith(t, fastHub)
	f := newFleet(t, e, 1)
	g := newGen2(t, e, f.keys[0], f.gws[0].ID)
	g.connect()
	go g.handleAll()
	var out []fleet.Result
	e.must(200, "POST", "/api/v1/apis/"+f.api+"/deploy-revision?wait=5s", f.tok,
		[]map[string]string{{"gatewayId": f.gws[0].ID, "vhost": "api.example.com"}}, &out)
	if out[0].Status != store.StatusDeployed || out[0].DeploymentID == "" || out[0].DeliveredConnections != 1 {
		t.Fatalf("deploy and wait: %+v", out)
	}
	d := deploymentStatus(t, e, f.tok, f.api, f.gws[0].ID)
	if d["status"] != "DEPLOYED" || d["deploymentId"] != out[0].DeploymentID || d["ackedAt"] == nil {
		t.Fatalf("stored deployment %v", d)
	}
	g.mu.Lock()
	ev := g.applied[0]
	g.mu.Unlock()
	p := ev["payload"].(map[string]any)
	if p["deploymentId"] != out[0].DeploymentID || p["revisionId"] != out[0].RevisionID || p["vhost"] != "api.example.com" {
		t.Fatalf("event %v", ev)
	}
	doc := g.downloadRestAPI(f.api)
	spec := doc["spec"].(map[string]any)
	if spec["vhosts"].(map[string]any)["main"] != "api.example.com" || doc["metadata"].(map[string]any)["name"] == "" {
		t.Fatalf("RestApi %v", doc)
	}

	// A second deploy, failed by the gateway: FAILED with its code, at once.
	g.mu.Lock()
	g.fail[f.api] = "GATEWAY_PROCESSING_ERROR"
	g.mu.Unlock()
	e.must(200, "POST", "/api/v1/apis/"+f.api+"/deploy-revision?wait=5s", f.tok,
		[]map[string]string{{"gatewayId": f.gws[0].ID}}, &out)
	if out[0].Status != store.StatusFailed || out[0].ErrorCode != "GATEWAY_PROCESSING_ERROR" {
		t.Fatalf("failed deploy: %+v", out)
	}
	// An acknowledgement of the older deployment changes nothing.
	g.ack(d["deploymentId"].(string), f.api, "deploy", "success", "", time.Now().Format(time.RFC3339))
	g.c.writeFrame(opText, []byte(`{"type":"deployment.ack","payload":"garbage"}`))
	g.c.writeFrame(opText, []byte(`not json`))
	e.must(200, "POST", "/api/v1/apis/"+f.api+"/deploy-revision?wait=5s", f.tok,
		[]map[string]string{{"gatewayId": f.gws[0].ID}}, &out)
	if out[0].Status != store.StatusDeployed {
		t.Fatalf("third deploy: %+v", out)
	}
	acks, ignored := e.api.fleet.AckCounts()
	if ignored != 2 || len(acks) != 2 {
		t.Fatalf("acks %+v, ignored %d", acks, ignored)
	}
	var metrics bytes.Buffer
	e.api.writeMetrics(&metrics)
	if !strings.Contains(metrics.String(), `platform_gateway_acks_total{status="failed",error_code="GATEWAY_PROCESSING_ERROR"} 1`) {
		t.Fatalf("metrics:\n%s", metrics.String())
	}
	for _, bad := range []string{"0s", "61s", "soon", "-1s"} {
		code, body := e.do("POST", "/api/v1/apis/"+f.api+"/deploy-revision?wait="+bad, f.tok, []map[string]string{{"gatewayId": f.gws[0].ID}})
		wantError(t, code, body, 400, "wait: must be a duration")
	}
}

// TestAcknowledgementTimeoutAndOffline: a gateway that applies without
// answering fails with DEPLOYMENT_TIMEOUT; one that is offline stays
// PENDING however long, and converges on connect.
func TestAcknowledgementTimeoutAndOffline(t *testing.T) {
	e := newEnvStore(t, func(c *store.Config) { c.AckTimeout = 300 * time.Millisecond }, fastHub)
	f := newFleet(t, e, 2)
	silent := newGen2(t, e, f.keys[0], f.gws[0].ID)
	silent.ignoreAcks = true
	silent.connect()
	go silent.handleAll()
	var out []fleet.Result
	e.must(200, "POST", "/api/v1/apis/"+f.api+"/deploy-revision?wait=5s", f.tok,
		[]map[string]string{{"gatewayId": f.gws[0].ID}, {"gatewayId": f.gws[1].ID}}, &out)
	if out[0].Status != store.StatusFailed || out[0].ErrorCode != store.ErrorDeploymentTimeout {
		t.Fatalf("unanswered deployment: %+v", out[0])
	}
	if out[1].Status != store.StatusPending {
		t.Fatalf("offline gateway: %+v", out[1])
	}
	// Both were made at once, so the timeout has passed for the offline
	// gateway's deployment too: it is still PENDING.
	if d := deploymentStatus(t, e, f.tok, f.api, f.gws[1].ID); d["status"] != "PENDING" {
		t.Fatalf("offline gateway after the timeout: %v", d)
	}
	g := newGen2(t, e, f.keys[1], f.gws[1].ID)
	g.connect()
	g.next(2 * time.Second)
	waitStatus(t, e, f.tok, f.api, f.gws[1].ID, store.StatusDeployed)
}

// TestUnacknowledgedReturnsToPending: a deployment sent to a gateway that
// disconnects before acknowledging it waits for its return as PENDING (it
// is not left DEPLOYING to time out), and is DEPLOYED once the gateway
// comes back and acknowledges.
func TestUnacknowledgedReturnsToPending(t *testing.T) {
	e := newEnvWith(t, fastHub)
	f := newFleet(t, e, 1)
	g := newGen2(t, e, f.keys[0], f.gws[0].ID)
	g.ignoreAcks = true
	g.connect()
	out := f.deploy(t, "", 0)
	if out[0].Status != store.StatusDeploying {
		t.Fatalf("deploy %+v", out[0])
	}
	g.next(2 * time.Second) // applied, never acknowledged
	g.c.conn.Close()
	waitStatus(t, e, f.tok, f.api, f.gws[0].ID, store.StatusPending)
	back := newGen2(t, e, f.keys[0], f.gws[0].ID)
	back.connect()
	back.next(2 * time.Second)
	waitStatus(t, e, f.tok, f.api, f.gws[0].ID, store.StatusDeployed)
}

// TestReplicasAllAcknowledge: a gateway with two connections is DEPLOYED
// only when both acknowledged.
func TestReplicasAllAcknowledge(t *testing.T) {
	e := newEnvWith(t, fastHub)
	f := newFleet(t, e, 1)
	a, b := newGen2(t, e, f.keys[0], f.gws[0].ID), newGen2(t, e, f.keys[0], f.gws[0].ID)
	a.connect()
	b.connect()
	// A connection still learning its generation (PLATFORM_WS_GENERATION_GRACE
	// after its connect) gets the deployment in its initial state, and the
	// answer counts only the ready ones: the answer's count is about ready
	// connections, so wait until every one is.
	waitReady(t, e, f.gws[0].ID)
	var out []fleet.Result
	e.must(200, "POST", "/api/v1/apis/"+f.api+"/deploy-revision", f.tok, []map[string]string{{"gatewayId": f.gws[0].ID}}, &out)
	if out[0].Status != store.StatusDeploying || out[0].DeliveredConnections != 2 {
		t.Fatalf("deploy %+v", out)
	}
	a.next(2 * time.Second)
	// a's acknowledgement alone leaves it DEPLOYING; b's completes it.
	if d := deploymentStatus(t, e, f.tok, f.api, f.gws[0].ID); d["status"] != "DEPLOYING" {
		t.Fatalf("after one of two acknowledgements: %v", d)
	}
	b.next(2 * time.Second)
	waitStatus(t, e, f.tok, f.api, f.gws[0].ID, store.StatusDeployed)
}

// TestFirstGenerationLearnsOnConnect: a first-generation gateway that was
// away during an undeployment and an API's deletion gets api.undeployed for
// both when it connects again (and api.deployed for what it still runs).
func TestFirstGenerationLearnsOnConnect(t *testing.T) {
	e := newEnvWith(t, fastHub)
	f := newFleet(t, e, 1)
	body := fixture(t, "api_maximal.json", e.defaultProject(f.tok))
	kept := asMap(t, e.must(201, "POST", "/api/v1/apis", f.tok, withName(body, "kept"), nil))["id"].(string)
	deleted := asMap(t, e.must(201, "POST", "/api/v1/apis", f.tok, withName(body, "deleted"), nil))["id"].(string)
	c, _ := mustDial(t, e.srv.URL, f.keys[0])
	for _, api := range []string{f.api, kept, deleted} {
		e.must(200, "POST", "/api/v1/apis/"+api+"/deploy-revision", f.tok, []map[string]string{{"gatewayId": f.gws[0].ID}}, nil)
		if ev := c.next(2 * time.Second); ev["type"] != "api.deployed" {
			t.Fatalf("deploy event %v", ev)
		}
	}
	c.conn.Close()
	waitDisconnected(t, e, f.gws[0].ID)
	e.must(204, "DELETE", "/api/v1/apis/"+f.api+"/deployments/"+f.gws[0].ID, f.tok, nil, nil)
	e.must(204, "DELETE", "/api/v1/apis/"+deleted, f.tok, nil, nil)

	c, _ = mustDial(t, e.srv.URL, f.keys[0])
	want := map[string]string{f.api: "api.undeployed", deleted: "api.undeployed", kept: "api.deployed"}
	got := map[string]string{}
	for len(got) < len(want) {
		ev := c.next(3 * time.Second)
		api, _ := ev["payload"].(map[string]any)["apiId"].(string)
		if _, seen := got[api]; seen || want[api] != ev["type"] {
			t.Fatalf("initial state after %v: %v; want %v once each", got, ev, want)
		}
		got[api] = ev["type"].(string)
	}
}

// TestUndeployDeleteAndTombstones: an undeployment is acknowledged; a
// gateway away during an undeploy and a deletion learns of both on connect;
// the first generation gets api.undeployed where the second gets
// api.deleted.
func TestUndeployDeleteAndTombstones(t *testing.T) {
	e := newEnvWith(t, fastHub)
	f := newFleet(t, e, 3) // 0: second generation, 1: first generation, 2: second generation, away
	body := fixture(t, "api_maximal.json", e.defaultProject(f.tok))
	other := asMap(t, e.must(201, "POST", "/api/v1/apis", f.tok, withName(body, "other"), nil))["id"].(string)
	g := newGen2(t, e, f.keys[0], f.gws[0].ID)
	g.connect()
	old, _ := mustDial(t, e.srv.URL, f.keys[1])
	away := newGen2(t, e, f.keys[2], f.gws[2].ID)
	away.connect()
	// Each connection is told of each deploy below once, as a live event:
	// not also in its initial state, read while the deploy commits.
	waitReady(t, e, f.gws[0].ID, f.gws[1].ID, f.gws[2].ID)
	for _, api := range []string{f.api, other} {
		e.must(200, "POST", "/api/v1/apis/"+api+"/deploy-revision", f.tok,
			[]map[string]string{{"gatewayId": f.gws[0].ID}, {"gatewayId": f.gws[1].ID}, {"gatewayId": f.gws[2].ID}}, nil)
		g.next(2 * time.Second)
		away.next(2 * time.Second)
		old.next(2 * time.Second)
	}
	away.c.conn.Close()
	waitDisconnected(t, e, f.gws[2].ID)

	for _, gw := range f.gws {
		e.must(204, "DELETE", "/api/v1/apis/"+other+"/deployments/"+gw.ID, f.tok, nil, nil)
	}
	if ev := g.next(2 * time.Second); ev["type"] != "api.undeployed" {
		t.Fatalf("second generation got %v", ev)
	}
	waitStatus(t, e, f.tok, other, f.gws[0].ID, store.StatusUndeployed)
	if ev := old.next(2 * time.Second); ev["type"] != "api.undeployed" {
		t.Fatalf("first generation got %v", ev)
	}
	if d := deploymentStatus(t, e, f.tok, other, f.gws[2].ID); d["status"] != "UNDEPLOYING" {
		t.Fatalf("undeployment of the away gateway: %v", d)
	}
	e.must(204, "DELETE", "/api/v1/apis/"+f.api, f.tok, nil, nil)
	if ev := g.next(2 * time.Second); ev["type"] != "api.deleted" || ev["payload"].(map[string]any)["apiId"] != f.api {
		t.Fatalf("second generation got %v for a deletion", ev)
	}
	if ev := old.next(2 * time.Second); ev["type"] != "api.undeployed" || ev["payload"].(map[string]any)["apiId"] != f.api {
		t.Fatalf("first generation got %v for a deletion", ev)
	}

	// The gateway that was away learns of both on connect.
	back := newGen2(t, e, f.keys[2], f.gws[2].ID)
	back.held = away.held
	back.connect()
	seen := map[string]string{}
	for range 2 {
		ev := back.next(2 * time.Second)
		seen[ev["payload"].(map[string]any)["apiId"].(string)] = ev["type"].(string)
	}
	if seen[other] != "api.undeployed" || seen[f.api] != "api.deleted" {
		t.Fatalf("on connect the away gateway got %v", seen)
	}
	waitStatus(t, e, f.tok, other, f.gws[2].ID, store.StatusUndeployed)
}

// TestConnectTimeTruth: a gateway restarted with an empty database after
// deployments were made while it was down syncs them by itself at start
// (GET /deployments, fetch-batch), then connects: every one ends DEPLOYED
// by an acknowledgement, and one already acknowledged is not re-applied.
func TestConnectTimeTruth(t *testing.T) {
	e := newEnvStore(t, func(c *store.Config) { c.AckTimeout = time.Hour }, fastHub)
	f := newFleet(t, e, 1)
	body := fixture(t, "api_maximal.json", e.defaultProject(f.tok))
	const n = 40
	var apis []string
	for i := range n {
		api := asMap(t, e.must(201, "POST", "/api/v1/apis", f.tok, withName(body, fmt.Sprint("down-", i)), nil))["id"].(string)
		e.must(200, "POST", "/api/v1/apis/"+api+"/deploy-revision", f.tok, []map[string]string{{"gatewayId": f.gws[0].ID}}, nil)
		apis = append(apis, api)
	}
	g := newGen2(t, e, f.keys[0], f.gws[0].ID)
	// Startup sync: the list, then the documents in batches.
	code, data := g.call("GET", "/api/internal/v1/deployments", "")
	var sync struct {
		Deployments []struct{ ArtifactID, DeploymentID, Kind, State, DeployedAt, Etag string }
	}
	if code != 200 || json.Unmarshal(data, &sync) != nil || len(sync.Deployments) != n {
		t.Fatalf("sync: %d %s", code, data)
	}
	var ids []string
	for _, d := range sync.Deployments {
		if d.Kind != "RestApi" || d.State != "deployed" || d.Etag == "" {
			t.Fatalf("sync entry %+v", d)
		}
		at, _ := time.Parse(time.RFC3339Nano, d.DeployedAt)
		g.held[d.ArtifactID] = at // applied from the batch, not acknowledged
		ids = append(ids, d.DeploymentID)
	}
	docs := fetchBatch(t, g, ids)
	if len(docs) != n {
		t.Fatalf("fetch-batch gave %d documents", len(docs))
	}
	g.connect()
	for range n {
		g.next(5 * time.Second)
	}
	for _, api := range apis {
		waitStatus(t, e, f.tok, api, f.gws[0].ID, store.StatusDeployed)
	}
	// Reconnected, it is told nothing it has already acknowledged.
	g.c.conn.Close()
	waitDisconnected(t, e, f.gws[0].ID)
	g.connect()
	if ev, err := g.c.tryNext(500 * time.Millisecond); err == nil {
		t.Fatalf("an acknowledged deployment was sent again: %v", ev)
	}
}

// fetchBatch posts deployment ids and returns the tar.gz entries by name.
func fetchBatch(t *testing.T, g *gen2Gateway, ids []string) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	for start := 0; start < len(ids); start += 50 {
		body, _ := json.Marshal(map[string]any{"deploymentIds": ids[start:min(start+50, len(ids))]})
		code, data := g.call("POST", "/api/internal/v1/deployments/fetch-batch", string(body))
		if code != 200 {
			t.Fatalf("fetch-batch: %d %s", code, data)
		}
		gz, err := gzip.NewReader(bytes.NewReader(data))
		if err != nil {
			t.Fatal(err)
		}
		tr := tar.NewReader(gz)
		for {
			h, err := tr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			doc, _ := io.ReadAll(tr)
			if !bytes.Contains(doc, []byte("kind: RestApi")) {
				t.Fatalf("%s is not a RestApi document", h.Name)
			}
			out[h.Name] = doc
		}
	}
	return out
}

// TestStartupSyncRoutes: since, other gateways' ids, bounds, existence.
func TestStartupSyncRoutes(t *testing.T) {
	e := newEnvWith(t, fastHub)
	f := newFleet(t, e, 2)
	_, otherTok := e.newOrg()
	foreignAPI := asMap(t, e.must(201, "POST", "/api/v1/apis", otherTok, fixture(t, "api_minimal.json", e.defaultProject(otherTok)), nil))["id"].(string)
	var out []fleet.Result
	e.must(200, "POST", "/api/v1/apis/"+f.api+"/deploy-revision", f.tok,
		[]map[string]string{{"gatewayId": f.gws[0].ID}, {"gatewayId": f.gws[1].ID}}, &out)
	g := newGen2(t, e, f.keys[0], f.gws[0].ID)
	future := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	if code, data := g.call("GET", "/api/internal/v1/deployments?since="+future, ""); code != 200 || !bytes.Contains(data, []byte(`"deployments":[]`)) {
		t.Fatalf("since the future: %d %s", code, data)
	}
	code, data := g.call("GET", "/api/internal/v1/deployments?since=yesterday", "")
	wantError(t, code, data, 400, "since")
	// Gateway 1's deployment is not served to gateway 0.
	docs := fetchBatch(t, g, []string{out[0].DeploymentID, out[1].DeploymentID, "nonsense"})
	if len(docs) != 1 || docs[out[0].DeploymentID+"/api.yaml"] == nil {
		t.Fatalf("fetch-batch served %v", keysOf(docs))
	}
	many, _ := json.Marshal(map[string]any{"deploymentIds": make([]string, 101)})
	code, data = g.call("POST", "/api/internal/v1/deployments/fetch-batch", string(many))
	wantError(t, code, data, 400, "at most 100")
	code, data = g.call("POST", "/api/internal/v1/artifacts/exists",
		`{"artifactIds":["`+f.api+`","`+foreignAPI+`","00000000-0000-4000-8000-000000000000","NOT-AN-ID"]}`)
	var ex struct{ Artifacts []gatewayapi.ArtifactExists }
	if code != 200 || json.Unmarshal(data, &ex) != nil || len(ex.Artifacts) != 4 || !ex.Artifacts[0].Exists ||
		ex.Artifacts[1].Exists || ex.Artifacts[2].Exists || ex.Artifacts[3].Exists {
		t.Fatalf("exists: %d %s", code, data)
	}
}

func keysOf[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// TestBothGenerationsSideBySide: one API, deployed to a gateway of each
// generation in one organization: each gets the events and the document of
// its generation, and the statuses of its generation.
func TestBothGenerationsSideBySide(t *testing.T) {
	e := newEnvWith(t, fastHub)
	f := newFleet(t, e, 2)
	old, _ := mustDial(t, e.srv.URL, f.keys[0])
	g := newGen2(t, e, f.keys[1], f.gws[1].ID)
	g.connect()
	go g.handleAll()
	var out []fleet.Result
	e.must(200, "POST", "/api/v1/apis/"+f.api+"/deploy-revision?wait=5s", f.tok,
		[]map[string]string{{"gatewayId": f.gws[0].ID}, {"gatewayId": f.gws[1].ID}}, &out)
	if out[0].Status != store.StatusDelivered || out[1].Status != store.StatusDeployed {
		t.Fatalf("statuses %+v", out)
	}
	ev := old.next(2 * time.Second)
	if ev["type"] != "api.deployed" {
		t.Fatalf("first generation got %v", ev)
	}
	_, files := download(t, e, f.keys[0], "/api/internal/v1/apis/"+f.api)
	if !bytes.HasPrefix(files["api-"+f.api+".yaml"], []byte("kind: http/rest")) {
		t.Fatalf("first generation download:\n%s", files["api-"+f.api+".yaml"])
	}
}

// TestDeployWhileGenerationUnknown: a deployment that reaches a connection
// before its generation is known goes out in the form of the generation
// it turns out to be, and the deploy answers with what that did.
func TestDeployWhileGenerationUnknown(t *testing.T) {
	t.Run("first generation", func(t *testing.T) {
		e := newEnvWith(t, func(o *Options) { fastHub(o); o.GenerationGrace = 300 * time.Millisecond })
		f := newFleet(t, e, 1)
		c, _ := mustDial(t, e.srv.URL, f.keys[0])
		out := f.deploy(t, "", 0) // within the grace period
		if out[0].Status != store.StatusDelivered || out[0].DeliveredConnections != 1 {
			t.Fatalf("answer %+v", out[0])
		}
		ev := c.next(2 * time.Second)
		if p := ev["payload"].(map[string]any); ev["type"] != "api.deployed" || p["revisionId"] != out[0].RevisionID {
			t.Fatalf("event %v", ev)
		}
		if ev, err := c.tryNext(500 * time.Millisecond); err == nil {
			t.Fatalf("sent twice: %v", ev)
		}
	})
	t.Run("second generation", func(t *testing.T) {
		e := newEnvWith(t, func(o *Options) { fastHub(o); o.GenerationGrace = 3 * time.Second })
		f := newFleet(t, e, 1)
		g := newGen2(t, e, f.keys[0], f.gws[0].ID)
		g.c, _ = mustDial(t, e.srv.URL, f.keys[0]) // no manifest yet
		answered := make(chan []fleet.Result, 1)
		go func() { answered <- f.deploy(t, "?wait=5s", 0) }()
		// Once the deployment is recorded, the manifest arrives.
		waitFor(t, func() bool {
			var st struct{ Count int }
			e.must(200, "GET", "/api/v1/apis/"+f.api+"/deployments", f.tok, nil, &st)
			return st.Count == 1
		})
		if code, data := g.call("POST", "/api/internal/v1/gateways/"+g.id+"/manifest", `{"version":"1.2.0"}`); code != 204 {
			t.Fatalf("manifest: %d %s", code, data)
		}
		g.next(2 * time.Second) // checks the form, downloads, acknowledges
		out := <-answered
		if out[0].Status != store.StatusDeployed || out[0].DeliveredConnections != 1 {
			t.Fatalf("answer %+v", out[0])
		}
	})
}

// TestImportGatewayArtifacts: APIs a second-generation gateway made by
// itself become APIs with their deployment, once per dpid; a bad artifact
// is reported, not a 500; zips that are bombs or play path tricks are
// refused.
func TestImportGatewayArtifacts(t *testing.T) {
	e := newEnvWith(t, fastHub)
	f := newFleet(t, e, 1)
	g := newGen2(t, e, f.keys[0], f.gws[0].ID)
	g.connect()
	project := e.defaultProject(f.tok)
	restAPI := func(name, context, projectID string) map[string]any {
		ann := map[string]string{}
		if projectID != "" {
			ann["gateway.api-platform.wso2.com/project-id"] = projectID
		}
		return map[string]any{"apiVersion": "gateway.api-platform.wso2.com/v1", "kind": "RestApi",
			"metadata": map[string]any{"name": name, "annotations": ann},
			"spec": map[string]any{"displayName": name, "version": "v1", "context": context,
				"upstream":   map[string]any{"main": map[string]any{"url": "https://backend.internal"}},
				"operations": []any{map[string]any{"method": "GET", "path": "/x", "policies": []any{map[string]any{"name": "cors", "version": "v1", "params": map[string]any{"a": 1}}}}}}}
	}
	artifacts := []map[string]any{
		{"dpid": "dp-1", "configuration": restAPI("local-orders", "/local-orders", ""), "status": "deployed", "properties": map[string]any{"deploymentRevision": 3}},
		{"dpid": "dp-2", "configuration": restAPI("local-pay", "/local-pay", project), "status": "deployed"},
		{"dpid": "dp-3", "configuration": restAPI("bad name!", "/bad", ""), "status": "deployed"},
		{"dpid": "dp-4", "configuration": restAPI("elsewhere", "/elsewhere", "00000000-0000-4000-8000-000000000000"), "status": "deployed"},
	}
	post := func(files map[string][]byte) (int, []byte) {
		var zbuf bytes.Buffer
		zw := zip.NewWriter(&zbuf)
		for name, data := range files {
			w, _ := zw.Create(name)
			w.Write(data)
		}
		zw.Close()
		var body bytes.Buffer
		mw := multipart.NewWriter(&body)
		fw, _ := mw.CreateFormFile("artifacts", "artifacts.zip")
		fw.Write(zbuf.Bytes())
		mw.WriteField("total", "4")
		mw.Close()
		req, _ := http.NewRequest("POST", e.srv.URL+"/api/internal/v1/artifacts/import-gateway-artifacts", &body)
		req.Header.Set("api-key", f.keys[0])
		req.Header.Set("Content-Type", mw.FormDataContentType())
		resp, err := e.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		data, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, data
	}
	js, _ := json.Marshal(artifacts)
	var res struct {
		Total, Success, Failed int
		Artifacts              map[string]gatewayapi.ImportResult
	}
	for round := range 2 { // the second time, every artifact is a repeat
		code, data := post(map[string][]byte{"artifacts.json": js})
		if code != 200 || json.Unmarshal(data, &res) != nil {
			t.Fatalf("import: %d %s", code, data)
		}
		if res.Total != 4 || res.Success != 2 || res.Failed != 2 || !strings.Contains(res.Artifacts["dp-3"].Error, "name") ||
			!strings.Contains(res.Artifacts["dp-4"].Error, "not found") {
			t.Fatalf("round %d: %s", round, data)
		}
	}
	id := res.Artifacts["dp-1"].ID
	a := asMap(t, e.must(200, "GET", "/api/v1/apis/"+id, f.tok, nil, nil))
	if a["projectId"] != project || a["context"] != "/local-orders" {
		t.Fatalf("imported API %v", a)
	}
	if d := deploymentStatus(t, e, f.tok, id, f.gws[0].ID); d["status"] != "DEPLOYED" || d["deploymentId"] != "dp-1" {
		t.Fatalf("imported deployment %v", d)
	}
	// The document rendered back keeps the gateway's name for it.
	if doc := g.downloadRestAPI(id); doc["metadata"].(map[string]any)["name"] != "local-orders" {
		t.Fatalf("rendered back %v", doc)
	}
	var list httpx.List[store.API]
	e.must(200, "GET", "/api/v1/apis", f.tok, nil, &list)
	if list.Count != 3 { // the fleet's API and two imported, once each
		t.Fatalf("%d APIs after two imports", list.Count)
	}

	bomb := bytes.Repeat([]byte(" "), gatewayapi.MaxImportJSONBytes+10) // compresses to almost nothing
	code, data := post(map[string][]byte{"artifacts.json": bomb})
	wantError(t, code, data, 413, "inflates to more than")
	code, data = post(map[string][]byte{"../artifacts.json": js})
	wantError(t, code, data, 400, "not a plain file name")
	code, data = post(map[string][]byte{"dir/artifacts.json": js})
	wantError(t, code, data, 400, "not a plain file name")
	code, data = post(map[string][]byte{"other.json": js})
	wantError(t, code, data, 400, "no artifacts.json")
}

// TestLargeDesiredStateIsPaced: gateways handle events one at a time and
// answer pings only while reading. Sent a large initial state all at once,
// a gateway spends longer than the silence timeout working through it
// before it reads the ping queued behind it, and is dropped. The initial
// state is paced on the gateway's downloads, so its pings stay answered.
func TestLargeDesiredStateIsPaced(t *testing.T) {
	e := newEnvWith(t, fastHub) // ping every 200 ms, silence timeout 1 s
	f := newFleet(t, e, 1)
	ctx := t.Context()
	org := asMap(t, e.must(200, "GET", "/api/v1/organizations", f.tok, nil, nil))["id"].(string)
	project := e.defaultProject(f.tok)
	const n = 300
	for i := range n {
		a := &store.API{OrganizationID: org, ProjectID: project, Name: fmt.Sprint("bulk-", i), Context: fmt.Sprint("/bulk-", i),
			Version: "v1", BackendServices: []store.BackendService{{Name: "b", Endpoints: []store.Endpoint{{URL: "https://b.internal"}}}}}
		apidef.ApplyDefaults(a)
		stored, err := e.db.CreateAPI(ctx, a)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := e.db.Deploy(ctx, org, stored.ID, "", []store.DeployTarget{{GatewayID: f.gws[0].ID}}, func(*store.Revision) error { return nil }); err != nil {
			t.Fatal(err)
		}
	}
	c, _ := mustDial(t, e.srv.URL, f.keys[0])
	start := time.Now()
	// The first window of the state comes; the next event waits for the
	// gateway to act on one of them. A live deployment made now overtakes
	// the rest of the state: it is the next frame the gateway sees.
	var window []string
	for len(window) < hub.DefaultInitialWindow {
		ev := c.next(5 * time.Second)
		if ev["type"] == "api.deployed" {
			window = append(window, ev["payload"].(map[string]any)["apiId"].(string))
		}
	}
	live := f.deploy(t, "", 0)[0]
	if ev := c.next(5 * time.Second); ev["type"] != "api.deployed" || ev["payload"].(map[string]any)["apiId"] != f.api {
		t.Fatalf("after a window of %d events not acted on, the next frame is %v, want the live deployment of %s (revision %s): the state was not paced",
			len(window), ev, f.api, live.RevisionID)
	}
	for _, api := range window {
		if resp, _ := download(t, e, f.keys[0], "/api/internal/v1/apis/"+api); resp.StatusCode != 200 {
			t.Fatalf("download %d", resp.StatusCode)
		}
	}
	for got := len(window); got < n; {
		ev, err := c.tryNext(3 * time.Second)
		if err != nil {
			t.Fatalf("after %d of %d events in %s: %v (dropped?)", got, n, time.Since(start), err)
		}
		if ev["type"] != "api.deployed" {
			continue
		}
		got++
		// Process the event: download it, then work a little, reading
		// nothing meanwhile.
		api := ev["payload"].(map[string]any)["apiId"].(string)
		if resp, _ := download(t, e, f.keys[0], "/api/internal/v1/apis/"+api); resp.StatusCode != 200 {
			t.Fatalf("download %d", resp.StatusCode)
		}
		time.Sleep(5 * time.Millisecond) // the gateway's own work on the event
	}
	if e.api.hub.TimedOut.Load() != 0 {
		t.Fatal("the gateway was dropped for silence")
	}
	t.Logf("%d events converged in %s", n, time.Since(start))
}
