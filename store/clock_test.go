package store

import (
	"context"
	"slices"
	"testing"
	"time"

	"platform-api/store/pgtest"
)

// skewedReplicas opens replicas on one PostgreSQL schema, each with its
// wall clock off by the given skew (the process clock's monotonic reading
// dropped, as a clock set wrong by hand has nothing else to go by).
func skewedReplicas(t *testing.T, lease time.Duration, skews map[string]time.Duration) map[string]*DB {
	t.Helper()
	if !pgtest.Postgres() {
		t.Skip("PostgreSQL: replicas share a database only there")
	}
	dsn := freshDSN(t)
	out := map[string]*DB{}
	for id, skew := range skews {
		cfg := testConfig(dsn)
		cfg.ReplicaID, cfg.Lease, cfg.AckTimeout = id, lease, 10*time.Second
		cfg.Clock = func() time.Time { return time.Now().Add(skew).Round(0) }
		db, err := Open(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		out[id] = db
	}
	return out
}

// TestReplicaBehindIsAlive: each replica wrote its lease with its own
// clock and read the others' against it, so a replica 20 s behind looked
// dead: its connections did not count, and its gateways showed inactive.
// Leases are on the database's clock now.
func TestReplicaBehindIsAlive(t *testing.T) {
	ctx := context.Background()
	rs := skewedReplicas(t, 10*time.Second, map[string]time.Duration{"observer": 0, "behind": -20 * time.Second})
	observer, behind := rs["observer"], rs["behind"]
	if off := behind.clockOffset(); off > -19*time.Second || off < -21*time.Second {
		t.Fatalf("the replica 20 s behind reads its offset to the database as %v", off)
	}
	o := mustOrg(t, observer)
	gw := mustGateway(t, observer, o.ID, "edge").ID
	behind.NotePresence(gw, 1)
	if err := behind.flushPresence(ctx); err != nil {
		t.Fatal(err)
	}
	behind.fetchMu.Lock()
	behind.renewedAt = time.Time{} // due: the renewal is what the others judge
	behind.fetchMu.Unlock()
	if err := behind.renewLease(ctx); err != nil {
		t.Fatal(err)
	}
	live, err := observer.LiveReplicas(ctx)
	if err != nil || !live["behind"] {
		t.Fatalf("live replicas seen by the observer: %v, %v; want the one behind among them", live, err)
	}
	p, err := observer.RemotePresence(ctx, []string{gw})
	if err != nil || p[gw].Connections != 1 {
		t.Fatalf("the observer counts %+v (%v) of the gateway connected to the replica behind, want 1", p[gw], err)
	}
	// And the other way round: the replica behind does not take the
	// observer's fresh lease for one that runs 20 s longer.
	if live, err := behind.LiveReplicas(ctx); err != nil || !live["observer"] {
		t.Fatalf("live replicas seen by the replica behind: %v, %v", live, err)
	}
}

// TestAckTimeoutAcrossSkewedReplicas: acknowledgement timeouts compared a
// deployment's sent_at, stamped by the sending replica's clock, with the
// expiring replica's: one 12 s ahead failed another replica's deployment 2
// s after it was sent instead of 10. Both sides are the database's clock
// now; a deployment sent 11 s ago is still timed out.
func TestAckTimeoutAcrossSkewedReplicas(t *testing.T) {
	ctx := context.Background()
	rs := skewedReplicas(t, 10*time.Second, map[string]time.Duration{"sender": 0, "ahead": 12 * time.Second})
	sender, ahead := rs["sender"], rs["ahead"]
	o := mustOrg(t, sender)
	fresh, old := mustGateway(t, sender, o.ID, "fresh").ID, mustGateway(t, sender, o.ID, "old").ID
	api := mustAPI(t, sender, o.ID)
	_, c, err := sender.Deploy(ctx, o.ID, api, "", []DeployTarget{{GatewayID: fresh}, {GatewayID: old}}, func(*Revision) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	var ds []Delivery
	for _, d := range c.Deployments {
		ds = append(ds, Delivery{APIID: d.APIID, GatewayID: d.GatewayID, DeploymentID: d.DeploymentID, Status: StatusDeploying})
	}
	if err := sender.RecordDeliveries(ctx, ds); err != nil {
		t.Fatal(err)
	}
	// Both are connected to the sender (a gateway connected nowhere waits
	// for its return instead of timing out).
	sender.NotePresence(fresh, 1)
	sender.NotePresence(old, 1)
	if err := sender.flushPresence(ctx); err != nil {
		t.Fatal(err)
	}
	// One of them was sent 11 s ago by the database's clock.
	if _, err := sender.write.ExecContext(ctx, `UPDATE deployments SET sent_at = $1 WHERE gateway_id = $2`,
		formatTime(sender.clock().Add(-11*time.Second)), old); err != nil {
		t.Fatal(err)
	}
	// The replica ahead expires what is due, as its background round does.
	ahead.fetchMu.Lock()
	ahead.expireAt = time.Now().Add(-time.Hour)
	ahead.fetchMu.Unlock()
	if err := ahead.expireDue(ctx); err != nil {
		t.Fatal(err)
	}
	st, err := sender.DeploymentStatuses(ctx, api, []string{fresh, old})
	if err != nil {
		t.Fatal(err)
	}
	if st[fresh].Status != StatusDeploying {
		t.Fatalf("a deployment sent a moment ago, judged by a replica 12 s ahead: %s %s, want DEPLOYING", st[fresh].Status, st[fresh].ErrorCode)
	}
	if st[old].Status != StatusFailed || st[old].ErrorCode != ErrorDeploymentTimeout {
		t.Fatalf("a deployment sent 11 s ago with a 10 s timeout: %s %s, want FAILED", st[old].Status, st[old].ErrorCode)
	}
}

// TestStampsAndSyncAcrossSkewedReplicas: a replica 2 s behind stamped its
// changes 2 s in the past: a later deploy of another API was older than
// what the gateway held, and its startup sync with since set to that
// missed it. Changes are stamped on the database's clock.
func TestStampsAndSyncAcrossSkewedReplicas(t *testing.T) {
	ctx := context.Background()
	rs := skewedReplicas(t, 10*time.Second, map[string]time.Duration{"right": 0, "behind": -2 * time.Second, "ahead": 2 * time.Second})
	o := mustOrg(t, rs["right"])
	gw := mustGateway(t, rs["right"], o.ID, "edge").ID
	var last time.Time
	for i, r := range []string{"ahead", "right", "behind", "ahead", "behind"} {
		api := mustAPI(t, rs["right"], o.ID)
		_, c, err := rs[r].Deploy(ctx, o.ID, api, "", []DeployTarget{{GatewayID: gw}}, func(*Revision) error { return nil })
		if err != nil {
			t.Fatal(err)
		}
		at := c.Deployments[0].PerformedAt
		if !at.After(last) {
			t.Fatalf("deploy %d, through the replica %s, stamped %v: not after the one before, %v", i, r, at, last)
		}
		if i > 0 {
			// The gateway synced after the one before, and holds its stamp.
			sync, err := rs["right"].GatewaySync(ctx, gw, last)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.ContainsFunc(sync, func(e SyncEntry) bool { return e.APIID == api }) {
				t.Fatalf("deploy %d, through the replica %s, is missing from the sync since the one before", i, r)
			}
		}
		last = at
	}
}

// TestSyncAnswersChangesCommittedLate: a change is stamped when its
// transaction takes the API's lock and commits later. A gateway that
// synced meanwhile, holding a newer stamp of another API, missed it with
// since set to that stamp. The sync reaches back by the longest a
// transaction can take.
func TestSyncAnswersChangesCommittedLate(t *testing.T) {
	if !pgtest.Postgres() {
		t.Skip("PostgreSQL: SQLite runs one write transaction at a time, so none commits behind another's stamp")
	}
	ctx := context.Background()
	db := MustOpen(t)
	o := mustOrg(t, db)
	gw := mustGateway(t, db, o.ID, "edge").ID
	slow, quick := mustAPI(t, db, o.ID), mustAPI(t, db, o.ID)
	stamped, release := make(chan struct{}), make(chan struct{})
	done := make(chan error, 1)
	go func() {
		_, _, err := db.Deploy(ctx, o.ID, slow, "", []DeployTarget{{GatewayID: gw}}, func(*Revision) error {
			close(stamped)
			<-release
			return nil
		})
		done <- err
	}()
	<-stamped
	_, c, err := db.Deploy(ctx, o.ID, quick, "", []DeployTarget{{GatewayID: gw}}, func(*Revision) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	held := c.Deployments[0].PerformedAt // what the gateway holds after a sync now
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	sync, err := db.GatewaySync(ctx, gw, held)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(sync, func(e SyncEntry) bool { return e.APIID == slow }) {
		t.Fatalf("the deploy committed after a newer one is missing from the sync since the newer one: %+v", sync)
	}
}

// mustAPI creates an API in the organization's default project.
func mustAPI(t *testing.T, db *DB, orgID string) string {
	t.Helper()
	ps, _, err := db.Projects(context.Background(), orgID, Page{Limit: 1})
	if err != nil {
		t.Fatal(err)
	}
	a := testAPI(orgID, ps[0].ID)
	a.Version = "v" + newID()[:8]
	a, err = db.CreateAPI(context.Background(), a)
	if err != nil {
		t.Fatal(err)
	}
	return a.ID
}

// TestLastSeenOnTheDatabaseClock: a gateway's lastSeen took its token's
// last use as stamped by the verifying replica's own clock, so a replica
// 20 s behind showed a gateway it had just verified as seen 20 s ago. The
// stamp is on the database's clock now (as is the end of a connection,
// through ClockAt).
func TestLastSeenOnTheDatabaseClock(t *testing.T) {
	ctx := context.Background()
	rs := skewedReplicas(t, 10*time.Second, map[string]time.Duration{"observer": 0, "behind": -20 * time.Second})
	observer, behind := rs["observer"], rs["behind"]
	o := mustOrg(t, observer)
	gw := mustGateway(t, observer, o.ID, "edge").ID
	tok, err := observer.IssueToken(ctx, o.ID, gw)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := behind.VerifyToken(ctx, tok.Token); err != nil {
		t.Fatal(err)
	}
	list, _, err := observer.GatewayStatuses(ctx, o.ID, gw, Page{Limit: 1})
	if err != nil || len(list) != 1 || list[0].LastSeen == nil {
		t.Fatalf("status: %+v, %v", list, err)
	}
	if lag := observer.clock().Sub(*list[0].LastSeen); lag > 5*time.Second || lag < -5*time.Second {
		t.Fatalf("lastSeen is %v off the database's clock, want within 5 s", lag)
	}
}

// TestClockAtIsStable: ClockAt read the clock twice (the replica's, then
// the process's for the time elapsed), so one moment converted to times
// tens of nanoseconds apart from call to call; truncated to the
// microsecond as rows are, a gateway's lastSeenAt shown live went back a
// microsecond once the connection closed and the same moment was stored.
// (A replica clock set apart, as skewedReplicas' are, is still read twice:
// only tests have one. A new reading of the database's clock, with each
// lease renewal, moves the conversion by that reading's error.)
func TestClockAtIsStable(t *testing.T) {
	db := MustOpen(t)
	// No lease renewal: the clock reading stays the one taken at open.
	pauseBackground(db)
	at := time.Unix(0, time.Now().Add(-time.Second).UnixNano()) // as the hub stamps activity
	first := db.ClockAt(at)
	if lag := db.clock().Sub(first); lag < time.Second || lag > time.Second+100*time.Millisecond {
		t.Fatalf("a moment a second ago converts to %v before the database's clock now", lag)
	}
	for range 10000 {
		if got := db.ClockAt(at); !got.Equal(first) {
			t.Fatalf("ClockAt of one moment gave %v, then %v", first, got)
		}
	}
	// The same when the process is descheduled between its readings of
	// the clocks, as it is now and then on a loaded machine (here 2 ms
	// before each reading of the replica's clock, which is this process's).
	// ClockAt told its clock from a skewed one by the difference of the
	// readings, under 1 ms, and failed this now and then in loaded runs.
	slow := func() time.Time { time.Sleep(2 * time.Millisecond); return time.Now() }
	cfg := testConfig(freshDSN(t))
	cfg.Clock = slow
	db, err := Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	first = db.ClockAt(at)
	for range 20 {
		if got := db.ClockAt(at); !got.Equal(first) {
			t.Fatalf("descheduled between its readings, ClockAt of one moment gave %v, then %v", first, got)
		}
	}
}
