package server

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"platform-api/api"
	"platform-api/store"
	"platform-api/store/pgtest"
	"platform-api/store/storetest"
)

// newProxiedEnv is the server on a PostgreSQL database reached through a
// proxy that can cut it (PostgreSQL pass only).
func newProxiedEnv(t *testing.T) (*testEnv, *pgtest.Proxy) {
	t.Helper()
	if !pgtest.Postgres() {
		t.Skip("PostgreSQL: runs in the PostgreSQL pass of the suite")
	}
	var proxy *pgtest.Proxy
	e := newEnvStore(t, func(c *store.Config) {
		proxy, c.DSN = pgtest.NewProxy(t, c.DSN)
	}, fastHub)
	return e, proxy
}

// TestPostgresLostWhileServing loses the database under a serving server
// (every connection cut, new ones refused) and brings it back: meanwhile
// /ready and the REST calls that need the database answer 503 with the
// JSON error body, at once, while gateway connections stay up; afterwards
// the server serves again without a restart, and a deployment made after
// reaches the gateway.
func TestPostgresLostWhileServing(t *testing.T) {
	e, proxy := newProxiedEnv(t)
	f := newFleet(t, e, 1)
	c, _ := mustDial(t, e.srv.URL, f.keys[0])
	f.deploy(t, "", 0)
	c.next(2 * time.Second)

	proxy.Cut()
	start := time.Now()
	code, data := e.do("GET", "/ready", "", nil)
	wantError(t, code, data, 503, "database")
	for _, r := range []struct{ method, path string }{
		{"GET", "/api/v1/projects"}, {"POST", "/api/v1/projects"}, {"GET", "/api/v1/apis/" + f.api},
		{"POST", "/api/v1/apis/" + f.api + "/deploy-revision"},
	} {
		var body any
		if r.method == "POST" {
			body = map[string]string{"name": "p"}
			if strings.HasSuffix(r.path, "deploy-revision") {
				body = []map[string]string{{"gatewayId": f.gws[0].ID}}
			}
		}
		code, data := e.do(r.method, r.path, f.tok, body)
		wantError(t, code, data, 503, "the database is unavailable")
	}
	if time.Since(start) > 15*time.Second {
		t.Fatalf("refusals took %s", time.Since(start))
	}
	c.waitPing(2 * time.Second) // the gateway's connection is still up
	c.waitPing(2 * time.Second)

	proxy.Restore()
	e.must(200, "GET", "/api/v1/projects", f.tok, nil, nil)
	e.must(200, "GET", "/ready", "", nil, nil)
	out := f.deploy(t, "", 0)
	for {
		ev := c.next(15 * time.Second) // live, or from the resynchronization once the listener is back
		if p := ev["payload"].(map[string]any); ev["type"] == "api.deployed" && p["revisionId"] == out[0].RevisionID {
			break
		}
	}
}

// TestPostgresListenerTerminated terminates the server's listening
// connection from the database side (pg_terminate_backend): the server
// reconnects and resynchronizes, so a deployment whose notification it
// missed still reaches the gateway.
func TestPostgresListenerTerminated(t *testing.T) {
	if !pgtest.Postgres() {
		t.Skip("PostgreSQL: runs in the PostgreSQL pass of the suite")
	}
	app := fmt.Sprintf("platform-api-test-%d", time.Now().UnixNano())
	e := newEnvStore(t, func(c *store.Config) {
		c.DSN += "&application_name=" + app
	}, fastHub)
	f := newFleet(t, e, 1)
	c, _ := mustDial(t, e.srv.URL, f.keys[0])
	first := f.deploy(t, "", 0)
	if ev := c.next(5 * time.Second); ev["type"] != "api.deployed" {
		t.Fatalf("before the fault: %v", ev)
	}
	pgtest.Exec(t, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1`, app+" listener")
	// Listening again, the server cannot know what it missed: it sends the
	// live gateway its state again, so the deployment comes a second time
	// (and a deployment committed while no one listened would reach it so).
	if ev := c.next(15 * time.Second); ev["type"] != "api.deployed" || ev["payload"].(map[string]any)["revisionId"] != first[0].RevisionID {
		t.Fatalf("after the listener was lost: %v, want the gateway's state again", ev)
	}
	out := f.deploy(t, "", 0)
	for {
		ev := c.next(15 * time.Second)
		if p := ev["payload"].(map[string]any); ev["type"] == "api.deployed" && p["revisionId"] == out[0].RevisionID {
			break
		}
	}
	code, _ := e.do("GET", "/ready", "", nil)
	if code != http.StatusOK {
		t.Fatalf("ready: %d", code)
	}
}

// TestAckWhileDatabaseIsLost: a batch of acknowledgements whose write failed
// for a transient database error was dropped, and gateways that had applied
// the deployment were marked FAILED DEPLOYMENT_TIMEOUT later. The batch
// waits and is written once the database is back.
func TestAckWhileDatabaseIsLost(t *testing.T) {
	e, proxy := newProxiedEnv(t)
	f := newFleet(t, e, 1)
	g := newGen2(t, e, f.keys[0], f.gws[0].ID)
	g.ignoreAcks = true
	g.connect()
	out := f.deploy(t, "", 0)
	ev := g.next(5 * time.Second)
	dep := ev["payload"].(map[string]any)["deploymentId"].(string)

	proxy.Cut()
	retries := e.api.fleet.AckRetries()
	g.ack(dep, f.api, "deploy", "success", "", time.Now().Format(time.RFC3339))
	waitFor(t, func() bool { return e.api.fleet.AckRetries() > retries })
	proxy.Restore()
	waitFor(t, func() bool { // until the pool has replaced the connections the cut closed
		code, _ := e.do("GET", "/api/v1/apis/"+f.api+"/deployments", f.tok, nil)
		return code == 200
	})
	if d := waitStatus(t, e, f.tok, f.api, f.gws[0].ID, store.StatusDeployed); d["deploymentId"] != out[0].DeploymentID {
		t.Fatalf("deployment %v", d)
	}
}

// TestRevokedWhileNotListening: a token revoked, or a gateway deleted, while
// a replica's change listener was down kept that replica's live
// connections: the replica refused the token over HTTP once its listener was
// back, but the open WebSockets stayed, still got events, and their gateways
// showed as active. The resync after the listener's return checks the
// tokens of the live connections and closes those no longer valid. The
// missed changes are made here in the database directly, as another replica
// whose notifications this one never heard.
func TestRevokedWhileNotListening(t *testing.T) {
	if !pgtest.Postgres() {
		t.Skip("PostgreSQL: runs in the PostgreSQL pass of the suite")
	}
	app := fmt.Sprintf("platform-api-test-%d", time.Now().UnixNano())
	e := newEnvStore(t, func(c *store.Config) {
		c.DSN += "&application_name=" + app
	}, nil) // default heartbeats: no connection is closed for silence here
	f := newFleet(t, e, 3)
	var conns []*wsClient
	for i := range 3 {
		c, _ := mustDial(t, e.srv.URL, f.keys[i])
		conns = append(conns, c)
	}
	db := storetest.Raw(t, e.dsn)
	if _, err := db.Exec(`UPDATE gateway_tokens SET active_slot = NULL, revoked_at = created_at WHERE id = $1`, f.keyID[0]); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`DELETE FROM gateways WHERE id = $1`, f.gws[1].ID); err != nil {
		t.Fatal(err)
	}
	pgtest.Exec(t, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1`, app+" listener")
	for i := range 2 {
		if code := conns[i].closeCode(10 * time.Second); code != 1008 {
			t.Fatalf("gateway %d's connection closed with %d, want 1008 (policy)", i, code)
		}
	}
	// The third gateway's connection stays, and hears what follows.
	out := f.deploy(t, "", 2)
	for {
		ev := conns[2].next(15 * time.Second)
		if p := ev["payload"].(map[string]any); ev["type"] == "api.deployed" && p["revisionId"] == out[0].RevisionID {
			break
		}
	}
}

// TestEveryRouteAnswers503WhenDatabaseIsLost: with the database gone, some
// calls answered 500 instead of 503 (the gateway-token check among them,
// when its connection was cut). Every route that needs the database answers
// 503 with Retry-After, so that clients and gateways retry.
func TestEveryRouteAnswers503WhenDatabaseIsLost(t *testing.T) {
	e, proxy := newProxiedEnv(t)
	f := newFleet(t, e, 1)
	f.deploy(t, "", 0)
	var fresh api.IssuedToken // never verified, so never remembered
	e.must(201, "POST", "/api/v1/gateways/"+f.gws[0].ID+"/tokens", f.tok, nil, &fresh)
	gw, a := f.gws[0].ID, f.api
	proxy.Cut()
	defer proxy.Restore()
	for _, rt := range []struct {
		method, path, key string
		body              any
	}{
		{"GET", "/api/v1/projects", "", nil},
		{"POST", "/api/v1/projects", "", map[string]string{"name": "p"}},
		{"GET", "/api/v1/organizations", "", nil},
		{"GET", "/api/v1/apis/" + a, "", nil},
		{"PUT", "/api/v1/apis/" + a, "", map[string]string{"description": "d"}},
		{"GET", "/api/v1/apis/" + a + "/deployments", "", nil},
		{"GET", "/api/v1/apis/" + a + "/gateways", "", nil},
		{"GET", "/api/v1/apis/" + a + "/revisions", "", nil},
		{"POST", "/api/v1/apis/" + a + "/deploy-revision", "", []map[string]string{{"gatewayId": gw}}},
		{"DELETE", "/api/v1/apis/" + a + "/deployments/" + gw, "", nil},
		{"GET", "/api/v1/gateways", "", nil},
		{"GET", "/api/v1/gateways/" + gw, "", nil},
		{"POST", "/api/v1/gateways/" + gw + "/tokens", "", nil},
		{"GET", "/api/v1/gateways/" + gw + "/tokens", "", nil},
		{"GET", "/api/v1/gateways/" + gw + "/live-proxy-artifacts", "", nil},
		{"GET", "/api/v1/status/gateways", "", nil},
		{"GET", "/api/internal/v1/apis", fresh.Token, nil},
		{"GET", "/api/internal/v1/apis/" + a, fresh.Token, nil},
		{"GET", "/api/internal/v1/deployments", fresh.Token, nil},
		{"GET", "/api/internal/v1/ws/gateways/connect", fresh.Token, nil},
	} {
		req, _ := http.NewRequest(rt.method, e.srv.URL+rt.path, nil)
		if rt.body != nil {
			data, _ := json.Marshal(rt.body)
			req, _ = http.NewRequest(rt.method, e.srv.URL+rt.path, bytes.NewReader(data))
			req.Header.Set("Content-Type", "application/json")
		}
		if rt.key != "" {
			req.Header.Set("api-key", rt.key)
		} else {
			req.Header.Set("Authorization", "Bearer "+f.tok)
		}
		resp, err := e.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		data, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" {
			t.Errorf("%s %s = %d (Retry-After %q) %s; want 503 with Retry-After", rt.method, rt.path, resp.StatusCode,
				resp.Header.Get("Retry-After"), data)
		}
	}
}
