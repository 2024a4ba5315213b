package store

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// pauseBackground stops the store's background work (the flush loop), so
// that the statements counted are only the test's. Close still works.
func pauseBackground(db *DB) {
	close(db.stopFlush)
	<-db.flushDone
	db.stopFlush = make(chan struct{})
}

// TestDeployStatementsDoNotGrowWithTargets: a deployment's writes are
// set-based. Recording it, recording its deliveries (first and second
// generation alike) and writing the downloads' fetch times and the
// gateways' last-seen times execute as many statements for 1,000 target
// gateways as for 10, and every row is written.
func TestDeployStatementsDoNotGrowWithTargets(t *testing.T) {
	ctx := context.Background()
	db := MustOpen(t)
	pauseBackground(db)
	org := mustOrg(t, db)
	projects, _, err := db.Projects(ctx, org.ID, Page{Limit: 1})
	if err != nil {
		t.Fatal(err)
	}
	type counts struct{ deploy, deliver, flush int64 }
	run := func(n int) counts {
		t.Helper()
		a, err := db.CreateAPI(ctx, &API{OrganizationID: org.ID, ProjectID: projects[0].ID, Name: fmt.Sprintf("a%d", n),
			Context: fmt.Sprintf("/a%d", n), Version: "v1", BackendServices: []BackendService{{Name: "b", Endpoints: []Endpoint{{URL: "https://b"}}}}})
		if err != nil {
			t.Fatal(err)
		}
		targets := make([]DeployTarget, n)
		for i := range targets {
			targets[i].GatewayID = mustGateway(t, db, org.ID, fmt.Sprintf("gw-%d-%d", n, i)).ID
		}
		var c counts
		before := db.Statements()
		rev, change, err := db.Deploy(ctx, org.ID, a.ID, "", targets, func(*Revision) error { return nil })
		if err != nil {
			t.Fatalf("%d targets: deploy: %v", n, err)
		}
		c.deploy = db.Statements() - before
		if len(change.Deployments) != n {
			t.Fatalf("%d targets: %d deployments recorded", n, len(change.Deployments))
		}
		// Half first generation (DELIVERED), half second (DEPLOYING: an
		// acknowledgement will follow, which PostgreSQL notes per replica).
		ds := make([]Delivery, n)
		for i, d := range change.Deployments {
			ds[i] = Delivery{APIID: a.ID, GatewayID: d.GatewayID, DeploymentID: d.DeploymentID, Status: StatusDelivered}
			if i%2 == 1 {
				ds[i].Status = StatusDeploying
			}
		}
		before = db.Statements()
		if err := db.RecordDeliveries(ctx, ds); err != nil {
			t.Fatalf("%d targets: record deliveries: %v", n, err)
		}
		c.deliver = db.Statements() - before
		at := time.Now().Add(-time.Minute).UTC().Truncate(time.Microsecond)
		for _, d := range change.Deployments {
			db.MarkFetched(d.GatewayID, map[string]string{a.ID: rev.ID})
			db.MarkSeen(d.GatewayID, at)
		}
		before = db.Statements()
		if err := db.flushFetched(ctx); err != nil {
			t.Fatal(err)
		}
		c.flush = db.Statements() - before

		ids := make([]string, n)
		for i, tg := range targets {
			ids[i] = tg.GatewayID
		}
		st, err := db.DeploymentStatuses(ctx, a.ID, ids)
		if err != nil {
			t.Fatal(err)
		}
		for i, d := range ds {
			got := st[d.GatewayID]
			if got == nil || got.Status != d.Status || got.DeliveredAt == nil || got.FetchedAt == nil {
				t.Fatalf("%d targets, item %d: want %s, delivered and fetched; got %+v", n, i, d.Status, got)
			}
		}
		for _, i := range []int{0, n - 1} {
			gs, _, err := db.GatewayStatuses(ctx, org.ID, ids[i], Page{Limit: 1})
			if err != nil || gs[0].LastSeen == nil || !gs[0].LastSeen.Equal(at) {
				t.Fatalf("%d targets, gateway %d: last seen %v (%v), want %v", n, i, gs, err, at)
			}
		}
		if db.dialect == dialectPostgres {
			var waits int
			if err := db.read.QueryRowContext(ctx, `SELECT COUNT(*) FROM ack_waits WHERE api_id = $1`, a.ID).Scan(&waits); err != nil {
				t.Fatal(err)
			}
			if waits != n/2 {
				t.Fatalf("%d targets: %d acknowledgements awaited, want %d", n, waits, n/2)
			}
		}
		return c
	}
	small, large := run(10), run(1000)
	if small != large || small.deploy == 0 || small.deliver == 0 || small.flush == 0 {
		t.Fatalf("statements (deploy, deliveries, fetch times): %+v for 10 targets, %+v for 1,000", small, large)
	}
	t.Logf("statements (deploy, deliveries, fetch times): %+v for 10 and for 1,000 targets", small)
}
