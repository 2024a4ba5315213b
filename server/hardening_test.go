package server

// Regression tests for the defects found by attacking the running server
// (hardening, second pass). Each reproduces its attack, scaled down to run
// in seconds, and fails on the code before the fix.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"platform-api/api"
	"platform-api/apidef"
	"platform-api/httpx"
	"platform-api/store"
)

// allocated returns the bytes fn allocates (all goroutines; the test runs
// nothing else at the time).
func allocated(fn func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	fn()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// TestValidationIsLinear: thousands of bad items used to build the error
// text by repeated concatenation (quadratic: a 1 MiB body cost ~55 s of CPU
// and a 3.8 MB answer), and so did a long transport list. Now the work is
// linear and the answer lists a bounded number of problems.
func TestValidationIsLinear(t *testing.T) {
	project := "6a1c3e5f-7b9d-4f1e-8a2c-3d4e5f6a7b8c"
	cases := map[string]*store.API{}
	ops := &store.API{Name: "x", Context: "/x", Version: "v1", ProjectID: project}
	for range apidef.MaxOperations { // at the limit, so every item is checked
		ops.Operations = append(ops.Operations, store.Operation{})
	}
	cases["NullRequests"] = ops
	tr := &store.API{Name: "x", Context: "/x", Version: "v1", ProjectID: project}
	for range 3000 {
		tr.Transport = append(tr.Transport, "http")
	}
	cases["LongTransport"] = tr
	for name, a := range cases {
		apidef.ApplyDefaults(a)
		t.Run(name, func(t *testing.T) {
			var err error
			n := allocated(func() { err = apidef.Validate(context.Background(), a) })
			_, desc := httpx.ErrorStatus(err)
			// Before the fix: 25 MB and 180 MB allocated, answers of
			// 60 kB and 100 kB.
			if n > 4<<20 || len(desc) > 4096 {
				t.Fatalf("validation allocated %d bytes and answered %d bytes", n, len(desc))
			}
			if name == "NullRequests" && !strings.Contains(desc, "; and 980 more") {
				t.Fatalf("answer does not count the problems it leaves out: %q", desc)
			}
		})
	}
	t.Run("OverTheLimit", func(t *testing.T) {
		a := &store.API{Name: "x", Context: "/x", Version: "v1", ProjectID: project,
			Operations: make([]store.Operation, 50*apidef.MaxOperations)}
		apidef.ApplyDefaults(a)
		_, desc := httpx.ErrorStatus(apidef.Validate(context.Background(), a))
		if desc != fmt.Sprintf("operations: must hold at most %d operations, not %d", apidef.MaxOperations, 50*apidef.MaxOperations) {
			t.Fatalf("answer %q", desc)
		}
	})
	t.Run("StopsWhenTheClientHasGone", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if err := apidef.Validate(ctx, ops); err != context.Canceled {
			t.Fatalf("validation of a gone client's request: %v", err)
		}
	})
	t.Run("OverTheWire", func(t *testing.T) {
		e := newEnvWith(t, func(o *Options) { o.MaxBodyBytes = 1 << 20 })
		_, tok := e.newOrg()
		body := `{"name":"x","context":"/x","version":"v1","projectId":"` + e.defaultProject(tok) + `","operations":[` +
			strings.TrimSuffix(strings.Repeat(`{"request":null},`, 60_000), ",") + `]}`
		start := time.Now()
		code, data := e.do("POST", "/api/v1/apis", tok, body)
		wantError(t, code, data, 400, "must hold at most 1000 operations")
		if len(data) > 4096 || time.Since(start) > 10*time.Second {
			t.Fatalf("answer of %d bytes after %s", len(data), time.Since(start))
		}
	})
}

// TestJSONBodyRules: every body is read with the same strict rules, and a
// refusal names the JSON path of what to fix.
func TestJSONBodyRules(t *testing.T) {
	e := newEnv(t)
	_, tok := e.newOrg()
	project := e.defaultProject(tok)
	api := asMap(t, e.must(201, "POST", "/api/v1/apis", tok, fixture(t, "api_minimal.json", project), nil))["id"].(string)
	gw := e.newGateway(tok, "gw-rules")
	deep := strings.Repeat(`{"a":`, httpx.MaxJSONDepth) + `1` + strings.Repeat(`}`, httpx.MaxJSONDepth)
	apiBody := func(extra string) string {
		return `{"name":"rules","context":"/rules","version":"v1","projectId":"` + project + `"` + extra + `}`
	}
	policy := func(params string) string {
		return apiBody(`,"operations":[{"request":{"method":"GET","path":"/x","requestPolicies":[{"name":"p","params":` + params + `}]}}]`)
	}
	for _, tc := range []struct {
		name, method, path, body, desc string
	}{
		{"TooDeep", "POST", "/api/v1/apis", policy(deep), "nests arrays and objects deeper than 32 levels"},
		{"TooDeepInAPut", "PUT", "/api/v1/apis/" + api, `{"operations":[{"request":{"method":"GET","path":"/x","requestPolicies":[{"name":"p","params":` + deep + `}]}}]}`, "deeper than 32"},
		{"TooDeepArrays", "POST", "/api/v1/apis", policy(strings.Repeat("[", 40) + strings.Repeat("]", 40)), "deeper than 32"},
		{"InvalidUTF8", "POST", "/api/v1/apis", apiBody(`,"description":"caf` + "\xe9" + `"`), "description: holds bytes that are not valid UTF-8"},
		{"LoneSurrogate", "POST", "/api/v1/apis", apiBody(`,"description":"\ud800x"`), `description: holds a lone high surrogate \ud800`},
		{"LoneLowSurrogate", "POST", "/api/v1/projects", `{"name":"\udc00"}`, "name: holds a lone low surrogate"},
		{"TypeErrorNamesThePath", "POST", "/api/v1/apis", apiBody(`,"backend-services":[{"name":"a","endpoints":[]},{"name":"b","retries":"3"}]`), "backend-services[1].retries: must be an integer, not a string"},
		{"IntegerOutOfRange", "POST", "/api/v1/apis", apiBody(`,"revisionId":1e3`), "revisionId: must be a whole number"},
		{"WholeBodyWrongKind", "POST", "/api/v1/apis/" + api + "/deploy-revision", `{"gatewayId":"x"}`, "request body must be an array, not an object"},
		{"NullProjectUpdate", "PUT", "/api/v1/projects/" + project, `null`, "request body must be a JSON object, not null"},
		{"NullGatewayUpdate", "PUT", "/api/v1/gateways/" + gw.ID, ` null `, "request body must be a JSON object, not null"},
		{"UnknownFieldOnCreate", "POST", "/api/v1/apis", apiBody(`,"contxt":"/y"`), "contxt: unknown field"},
		{"OtherCapitalsOnCreate", "POST", "/api/v1/apis", apiBody(`,"Description":"y"`), `Description: unknown field; field names are case-sensitive: did you mean "description"?`},
		{"OtherCapitalsOnUpdate", "PUT", "/api/v1/apis/" + api, `{"Description":"y"}`, `did you mean "description"?`},
		{"NestedOtherCapitals", "PUT", "/api/v1/apis/" + api, `{"cors":{"Enabled":true}}`, `cors.Enabled: unknown field`},
		{"DuplicateField", "PUT", "/api/v1/projects/" + project, `{"name":"a","name":"b"}`, "name: appears twice"},
		{"TrailingData", "POST", "/api/v1/projects", `{"name":"a"} {}`, "exactly one JSON value"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, data := e.do(tc.method, tc.path, tok, tc.body)
			wantError(t, code, data, 400, tc.desc)
		})
	}
	// Nothing of the refused updates landed.
	got := asMap(t, e.must(200, "GET", "/api/v1/apis/"+api, tok, nil, nil))
	if got["description"] == "y" {
		t.Fatal("a miscapitalised key changed the API")
	}
}

// TestNoHTMLEscaping: '<', '>' and '&' were stored and answered as six-byte
// \u003c escapes, so a body of them was stored at six times its size.
func TestNoHTMLEscaping(t *testing.T) {
	e := newEnvWith(t, func(o *Options) { o.MaxBodyBytes = 1 << 20 })
	_, tok := e.newOrg()
	body := fixture(t, "api_minimal.json", e.defaultProject(tok))
	text := strings.Repeat("<&>", 1500)
	body["description"] = text[:4000]
	data := e.must(201, "POST", "/api/v1/apis", tok, body, nil)
	if !bytes.Contains(data, []byte(text[:4000])) {
		t.Fatalf("answer escapes HTML characters: %.200s", data)
	}
	id := asMap(t, data)["id"].(string)
	rows, err := e.dbRead("SELECT length(description) FROM apis WHERE id = '" + id + "'")
	if err != nil || len(rows) != 1 {
		t.Fatal(rows, err)
	}
	if n, _ := strconv.Atoi(string(rows[0])); n != 4000 {
		t.Fatalf("stored %d bytes for a 4000-byte description", n)
	}
	rev := e.must(200, "GET", "/api/v1/apis/"+id, tok, nil, nil)
	if !bytes.Contains(rev, []byte(text[:4000])) {
		t.Fatalf("GET escapes HTML characters: %.200s", rev)
	}
}

// TestMetricsProxyHeaders: any proxy header meant the request was relayed,
// so it was not a loopback client even when its peer was 127.0.0.1. The
// public port now serves metrics to no client without the token, relayed
// or not; a relay without proxy headers is TestOperationalEndpointsBehindARelay.
func TestMetricsProxyHeaders(t *testing.T) {
	e := newEnv(t)
	for _, h := range []string{"X-Real-IP", "X-Forwarded-For", "Forwarded", "X-Client-IP", "True-Client-IP"} {
		req, _ := http.NewRequest("GET", e.srv.URL+"/metrics", nil)
		req.Header.Set(h, "127.0.0.1")
		resp, err := e.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		wantError(t, resp.StatusCode, body, 403, "PLATFORM_OPS_ADDR")
	}
}

// TestMalformedHandshakes: a missing key or a wrong version got the
// library's plain-text 400; every refusal has the JSON error body.
func TestMalformedHandshakes(t *testing.T) {
	e := newEnvWith(t, fastHub)
	f := newFleet(t, e, 1)
	u, _ := url.Parse(e.srv.URL)
	for name, headers := range map[string]string{
		"NoKey":     "Sec-WebSocket-Version: 13\r\n",
		"Version8":  "Sec-WebSocket-Version: 8\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
		"ShortKey":  "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: c2hvcnQ=\r\n",
		"NoVersion": "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
	} {
		t.Run(name, func(t *testing.T) {
			conn, err := tls.Dial("tcp", u.Host, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			io.WriteString(conn, "GET /api/internal/v1/ws/gateways/connect HTTP/1.1\r\nHost: "+u.Host+
				"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\napi-key: "+f.keys[0]+"\r\n"+headers+"\r\n")
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			wantError(t, resp.StatusCode, body, 400, "Sec-WebSocket-")
		})
	}
}

// TestGarbageFrameGetsOneClose: an unmasked frame made the library send a
// close frame (1002) and the hub a second one.
func TestGarbageFrameGetsOneClose(t *testing.T) {
	e := newEnvWith(t, fastHub)
	f := newFleet(t, e, 1)
	c, _ := mustDial(t, e.srv.URL, f.keys[0])
	c.conn.Write([]byte{0x81, 0x03, 'a', 'b', 'c'}) // a text frame without a mask
	closes := 0
	for {
		op, _, err := c.readFrame(2 * time.Second)
		if err != nil {
			break
		}
		if op == opClose {
			closes++
		}
	}
	if closes != 1 {
		t.Fatalf("%d close frames, want 1", closes)
	}
}

// TestDocumentAmplification: policy params nested 10,000 levels deep made
// the YAML document ~1,600 times the size of the body, and ten gateways
// downloading a new revision rendered it ten times; the all-APIs download
// rendered every document on every call. Now nesting is capped, the
// document stays within a constant factor of the body, and each revision
// is rendered once.
func TestDocumentAmplification(t *testing.T) {
	e := newEnvWith(t, func(o *Options) { fastHub(o); o.MaxBodyBytes = 1 << 20 })
	f := newFleet(t, e, 10)
	project := e.defaultProject(f.tok)
	withParams := func(params string) string {
		return `{"name":"amp","context":"/amp","version":"v1","projectId":"` + project + `",` +
			`"backend-services":[{"name":"b","endpoints":[{"url":"https://b.internal"}]}],` +
			`"operations":[{"request":{"method":"GET","path":"/x","requestPolicies":[{"name":"p","params":` + params + `}]}}]}`
	}
	t.Run("DeepNestingRefused", func(t *testing.T) {
		deep := strings.Repeat(`{"a":`, 10_000) + "1" + strings.Repeat("}", 10_000)
		code, data := e.do("POST", "/api/v1/apis", f.tok, withParams(deep))
		wantError(t, code, data, 400, "deeper than 32 levels")
	})
	// As deep as allowed, and wide at the bottom: the worst case for YAML
	// indentation.
	depth := httpx.MaxJSONDepth - 6 // the API body itself takes six levels
	wide := `{"":1`
	for i := range 2000 {
		wide += fmt.Sprintf(`,"k%d":1`, i)
	}
	wide += `}`
	params := strings.Repeat(`{"a":`, depth-1) + wide + strings.Repeat("}", depth-1)
	body := withParams(params)
	api := asMap(t, e.must(201, "POST", "/api/v1/apis", f.tok, body, nil))["id"].(string)
	var items []map[string]string
	for _, g := range f.gws {
		items = append(items, map[string]string{"gatewayId": g.ID})
	}
	e.must(200, "POST", "/api/v1/apis/"+api+"/deploy-revision", f.tok, items, nil)
	renders := e.api.docs.Renders()

	var wg sync.WaitGroup
	sizes := make([]int, len(f.keys))
	for i, key := range f.keys {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, files := download(t, e, key, "/api/internal/v1/apis/"+api)
			sizes[i] = len(files["api-"+api+".yaml"])
		}()
	}
	wg.Wait()
	for range 3 {
		download(t, e, f.keys[0], "/api/internal/v1/apis")
	}
	if n := e.api.docs.Renders() - renders; n != 0 {
		t.Fatalf("%d more renders for downloads of a deployed revision", n)
	}
	// 16: the bound FuzzAPIBody (package api) holds every document to.
	if sizes[0] == 0 || sizes[0] > 16*len(body) {
		t.Fatalf("a %d-byte body rendered to %d bytes", len(body), sizes[0])
	}
}

// TestEventsInCommitOrder: deploy, undeploy and delete published their
// events after the commit without ordering, so a request that committed
// second could reach the gateway first (in ~1 of 300 races the gateway's
// last event said api.deployed for an API that was undeployed). The window
// is widened here: the first change waits after its commit, and a second
// request about the same API runs meanwhile. Its event must still come
// second.
func TestEventsInCommitOrder(t *testing.T) {
	e := newEnvWith(t, fastHub)
	f := newFleet(t, e, 1)
	c, _ := mustDial(t, e.srv.URL, f.keys[0])
	waitReady(t, e, f.gws[0].ID) // its initial state is written before the hook is set
	f.deploy(t, "", 0)
	if ev := c.next(2 * time.Second); ev["type"] != "api.deployed" {
		t.Fatalf("first event %v", ev)
	}

	committed := make(chan struct{})
	var first atomic.Bool
	e.db.AfterCommit = func() {
		if first.CompareAndSwap(false, true) {
			close(committed)
			time.Sleep(200 * time.Millisecond) // the window a racing request had
		}
	}
	deployed := make(chan struct{})
	go func() {
		defer close(deployed)
		f.deploy(t, "", 0)
	}()
	<-committed
	e.must(204, "DELETE", "/api/v1/apis/"+f.api+"/deployments/"+f.gws[0].ID, f.tok, nil, nil)
	<-deployed

	if ev := c.next(2 * time.Second); ev["type"] != "api.deployed" {
		t.Fatalf("second event %v, want the deployment that committed first", ev)
	}
	if ev := c.next(2 * time.Second); ev["type"] != "api.undeployed" {
		t.Fatalf("last event %v, want the undeployment that committed last", ev)
	}
	var deps httpx.List[store.Deployment]
	e.must(200, "GET", "/api/v1/apis/"+f.api+"/deployments", f.tok, nil, &deps)
	if deps.Count != 1 || deps.List[0].Status != store.StatusUndeployed {
		t.Fatalf("stored deployments %+v", deps.List)
	}
}

// TestRacingRequestsConverge races deploys, undeploys and API deletions
// about one API, many times, and checks the gateway's last event matches
// what is stored.
func TestRacingRequestsConverge(t *testing.T) {
	e := newEnvWith(t, fastHub)
	f := newFleet(t, e, 1)
	c, _ := mustDial(t, e.srv.URL, f.keys[0])
	body := fixture(t, "api_maximal.json", e.defaultProject(f.tok))
	for round := range 30 {
		api := f.api
		f.deploy(t, "", 0)
		var wg sync.WaitGroup
		for i := range 3 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				switch (round + i) % 3 {
				case 0:
					e.do("POST", "/api/v1/apis/"+api+"/deploy-revision", f.tok, []map[string]string{{"gatewayId": f.gws[0].ID}})
				case 1:
					e.do("DELETE", "/api/v1/apis/"+api+"/deployments/"+f.gws[0].ID, f.tok, nil)
				case 2:
					if round%2 == 0 {
						e.do("DELETE", "/api/v1/apis/"+api, f.tok, nil)
					}
				}
			}()
		}
		wg.Wait()
		// A marker deployment of another API ends the round: every event
		// before it is this round's.
		marker := asMap(t, e.must(201, "POST", "/api/v1/apis", f.tok, withName(body, fmt.Sprint("marker-", round)), nil))["id"].(string)
		e.must(200, "POST", "/api/v1/apis/"+marker+"/deploy-revision", f.tok, []map[string]string{{"gatewayId": f.gws[0].ID}}, nil)
		var last map[string]any
		for {
			ev := c.next(2 * time.Second)
			if ev["payload"].(map[string]any)["apiId"] == marker {
				break
			}
			last = ev
		}
		code, data := e.do("GET", "/api/v1/apis/"+api+"/deployments", f.tok, nil)
		deployed := code == 200 && strings.Contains(string(data), f.gws[0].ID) && !strings.Contains(string(data), `"UNDEPLOY`)
		if last != nil && (last["type"] == "api.deployed") != deployed {
			t.Fatalf("round %d: last event %v, but deployed is %v (%d %s)", round, last["type"], deployed, code, data)
		}
		e.must(204, "DELETE", "/api/v1/apis/"+marker, f.tok, nil, nil)
		for ev := c.next(2 * time.Second); ev["payload"].(map[string]any)["apiId"] != marker; ev = c.next(2 * time.Second) {
		}
		if code == 404 { // the API was deleted: make a new one for the next round
			f.api = asMap(t, e.must(201, "POST", "/api/v1/apis", f.tok, withName(body, fmt.Sprint("api-", round)), nil))["id"].(string)
		}
	}
}

// withName is an API body under another name and context.
func withName(body map[string]any, name string) map[string]any {
	b := make(map[string]any, len(body))
	for k, v := range body {
		b[k] = v
	}
	b["name"], b["context"] = name, "/"+name
	return b
}

// TestOrganizationConnectionCap: one organization filled every connection
// slot of the server, and another organization's gateway was refused.
func TestOrganizationConnectionCap(t *testing.T) {
	e := newEnvWith(t, func(o *Options) { fastHub(o); o.Hub.MaxConnections = 4; o.Hub.MaxPerOrg = 2 })
	greedy := newFleet(t, e, 3)
	mustDial(t, e.srv.URL, greedy.keys[0])
	mustDial(t, e.srv.URL, greedy.keys[1])
	c, _ := dialWS(t, e.srv.URL, greedy.keys[2])
	if m := c.next(time.Second); m["type"] != "error" || !strings.Contains(m["message"].(string), "organization") {
		t.Fatalf("third connection of one organization: %v", m)
	}
	other := newFleet(t, e, 1)
	mustDial(t, e.srv.URL, other.keys[0]) // still has room
}

// waitPing reads until the server pings (answering it), so that the
// connection has been active after its handshake.
func (c *wsClient) waitPing(timeout time.Duration) {
	c.t.Helper()
	if c.frames != nil { // the reader goroutine answers: wait for its next answer
		select {
		case <-c.pinged: // an earlier one
		default:
		}
		select {
		case <-c.pinged:
		case <-c.ended:
			c.t.Fatalf("no ping: %v", c.endErr)
		case <-time.After(timeout):
			c.t.Fatal("no ping: read timeout")
		}
		return
	}
	deadline := time.Now().Add(timeout)
	for {
		op, payload, err := c.readFrame(time.Until(deadline))
		if err != nil {
			c.t.Fatalf("no ping: %v", err)
		}
		if op == opPing {
			c.writeFrame(opPong, payload)
			return
		}
	}
}

// TestLastSeenSurvivesDisconnect: after a disconnect, lastSeenAt fell back
// to the last token check (the connect time), going backwards.
func TestLastSeenSurvivesDisconnect(t *testing.T) {
	e := newEnvWith(t, fastHub)
	f := newFleet(t, e, 1)
	c, _ := mustDial(t, e.srv.URL, f.keys[0])
	c.waitPing(2 * time.Second)
	c.waitPing(2 * time.Second)
	status := func() api.GatewayStatus {
		var st httpx.List[api.GatewayStatus]
		e.must(200, "GET", "/api/v1/status/gateways?gatewayId="+f.gws[0].ID, f.tok, nil, &st)
		return st.List[0]
	}
	live := status()
	if !live.IsActive || live.LastSeenAt == nil {
		t.Fatalf("live status %+v", live)
	}
	c.conn.Close()
	waitDisconnected(t, e, f.gws[0].ID)
	after := status()
	// The live time and the stored one are both converted to the
	// database's clock (store.ClockAt); a new reading of that clock in
	// between (a lease renewal) may move them apart by the readings'
	// errors, half a round trip to the database each (a millisecond and
	// more on a loaded machine). The fall-back this test is about goes
	// back to the connect time, two pings (400 ms) earlier.
	const readingError = 100 * time.Millisecond
	if after.LastSeenAt == nil || after.LastSeenAt.Before(live.LastSeenAt.Add(-readingError)) {
		t.Fatalf("lastSeenAt went from %v to %v", live.LastSeenAt, after.LastSeenAt)
	}
}

// TestGatewayReportCannotClaimAnAPI: a gateway token could make the server
// deploy to it, and serve it, an API no user deployed there (mTLS key
// included) by reporting its id; and another organization's id was
// answered differently from an API of its own organization.
func TestGatewayReportCannotClaimAnAPI(t *testing.T) {
	e := newEnvWith(t, fastHub)
	f := newFleet(t, e, 1) // f.api holds an endpoint mTLS key, deployed nowhere
	other := newFleet(t, e, 1)
	report := func(apiID string) map[string]any {
		return map[string]any{"id": apiID, "projectIdentifier": "default",
			"configuration": map[string]any{"kind": "http/rest", "data": map[string]any{
				"name": "claimed", "version": "v1", "context": "/claimed-" + apiID[:8],
				"upstream":   []any{map[string]any{"url": "https://a.internal"}},
				"operations": []any{map[string]any{"method": "GET", "path": "/x"}}}}}
	}
	post := func(key, apiID string) (int, []byte) {
		data, _ := json.Marshal(report(apiID))
		req, _ := http.NewRequest("POST", e.srv.URL+"/api/internal/v1/apis/"+apiID+"/gateway-deployments", bytes.NewReader(data))
		req.Header.Set("api-key", key)
		resp, err := e.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, body
	}
	ownCode, ownBody := post(f.keys[0], f.api)
	wantError(t, ownCode, ownBody, 409, "already in use")
	if resp, _ := download(t, e, f.keys[0], "/api/internal/v1/apis/"+f.api); resp.StatusCode != 404 {
		t.Fatalf("the gateway can download an API no user deployed to it: %d", resp.StatusCode)
	}
	foreignCode, foreignBody := post(f.keys[0], other.api)
	if foreignCode != ownCode || !bytes.Equal(normalizeIDs(foreignBody), normalizeIDs(ownBody)) {
		t.Fatalf("own organization's API: %d %s\nanother's: %d %s", ownCode, ownBody, foreignCode, foreignBody)
	}
	code, body := post(f.keys[0], strings.ToUpper("7d1f5c3e-2b4a-4c6d-8e9f-0a1b2c3d4e5f"))
	wantError(t, code, body, 400, "canonical lower-case")
}

// TestIDsOnlyInCanonicalForm: an id in another spelling named the same
// resource (or, from a gateway, made a second one).
func TestIDsOnlyInCanonicalForm(t *testing.T) {
	e := newEnvWith(t, fastHub)
	f := newFleet(t, e, 1)
	upper := strings.ToUpper(f.api)
	code, data := e.do("GET", "/api/v1/apis/"+upper, f.tok, nil)
	wantError(t, code, data, 404, "canonical lower-case")
	code, data = e.do("GET", "/api/v1/gateways/"+strings.ToUpper(f.gws[0].ID), f.tok, nil)
	wantError(t, code, data, 404, "canonical lower-case")
	code, data = e.do("GET", "/api/v1/status/gateways?gatewayId="+strings.ToUpper(f.gws[0].ID), f.tok, nil)
	wantError(t, code, data, 400, "gatewayId: must be a UUID in canonical lower-case form")
	code, data = e.do("POST", "/api/v1/apis/"+f.api+"/deploy-revision", f.tok, []map[string]string{{"gatewayId": strings.ToUpper(f.gws[0].ID)}})
	wantError(t, code, data, 400, "[0].gatewayId")
	body := fixture(t, "api_minimal.json", strings.ToUpper(e.defaultProject(f.tok)))
	code, data = e.do("POST", "/api/v1/apis", f.tok, body)
	wantError(t, code, data, 400, "projectId")
}

// waitDisconnected waits until the gateway has no live connection.
func waitDisconnected(t *testing.T, e *testEnv, gatewayID string) {
	t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		changed := e.api.hub.Changed()
		if n, _ := e.api.hub.Presence(gatewayID); n == 0 {
			return
		}
		select {
		case <-changed:
		case <-timeout:
			t.Fatal("the gateway is still connected")
		}
	}
}

// TestSecretsNeverAnswered: endpoint credentials were stored and returned
// in clear. The public API answers a mask; sending the mask back keeps the
// stored key; only the download of a revision deployed to the gateway holds
// the key.
func TestSecretsNeverAnswered(t *testing.T) {
	e := newEnvWith(t, fastHub)
	f := newFleet(t, e, 2) // f.api is api_maximal.json, with mTLS keys
	path := "/api/v1/apis/" + f.api
	for _, p := range []string{path, "/api/v1/apis"} {
		if data := e.must(200, "GET", p, f.tok, nil, nil); bytes.Contains(data, []byte("MIIE")) || !bytes.Contains(data, []byte(api.SecretMask)) {
			t.Fatalf("GET %s answers the key: %s", p, data)
		}
	}
	// The mask sent back keeps the key, even with the endpoints reordered.
	a := asMap(t, e.must(200, "GET", path, f.tok, nil, nil))
	bs := a["backend-services"].([]any)
	eps := bs[0].(map[string]any)["endpoints"].([]any)
	eps[0], eps[1] = eps[1], eps[0]
	e.must(200, "PUT", path, f.tok, map[string]any{"mtls": a["mtls"], "backend-services": bs}, nil)
	f.deploy(t, "", 0)
	_, files := download(t, e, f.keys[0], "/api/internal/v1/apis/"+f.api)
	doc := string(files["api-"+f.api+".yaml"])
	if !strings.Contains(doc, "clientKey: key") || strings.Contains(doc, api.SecretMask) {
		t.Fatalf("the gateway's download lacks the kept endpoint key:\n%s", doc)
	}
	// The API-level key (not part of the first generation's document) was
	// kept too.
	if a := mustStoredRevision(t, e, f, 0); a.MTLS.ClientKey != "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n" {
		t.Fatalf("API-level key after a PUT of the mask: %q", a.MTLS.ClientKey)
	}
	// A gateway the API is not deployed to gets nothing.
	if resp, _ := download(t, e, f.keys[1], "/api/internal/v1/apis/"+f.api); resp.StatusCode != 404 {
		t.Fatalf("another gateway downloads the API: %d", resp.StatusCode)
	}
	// The mask with nothing stored, and the sealed form, are refused.
	body := fixture(t, "api_minimal.json", e.defaultProject(f.tok))
	body["mtls"] = map[string]any{"enabled": true, "clientKey": api.SecretMask}
	code, data := e.do("POST", "/api/v1/apis", f.tok, body)
	wantError(t, code, data, 400, "mtls.clientKey: ******** stands for a stored key")
	body["mtls"] = map[string]any{"enabled": true, "clientKey": "enc:v1:00000000:AAAA"}
	code, data = e.do("POST", "/api/v1/apis", f.tok, body)
	wantError(t, code, data, 400, "mtls.clientKey: must be PEM text")
	code, data = e.do("PUT", path, f.tok, map[string]any{"backend-services": []any{map[string]any{"name": "new", "endpoints": []any{
		map[string]any{"url": "https://new.internal", "mtls": map[string]any{"clientKey": api.SecretMask}}}}}})
	wantError(t, code, data, 400, "backend-services[0].endpoints[0].mtls.clientKey: ******** stands for a stored key, but none is stored here")
	if rows, _ := e.dbRead("SELECT settings FROM apis WHERE id = '" + f.api + "'"); bytes.Contains(rows[0], []byte("MIIE")) {
		t.Fatal("the key is stored in clear")
	}
}
