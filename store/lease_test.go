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
