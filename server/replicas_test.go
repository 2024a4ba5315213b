package server

import (
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"platform-api/api"
	"platform-api/fleet"
	"platform-api/httpx"
	"platform-api/store"
	"platform-api/store/pgtest"
	"platform-api/store/storetest"
)

// newReplicas runs n replicas of the server on one PostgreSQL schema, each
// with its own store (pool, listener, lease) and its own JWT key: what
// several processes behind a load balancer are, in one test process.
func newReplicas(t *testing.T, n int, mod func(*Options)) []*testEnv {
	t.Helper()
	return newReplicasWith(t, make([]time.Duration, n), time.Second, mod)
}

// newReplicasWith is newReplicas with each replica's wall clock off by its
// skew (positive: ahead), and a lease of its own.
func newReplicasWith(t *testing.T, skews []time.Duration, lease time.Duration, mod func(*Options)) []*testEnv {
	t.Helper()
	if !pgtest.Postgres() {
		t.Skip("replicas share a PostgreSQL database: runs in the PostgreSQL pass of the suite")
	}
	dsn := pgtest.Schema(t)
	var out []*testEnv
	for i, skew := range skews {
		id := fmt.Sprintf("replica-%d", i)
		out = append(out, newEnvStore(t, func(c *store.Config) {
			c.DSN, c.ReplicaID, c.Lease = dsn+"&application_name="+id, id, lease
			if skew != 0 {
				c.Clock = func() time.Time { return time.Now().Add(skew).Round(0) }
			}
		}, mod))
	}
	return out
}

// TestReplicasWithSkewedClocks: leases were written with each replica's
// clock and judged with the reader's, so a replica 20 s behind looked dead
// to the others (its gateways inactive, its connections not counted), and
// one ahead took the others' for dead. They are on the database's clock.
func TestReplicasWithSkewedClocks(t *testing.T) {
	rs := newReplicasWith(t, []time.Duration{0, -20 * time.Second, 12 * time.Second}, time.Second, fastHub)
	f := newFleet(t, rs[0], 2)
	mustDial(t, rs[1].srv.URL, f.keys[0]) // on the replica behind
	mustDial(t, rs[0].srv.URL, f.keys[1]) // on the right one, seen by the one ahead
	waitRemote(t, rs[0], f.gws[0].ID, 1)
	waitRemote(t, rs[2], f.gws[0].ID, 1)
	waitRemote(t, rs[2], f.gws[1].ID, 1)
	for i, r := range rs {
		var st httpx.List[api.GatewayStatus]
		r.must(200, "GET", "/api/v1/status/gateways", f.tok, nil, &st)
		for _, g := range st.List {
			if !g.IsActive || g.Connections != 1 {
				t.Fatalf("replica %d answers %+v for a gateway with one connection", i, g)
			}
		}
	}
}

// TestReplicasDeliverEverywhere: a deploy handled by one replica reaches a
// gateway's connections on every replica, and its answer counts them all.
// A token minted with one replica's key works on the others.
func TestReplicasDeliverEverywhere(t *testing.T) {
	rs := newReplicas(t, 3, fastHub)
	f := newFleet(t, rs[0], 2)
	// Gateway 0 has a connection on each replica; gateway 1 one on the
	// last.
	var conns []*wsClient
	for _, r := range rs {
		c, _ := mustDial(t, r.srv.URL, f.keys[0])
		conns = append(conns, c)
	}
	c1, _ := mustDial(t, rs[2].srv.URL, f.keys[1])
	waitRemote(t, rs[0], f.gws[0].ID, 3)
	waitRemote(t, rs[0], f.gws[1].ID, 1)
	// Replica 0 counts its own connection itself: that it wrote its row,
	// which replica 1's status answer below reads, only another replica
	// sees (under load, that answer came before the write: 2 connections).
	waitRemote(t, rs[1], f.gws[0].ID, 3)
	// A connection still learning its generation (PLATFORM_WS_GENERATION_GRACE
	// after its connect) gets the deployment in its initial state, and the
	// answer counts only the ready ones: the answer's count is about ready
	// connections, so wait until every one is.
	for _, r := range rs {
		waitReady(t, r, f.gws[0].ID)
		waitReady(t, r, f.gws[1].ID)
	}

	var out []fleet.Result
	rs[0].must(200, "POST", "/api/v1/apis/"+f.api+"/deploy-revision", f.tok,
		[]map[string]string{{"gatewayId": f.gws[0].ID}, {"gatewayId": f.gws[1].ID}}, &out)
	if out[0].DeliveredConnections != 3 || out[0].Status != store.StatusDelivered ||
		out[1].DeliveredConnections != 1 || out[1].Status != store.StatusDelivered {
		t.Fatalf("deploy through one replica: %+v", out)
	}
	for i, c := range append(conns, c1) {
		if ev := c.next(2 * time.Second); ev["type"] != "api.deployed" || ev["payload"].(map[string]any)["revisionId"] != out[0].RevisionID {
			t.Fatalf("connection %d got %v", i, ev)
		}
	}
	// The other replicas' answers about the fleet: status, isActive.
	var st httpx.List[api.GatewayStatus]
	rs[1].must(200, "GET", "/api/v1/status/gateways?gatewayId="+f.gws[1].ID, f.tok, nil, &st)
	if !st.List[0].IsActive || st.List[0].Connections != 1 || st.List[0].LastSeenAt == nil {
		t.Fatalf("status on replica 1 of a gateway connected to replica 2: %+v", st.List[0])
	}
	rs[1].must(200, "GET", "/api/v1/status/gateways?gatewayId="+f.gws[0].ID, f.tok, nil, &st)
	if st.List[0].Connections != 3 {
		t.Fatalf("connections across replicas: %+v", st.List[0])
	}
}

// waitRemote waits until replica r sees n connections of the gateway
// across the replicas (each replica writes its own a moment after they
// change).
func waitRemote(t *testing.T, r *testEnv, gatewayID string, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		p, err := r.api.fleet.Presence(t.Context(), []string{gatewayID})
		if err == nil && p[gatewayID].Connections == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("replica sees %d connections of %s, want %d (%v)", p[gatewayID].Connections, gatewayID, n, err)
		}
		select {
		case <-r.api.hub.Changed():
		case <-time.After(50 * time.Millisecond): // the other replicas write on their own schedule
		}
	}
}

// TestReplicasRevokeAndCap: a token revoked on one replica closes the
// sessions it opened on another; the per-gateway cap holds across
// replicas.
func TestReplicasRevokeAndCap(t *testing.T) {
	rs := newReplicas(t, 3, func(o *Options) { fastHub(o); o.Hub.MaxPerGateway = 2 })
	f := newFleet(t, rs[0], 1)
	onC, _ := mustDial(t, rs[2].srv.URL, f.keys[0])
	onB, _ := mustDial(t, rs[1].srv.URL, f.keys[0])
	waitRemote(t, rs[0], f.gws[0].ID, 2)
	third, _ := dialWS(t, rs[0].srv.URL, f.keys[0])
	if m := third.next(time.Second); m["type"] != "error" || !strings.Contains(m["message"].(string), "maximum of 2") {
		t.Fatalf("a third connection across replicas: %v", m)
	}
	// The clients answer pings: the close is the revocation's, heard by
	// the other replicas well within their 1 s silence timeout.
	start := time.Now()
	rs[0].must(200, "DELETE", "/api/v1/gateways/"+f.gws[0].ID+"/tokens/"+f.keyID[0], f.tok, nil, nil)
	for i, c := range []*wsClient{onC, onB} {
		if code := c.closedBy(start, 500*time.Millisecond); code != 1008 {
			t.Fatalf("session %d after revocation on replica 0: close code %d", i, code)
		}
	}
	for i, r := range rs {
		if n := r.api.Hub().TimedOut.Load(); n != 0 {
			t.Fatalf("replica %d closed %d connections for silence", i, n)
		}
	}
}

// TestReplicasAcknowledge: a second-generation gateway with a connection
// on two replicas is DEPLOYED only once both have acknowledged, whichever
// replica handled the deploy.
func TestReplicasAcknowledge(t *testing.T) {
	rs := newReplicas(t, 2, fastHub)
	f := newFleet(t, rs[0], 1)
	a, b := newGen2(t, rs[0], f.keys[0], f.gws[0].ID), newGen2(t, rs[1], f.keys[0], f.gws[0].ID)
	a.connect()
	b.connect()
	waitRemote(t, rs[0], f.gws[0].ID, 2)
	// A connection still learning its generation (PLATFORM_WS_GENERATION_GRACE
	// after its connect) gets the deployment in its initial state, and the
	// answer counts only the ready ones: the answer's count is about ready
	// connections, so wait until every one is.
	for _, r := range rs {
		waitReady(t, r, f.gws[0].ID)
	}
	var out []fleet.Result
	rs[0].must(200, "POST", "/api/v1/apis/"+f.api+"/deploy-revision", f.tok, []map[string]string{{"gatewayId": f.gws[0].ID}}, &out)
	if out[0].Status != store.StatusDeploying || out[0].DeliveredConnections != 2 {
		t.Fatalf("deploy: %+v", out)
	}
	a.next(2 * time.Second) // the connection on replica 0 acknowledges
	// Once replica 0 has recorded that its connection owes nothing, the
	// deployment still waits for replica 1's.
	raw := storeRaw(t, rs[0])
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		var n int
		raw.QueryRow(`SELECT COUNT(*) FROM ack_waits WHERE replica_id = 'replica-0'`).Scan(&n)
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("replica 0 never recorded its connection's acknowledgement")
		}
	}
	if d := deploymentStatus(t, rs[0], f.tok, f.api, f.gws[0].ID); d["status"] != "DEPLOYING" {
		t.Fatalf("one of two replicas' connections acknowledged: %v", d)
	}
	b.next(2 * time.Second)
	waitStatus(t, rs[1], f.tok, f.api, f.gws[0].ID, store.StatusDeployed)
}

// TestReplicaListenerTerminated: one replica's listening connection is
// terminated from the database side while a deploy is made through
// another: the replica reconnects, resynchronizes, and its gateway gets
// the deployment it missed.
func TestReplicaListenerTerminated(t *testing.T) {
	rs := newReplicas(t, 2, fastHub)
	f := newFleet(t, rs[0], 1)
	c, _ := mustDial(t, rs[1].srv.URL, f.keys[0])
	waitRemote(t, rs[0], f.gws[0].ID, 1)
	// Replica 1's listener is named after its pool's application_name.
	pgtest.Exec(t, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'replica-1 listener'`)
	out := f.deploy(t, "", 0)
	for {
		ev := c.next(15 * time.Second)
		if p := ev["payload"].(map[string]any); ev["type"] == "api.deployed" && p["revisionId"] == out[0].RevisionID {
			return
		}
	}
}

// TestReplicaResyncsAfterAnUnreadableChange: a replica that heard a change
// but could not read it (its pool saturated, a short outage) dropped it
// while its listening connection stayed up, so nothing resynchronized: its
// gateways never got the deployment, which stayed PENDING until they
// reconnected. The read is tried again, then the replica listens again and
// resynchronizes its gateways, as after a lost connection.
func TestReplicaResyncsAfterAnUnreadableChange(t *testing.T) {
	rs := newReplicas(t, 2, fastHub)
	f := newFleet(t, rs[0], 1)
	c, _ := mustDial(t, rs[1].srv.URL, f.keys[0])
	waitRemote(t, rs[0], f.gws[0].ID, 1)
	waitReady(t, rs[1], f.gws[0].ID)
	var mu sync.Mutex
	failed := 0
	rs[1].db.SetChangeReadFault(func(k store.ChangeKind) error {
		mu.Lock()
		defer mu.Unlock()
		if k != store.ChangeDeployed || failed == 3 { // every try of one change
			return nil
		}
		failed++
		return errors.New("injected: the read of a change failed")
	})
	out := f.deploy(t, "", 0)
	for {
		ev := c.next(10 * time.Second)
		if p := ev["payload"].(map[string]any); ev["type"] == "api.deployed" && p["revisionId"] == out[0].RevisionID {
			break
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if failed != 3 {
		t.Fatalf("the read failed %d times, want 3 (every try)", failed)
	}
	waitStatus(t, rs[0], f.tok, f.api, f.gws[0].ID, store.StatusDelivered)
}

// storeRaw is a database/sql handle on a test env's database.
func storeRaw(t *testing.T, e *testEnv) *sql.DB { return storetest.Raw(t, e.dsn) }

// TestReplicasPagesFollowChanges: an API updated through one replica is
// answered updated in a page of another that kept it before.
func TestReplicasPagesFollowChanges(t *testing.T) {
	rs := newReplicas(t, 2, nil)
	_, tok := rs[0].newOrg()
	project := rs[0].defaultProject(tok)
	id := asMap(t, rs[0].must(201, "POST", "/api/v1/apis", tok, benchAPIBody(project, 1), nil))["id"].(string)
	checkPage(t, rs[1], tok, project, []string{id})
	rs[0].must(200, "PUT", "/api/v1/apis/"+id, tok, map[string]any{"description": "changed elsewhere"}, nil)
	if d := checkPage(t, rs[1], tok, project, []string{id})[0]["description"]; d != "changed elsewhere" {
		t.Fatalf("the other replica answers description %v", d)
	}
}

// TestRevokeAnsweredOnceEveryReplicaRefuses: a revoked token kept working
// on other replicas for up to ~25 ms after the revoke was answered (9 of 40
// trials). The answer now comes once every live replica has applied the
// revocation: the token is refused everywhere at once, its connections
// closed. Each trial warms the other replicas' memory of the token first.
func TestRevokeAnsweredOnceEveryReplicaRefuses(t *testing.T) {
	rs := newReplicas(t, 3, nil)
	f := newFleet(t, rs[0], 1)
	gw := f.gws[0].ID
	for trial := range 15 {
		var tok api.IssuedToken
		rs[0].must(201, "POST", "/api/v1/gateways/"+gw+"/tokens", f.tok, nil, &tok)
		c, _ := mustDial(t, rs[2].srv.URL, tok.Token)
		for _, r := range rs[1:] {
			g := newGen2(t, r, tok.Token, gw)
			if code, data := g.call("GET", "/api/internal/v1/deployments", ""); code != 200 {
				t.Fatalf("trial %d: before the revoke: %d %s", trial, code, data)
			}
		}
		rs[0].must(200, "DELETE", "/api/v1/gateways/"+gw+"/tokens/"+tok.ID, f.tok, nil, nil)
		for i, r := range rs[1:] {
			g := newGen2(t, r, tok.Token, gw)
			if code, data := g.call("GET", "/api/internal/v1/deployments", ""); code != 401 {
				t.Fatalf("trial %d: replica %d right after the revoke answered: %d %s", trial, i+1, code, data)
			}
		}
		if code := c.closeCode(100 * time.Millisecond); code != 1008 {
			t.Fatalf("trial %d: the connection on another replica closed with %d, want 1008 at once", trial, code)
		}
	}
}

// TestCapHoldsWhenConnectionsArriveTogether: connections of one gateway
// arriving on several replicas at once each passed the per-gateway cap (6
// live with a cap of 2), since none saw the others' yet, and stayed. Once
// their counts are written, the replicas trim the excess between them.
func TestCapHoldsWhenConnectionsArriveTogether(t *testing.T) {
	rs := newReplicas(t, 3, func(o *Options) { o.Hub.MaxPerGateway = 2 })
	f := newFleet(t, rs[0], 1)
	gw := f.gws[0].ID
	var mu sync.Mutex
	var live []*wsClient
	var wg sync.WaitGroup
	for _, r := range rs {
		for range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c, _ := dialWS(t, r.srv.URL, f.keys[0])
				if m := c.next(2 * time.Second); m["type"] == "connection.ack" {
					mu.Lock()
					live = append(live, c)
					mu.Unlock()
				}
			}()
		}
	}
	wg.Wait()
	if len(live) <= 2 {
		t.Skipf("only %d connections passed the handshake: no race to trim this time", len(live))
	}
	liveAcross := func() int {
		n := 0
		for _, r := range rs {
			for _, c := range r.api.Hub().Conns(gw) {
				if c.Context().Err() == nil {
					n++
				}
			}
		}
		return n
	}
	waitFor(t, func() bool { return liveAcross() == 2 })
	closed := 0
	for _, c := range live {
		// The trimmed ones have their close frame waiting; the others
		// stay silent past the short read.
		for {
			op, payload, err := c.readFrame(100 * time.Millisecond)
			if err != nil {
				break
			}
			if op == opClose {
				if closeCode(payload) == 1008 {
					closed++
				}
				break
			}
		}
	}
	if closed != len(live)-2 {
		t.Fatalf("%d of %d connections closed (1008), want %d", closed, len(live), len(live)-2)
	}
}

// TestPeerConnectionGetsWhatTheOtherAcknowledged: a gateway runs as two
// instances, each with a connection (on one replica or two). A deployment
// one of them acknowledged while the other was away was never sent to the
// other: a connection's state left out what the gateway had acknowledged.
// While the gateway has another connection, what is acknowledged is sent
// too, as first stamped: an instance that holds it ignores it, one that
// missed it applies and acknowledges it.
func TestPeerConnectionGetsWhatTheOtherAcknowledged(t *testing.T) {
	rs := []*testEnv{newEnvWith(t, fastHub)}
	if pgtest.Postgres() {
		rs = newReplicas(t, 2, fastHub)
	}
	f := newFleet(t, rs[0], 1)
	first := newGen2(t, rs[0], f.keys[0], f.gws[0].ID)
	first.connect()
	waitReady(t, rs[0], f.gws[0].ID)
	out := f.deploy(t, "", 0)
	if ev := first.next(5 * time.Second); ev["type"] != "api.deployed" {
		t.Fatalf("first instance got %v", ev)
	}
	waitStatus(t, rs[0], f.tok, f.api, f.gws[0].ID, store.StatusDeployed)
	// The other instance connects (to the other replica, when there is
	// one, once that replica has the first's connection in its count).
	waitRemote(t, rs[len(rs)-1], f.gws[0].ID, 1)
	second := newGen2(t, rs[len(rs)-1], f.keys[0], f.gws[0].ID)
	second.connect()
	ev := second.next(5 * time.Second)
	if p, _ := ev["payload"].(map[string]any); ev["type"] != "api.deployed" || p["deploymentId"] != out[0].DeploymentID {
		t.Fatalf("the second instance got %v, want the deployment the first acknowledged", ev)
	}
	waitStatus(t, rs[0], f.tok, f.api, f.gws[0].ID, store.StatusDeployed)
	// A reconnect of the first (still a peer of the second) is sent it
	// too, and ignores it: nothing waits for its acknowledgement.
	waitRemote(t, rs[0], f.gws[0].ID, 2)
	first.c.conn.Close()
	first.connect()
	ev = first.next(5 * time.Second)
	if p, _ := ev["payload"].(map[string]any); ev["type"] != "api.deployed" || p["deploymentId"] != out[0].DeploymentID {
		t.Fatalf("the first instance, back, got %v", ev)
	}
	if d := deploymentStatus(t, rs[0], f.tok, f.api, f.gws[0].ID); d["status"] != store.StatusDeployed {
		t.Fatalf("after an instance ignored what it held: %v", d)
	}
}

// TestCapAfterAReplicaCrash: a gateway at its connection cap on a replica
// that crashed was refused on every other replica until the dead lease
// expired (15 s by default), though its connections died with the
// replica. A replica is dead once the database has seen its listening
// session close. The crashed replica is written here as the database
// holds it after a SIGKILL: its lease fresh, its session gone, its rows
// left.
func TestCapAfterAReplicaCrash(t *testing.T) {
	const lease = time.Minute // it does not expire during the test
	rs := newReplicasWith(t, make([]time.Duration, 2), lease, func(o *Options) { fastHub(o); o.Hub.MaxPerGateway = 2 })
	f := newFleet(t, rs[0], 1)
	raw := storeRaw(t, rs[0])
	ctx := t.Context()
	conn, err := raw.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var pid int
	if err := conn.QueryRowContext(ctx, `SELECT pg_backend_pid()`).Scan(&pid); err != nil {
		t.Fatal(err)
	}
	if _, err := raw.ExecContext(ctx, `INSERT INTO replicas (id, started_at, renewed_at, listener_pid)
		VALUES ('crashed', $1, $1, $2)`, time.Now().UTC().Format("2006-01-02T15:04:05.000000Z"), pid); err != nil {
		t.Fatal(err)
	}
	if _, err := raw.ExecContext(ctx, `INSERT INTO gateway_connections (gateway_id, replica_id, connections)
		VALUES ($1, 'crashed', 2)`, f.gws[0].ID); err != nil {
		t.Fatal(err)
	}
	// While the crashed replica's session is open, it counts: the cap is
	// reached.
	refused, _ := dialWS(t, rs[1].srv.URL, f.keys[0])
	if m := refused.next(2 * time.Second); m["type"] != "error" || !strings.Contains(m["message"].(string), "maximum of 2") {
		t.Fatalf("a third connection while the other replica lives: %v", m)
	}
	// The process dies: its session closes.
	if _, err := raw.ExecContext(ctx, `SELECT pg_terminate_backend($1)`, pid); err != nil {
		t.Fatal(err)
	}
	conn.Close()
	waitFor(t, func() bool {
		p, err := rs[1].api.fleet.Presence(ctx, []string{f.gws[0].ID})
		return err == nil && p[f.gws[0].ID].Connections == 0
	})
	for _, r := range rs {
		mustDial(t, r.srv.URL, f.keys[0])
	}
}
