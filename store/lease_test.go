package store

import (
	"context"
	"testing"
	"time"

	"platform-api/store/pgtest"
)

// TestDeadReplicaStopsCountingAtLeaseExpiry: the connections of a replica
// that died without cleaning up (SIGKILL leaves its rows) stop counting
// once its lease expires, not only once the others sweep its rows away
// (two leases later); a live replica's still count. ReplicasHolding, which the
// per-gateway cap and the deploy answers use, agrees.
func TestDeadReplicaStopsCountingAtLeaseExpiry(t *testing.T) {
	if !pgtest.Postgres() {
		t.Skip("PostgreSQL: replicas share a database only there")
	}
	const lease = 10 * time.Second
	cfg := testConfig(freshDSN(t))
	cfg.ReplicaID, cfg.Lease = "observer", lease
	db, err := Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	ctx := context.Background()
	o := mustOrg(t, db)
	gw := mustGateway(t, db, o.ID, "gw").ID
	now := time.Now().UTC()
	// What a live replica and one killed one and a half leases ago hold:
	// the dead one's lease has expired, its rows are not swept yet.
	for _, r := range []struct {
		id      string
		renewed time.Time
		conns   int
	}{{"alive", now, 2}, {"dead", now.Add(-lease * 3 / 2), 3}} {
		if _, err := db.write.ExecContext(ctx, `INSERT INTO replicas (id, started_at, renewed_at) VALUES ($1, $2, $2)`,
			r.id, formatTime(r.renewed)); err != nil {
			t.Fatal(err)
		}
		if _, err := db.write.ExecContext(ctx, `INSERT INTO gateway_connections (gateway_id, replica_id, connections) VALUES ($1, $2, $3)`,
			gw, r.id, r.conns); err != nil {
			t.Fatal(err)
		}
	}
	p, err := db.RemotePresence(ctx, []string{gw})
	if err != nil {
		t.Fatal(err)
	}
	if p[gw].Connections != 2 {
		t.Fatalf("remote connections %+v, want the live replica's 2 only", p[gw])
	}
	holding, err := db.ReplicasHolding(ctx, []string{gw})
	if err != nil {
		t.Fatal(err)
	}
	if len(holding) != 1 || !holding["alive"] {
		t.Fatalf("replicas holding the gateway: %v, want only the live one", holding)
	}
}

// TestStalledReplicaDoesNotResurrectConnections: a replica stalled past
// twice its lease is swept by the others (its connection rows go); when it
// comes back it writes again every connection it holds. It wrote them over
// the counts still pending, so a gateway that had left during the stall
// was written back as connected, and stayed active and counted until the
// replica restarted (after a 45 s freeze: 42 connections for 22 gateways).
func TestStalledReplicaDoesNotResurrectConnections(t *testing.T) {
	if !pgtest.Postgres() {
		t.Skip("PostgreSQL: replicas share a database only there")
	}
	ctx := context.Background()
	dsn := freshDSN(t)
	open := func(id string) *DB {
		cfg := testConfig(dsn)
		cfg.ReplicaID, cfg.Lease = id, 10*time.Second
		db, err := Open(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		return db
	}
	stalled, observer := open("stalled"), open("observer")
	o := mustOrg(t, observer)
	left, stays := mustGateway(t, observer, o.ID, "left").ID, mustGateway(t, observer, o.ID, "stays").ID
	stalled.NotePresence(left, 1)
	stalled.NotePresence(stays, 1)
	if err := stalled.flushPresence(ctx); err != nil {
		t.Fatal(err)
	}
	// The others sweep it as dead; meanwhile one of its gateways leaves,
	// and its count of 0 is still pending when it renews its lease.
	if _, err := observer.write.ExecContext(ctx, `DELETE FROM replicas WHERE id = 'stalled'`); err != nil {
		t.Fatal(err)
	}
	stalled.fetchMu.Lock()
	stalled.presence[left] = 0
	stalled.renewedAt = time.Time{}
	stalled.fetchMu.Unlock()
	if err := stalled.renewLease(ctx); err != nil {
		t.Fatal(err)
	}
	if err := stalled.flushPresence(ctx); err != nil {
		t.Fatal(err)
	}
	p, err := observer.RemotePresence(ctx, []string{left, stays})
	if err != nil {
		t.Fatal(err)
	}
	if p[left].Connections != 0 || p[stays].Connections != 1 {
		t.Fatalf("after the stalled replica's return: %+v, want the gateway that left at 0 and the other at 1", p)
	}
}

// TestCrashedReplicaStopsCountingAtOnce: a replica that crashed kept
// counting until its lease expired (15 s by default): its gateways showed
// active, and one at its connection cap was refused on every other replica
// when it came back. A replica's row names its listener's session; once
// the database has seen that session close, the replica is dead, lease or
// not. One whose session is open, or that names none (an older version),
// is judged by its lease.
func TestCrashedReplicaStopsCountingAtOnce(t *testing.T) {
	if !pgtest.Postgres() {
		t.Skip("PostgreSQL: replicas share a database only there")
	}
	ctx := context.Background()
	cfg := testConfig(freshDSN(t))
	cfg.ReplicaID = "observer"
	db, err := Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	o := mustOrg(t, db)
	gw := mustGateway(t, db, o.ID, "gw").ID
	// A session that is open, and one that ended (the crashed replica's).
	open, err := db.write.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer open.Close()
	var livePID, deadPID int32
	if err := open.QueryRowContext(ctx, `SELECT pg_backend_pid()`).Scan(&livePID); err != nil {
		t.Fatal(err)
	}
	gone, err := db.write.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := gone.QueryRowContext(ctx, `SELECT pg_backend_pid()`).Scan(&deadPID); err != nil {
		t.Fatal(err)
	}
	if _, err := db.write.ExecContext(ctx, `SELECT pg_terminate_backend($1)`, deadPID); err != nil {
		t.Fatal(err)
	}
	gone.Close()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		var n int
		if err := db.write.QueryRowContext(ctx, `SELECT COUNT(*) FROM pg_stat_activity WHERE pid = $1`, deadPID).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the terminated session is still listed")
		}
	}
	now := db.clock()
	for _, r := range []struct {
		id    string
		pid   any
		conns int
	}{{"crashed", deadPID, 4}, {"alive", livePID, 2}, {"older", nil, 1}} {
		if _, err := db.write.ExecContext(ctx, `INSERT INTO replicas (id, started_at, renewed_at, listener_pid) VALUES ($1, $2, $2, $3)`,
			r.id, formatTime(now), r.pid); err != nil {
			t.Fatal(err)
		}
		if _, err := db.write.ExecContext(ctx, `INSERT INTO gateway_connections (gateway_id, replica_id, connections) VALUES ($1, $2, $3)`,
			gw, r.id, r.conns); err != nil {
			t.Fatal(err)
		}
	}
	p, err := db.RemotePresence(ctx, []string{gw})
	if err != nil || p[gw].Connections != 3 {
		t.Fatalf("remote connections %+v (%v), want 3: the live and the older replica's, not the crashed one's", p[gw], err)
	}
	holding, err := db.ReplicasHolding(ctx, []string{gw})
	if err != nil || len(holding) != 2 || holding["crashed"] {
		t.Fatalf("replicas holding the gateway: %v (%v)", holding, err)
	}
	live, err := db.LiveReplicas(ctx)
	if err != nil || len(live) != 2 || live["crashed"] {
		t.Fatalf("live replicas: %v (%v)", live, err)
	}
	// The observer's own listener named its session.
	var pid *int32
	if err := db.write.QueryRowContext(ctx, `SELECT listener_pid FROM replicas WHERE id = 'observer'`).Scan(&pid); err != nil || pid == nil || *pid == 0 {
		t.Fatalf("the observer's listener session: %v (%v)", pid, err)
	}
}

// TestSweptReplicaRecordsDeliveries: a replica stalled past twice its lease
// is swept by the others. Back, it delivered the changes it had heard
// before it renewed its lease, and recording them failed: the wait for a
// second-generation gateway's acknowledgement names the replica, whose row
// was gone (a foreign key), so the whole batch was refused, the
// first-generation deliveries in it too, and the rows stayed PENDING
// although delivered. Found by TestReplicasRandomized with a frozen
// replica. The replica comes back first (its row and connections written
// again), then records them.
func TestSweptReplicaRecordsDeliveries(t *testing.T) {
	if !pgtest.Postgres() {
		t.Skip("PostgreSQL: replicas share a database only there")
	}
	ctx := context.Background()
	dsn := freshDSN(t)
	open := func(id string) *DB {
		cfg := testConfig(dsn)
		cfg.ReplicaID, cfg.Lease = id, 10*time.Second
		db, err := Open(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		return db
	}
	swept, observer := open("swept"), open("observer")
	o := mustOrg(t, observer)
	gen1, gen2 := mustGateway(t, observer, o.ID, "gen1").ID, mustGateway(t, observer, o.ID, "gen2").ID
	api := mustAPI(t, observer, o.ID)
	_, c, err := observer.Deploy(ctx, o.ID, api, "", []DeployTarget{{GatewayID: gen1}, {GatewayID: gen2}}, func(*Revision) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	swept.NotePresence(gen1, 1)
	swept.NotePresence(gen2, 1)
	if err := swept.flushPresence(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := observer.write.ExecContext(ctx, `DELETE FROM replicas WHERE id = 'swept'`); err != nil {
		t.Fatal(err)
	}
	var ds []Delivery
	for _, d := range c.Deployments {
		status := StatusDelivered
		if d.GatewayID == gen2 {
			status = StatusDeploying
		}
		ds = append(ds, Delivery{APIID: d.APIID, GatewayID: d.GatewayID, DeploymentID: d.DeploymentID, Status: status})
	}
	if err := swept.RecordDeliveries(ctx, ds); err != nil {
		t.Fatalf("the swept replica's deliveries: %v", err)
	}
	st, err := observer.DeploymentStatuses(ctx, api, []string{gen1, gen2})
	if err != nil {
		t.Fatal(err)
	}
	if st[gen1].Status != StatusDelivered || st[gen2].Status != StatusDeploying {
		t.Fatalf("after the swept replica delivered: gen1 %s, gen2 %s; want %s and %s",
			st[gen1].Status, st[gen2].Status, StatusDelivered, StatusDeploying)
	}
	// It is back, with its connections (written with its next round).
	if err := swept.flushPresence(ctx); err != nil {
		t.Fatal(err)
	}
	if live, err := observer.LiveReplicas(ctx); err != nil || !live["swept"] {
		t.Fatalf("live replicas seen by the observer: %v, %v; want the swept one back", live, err)
	}
	if p, err := observer.RemotePresence(ctx, []string{gen1, gen2}); err != nil || p[gen1].Connections != 1 || p[gen2].Connections != 1 {
		t.Fatalf("the swept replica's connections seen by the observer: %+v, %v; want 1 each", p, err)
	}
}
