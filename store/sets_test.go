package store

import (
	"context"
	"fmt"
	"syscall"
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

// BenchmarkDeploymentRows measures what the store spends per target gateway
// on one deployment to 5,000 gateways of the first generation, step by
// step: recording the deployment, recording its deliveries, and writing the
// downloads' fetch times. Each iteration is a
// redeployment of the same API (the rows exist, as in a fleet's steady
// state). Reported per target gateway, in the process's CPU time (user and
// system), which barely depends on what else runs on the machine.
func BenchmarkDeploymentRows(b *testing.B) {
	const n = 5000
	ctx := context.Background()
	db := MustOpen(b)
	pauseBackground(db)
	org := mustOrg(b, db)
	projects, _, err := db.Projects(ctx, org.ID, Page{Limit: 1})
	if err != nil {
		b.Fatal(err)
	}
	a, err := db.CreateAPI(ctx, &API{OrganizationID: org.ID, ProjectID: projects[0].ID, Name: "a", Context: "/a", Version: "v1",
		BackendServices: []BackendService{{Name: "b", Endpoints: []Endpoint{{URL: "https://b"}}}}})
	if err != nil {
		b.Fatal(err)
	}
	targets := make([]DeployTarget, n)
	for i := range targets {
		targets[i].GatewayID = mustGateway(b, db, org.ID, fmt.Sprintf("gw-%d", i)).ID
	}
	var deploy, deliver, flush time.Duration
	b.ResetTimer()
	for b.Loop() {
		t0 := processCPU(b)
		rev, change, err := db.Deploy(ctx, org.ID, a.ID, "", targets, func(*Revision) error { return nil })
		if err != nil {
			b.Fatal(err)
		}
		t1 := processCPU(b)
		ds := make([]Delivery, n)
		for i, d := range change.Deployments {
			ds[i] = Delivery{APIID: a.ID, GatewayID: d.GatewayID, DeploymentID: d.DeploymentID, Status: StatusDelivered}
		}
		if err := db.RecordDeliveries(ctx, ds); err != nil {
			b.Fatal(err)
		}
		t2 := processCPU(b)
		for _, d := range change.Deployments {
			db.MarkFetched(d.GatewayID, map[string]string{a.ID: rev.ID})
		}
		if err := db.flushFetched(ctx); err != nil {
			b.Fatal(err)
		}
		deploy, deliver, flush = deploy+t1-t0, deliver+t2-t1, flush+processCPU(b)-t2
	}
	per := func(d time.Duration) float64 { return float64(d.Microseconds()) / float64(b.N) / n }
	b.ReportMetric(per(deploy), "µs-cpu-deploy/gw")
	b.ReportMetric(per(deliver), "µs-cpu-deliver/gw")
	b.ReportMetric(per(flush), "µs-cpu-fetched/gw")
	b.ReportMetric(0, "ns/op")
}

// processCPU is the CPU time the process has used so far.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
