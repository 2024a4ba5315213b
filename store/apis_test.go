package store

import (
	"context"
	"errors"
	"testing"
	"time"
)

func testAPI(orgID, projectID string) *API {
	w := 100
	return &API{
		OrganizationID: orgID, ProjectID: projectID, Name: "orders", Context: "/orders", Version: "v1",
		Provider: "admin", Type: "HTTP", LifeCycleStatus: "CREATED", Transport: []string{"https"},
		BackendServices: []BackendService{
			{Name: "a", Endpoints: []Endpoint{{URL: "https://a.internal", Weight: &w}}},
			{Name: "b", Endpoints: []Endpoint{{URL: "https://b.internal"}}},
		},
		Operations: []Operation{
			{Request: &OperationRequest{Method: "GET", Path: "/orders"}},
			{Request: &OperationRequest{Method: "POST", Path: "/orders", BackendServices: []BackendRef{{Name: "b"}}}},
		},
	}
}

func countRows(t *testing.T, db *DB, table string) int {
	t.Helper()
	var n int
	if err := db.read.QueryRow(`SELECT COUNT(*) FROM ` + table).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestCreateAPIRollsBackOnLateFailure makes the very last child row break a
// constraint and then finds no trace of the API: row, backends, operations.
func TestCreateAPIRollsBackOnLateFailure(t *testing.T) {
	db := MustOpen(t)
	ctx := context.Background()
	o := mustOrg(t, db)
	ps, _, _ := db.Projects(ctx, o.ID, Page{Limit: 1})
	a := testAPI(o.ID, ps[0].ID)
	a.Operations = append(a.Operations, Operation{Request: &OperationRequest{Method: "BOGUS", Path: "/x"}})
	if _, err := db.CreateAPI(ctx, a); err == nil {
		t.Fatal("CreateAPI accepted an operation the schema forbids")
	}
	for _, table := range []string{"apis", "api_backend_services", "api_operations"} {
		if n := countRows(t, db, table); n != 0 {
			t.Errorf("%s holds %d rows after a failed create", table, n)
		}
	}
	// The same failure inside an update leaves the stored API as it was.
	a = testAPI(o.ID, ps[0].ID)
	stored, err := db.CreateAPI(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	_, err = db.UpdateAPI(ctx, o.ID, stored.ID, func(a *API) error {
		a.Description = "changed"
		a.Operations = append(a.Operations, Operation{Request: &OperationRequest{Method: "GET", Path: "no-slash"}})
		return nil
	})
	if err == nil {
		t.Fatal("UpdateAPI accepted a path the schema forbids")
	}
	again, err := db.API(ctx, o.ID, stored.ID)
	if err != nil || again.Description != "" || len(again.Operations) != 2 || len(again.BackendServices) != 2 {
		t.Fatalf("after failed update: %+v, %v", again, err)
	}
}

func TestAPIChildrenKeepOrder(t *testing.T) {
	db := MustOpen(t)
	clock := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	db.Now = func() time.Time { clock = clock.Add(time.Second); return clock }
	ctx := context.Background()
	o := mustOrg(t, db)
	ps, _, _ := db.Projects(ctx, o.ID, Page{Limit: 1})
	for i, v := range []string{"v1", "v2", "v3"} {
		a := testAPI(o.ID, ps[0].ID)
		a.Version = v
		if i == 1 {
			a.Operations[0], a.Operations[1] = a.Operations[1], a.Operations[0]
		}
		if _, err := db.CreateAPI(ctx, a); err != nil {
			t.Fatal(err)
		}
	}
	list, total, err := db.APIs(ctx, o.ID, "", Page{Limit: 10})
	if err != nil || total != 3 || len(list) != 3 {
		t.Fatalf("APIs = %d, %d, %v", len(list), total, err)
	}
	if list[0].Version != "v3" || list[1].Operations[0].Request.Method != "POST" || list[2].Operations[0].Request.Method != "GET" ||
		list[2].BackendServices[1].Name != "b" || *list[2].BackendServices[0].Endpoints[0].Weight != 100 {
		t.Fatalf("children out of order: %+v", list)
	}
	if _, err := db.CreateAPI(ctx, testAPI(o.ID, newID())); !errors.Is(err, ErrInvalid) {
		t.Fatalf("unknown project: %v", err)
	}
}

// TestRevisionsArePruned: revisions were never pruned, and every deploy
// stored another copy of the definition. The newest KeepRevisions and the
// deployed ones stay; the rest go in the background.
func TestRevisionsArePruned(t *testing.T) {
	db := MustOpen(t)
	db.keep = 5
	ctx := context.Background()
	o := mustOrg(t, db)
	ps, _, _ := db.Projects(ctx, o.ID, Page{Limit: 1})
	a, err := db.CreateAPI(ctx, apiWithSecrets(o.ID, ps[0].ID))
	if err != nil {
		t.Fatal(err)
	}
	pinned, moving := mustGateway(t, db, o.ID, "pinned"), mustGateway(t, db, o.ID, "moving")
	ok := func(*Revision) error { return nil }
	first, _, err := db.Deploy(ctx, o.ID, a.ID, "", []DeployTarget{{GatewayID: pinned.ID}}, ok)
	if err != nil {
		t.Fatal(err)
	}
	var revs []*Revision
	for range 12 {
		rev, _, err := db.Deploy(ctx, o.ID, a.ID, "", []DeployTarget{{GatewayID: moving.ID}}, ok)
		if err != nil {
			t.Fatal(err)
		}
		revs = append(revs, rev)
	}
	if err := db.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	var n int
	db.read.QueryRow(`SELECT COUNT(*) FROM api_revisions WHERE api_id = $1`, a.ID).Scan(&n)
	if n != 5+1 { // the newest five, and the one still deployed to "pinned"
		t.Fatalf("%d revisions kept", n)
	}
	if _, err := db.Revision(ctx, a.ID, first.ID); err != nil {
		t.Fatalf("the deployed revision was pruned: %v", err)
	}
	if _, _, err := db.Deploy(ctx, o.ID, a.ID, revs[0].ID, []DeployTarget{{GatewayID: moving.ID}}, ok); !errors.Is(err, ErrNotFound) {
		t.Fatalf("rollback to a pruned revision: %v", err)
	}
	if _, _, err := db.Deploy(ctx, o.ID, a.ID, revs[8].ID, []DeployTarget{{GatewayID: moving.ID}}, ok); err != nil {
		t.Fatalf("rollback to a kept revision: %v", err)
	}
}
