package server

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// keyGateway is a second-generation gateway that keeps the consumer state
// it is sent and pulls, with the 2026 gateway's rules: a key for an API it
// does not hold is dropped (and here reported), an eleventh active key of
// one userId on an API is refused (reported), application.updated replaces
// the application's whole key set and needs its four identifying fields.
type keyGateway struct {
	*gen2Gateway
	mu      sync.Mutex
	keys    map[string]heldKey  // apiId/name -> key
	apps    map[string][]string // applicationUuid -> key uuids
	appName map[string]string   // applicationUuid -> applicationId
	seen    []string            // consumer event types, in order
	userIDs map[string]bool     // of apikey.created
	appsAt  int                 // index in seen of the last application.updated
	created []string            // names of apikey.created, in order
	// pullVia, when set, is the replica the gateway pulls from (its
	// channel is on e's).
	pullVia *testEnv
}

type heldKey struct{ uuid, hash, userID string }

func newKeyGateway(t *testing.T, e *testEnv, key, gatewayID string) *keyGateway {
	return &keyGateway{gen2Gateway: newGen2(t, e, key, gatewayID), keys: map[string]heldKey{}, apps: map[string][]string{},
		appName: map[string]string{}, userIDs: map[string]bool{}}
}

// run connects, pulls the keys as the gateway does on connect, and handles
// events until the connection ends.
func (g *keyGateway) run() {
	g.connect()
	g.mu.Lock()
	c := g.c
	g.mu.Unlock()
	go func() {
		for {
			ev, err := c.tryNext(30 * time.Second)
			if err != nil {
				return
			}
			g.handle(ev)
			g.apply(ev)
		}
	}()
	g.pull()
}

// pull replaces the keys held with GET /apis/api-keys.
func (g *keyGateway) pull() {
	g.t.Helper()
	via := g.gen2Gateway
	if g.pullVia != nil {
		via = newGen2(g.t, g.pullVia, g.key, g.id)
	}
	code, body := via.call("GET", "/api/internal/v1/apis/api-keys", "")
	if code != 200 {
		g.t.Fatalf("pull: %d %s", code, body)
	}
	var list []struct {
		UUID, Name, ArtifactUUID, Status, MaskedAPIKey, Source, CreatedBy string
		APIKeyHashes                                                      map[string]string
	}
	if err := json.Unmarshal(body, &list); err != nil {
		g.t.Fatalf("pull answered %s: %v", body, err)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.keys = map[string]heldKey{}
	for _, k := range list {
		if k.Status != "active" || k.Source != "external" || k.UUID == "" || len(k.APIKeyHashes["sha256"]) != 64 {
			g.t.Errorf("pulled key %+v", k)
		}
		g.keys[k.ArtifactUUID+"/"+k.Name] = heldKey{uuid: k.UUID, hash: k.APIKeyHashes["sha256"]}
	}
}

func (g *keyGateway) apply(ev map[string]any) {
	typ, _ := ev["type"].(string)
	p, _ := ev["payload"].(map[string]any)
	str := func(k string) string { s, _ := p[k].(string); return s }
	hash := func() string {
		var h map[string]string
		s, ok := p["apiKeyHashes"].(string)
		if !ok || json.Unmarshal([]byte(s), &h) != nil {
			g.t.Errorf("%s: apiKeyHashes is not a JSON-encoded string: %v", typ, p["apiKeyHashes"])
		}
		return h["sha256"]
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	api := str("apiId")
	if strings.HasPrefix(typ, "apikey.") {
		g.gen2Gateway.mu.Lock()
		_, held := g.held[api]
		g.gen2Gateway.mu.Unlock()
		if !held {
			g.t.Errorf("%s for API %s before its api.deployed", typ, api)
			return
		}
	}
	switch typ {
	case "apikey.created":
		user, _ := ev["userId"].(string)
		n := 0
		for _, k := range g.keys {
			if k.userID == user {
				n++
			}
		}
		if n >= 10 || user == "" {
			g.t.Errorf("apikey.created refused: userId %q already has %d keys", user, n)
			return
		}
		g.userIDs[user] = true
		g.created = append(g.created, str("name"))
		g.keys[api+"/"+str("name")] = heldKey{uuid: str("uuid"), hash: hash(), userID: user}
	case "apikey.updated":
		k := g.keys[api+"/"+str("keyName")]
		k.hash = hash()
		g.keys[api+"/"+str("keyName")] = k
	case "apikey.revoked":
		delete(g.keys, api+"/"+str("keyName"))
	case "application.updated":
		for _, f := range []string{"applicationId", "applicationUuid", "applicationName", "applicationType"} {
			if str(f) == "" {
				g.t.Errorf("application.updated without %s: %v", f, p)
			}
		}
		var ids []string
		for _, m := range p["mappings"].([]any) {
			ids = append(ids, m.(map[string]any)["apiKeyUuid"].(string))
		}
		g.apps[str("applicationUuid")] = ids
		g.appName[str("applicationUuid")] = str("applicationId")
		g.appsAt = len(g.seen)
	default:
		return
	}
	g.seen = append(g.seen, typ)
}

// hashes is what the gateway holds: apiId/name -> hash.
func (g *keyGateway) hashes() map[string]string {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := map[string]string{}
	for k, v := range g.keys {
		out[k] = v.hash
	}
	return out
}

func (g *keyGateway) mapping(appID string) []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.apps[appID]
}

// waitKeys waits until the gateway holds exactly want.
func (g *keyGateway) waitKeys(t *testing.T, want map[string]string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !maps.Equal(g.hashes(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("gateway holds %v, want %v", g.hashes(), want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func sha(v string) string {
	s := sha256.Sum256([]byte(strings.TrimSpace(v)))
	return hex.EncodeToString(s[:])
}

type createdKey struct {
	ID, Name, APIKey, MaskedAPIKey, Status string
	ApplicationID                          *string
}

func (f *testFleet) createKey(t *testing.T, body any) createdKey {
	t.Helper()
	var k createdKey
	f.e.must(201, "POST", "/api/v1/apis/"+f.api+"/api-keys", f.tok, body, &k)
	return k
}

// TestAPIKeysReachGateways: keys made before a deploy arrive right after
// its api.deployed, with their application's mapping; later ones, eleven
// from one creator included, arrive live; a regenerated key's old value
// and a revoked key are gone from the live gateway; a gateway that was
// away while keys changed pulls the current truth on reconnect and is sent
// its application's mapping again after the pull.
func TestAPIKeysReachGateways(t *testing.T) {
	e := newEnvWith(t, fastHub)
	f := newFleet(t, e, 2)
	var app struct{ ID string }
	f.e.must(201, "POST", "/api/v1/applications", f.tok, map[string]any{"name": "shop-web"}, &app)
	supplied := "portal-issued-" + strings.Repeat("x", 30)
	k1 := f.createKey(t, map[string]any{"name": "first", "applicationId": app.ID})
	k2 := f.createKey(t, map[string]any{"displayName": "Second Key", "apiKey": supplied})
	if k2.Name != "second-key" || k2.APIKey != supplied || k2.MaskedAPIKey != "********"+supplied[len(supplied)-4:] ||
		!strings.HasPrefix(k1.APIKey, "pak_") || len(k1.APIKey) < 43 || k1.Status != "active" {
		t.Fatalf("created %+v and %+v", k1, k2)
	}
	var got map[string]any
	f.e.must(200, "GET", "/api/v1/apis/"+f.api+"/api-keys/first", f.tok, nil, &got)
	if _, ok := got["apiKey"]; ok || got["applicationId"] != app.ID || got["maskedApiKey"] != k1.MaskedAPIKey {
		t.Fatalf("GET shows %v", got)
	}

	g := newKeyGateway(t, e, f.keys[0], f.gws[0].ID)
	g.run()
	if len(g.hashes()) != 0 {
		t.Fatalf("a gateway running nothing pulled %v", g.hashes())
	}
	f.deploy(t, "", 0)
	want := map[string]string{f.api + "/first": sha(k1.APIKey), f.api + "/second-key": sha(supplied)}
	g.waitKeys(t, want)
	waitFor(t, func() bool { return len(g.mapping(app.ID)) == 1 })
	if m := g.mapping(app.ID); m[0] != k1.ID {
		t.Fatalf("application maps %v, want [%s]", m, k1.ID)
	}

	// One creator's eleven keys: each has its own userId.
	for i := range 11 {
		k := f.createKey(t, map[string]any{"name": fmt.Sprintf("bulk-%02d", i)})
		want[f.api+"/"+k.Name] = sha(k.APIKey)
	}
	g.waitKeys(t, want)
	g.mu.Lock()
	users := len(g.userIDs)
	g.mu.Unlock()
	if users != 13 {
		t.Fatalf("%d distinct userIds for 13 keys", users)
	}

	var regen createdKey
	f.e.must(200, "POST", "/api/v1/apis/"+f.api+"/api-keys/first/regenerate", f.tok, nil, &regen)
	if regen.APIKey == k1.APIKey || regen.ID != k1.ID {
		t.Fatalf("regenerated %+v", regen)
	}
	f.e.must(204, "DELETE", "/api/v1/apis/"+f.api+"/api-keys/second-key", f.tok, nil, nil)
	want[f.api+"/first"] = sha(regen.APIKey)
	delete(want, f.api+"/second-key")
	g.waitKeys(t, want)

	// Away while keys change; back, it holds exactly the current set.
	g.c.conn.Close()
	waitFor(t, func() bool {
		var st struct{ List []struct{ Connections int } }
		e.must(200, "GET", "/api/v1/status/gateways?gatewayId="+f.gws[0].ID, f.tok, nil, &st)
		return st.List[0].Connections == 0
	})
	f.e.must(204, "DELETE", "/api/v1/apis/"+f.api+"/api-keys/bulk-00", f.tok, nil, nil)
	f.e.must(200, "POST", "/api/v1/apis/"+f.api+"/api-keys/first/regenerate", f.tok, nil, &regen)
	k3 := f.createKey(t, map[string]any{"name": "while-away", "applicationId": app.ID})
	delete(want, f.api+"/bulk-00")
	want[f.api+"/first"] = sha(regen.APIKey)
	want[f.api+"/while-away"] = sha(k3.APIKey)
	if maps.Equal(g.hashes(), want) {
		t.Fatal("the gateway heard changes while away")
	}
	g.run()
	g.waitKeys(t, want)
	waitFor(t, func() bool { return len(g.mapping(app.ID)) == 2 })

	// The other gateway of the organization runs nothing: it pulls nothing.
	other := newKeyGateway(t, e, f.keys[1], f.gws[1].ID)
	other.run()
	if h := other.hashes(); len(h) != 0 {
		t.Fatalf("a gateway the API is not deployed to pulled %v", h)
	}
}

// TestAPIKeyInput: bad input is a 400 naming the field, a name or value in
// use a 409, and nothing of a refused request is stored; another
// organization's keys and applications are 404, gateway-facing routes
// included.
func TestAPIKeyInput(t *testing.T) {
	e := newEnvWith(t, fastHub)
	f := newFleet(t, e, 1)
	base := "/api/v1/apis/" + f.api + "/api-keys"
	past := time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)
	for _, c := range []struct {
		body any
		want string
	}{
		{map[string]any{"name": "A"}, "name:"},
		{map[string]any{"name": "ab"}, "name:"},
		{map[string]any{"name": "a--b"}, "name:"},
		{map[string]any{"apiKey": "short"}, "apiKey: must be 32"},
		{map[string]any{"apiKey": strings.Repeat("a", 20) + " " + strings.Repeat("b", 20)}, "apiKey: must be printable"},
		{map[string]any{"expiresAt": past}, "expiresAt: must be in the future"},
		{map[string]any{"expiresAt": "tomorrow"}, "expiresAt: must be an RFC 3339"},
		{map[string]any{"applicationId": "x"}, "applicationId:"},
		{map[string]any{"applicationId": "00000000-0000-4000-8000-000000000000"}, "applicationId: application"},
		{map[string]any{"name": "ok-name", "color": "red"}, "color"},
		{map[string]any{"displayName": "!!"}, "name: none can be derived"},
	} {
		code, body := e.do("POST", base, f.tok, c.body)
		wantError(t, code, body, 400, c.want)
	}
	value := strings.Repeat("v", 40)
	f.createKey(t, map[string]any{"name": "taken", "apiKey": value})
	code, body := e.do("POST", base, f.tok, map[string]any{"name": "taken"})
	wantError(t, code, body, 409, `named "taken" already exists`)
	code, body = e.do("POST", base, f.tok, map[string]any{"name": "other", "apiKey": value})
	wantError(t, code, body, 409, "has this value")
	code, body = e.do("PUT", base+"/taken", f.tok, map[string]any{"name": "renamed"})
	wantError(t, code, body, 400, "name: cannot be changed")
	var list struct {
		Count      int
		Pagination struct{ Total int }
	}
	e.must(200, "GET", base, f.tok, nil, &list)
	if list.Count != 1 || list.Pagination.Total != 1 {
		t.Fatalf("after refusals the API holds %+v", list)
	}
	var app struct{ ID string }
	e.must(201, "POST", "/api/v1/applications", f.tok, map[string]any{"name": "app-one"}, &app)
	code, body = e.do("POST", "/api/v1/applications", f.tok, map[string]any{"name": "app-one"})
	wantError(t, code, body, 409, `"app-one" already exists`)
	code, body = e.do("POST", "/api/v1/applications", f.tok, map[string]any{})
	wantError(t, code, body, 400, "name: is required")
	code, body = e.do("POST", "/api/v1/applications", f.tok, map[string]any{"name": "app-two", "projectId": "00000000-0000-4000-8000-000000000000"})
	wantError(t, code, body, 400, "projectId: project")

	// Another organization sees none of it.
	other := newFleet(t, e, 1)
	for _, p := range []string{base, base + "/taken", "/api/v1/applications/" + app.ID} {
		code, body := e.do("GET", p, other.tok, nil)
		wantError(t, code, body, 404, "not found")
	}
	code, body = e.do("DELETE", base+"/taken", other.tok, nil)
	wantError(t, code, body, 404, "not found")
	code, body = e.do("POST", "/api/v1/apis/"+other.api+"/api-keys", other.tok, map[string]any{"name": "mine", "applicationId": app.ID})
	wantError(t, code, body, 400, "applicationId: application")
	var apps struct{ Count int }
	e.must(200, "GET", "/api/v1/applications", other.tok, nil, &apps)
	if apps.Count != 0 {
		t.Fatalf("another organization lists %d applications", apps.Count)
	}
	// Deployed to the first organization's gateway: the other's gateway
	// pulls none of its keys.
	f.deploy(t, "", 0)
	g := newKeyGateway(t, e, other.keys[0], other.gws[0].ID)
	g.run()
	if h := g.hashes(); len(h) != 0 {
		t.Fatalf("another organization's gateway pulled %v", h)
	}
}

// TestAPIKeyExpiry: an expired key is reported expired, is not pulled, and
// is revoked on the live gateway when it expires; a new expiry brings it
// back.
func TestAPIKeyExpiry(t *testing.T) {
	e := newEnvWith(t, fastHub)
	f := newFleet(t, e, 1)
	g := newKeyGateway(t, e, f.keys[0], f.gws[0].ID)
	g.run()
	f.deploy(t, "", 0)
	soon := time.Now().Add(1500 * time.Millisecond).UTC().Format(time.RFC3339Nano)
	k := f.createKey(t, map[string]any{"name": "short-lived", "expiresAt": soon})
	keep := f.createKey(t, map[string]any{"name": "lasting"})
	want := map[string]string{f.api + "/short-lived": sha(k.APIKey), f.api + "/lasting": sha(keep.APIKey)}
	g.waitKeys(t, want)
	delete(want, f.api+"/short-lived")
	g.waitKeys(t, want) // revoked when it expired
	var got createdKey
	e.must(200, "GET", "/api/v1/apis/"+f.api+"/api-keys/short-lived", f.tok, nil, &got)
	if got.Status != "expired" {
		t.Fatalf("expired key shown %+v", got)
	}
	g.pull()
	if !maps.Equal(g.hashes(), want) {
		t.Fatalf("pulled %v, want %v", g.hashes(), want)
	}
	later := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	e.must(200, "PUT", "/api/v1/apis/"+f.api+"/api-keys/short-lived", f.tok, map[string]any{"expiresAt": later}, &got)
	if got.Status != "active" {
		t.Fatalf("renewed key shown %+v", got)
	}
	want[f.api+"/short-lived"] = sha(k.APIKey)
	g.waitKeys(t, want)
}

// TestAPIKeysAcrossReplicas: keys changed through one replica reach a
// gateway connected to another, and a pull answered by one replica makes
// the replica holding the channel send application.updated again.
func TestAPIKeysAcrossReplicas(t *testing.T) {
	rs := newReplicas(t, 2, fastHub)
	f := newFleet(t, rs[0], 1)
	var app struct{ ID string }
	rs[0].must(201, "POST", "/api/v1/applications", f.tok, map[string]any{"name": "shop-web"}, &app)
	k1 := f.createKey(t, map[string]any{"name": "first", "applicationId": app.ID})
	g := newKeyGateway(t, rs[1], f.keys[0], f.gws[0].ID)
	g.pullVia = rs[0]
	g.run()
	waitReady(t, rs[1], f.gws[0].ID)
	f.deploy(t, "", 0)
	want := map[string]string{f.api + "/first": sha(k1.APIKey)}
	g.waitKeys(t, want)
	k2 := f.createKey(t, map[string]any{"name": "second", "applicationId": app.ID})
	want[f.api+"/second"] = sha(k2.APIKey)
	g.waitKeys(t, want)
	waitFor(t, func() bool { return len(g.mapping(app.ID)) == 2 })
	rs[0].must(204, "DELETE", "/api/v1/apis/"+f.api+"/api-keys/first", f.tok, nil, nil)
	delete(want, f.api+"/first")
	g.waitKeys(t, want)
	waitFor(t, func() bool { return len(g.mapping(app.ID)) == 1 })
	// What follows a pull through replica 0 comes on replica 1's channel.
	g.mu.Lock()
	before := g.appsAt
	g.seen = append(g.seen, "marker")
	g.mu.Unlock()
	g.pull()
	waitFor(t, func() bool { g.mu.Lock(); defer g.mu.Unlock(); return g.appsAt > before })
}

// TestDeployNeedsGatewayPolicies: an API protected by keys is not deployed
// to a second-generation gateway whose manifest lacks api-key-auth: 409
// naming the gateway and the policy, nothing recorded. A first-generation
// gateway takes it (it receives no policies).
func TestDeployNeedsGatewayPolicies(t *testing.T) {
	e := newEnvWith(t, fastHub)
	f := newFleet(t, e, 2)
	g := newGen2(t, e, f.keys[0], f.gws[0].ID)
	manifest := func(policies string) {
		t.Helper()
		if code, body := g.call("POST", "/api/internal/v1/gateways/"+f.gws[0].ID+"/manifest",
			`{"version":"1.2.0","functionalityType":"regular","policies":[`+policies+`]}`); code != 204 {
			t.Fatalf("manifest: %d %s", code, body)
		}
	}
	manifest(`{"name":"cors","version":"v1"}`)
	items := []map[string]any{{"gatewayId": f.gws[1].ID}, {"gatewayId": f.gws[0].ID}}
	code, body := e.do("POST", "/api/v1/apis/"+f.api+"/deploy-revision", f.tok, items)
	wantError(t, code, body, 409, "gateway "+f.gws[0].ID+" lacks the policy api-key-auth@v1")
	var deps struct{ Count int }
	e.must(200, "GET", "/api/v1/apis/"+f.api+"/deployments", f.tok, nil, &deps)
	if deps.Count != 0 {
		t.Fatalf("a refused deploy recorded %d deployments", deps.Count)
	}
	f.deploy(t, "", 1) // first generation
	manifest(`{"name":"cors","version":"v1"},{"name":"api-key-auth","version":"v1.0.0"}`)
	f.deploy(t, "", 0, 1)
}

// TestKeyBurstKeepsSlowGateway: a portal import creates hundreds of keys on
// one API in a burst while a connected gateway reads at half the pace they
// are made. Their events filled the connection's queue (32 frames) and the
// hub dropped the gateway, which then reconnected and pulled everything
// again. Now they wait on the connection for room, in commit order, and
// leave half the queue to deployment events: the gateway stays on its
// first connection, hears every key in the order made and a deployment
// made at the height of the burst, and ends with exactly the keys made.
func TestKeyBurstKeepsSlowGateway(t *testing.T) {
	const n = 300
	// The contract's hub (a queue of 32, pings every 20 s), over a slow
	// link: small socket buffers on both ends.
	e := newEnvListener(t, nil, nil, 4096)
	f := newFleet(t, e, 1)
	g := newKeyGateway(t, e, f.keys[0], f.gws[0].ID)
	g.readBuffer = 4096 // what it has not read stays on the server
	g.run()
	f.deploy(t, "", 0)
	waitFor(t, func() bool {
		g.gen2Gateway.mu.Lock()
		defer g.gen2Gateway.mu.Unlock()
		_, ok := g.held[f.api]
		return ok
	})

	// The gateway reads one frame for every two keys made, then, once the
	// burst is over, as fast as it can.
	pace := make(chan struct{}, n)
	g.c.gate.Store(&pace)
	released := false
	release := func() {
		if !released {
			released = true
			close(pace)
		}
	}
	t.Cleanup(release)
	want := map[string]string{}
	var names []string
	for i := range n {
		k := f.createKey(t, map[string]any{"name": fmt.Sprintf("import-%03d", i)})
		want[f.api+"/"+k.Name] = sha(k.APIKey)
		names = append(names, k.Name)
		if i%2 == 1 {
			pace <- struct{}{}
		}
	}
	// The API deployed again at the height of the burst: its api.deployed
	// finds room in the queue (consumer events leave half of it).
	f.deploy(t, "", 0)
	release()
	deadline := time.Now().Add(10 * time.Second)
	for !maps.Equal(g.hashes(), want) {
		select {
		case <-g.c.ended:
			t.Fatalf("the gateway's connection ended (%v) with %d of the %d keys", g.c.endErr, len(g.hashes()), n)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("the gateway holds %d keys, want the %d made", len(g.hashes()), n)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The keys sent again after the second api.deployed (the API's state)
	// follow those sent first.
	g.mu.Lock()
	var created []string
	seen := map[string]bool{}
	for _, name := range g.created {
		if !seen[name] {
			seen[name] = true
			created = append(created, name)
		}
	}
	g.mu.Unlock()
	if !slices.Equal(created, names) {
		t.Fatalf("apikey.created came in the order %v, want %v", created, names)
	}
	waitFor(t, func() bool {
		g.gen2Gateway.mu.Lock()
		defer g.gen2Gateway.mu.Unlock()
		return len(g.applied) == 2
	})
	select {
	case <-g.c.ended:
		t.Fatalf("the gateway's connection ended: %v", g.c.endErr)
	default:
	}
	if d := e.api.Hub().Dropped.Load(); d != 0 {
		t.Fatalf("%d connections dropped", d)
	}
}
