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
