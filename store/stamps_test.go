package store

import (
	"context"
	"sync"
	"testing"
	"time"
)

// TestStampsIncreaseWhateverTheClock: performedAt was the writer's clock,
// read before the API's row lock, and a reconnecting gateway's initial
// state was stamped with the connecting replica's "now"; a clock behind
// (another replica's, or this one's stepped back) stamped a later change
// older than what the gateway held, which then ignored it. Each change and
// each re-send is newer than everything before it for the (gateway, API),
// with the clock running backwards.
func TestStampsIncreaseWhateverTheClock(t *testing.T) {
	ctx := context.Background()
	db := MustOpen(t)
	var mu sync.Mutex
	clock := time.Now().Add(time.Hour)
	db.Now = func() time.Time { // a minute back on every reading
		mu.Lock()
		defer mu.Unlock()
		clock = clock.Add(-time.Minute)
		return clock
	}
	org := mustOrg(t, db)
	projects, _, err := db.Projects(ctx, org.ID, Page{Limit: 1})
	if err != nil {
		t.Fatal(err)
	}
	var gws []string
	for _, name := range []string{"edge-a", "edge-b"} {
		gw := &Gateway{OrganizationID: org.ID, Name: name, DisplayName: name, Vhost: "gw.example.com", FunctionalityType: "regular"}
		if err := db.CreateGateway(ctx, gw); err != nil {
			t.Fatal(err)
		}
		gws = append(gws, gw.ID)
	}
	a, err := db.CreateAPI(ctx, &API{OrganizationID: org.ID, ProjectID: projects[0].ID, Name: "a", Context: "/a", Version: "v1",
		BackendServices: []BackendService{{Name: "b", Endpoints: []Endpoint{{URL: "https://b"}}}}})
	if err != nil {
		t.Fatal(err)
	}
	var last time.Time
	newer := func(what string, at time.Time) {
		t.Helper()
		if !at.After(last) {
			t.Fatalf("%s stamped %v, not after %v", what, at, last)
		}
		last = at
	}
	for range 3 {
		_, c, err := db.Deploy(ctx, org.ID, a.ID, "", []DeployTarget{{GatewayID: gws[0]}, {GatewayID: gws[1]}},
			func(*Revision) error { return nil })
		if err != nil {
			t.Fatal(err)
		}
		if c.Deployments[0].PerformedAt != c.Deployments[1].PerformedAt {
			t.Fatalf("one change, two stamps: %v", c.Deployments) // read back by it on other replicas
		}
		newer("deploy", c.Deployments[0].PerformedAt)
		st, err := db.ResendState(ctx, gws[0])
		if err != nil {
			t.Fatal(err)
		}
		newer("re-send on connect", st.ResendAt)
		c, err = db.Undeploy(ctx, org.ID, a.ID, gws[0])
		if err != nil {
			t.Fatal(err)
		}
		newer("undeploy", c.Deployments[0].PerformedAt)
		if st, err = db.ResendState(ctx, gws[0]); err != nil {
			t.Fatal(err)
		}
		newer("re-send on connect", st.ResendAt)
	}
}
