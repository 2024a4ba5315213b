package fleet

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"platform-api/store"
)

// testSource is a consumer feature whose state is one event per API.
type testSource struct {
	mu     sync.Mutex
	orgID  string
	pulled int
}

func (s *testSource) APIState(_ context.Context, orgID, apiID string) ([]*store.ConsumerEvent, error) {
	ev, err := store.NewConsumerEvent("test.state", orgID, apiID, "", map[string]string{"apiId": apiID})
	return []*store.ConsumerEvent{ev}, err
}

func (s *testSource) AfterKeysPulled(_ context.Context, orgID, gatewayID string) ([]*store.ConsumerEvent, error) {
	s.mu.Lock()
	s.pulled++
	s.mu.Unlock()
	ev, err := store.NewConsumerEvent("test.pulled", orgID, "", "", map[string]string{"gatewayId": gatewayID})
	return []*store.ConsumerEvent{ev}, err
}

// TestConsumerEvents: an API's consumer events reach a second-generation
// connection only where the API is deployed, its state right after its
// api.deployed, later events in commit order with their userId;
// organization events reach it anyway; what follows a key pull is sent
// once the pull is noted.
func TestConsumerEvents(t *testing.T) {
	ctx := context.Background()
	db, org, gw, a := newFixture(t)
	src := &testSource{}
	f := New(Options{Store: db, GenerationGrace: time.Second, Consumers: []ConsumerSource{src}})
	t.Cleanup(f.Close)
	if err := f.ReportManifest(ctx, gw.ID, org.ID, &store.Manifest{Version: "1.2.0", FunctionalityType: "regular"}); err != nil {
		t.Fatal(err)
	}
	tr := serveMem(t, f, org, gw)
	record := func(typ, apiID, user string) {
		t.Helper()
		ev, err := store.NewConsumerEvent(typ, org.ID, apiID, user, map[string]string{"n": typ})
		if err != nil {
			t.Fatal(err)
		}
		if err := db.RecordConsumerEvents(ctx, ev); err != nil {
			t.Fatal(err)
		}
	}
	// The gateway pulls its keys as it connects; until then, events wait
	// (the pull's answer replaces what the gateway holds).
	record("test.early", "", "")
	select {
	case f := <-tr.frames:
		t.Fatalf("sent before the pull: %s", f)
	case <-time.After(200 * time.Millisecond):
	}
	if err := f.ConsumersPulled(ctx, gw.ID); err != nil {
		t.Fatal(err)
	}
	for _, typ := range []string{"test.pulled", "test.early"} {
		if ev := tr.next(t); ev["type"] != typ {
			t.Fatalf("got %v, want %s", ev, typ)
		}
	}
	// Not deployed yet: the API's event goes nowhere; the organization's does.
	record("test.before", a.ID, "")
	record("test.org", "", "")
	if ev := tr.next(t); ev["type"] != "test.org" {
		t.Fatalf("got %v, want the organization's event", ev)
	}
	if _, err := f.Deploy(ctx, org.ID, a.ID, "", []store.DeployTarget{{GatewayID: gw.ID}}, func(*store.Revision) error { return nil }, 0); err != nil {
		t.Fatal(err)
	}
	if ev := tr.next(t); ev["type"] != EventDeployed {
		t.Fatalf("got %v, want api.deployed", ev)
	}
	if ev := tr.next(t); ev["type"] != "test.state" {
		t.Fatalf("got %v, want the API's state right after api.deployed", ev)
	}
	for _, typ := range []string{"test.1", "test.2", "test.3"} {
		record(typ, a.ID, "alice/"+typ)
	}
	for _, typ := range []string{"test.1", "test.2", "test.3"} {
		if ev := tr.next(t); ev["type"] != typ || ev["userId"] != "alice/"+typ {
			t.Fatalf("got %v, want %s with its userId", ev, typ)
		}
	}
	if err := f.ConsumersPulled(ctx, gw.ID); err != nil {
		t.Fatal(err)
	}
	if ev := tr.next(t); ev["type"] != "test.pulled" {
		t.Fatalf("got %v, want what follows a pull", ev)
	}
	// Undeployed: the API's events stop.
	if err := f.Undeploy(ctx, org.ID, a.ID, gw.ID); err != nil {
		t.Fatal(err)
	}
	if ev := tr.next(t); ev["type"] != EventUndeployed {
		t.Fatalf("got %v, want api.undeployed", ev)
	}
	record("test.after", a.ID, "")
	record("test.org2", "", "")
	if ev := tr.next(t); ev["type"] != "test.org2" {
		t.Fatalf("got %v after the undeploy, want only the organization's event", ev)
	}
}

// TestDeleteAPITellsApplications: deleting an API whose key an application
// owns sends that application's new complete key set (application.updated,
// here empty) to the gateways the API ran on, after api.deleted.
func TestDeleteAPITellsApplications(t *testing.T) {
	ctx := context.Background()
	db, org, gw, a := newFixture(t)
	f := New(Options{Store: db, GenerationGrace: time.Second, Consumers: []ConsumerSource{store.ConsumerKeySource{DB: db}}})
	t.Cleanup(f.Close)
	if err := f.ReportManifest(ctx, gw.ID, org.ID, &store.Manifest{Version: "1.2.0", FunctionalityType: "regular"}); err != nil {
		t.Fatal(err)
	}
	app := &store.Application{OrganizationID: org.ID, Name: "shop", DisplayName: "Shop"}
	if err := db.CreateApplication(ctx, app); err != nil {
		t.Fatal(err)
	}
	k := &store.ConsumerKey{OrganizationID: org.ID, APIID: a.ID, Name: "k1", DisplayName: "k1", ApplicationID: &app.ID,
		Hash: strings.Repeat("a", 64), MaskedAPIKey: "aaaa****", CreatedBy: "alice"}
	if err := db.CreateConsumerKey(ctx, k); err != nil {
		t.Fatal(err)
	}
	tr := serveMem(t, f, org, gw)
	if err := f.ConsumersPulled(ctx, gw.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Deploy(ctx, org.ID, a.ID, "", []store.DeployTarget{{GatewayID: gw.ID}}, func(*store.Revision) error { return nil }, 0); err != nil {
		t.Fatal(err)
	}
	for ev := tr.next(t); ev["type"] != EventDeployed; ev = tr.next(t) {
	}
	if err := f.DeleteAPI(ctx, org.ID, a.ID); err != nil {
		t.Fatal(err)
	}
	for ev := tr.next(t); ev["type"] != EventDeleted; ev = tr.next(t) {
	}
	ev := tr.next(t)
	if ev["type"] != store.EventApplicationUpdated {
		t.Fatalf("got %v after api.deleted, want application.updated", ev)
	}
	p, _ := ev["payload"].(map[string]any)
	if m, ok := p["mappings"].([]any); p["applicationUuid"] != app.ID || !ok || len(m) != 0 {
		t.Fatalf("application.updated %v, want %s with no key", ev, app.ID)
	}
}
