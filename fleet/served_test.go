package fleet

import (
	"context"
	"errors"
	"testing"

	"platform-api/store"
)

// TestDownloadAfterADeployIsAnsweredFromMemory: on a store this process
// owns alone (SQLite), the download that follows a deploy learns the
// revision without reading the store (a canceled context makes any read
// fail), and follows redeploys, undeploys and a manifest. With replicas
// (PostgreSQL) it always reads the database.
func TestDownloadAfterADeployIsAnsweredFromMemory(t *testing.T) {
	ctx := context.Background()
	db, org, gw, a := newFixture(t)
	f := New(Options{Store: db})
	t.Cleanup(f.Close)
	none := func(*store.Revision) error { return nil }
	canceled, cancel := context.WithCancel(ctx)
	cancel()
	deploy := func() string {
		t.Helper()
		if _, err := f.Deploy(ctx, org.ID, a.ID, "", []store.DeployTarget{{GatewayID: gw.ID}}, none, 0); err != nil {
			t.Fatal(err)
		}
		d, _, err := db.DeployedRevision(ctx, gw.ID, a.ID)
		if err != nil {
			t.Fatal(err)
		}
		return d.RevisionID
	}
	check := func(wantRev string, wantGen2 bool) {
		t.Helper()
		if _, _, err := f.DeployedRevision(ctx, gw.ID, a.ID); err != nil { // learns the generation
			t.Fatal(err)
		}
		d, gen2, err := f.DeployedRevision(canceled, gw.ID, a.ID)
		if db.Replicated() {
			if err == nil {
				t.Fatal("with replicas, the revision was not read from the database")
			}
			d, gen2, err = f.DeployedRevision(ctx, gw.ID, a.ID)
		}
		if err != nil {
			t.Fatalf("after a deploy: %v", err)
		}
		if d.RevisionID != wantRev || gen2 != wantGen2 {
			t.Fatalf("got revision %s (gen2 %v), want %s (gen2 %v)", d.RevisionID, gen2, wantRev, wantGen2)
		}
	}
	first := deploy()
	check(first, false)
	second := deploy()
	if second == first {
		t.Fatal("the redeploy made no new revision")
	}
	check(second, false)

	if err := f.ReportManifest(ctx, gw.ID, org.ID, &store.Manifest{Version: "1.0.0", FunctionalityType: "regular"}); err != nil {
		t.Fatal(err)
	}
	check(second, true)

	if err := f.Undeploy(ctx, org.ID, a.ID, gw.ID); err != nil {
		t.Fatal(err)
	}
	if _, _, err := f.DeployedRevision(ctx, gw.ID, a.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("after the undeploy: %v, want not found", err)
	}
}
