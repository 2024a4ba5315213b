package store

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"platform-api/store/pgtest"
)

// TestGatewayDeletionDoesNotDeadlock: a gateway's deletion took its own
// row, then (the cascade) its deployment rows; the writer of download and
// last-seen times took deployment rows, then gateway rows. Deleting
// gateways while other gateways' downloads were written deadlocked (13
// times in a run of three replicas and 3,000 gateways, each a second lost
// to deadlock_timeout). Both take deployments first now.
func TestGatewayDeletionDoesNotDeadlock(t *testing.T) {
	if !pgtest.Postgres() {
		t.Skip("PostgreSQL: SQLite has one writer")
	}
	ctx := context.Background()
	db := MustOpen(t)
	pauseBackground(db)
	org := mustOrg(t, db)
	const apis, gateways = 3, 30
	var gws []string
	var targets []DeployTarget
	for i := range gateways {
		gws = append(gws, mustGateway(t, db, org.ID, fmt.Sprintf("gw-%d", i)).ID)
		targets = append(targets, DeployTarget{GatewayID: gws[i]})
	}
	revisions := map[string]string{}
	for range apis {
		api := mustAPI(t, db, org.ID)
		rev, _, err := db.Deploy(ctx, org.ID, api, "", targets, func(*Revision) error { return nil })
		if err != nil {
			t.Fatal(err)
		}
		revisions[api] = rev.ID
	}
	for len(gws) > 0 {
		gone := gws[0]
		gws = gws[1:]
		// The downloads of every gateway, the one being deleted among
		// them, are written while it is deleted.
		for _, gw := range append([]string{gone}, gws...) {
			db.MarkFetched(gw, revisions)
			db.MarkSeen(gw, time.Now())
		}
		var wg sync.WaitGroup
		var flushErr, deleteErr error
		wg.Go(func() { flushErr = db.flushFetched(ctx) })
		wg.Go(func() { _, deleteErr = db.DeleteGateway(ctx, org.ID, gone) })
		wg.Wait()
		if flushErr != nil || deleteErr != nil {
			t.Fatalf("flush: %v; delete: %v", flushErr, deleteErr)
		}
		if deadlocks, _ := db.Aborts(); deadlocks > 0 {
			t.Fatalf("%d deadlocks between a gateway's deletion and the writing of downloads, with %d gateways left", deadlocks, len(gws))
		}
	}
}
