package store

import (
	"context"
	"testing"
)

// TestAckBeforeDelivery: a gateway can acknowledge a deployment before the
// replica that sent it has recorded the delivery (the event goes out
// first). The late record neither undoes the acknowledgement nor leaves
// behind a wait for an acknowledgement that came already, and an
// acknowledgement is final for its replica whatever that replica recorded.
func TestAckBeforeDelivery(t *testing.T) {
	ctx := context.Background()
	db := MustOpen(t)
	org := mustOrg(t, db)
	projects, _, err := db.Projects(ctx, org.ID, Page{Limit: 1})
	if err != nil {
		t.Fatal(err)
	}
	gw := &Gateway{OrganizationID: org.ID, Name: "edge", DisplayName: "edge", Vhost: "gw.example.com", FunctionalityType: "regular"}
	if err := db.CreateGateway(ctx, gw); err != nil {
		t.Fatal(err)
	}
	a, err := db.CreateAPI(ctx, &API{OrganizationID: org.ID, ProjectID: projects[0].ID, Name: "a", Context: "/a", Version: "v1",
		BackendServices: []BackendService{{Name: "b", Endpoints: []Endpoint{{URL: "https://b"}}}}})
	if err != nil {
		t.Fatal(err)
	}
	deploy := func() *Deployment {
		t.Helper()
		_, change, err := db.Deploy(ctx, org.ID, a.ID, "", []DeployTarget{{GatewayID: gw.ID}}, func(*Revision) error { return nil })
		if err != nil {
			t.Fatal(err)
		}
		return change.Deployments[0]
	}
	status := func(d *Deployment) string {
		t.Helper()
		st, err := db.DeploymentStatuses(ctx, a.ID, []string{gw.ID})
		if err != nil || st[gw.ID] == nil || st[gw.ID].DeploymentID != d.DeploymentID {
			t.Fatalf("statuses %v %v", st, err)
		}
		return st[gw.ID].Status
	}
	waits := func() int {
		t.Helper()
		if db.dialect != dialectPostgres {
			return 0 // SQLite has one process: no table of waits
		}
		var n int
		if err := db.read.QueryRowContext(ctx, `SELECT COUNT(*) FROM ack_waits`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	ack := func(d *Deployment) {
		t.Helper()
		if err := db.ApplyAcks(ctx, []Ack{{APIID: a.ID, GatewayID: gw.ID, DeploymentID: d.DeploymentID, Final: true}}); err != nil {
			t.Fatal(err)
		}
	}
	record := func(d *Deployment) {
		t.Helper()
		if err := db.RecordDeliveries(ctx, []Delivery{{APIID: a.ID, GatewayID: gw.ID, DeploymentID: d.DeploymentID, Status: StatusDeploying}}); err != nil {
			t.Fatal(err)
		}
	}

	d := deploy()
	ack(d)
	record(d)
	if s, n := status(d), waits(); s != StatusDeployed || n != 0 {
		t.Fatalf("acknowledged, then recorded: %s with %d waits", s, n)
	}
	d = deploy()
	record(d)
	ack(d)
	if s, n := status(d), waits(); s != StatusDeployed || n != 0 {
		t.Fatalf("recorded, then acknowledged: %s with %d waits", s, n)
	}
}
