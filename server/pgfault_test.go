package server

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"platform-api/store"
	"platform-api/store/pgtest"
)

// TestPostgresLostWhileServing loses the database under a serving server
// (every connection cut, new ones refused) and brings it back: meanwhile
// /ready and the REST calls that need the database answer 503 with the
// JSON error body, at once, while gateway connections stay up; afterwards
// the server serves again without a restart, and a deployment made after
// reaches the gateway.
func TestPostgresLostWhileServing(t *testing.T) {
	if !pgtest.Postgres() {
		t.Skip("PostgreSQL: runs in the PostgreSQL pass of the suite")
	}
	var proxy *pgtest.Proxy
	e := newEnvStore(t, func(c *store.Config) {
		proxy, c.DSN = pgtest.NewProxy(t, c.DSN)
	}, fastHub)
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
