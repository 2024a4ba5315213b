package store

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
)

func TestWaveSizes(t *testing.T) {
	for _, c := range []struct {
		n     int
		waves []int
		want  []int
	}{
		{1000, []int{1, 10, 50, 100}, []int{10, 100, 500, 1000}},
		{3, []int{1, 50, 100}, []int{1, 2, 3}},
		{3, []int{1, 10, 100}, []int{1, 1, 3}},
		{1, []int{50, 100}, []int{1, 1}},
		{7, []int{100}, []int{7}},
	} {
		if got := WaveSizes(c.n, c.waves); !slices.Equal(got, c.want) {
			t.Errorf("WaveSizes(%d, %v) = %v, want %v", c.n, c.waves, got, c.want)
		}
	}
}

// TestRolloutSteps: a rollout's waves (an empty one dropped), one rollout
// per API, each step taken once, a wave's deploy refused once one of its
// gateways was deployed since it began, and the rollback of what was
// reached.
func TestRolloutSteps(t *testing.T) {
	ctx := context.Background()
	db := MustOpen(t)
	org := mustOrg(t, db)
	projects, _, err := db.Projects(ctx, org.ID, Page{Limit: 1})
	if err != nil {
		t.Fatal(err)
	}
	var gws []string
	for _, name := range []string{"edge-a", "edge-b", "edge-c"} {
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
	targets := func() []*RolloutTarget {
		var out []*RolloutTarget
		for _, g := range gws {
			out = append(out, &RolloutTarget{GatewayID: g})
		}
		return out
	}
	r, err := db.CreateRollout(ctx, &Rollout{OrganizationID: org.ID, APIID: a.ID, Waves: []int{1, 10, 100}, Targets: targets()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(r.Waves, []int{1, 100}) || r.Status != RolloutRunning || r.RevisionID == "" {
		t.Fatalf("created %+v", r)
	}
	if _, err := db.CreateRollout(ctx, &Rollout{OrganizationID: org.ID, APIID: a.ID, Waves: []int{100}, Targets: targets()}, nil); !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), r.ID) {
		t.Fatalf("a second rollout of the API: %v", err)
	}
	if id, err := db.ActiveRollout(ctx, a.ID); id != r.ID || err != nil {
		t.Fatalf("active rollout %q %v", id, err)
	}
	got, err := db.GetRollout(ctx, org.ID, r.ID)
	if err != nil || len(got.Targets) != 3 || got.Targets[0].Wave != 1 || got.Targets[1].Wave != 2 || got.Targets[2].Wave != 2 {
		t.Fatalf("targets before the first wave: %v %+v", err, got)
	}

	if ok, err := db.BeginWave(ctx, r.ID, 0); !ok || err != nil {
		t.Fatalf("begin wave 1: %v %v", ok, err)
	}
	if ok, err := db.BeginWave(ctx, r.ID, 0); ok || err != nil {
		t.Fatalf("wave 1 begun twice: %v %v", ok, err)
	}
	if err := db.CheckWavePending(ctx, r.ID, 1, gws[:1]); err != nil {
		t.Fatalf("wave 1 pending: %v", err)
	}
	if _, _, err := db.Deploy(ctx, org.ID, a.ID, r.RevisionID, []DeployTarget{{GatewayID: gws[0]}}, func(*Revision) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if err := db.CheckWavePending(ctx, r.ID, 1, gws[:1]); !errors.Is(err, ErrWaveMoved) {
		t.Fatalf("wave 1 deployed, checked again: %v", err)
	}
	if ok, err := db.WaveDeployed(ctx, r.ID, 1); !ok || err != nil {
		t.Fatalf("wave 1 deployed: %v %v", ok, err)
	}
	got, err = db.DriveRollout(ctx, r.ID)
	if err != nil || len(got.Targets) != 1 || got.Targets[0].DeploymentID == "" || got.Targets[0].Live == nil ||
		got.Targets[0].Live.DeploymentID != got.Targets[0].DeploymentID || got.Targets[0].HadPrevious {
		t.Fatalf("the driver's view of wave 1: %v %+v", err, got.Targets)
	}

	// Paused, no step of the driver is taken.
	if err := db.ControlRollout(ctx, org.ID, r.ID, ActionPause); err != nil {
		t.Fatal(err)
	}
	if ok, err := db.SettleWave(ctx, r.ID, 1, []Outcome{{GatewayID: gws[0], Outcome: StatusDeployed}}, true, "", ""); ok || err != nil {
		t.Fatalf("a paused rollout settled: %v %v", ok, err)
	}
	if err := db.ControlRollout(ctx, org.ID, r.ID, ActionPause); !errors.Is(err, ErrConflict) {
		t.Fatalf("paused twice: %v", err)
	}
	other := mustOrg(t, db)
	if err := db.ControlRollout(ctx, other.ID, r.ID, ActionResume); !errors.Is(err, ErrNotFound) {
		t.Fatalf("another organization's resume: %v", err)
	}
	if _, err := db.GetRollout(ctx, other.ID, r.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("another organization's read: %v", err)
	}

	// The rollback takes the one gateway reached, which ran nothing.
	back, err := db.Rollback(ctx, org.ID, r.ID)
	if err != nil {
		t.Fatal(err)
	}
	if back.Kind != KindRollback || len(back.Targets) != 1 || back.Targets[0].GatewayID != gws[0] || back.Targets[0].RevisionID != "" {
		t.Fatalf("rollback %+v", back)
	}
	orig, err := db.GetRollout(ctx, org.ID, r.ID)
	if err != nil || orig.Status != RolloutRolledBack || orig.FinishedAt == nil {
		t.Fatalf("rolled back: %v %+v", err, orig)
	}
	if id, _ := db.ActiveRollout(ctx, a.ID); id != back.ID {
		t.Fatalf("active rollout %q, want the rollback", id)
	}
	list, total, err := db.Rollouts(ctx, org.ID, a.ID, Page{Limit: 10})
	if err != nil || total != 2 || len(list) != 2 || list[1].ID != r.ID || len(list[1].Counts) != 2 {
		t.Fatalf("list: %v %d %+v", err, total, list)
	}
}

// TestRolloutRevisionsKept: the revision a gateway ran before a rollout
// reached it is kept past PLATFORM_REVISIONS_KEEP though no gateway runs it
// any more: a rollback deploys it.
func TestRolloutRevisionsKept(t *testing.T) {
	db := MustOpen(t)
	db.keep = 2
	ctx := context.Background()
	o := mustOrg(t, db)
	ps, _, _ := db.Projects(ctx, o.ID, Page{Limit: 1})
	a, err := db.CreateAPI(ctx, apiWithSecrets(o.ID, ps[0].ID))
	if err != nil {
		t.Fatal(err)
	}
	gw, other := mustGateway(t, db, o.ID, "reached"), mustGateway(t, db, o.ID, "other")
	ok := func(*Revision) error { return nil }
	before, _, err := db.Deploy(ctx, o.ID, a.ID, "", []DeployTarget{{GatewayID: gw.ID}}, ok)
	if err != nil {
		t.Fatal(err)
	}
	r, err := db.CreateRollout(ctx, &Rollout{OrganizationID: o.ID, APIID: a.ID, Waves: []int{100},
		Targets: []*RolloutTarget{{GatewayID: gw.ID}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := db.BeginWave(ctx, r.ID, 0); !ok || err != nil {
		t.Fatalf("begin wave: %v %v", ok, err)
	}
	if _, _, err := db.Deploy(ctx, o.ID, a.ID, r.RevisionID, []DeployTarget{{GatewayID: gw.ID}}, ok); err != nil {
		t.Fatal(err)
	}
	for range 5 {
		if _, _, err := db.Deploy(ctx, o.ID, a.ID, "", []DeployTarget{{GatewayID: other.ID}}, ok); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Revision(ctx, a.ID, before.ID); err != nil {
		t.Fatalf("the revision the rollout replaced was pruned: %v", err)
	}
	got, err := db.GetRollout(ctx, o.ID, r.ID)
	if err != nil || got.Targets[0].PreviousRevisionID != before.ID || !got.Targets[0].HadPrevious {
		t.Fatalf("previous revision recorded: %v %+v", err, got.Targets[0])
	}
}
