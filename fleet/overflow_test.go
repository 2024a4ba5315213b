package fleet

import (
	"context"
	"testing"
	"time"

	"platform-api/store"
)

// connectedFixture is a store with an organization, a gateway and an API,
// a fleet over it, and one first-generation connection of the gateway, in
// memory, past its connection.ack.
func connectedFixture(t *testing.T) (*store.DB, *Fleet, *memTransport, *store.Organization, *store.Gateway, *store.API) {
	t.Helper()
	db, org, gw, a := newFixture(t)
	f := New(Options{Store: db, GenerationGrace: time.Millisecond})
	t.Cleanup(f.Close)
	tr := serveMem(t, f, org, gw)
	for _, c := range f.Hub().Conns(gw.ID) {
		<-c.GenerationKnown() // the grace has passed: a deploy reaches it directly
	}
	return db, f, tr, org, gw, a
}

// TestFollowUpOverflowResendsState: when the queue of other replicas'
// changes to follow up was full, a change was dropped silently: its
// deliveries here were never recorded (52,680 rows stayed PENDING in the
// attack) and nothing repaired them. The gateways of a change that finds
// no room are sent their whole state again, and the overflow is counted.
func TestFollowUpOverflowResendsState(t *testing.T) {
	ctx := context.Background()
	_, f, tr, org, gw, a := connectedFixture(t)
	out, err := f.Deploy(ctx, org.ID, a.ID, "", []store.DeployTarget{{GatewayID: gw.ID}}, func(*store.Revision) error { return nil }, 0)
	if err != nil {
		t.Fatal(err)
	}
	if ev := tr.next(t); ev["type"] != "api.deployed" {
		t.Fatalf("deploy event %v", ev)
	}

	// The follow-up worker stops; its queue fills up.
	f.Close()
	for len(f.followUps) < cap(f.followUps) {
		f.followUps <- followUp{c: &store.Change{Kind: store.ChangeDeployed}}
	}
	dep := &store.Deployment{APIID: a.ID, GatewayID: gw.ID, DeploymentID: out[0].DeploymentID, RevisionID: out[0].RevisionID,
		State: store.StateDeployed, PerformedAt: time.Now()}
	f.publish(&store.Change{ID: "remote-1", Kind: store.ChangeDeployed, Origin: "another replica", Deployments: []*store.Deployment{dep}})
	if n := f.Overflowed.Load(); n != 1 {
		t.Fatalf("overflowed %d, want 1", n)
	}
	// The live event, then the gateway's whole state again.
	if ev := tr.next(t); ev["type"] != "api.deployed" {
		t.Fatalf("live event %v", ev)
	}
	if ev := tr.next(t); ev["type"] != "api.deployed" || ev["payload"].(map[string]any)["apiId"] != a.ID {
		t.Fatalf("state sent again: %v", ev)
	}
}

// TestDeliveryRecordedWhenTheClientLeaves: a deploy whose client went away
// before the answer left its first-generation deliveries PENDING although
// they were delivered: the report was abandoned with the request's
// context. What was delivered is recorded whether the client stays or not,
// for an undeploy too.
func TestDeliveryRecordedWhenTheClientLeaves(t *testing.T) {
	db, f, tr, org, gw, a := connectedFixture(t)
	ctx, cancel := context.WithCancel(context.Background())
	db.AfterCommit = cancel // the client leaves as soon as the deployment is made
	_, err := f.Deploy(ctx, org.ID, a.ID, "", []store.DeployTarget{{GatewayID: gw.ID}}, func(*store.Revision) error { return nil }, 0)
	db.AfterCommit = nil
	if err != nil {
		t.Fatal(err)
	}
	if ev := tr.next(t); ev["type"] != "api.deployed" {
		t.Fatalf("deploy event %v", ev)
	}
	st, err := db.DeploymentStatuses(context.Background(), a.ID, []string{gw.ID})
	if err != nil {
		t.Fatal(err)
	}
	if got := st[gw.ID].Status; got != store.StatusDelivered {
		t.Fatalf("deployment %s after the client left, want %s", got, store.StatusDelivered)
	}

	// An undeploy whose client leaves as early.
	ctx, cancel = context.WithCancel(context.Background())
	db.AfterCommit = cancel
	err = f.Undeploy(ctx, org.ID, a.ID, gw.ID)
	db.AfterCommit = nil
	if err != nil {
		t.Fatal(err)
	}
	if ev := tr.next(t); ev["type"] != "api.undeployed" {
		t.Fatalf("undeploy event %v", ev)
	}
	if st, err = db.DeploymentStatuses(context.Background(), a.ID, []string{gw.ID}); err != nil {
		t.Fatal(err)
	}
	if got := st[gw.ID].Status; got != store.StatusUndeployed {
		t.Fatalf("undeployment %s after the client left, want %s", got, store.StatusUndeployed)
	}
}
