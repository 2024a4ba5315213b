package server

import (
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"platform-api/store"
	"platform-api/store/pgtest"
)

// randomStepsEnv sets how many steps TestReplicasRandomized runs (default
// randomStepsDefault, a few seconds); a long run sets hundreds or
// thousands. randomSeedEnv replays the run of a seed the test logged.
const (
	randomStepsEnv     = "PLATFORM_TEST_RANDOM_STEPS"
	randomSeedEnv      = "PLATFORM_TEST_RANDOM_SEED"
	randomStepsDefault = 40
)

// TestReplicasRandomized: three replicas, their clocks skewed (one 2 s
// behind, one 12 s ahead), each reaching the database through a proxy,
// take in random order: deploys and undeploys of several APIs, APIs
// deleted and others created and deployed, gateway tokens revoked and
// gateways deleted (a replica's listening connection cut just before, now
// and then, so that it learns of them by its resync), listener cuts, one
// replica's reads of changes stalling past its lease, a replica frozen
// (its database sessions held silent, open, past twice its lease: no
// renewal, no query, no notification, then everything at once), and
// gateways reconnecting to another replica. The fleet: six
// second-generation gateways (revoked and deleted ones replaced) and two
// first-generation ones. In the end every second-generation gateway's last
// applied event for each API is the stored state (and no deleted API is
// left running), no deployment waits (PENDING, DEPLOYING, UNDEPLOYING) or
// is FAILED on a connected gateway, and no replica holds a connection of a
// revoked token or a deleted gateway.
func TestReplicasRandomized(t *testing.T) {
	steps := randomStepsDefault
	if v := os.Getenv(randomStepsEnv); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			t.Fatalf("%s=%q: want a positive number of steps", randomStepsEnv, v)
		}
		steps = n
	}
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv(randomSeedEnv); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("%s=%q: want a seed the test logged", randomSeedEnv, v)
		}
		seed = n
	}
	t.Logf("seed %d, %d steps (%s=%d replays it)", seed, steps, randomSeedEnv, seed)
	rnd := rand.New(rand.NewPCG(seed, 25))

	rs, proxies := newProxiedReplicas(t, []time.Duration{0, -2 * time.Second, 12 * time.Second}, time.Second)
	const gateways = 6
	f := newFleet(t, rs[0], gateways)
	project := rs[0].defaultProject(f.tok)
	apis := []string{f.api} // live
	var deletedAPIs, deletedGWs, revoked []string
	created := 0

	// The frozen replica, if any; the steps go to the others meanwhile, as
	// clients would to replicas that answer.
	var frozenMu sync.Mutex
	frozen := -1
	var thaw *time.Timer
	pick := func() *testEnv {
		frozenMu.Lock()
		defer frozenMu.Unlock()
		for {
			if i := rnd.IntN(len(rs)); i != frozen {
				return rs[i]
			}
		}
	}
	cutListener := func(i int) {
		pgtest.Exec(t, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1`,
			fmt.Sprintf("replica-%d listener", i))
	}

	gs := make([]*gen2Gateway, gateways)
	keyIDs := slices.Clone(f.keyID)
	start := func(i int, e *testEnv, key, id string) {
		g := newGen2(t, e, key, id)
		g.noDownload, g.dropsConns, g.patient = true, true, true
		g.connect()
		go g.handleAll()
		gs[i] = g
	}
	for i := range gs {
		start(i, rs[i%len(rs)], f.keys[i], f.gws[i].ID)
	}
	// Two first-generation gateways: no manifest, no acknowledgement, a
	// delivery is all their rows record.
	g1 := make([]*gen1Gateway, 2)
	for i := range g1 {
		gw := rs[0].newGateway(f.tok, fmt.Sprintf("gen1-%d", i))
		var issued struct{ ID, Token string }
		rs[0].must(201, "POST", "/api/v1/gateways/"+gw.ID+"/tokens", f.tok, nil, &issued)
		g1[i] = &gen1Gateway{t: t, id: gw.ID, key: issued.Token}
		g1[i].connect(rs[(i+1)%len(rs)])
	}
	ids := func() []string { // every gateway's id
		var out []string
		for _, g := range gs {
			out = append(out, g.id)
		}
		for _, g := range g1 {
			out = append(out, g.id)
		}
		return out
	}
	// A stalled listener: replica 2's reads of changes hang for longer than
	// its lease while stall is set.
	var stallMu sync.Mutex
	stall := false
	rs[2].db.SetChangeReadFault(func(store.ChangeKind) error {
		stallMu.Lock()
		s := stall
		stall = false
		stallMu.Unlock()
		if s {
			time.Sleep(1500 * time.Millisecond)
		}
		return nil
	})

	// race makes deploys and undeploys of one API through several replicas
	// at once, while a gateway reconnects: their stamps must follow their
	// commits.
	race := func(step int, a string, n int) {
		type call struct {
			e            *testEnv
			method, path string
			body         any
		}
		var calls []call
		for range n {
			if rnd.IntN(3) == 0 {
				all := ids()
				calls = append(calls, call{pick(), "DELETE", "/api/v1/apis/" + a + "/deployments/" + all[rnd.IntN(len(all))], nil})
				continue
			}
			var every []map[string]any
			for _, id := range ids() {
				every = append(every, map[string]any{"gatewayId": id, "vhost": "api.example.com"})
			}
			calls = append(calls, call{pick(), "POST", "/api/v1/apis/" + a + "/deploy-revision", every})
		}
		g, to := gs[rnd.IntN(gateways)], pick()
		var wg sync.WaitGroup
		for _, c := range calls {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if code, body := c.e.do(c.method, c.path, f.tok, c.body); code != 200 && code != 204 && code != 404 {
					t.Errorf("step %d: %s %s: %d %s", step, c.method, c.path, code, body)
				}
			}()
		}
		g.mu.Lock()
		old := g.c
		g.mu.Unlock()
		old.conn.Close()
		g.e = to
		g.connect()
		go g.handleAll()
		wg.Wait()
		if t.Failed() {
			t.FailNow()
		}
	}

	ops := map[string]int{}
	for step := range steps {
		r := pick()
		a := apis[rnd.IntN(len(apis))]
		var op string
		switch n := rnd.IntN(21); {
		case n < 6:
			op = "deploy"
			var some []map[string]any
			for _, id := range ids() {
				if rnd.IntN(2) == 0 {
					some = append(some, map[string]any{"gatewayId": id, "vhost": "api.example.com"})
				}
			}
			if len(some) == 0 {
				some = append(some, map[string]any{"gatewayId": gs[0].id, "vhost": "api.example.com"})
			}
			if code, body := r.do("POST", "/api/v1/apis/"+a+"/deploy-revision", f.tok, some); code != 200 {
				t.Fatalf("step %d: deploy: %d %s", step, code, body)
			}
		case n < 10:
			op = "undeploy"
			all := ids()
			gw := all[rnd.IntN(len(all))]
			if code, body := r.do("DELETE", "/api/v1/apis/"+a+"/deployments/"+gw, f.tok, nil); code != 204 && code != 404 {
				t.Fatalf("step %d: undeploy: %d %s", step, code, body)
			}
		case n == 10:
			op = "listener cut"
			cutListener(rnd.IntN(len(rs)))
		case n == 11:
			op = "stall"
			stallMu.Lock()
			stall = true
			stallMu.Unlock()
		case n < 14:
			op = "reconnect"
			if k := rnd.IntN(gateways + len(g1)); k >= gateways {
				g1[k-gateways].connect(pick())
				break
			}
			g := gs[rnd.IntN(gateways)]
			g.mu.Lock()
			c := g.c
			g.mu.Unlock()
			c.conn.Close()
			g.e = pick()
			g.connect()
			go g.handleAll()
		case n == 14:
			op = "create API"
			if len(apis) >= 3 {
				continue
			}
			apis = append(apis, createAPI(t, r, f.tok, project, &created))
		case n == 15:
			op = "delete API"
			if len(apis) == 1 {
				apis = append(apis, createAPI(t, r, f.tok, project, &created))
			}
			k := rnd.IntN(len(apis))
			if code, body := r.do("DELETE", "/api/v1/apis/"+apis[k], f.tok, nil); code != 204 {
				t.Fatalf("step %d: delete API: %d %s", step, code, body)
			}
			deletedAPIs = append(deletedAPIs, apis[k])
			apis = slices.Delete(apis, k, k+1)
		case n == 16:
			op = "revoke"
			i := rnd.IntN(gateways)
			if rnd.IntN(2) == 0 {
				cutListener(rnd.IntN(len(rs)))
			}
			r.must(200, "DELETE", "/api/v1/gateways/"+gs[i].id+"/tokens/"+keyIDs[i], f.tok, nil, nil)
			revoked = append(revoked, keyIDs[i])
			var issued struct{ ID, Token string }
			r.must(201, "POST", "/api/v1/gateways/"+gs[i].id+"/tokens", f.tok, nil, &issued)
			keyIDs[i] = issued.ID
			// The same gateway, with its new token: it keeps what it holds.
			g := gs[i]
			g.key, g.e = issued.Token, pick()
			g.connect()
			go g.handleAll()
		case n == 17:
			op = "delete gateway"
			i := rnd.IntN(gateways)
			if rnd.IntN(2) == 0 {
				cutListener(rnd.IntN(len(rs)))
			}
			r.must(204, "DELETE", "/api/v1/gateways/"+gs[i].id, f.tok, nil, nil)
			deletedGWs = append(deletedGWs, gs[i].id)
			// A new gateway takes its place.
			gw := r.newGateway(f.tok, fmt.Sprintf("gw-%d", step))
			var issued struct{ ID, Token string }
			r.must(201, "POST", "/api/v1/gateways/"+gw.ID+"/tokens", f.tok, nil, &issued)
			keyIDs[i] = issued.ID
			start(i, pick(), issued.Token, gw.ID)
		case n == 18:
			op = "freeze"
			frozenMu.Lock()
			if frozen >= 0 {
				frozenMu.Unlock()
				continue
			}
			i := rnd.IntN(len(rs))
			frozen = i
			proxies[i].Freeze()
			// Past twice the lease (1 s): the others sweep its row.
			thaw = time.AfterFunc(time.Duration(1500+rnd.IntN(2000))*time.Millisecond, func() {
				frozenMu.Lock()
				defer frozenMu.Unlock()
				proxies[i].Thaw()
				frozen = -1
			})
			frozenMu.Unlock()
		case n == 20:
			op = "race"
			race(step, a, 3)
		default:
			op = "reconnect elsewhere, old connection left to the server"
			// A gateway opens a new connection on another replica before
			// its old one is gone: both live for a while.
			g := gs[rnd.IntN(gateways)]
			g.mu.Lock()
			old := g.c
			g.mu.Unlock()
			g.e = pick()
			g.connect()
			go g.handleAll()
			old.conn.Close()
		}
		ops[op]++
	}
	frozenMu.Lock()
	if frozen >= 0 {
		thaw.Stop()
		proxies[frozen].Thaw()
		frozen = -1
	}
	frozenMu.Unlock()
	// The last step races on every API, so that the end state is a race's.
	for _, a := range apis {
		race(steps, a, 6)
	}
	t.Logf("steps taken: %v; APIs live %d, deleted %d; gateways deleted %d; tokens revoked %d",
		ops, len(apis), len(deletedAPIs), len(deletedGWs), len(revoked))

	checkAppliedWithin(t, rs[0], f.tok, apis, deletedAPIs, gs, 30*time.Second)
	deadline := time.Now().Add(30 * time.Second)
	for {
		var waiting []string
		for _, a := range apis {
			for _, id := range ids() {
				d := deploymentStatus(t, rs[0], f.tok, a, id)
				if d == nil {
					continue
				}
				switch d["status"] {
				case store.StatusPending, store.StatusDeploying, store.StatusUndeploying, store.StatusFailed:
					waiting = append(waiting, fmt.Sprintf("API %s on gateway %s: %v %v", a, id, d["status"], d["errorCode"]))
				}
			}
		}
		for i, e := range rs {
			h := e.api.fleet.Hub()
			for _, id := range h.Tokens() {
				if slices.Contains(revoked, id) {
					waiting = append(waiting, fmt.Sprintf("replica %d holds a connection of revoked token %s", i, id))
				}
			}
			for _, gw := range deletedGWs {
				if n := len(h.Conns(gw)); n > 0 {
					waiting = append(waiting, fmt.Sprintf("replica %d holds %d connections of deleted gateway %s", i, n, gw))
				}
			}
		}
		if len(waiting) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the run (seed %d):\n%v", seed, waiting)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// newProxiedReplicas is newReplicasWith (fastHub) with each replica reaching
// the database through a proxy of its own, which can freeze it.
func newProxiedReplicas(t *testing.T, skews []time.Duration, lease time.Duration) ([]*testEnv, []*pgtest.Proxy) {
	t.Helper()
	if !pgtest.Postgres() {
		t.Skip("replicas share a PostgreSQL database: runs in the PostgreSQL pass of the suite")
	}
	dsn := pgtest.Schema(t)
	var out []*testEnv
	proxies := make([]*pgtest.Proxy, len(skews))
	for i, skew := range skews {
		id := fmt.Sprintf("replica-%d", i)
		out = append(out, newEnvStore(t, func(c *store.Config) {
			proxies[i], c.DSN = pgtest.NewProxy(t, dsn+"&application_name="+id)
			c.ReplicaID, c.Lease = id, lease
			if skew != 0 {
				c.Clock = func() time.Time { return time.Now().Add(skew).Round(0) }
			}
		}, fastHub))
	}
	return out, proxies
}

// createAPI creates another API like the fleet's (its name and context
// numbered) and returns its id.
func createAPI(t *testing.T, e *testEnv, tok, project string, n *int) string {
	t.Helper()
	*n++
	body := fixture(t, "api_maximal.json", project)
	body["name"] = fmt.Sprintf("Payments API %d", *n)
	body["context"] = fmt.Sprintf("/payments%d", *n)
	return asMap(t, e.must(201, "POST", "/api/v1/apis", tok, body, nil))["id"].(string)
}

// gen1Gateway plays a first-generation gateway: it connects, answers pings
// and reads every event, and sends nothing.
type gen1Gateway struct {
	t       *testing.T
	id, key string
	c       *wsClient
}

// connect opens a new connection to e, closing the one it had.
func (g *gen1Gateway) connect(e *testEnv) {
	if g.c != nil {
		g.c.conn.Close()
	}
	c, _ := mustDial(g.t, e.srv.URL, g.key)
	g.c = c
	go func() {
		for {
			if _, err := c.tryNext(time.Hour); err != nil {
				return
			}
		}
	}()
}
