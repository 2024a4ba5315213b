package server

import (
	"context"
	"strings"
	"testing"
	"time"

	"platform-api/api"
	"platform-api/httpx"
	"platform-api/rollout"
	"platform-api/store"
)

// rolloutFleet is a fleet of second-generation gateways, each handling its
// events as a gateway does.
type rolloutFleet struct {
	*testFleet
	g []*gen2Gateway
}

// newRolloutFleet registers n gateways; those not in manual connect to e
// and handle their events on their own.
func newRolloutFleet(t *testing.T, e *testEnv, n int, manual ...int) *rolloutFleet {
	t.Helper()
	f := &rolloutFleet{testFleet: newFleet(t, e, n)}
	for i := range n {
		g := newGen2(t, e, f.keys[i], f.gws[i].ID)
		f.g = append(f.g, g)
		isManual := false
		for _, m := range manual {
			isManual = isManual || m == i
		}
		g.connect()
		if !isManual {
			go g.handleAll()
		}
	}
	return f
}

// ids returns the gateways' ids, in order.
func (f *rolloutFleet) ids() []string {
	var out []string
	for _, g := range f.gws {
		out = append(out, g.ID)
	}
	return out
}

// deployments returns the distinct deployment ids of the API the gateway
// applied (an api.deployed applied again for the same deployment counts
// once), in order.
func (f *rolloutFleet) deployments(i int) []string {
	g := f.g[i]
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []string
	for _, ev := range g.applied {
		p := ev["payload"].(map[string]any)
		if ev["type"] != "api.deployed" || p["apiId"] != f.api {
			continue
		}
		if id := p["deploymentId"].(string); len(out) == 0 || out[len(out)-1] != id {
			out = append(out, id)
		}
	}
	return out
}

func (f *rolloutFleet) create(t *testing.T, e *testEnv, query string, body map[string]any) api.Rollout {
	t.Helper()
	var r api.Rollout
	e.must(201, "POST", "/api/v1/apis/"+f.api+"/rollouts"+query, f.tok, body, &r)
	return r
}

// waitRollout waits until the rollout has status want, woken by the
// driver of e (another replica's steps are read every 100 ms).
func waitRollout(t *testing.T, e *testEnv, tok, id, want string) api.Rollout {
	t.Helper()
	deadline := time.After(15 * time.Second)
	for {
		changed := e.api.Rollouts().Changed(id)
		var r api.Rollout
		e.must(200, "GET", "/api/v1/rollouts/"+id, tok, nil, &r)
		if r.Status == want {
			return r
		}
		select {
		case <-changed:
		case <-time.After(100 * time.Millisecond):
		case <-deadline:
			t.Fatalf("rollout %s is %s (wave %d), want %s: %+v", id, r.Status, r.CurrentWave, want, r)
		}
	}
}

// TestRolloutCompletes: waves of 1, 2 and 4 gateways, each deployed once
// its predecessor is DEPLOYED; ?wait answers with the rollout COMPLETED,
// every gateway deployed exactly once, with the rollout's revision.
func TestRolloutCompletes(t *testing.T) {
	e := newEnvWith(t, fastHub)
	f := newRolloutFleet(t, e, 4)
	r := f.create(t, e, "?wait=20s", map[string]any{"gatewayIds": f.ids(), "waves": []int{25, 50, 100},
		"waveTimeout": "10s", "pause": "0s", "maxFailures": 0})
	if r.Status != store.RolloutCompleted || r.Reached != 4 || r.Failed != 0 || r.CurrentWave != 3 || r.FinishedAt == nil {
		t.Fatalf("rollout after wait: %+v", r)
	}
	sizes := []int{1, 1, 2}
	for i, w := range r.Waves {
		if w.Size != sizes[i] || w.Status != "SETTLED" || w.StartedAt == nil || w.SettledAt == nil || len(w.Gateways) != sizes[i] {
			t.Fatalf("wave %d: %+v", i+1, w)
		}
		for _, g := range w.Gateways {
			if g.Status != store.StatusDeployed || g.DeploymentID == "" || g.RevisionID != r.RevisionID {
				t.Fatalf("wave %d gateway: %+v", i+1, g)
			}
		}
		if i > 0 && w.StartedAt.Before(*r.Waves[i-1].SettledAt) {
			t.Fatalf("wave %d started %s, before wave %d settled %s", i+1, w.StartedAt, i, r.Waves[i-1].SettledAt)
		}
	}
	for i := range f.gws {
		if got := f.deployments(i); len(got) != 1 {
			t.Fatalf("gateway %d applied deployments %v, want one", i, got)
		}
		if d := deploymentStatus(t, e, f.tok, f.api, f.gws[i].ID); d["revisionId"] != r.RevisionID {
			t.Fatalf("gateway %d runs %v", i, d)
		}
	}
	// The list, paged like every list.
	var l httpx.List[api.Rollout]
	e.must(200, "GET", "/api/v1/apis/"+f.api+"/rollouts?limit=1", f.tok, nil, &l)
	if l.Count != 1 || l.Pagination.Total != 1 || l.List[0].ID != r.ID || l.List[0].Reached != 4 || l.List[0].Waves[2].Size != 2 {
		t.Fatalf("list: %+v", l)
	}
	// Over, a plain deploy is allowed again.
	f.deploy(t, "?wait=5s", 0)
}

// TestRolloutHaltsAndRollsBack: the first gateway acknowledges failure, so
// with maxFailures 0 the rollout halts after the first wave and no other
// gateway is sent the revision; the rollback then undeploys it from the one
// gateway reached (it ran nothing before) and deploys the previous revision
// back where there was one.
func TestRolloutHaltsAndRollsBack(t *testing.T) {
	e := newEnvWith(t, fastHub)
	f := newRolloutFleet(t, e, 4)
	// Gateway 1 runs an earlier revision.
	before := f.deploy(t, "?wait=5s", 1)[0]
	f.g[0].mu.Lock()
	f.g[0].fail[f.api] = "GATEWAY_PROCESSING_ERROR"
	f.g[0].mu.Unlock()
	r := f.create(t, e, "?wait=20s", map[string]any{"gatewayIds": f.ids(), "waves": []int{25, 50, 100}, "maxFailures": 0})
	if r.Status != store.RolloutHalted || r.Reached != 1 || r.Failed != 1 || r.CurrentWave != 1 ||
		!strings.Contains(r.Reason, "maxFailures") {
		t.Fatalf("halted rollout: %+v", r)
	}
	if len(*r.Failures) != 1 || (*r.Failures)[0].GatewayID != f.gws[0].ID || (*r.Failures)[0].ErrorCode != "GATEWAY_PROCESSING_ERROR" || (*r.Failures)[0].Wave != 1 {
		t.Fatalf("failures: %+v", *r.Failures)
	}
	if g := r.Waves[1].Gateways[0]; g.Status != "WAITING" || g.DeploymentID != "" {
		t.Fatalf("wave 2 after the halt: %+v", r.Waves[1])
	}
	if d := deploymentStatus(t, e, f.tok, f.api, f.gws[1].ID); d["deploymentId"] != before.DeploymentID {
		t.Fatalf("gateway 1 of wave 2 was deployed: %v", d)
	}
	for _, i := range []int{2, 3} {
		if d := deploymentStatus(t, e, f.tok, f.api, f.gws[i].ID); d != nil {
			t.Fatalf("gateway %d of a wave never begun has %v", i, d)
		}
	}
	// Halted, it is no longer running: a plain deploy may go again, and
	// so may the rollback.
	var back api.Rollout
	e.must(201, "POST", "/api/v1/rollouts/"+r.ID+"/rollback?wait=10s", f.tok, nil, &back)
	if back.Kind != store.KindRollback || back.RollbackOf != r.ID || back.Status != store.RolloutCompleted || back.Gateways != 1 ||
		back.Waves[0].Gateways[0].Status != store.StatusUndeployed {
		t.Fatalf("rollback: %+v", back)
	}
	var orig api.Rollout
	e.must(200, "GET", "/api/v1/rollouts/"+r.ID, f.tok, nil, &orig)
	if orig.Status != store.RolloutRolledBack {
		t.Fatalf("rolled back rollout: %+v", orig)
	}
	code, body := e.do("POST", "/api/v1/rollouts/"+r.ID+"/rollback", f.tok, nil)
	wantError(t, code, body, 409, "already rolled back")
	code, body = e.do("POST", "/api/v1/rollouts/"+back.ID+"/rollback", f.tok, nil)
	wantError(t, code, body, 409, "itself a rollback")

	// A rollout that completed, rolled back: every gateway gets its
	// previous revision again (gateway 1 its deployment of before).
	r2 := f.create(t, e, "?wait=20s", map[string]any{"gatewayIds": f.ids()[1:], "waves": []int{50, 100}})
	if r2.Status != store.RolloutCompleted {
		t.Fatalf("second rollout: %+v", r2)
	}
	e.must(201, "POST", "/api/v1/rollouts/"+r2.ID+"/rollback?wait=10s", f.tok, nil, &back)
	if back.Status != store.RolloutCompleted || back.Gateways != 3 {
		t.Fatalf("rollback of a completed rollout: %+v", back)
	}
	if d := deploymentStatus(t, e, f.tok, f.api, f.gws[1].ID); d["revisionId"] != before.RevisionID || d["status"] != store.StatusDeployed {
		t.Fatalf("gateway 1 after the rollback: %v, want revision %s", d, before.RevisionID)
	}
	for _, i := range []int{2, 3} {
		if d := deploymentStatus(t, e, f.tok, f.api, f.gws[i].ID); d["status"] != store.StatusUndeployed {
			t.Fatalf("gateway %d after the rollback: %v", i, d)
		}
	}
}

// TestRolloutPauseResumeAbort: a paused rollout starts no further wave
// until resumed; one rollout per API, and no plain deploy while one runs
// (409 naming it); abort ends it where it is.
func TestRolloutPauseResumeAbort(t *testing.T) {
	e := newEnvWith(t, fastHub)
	f := newRolloutFleet(t, e, 3, 0) // gateway 0 (wave 1) acknowledges only when told
	r := f.create(t, e, "", map[string]any{"gatewayIds": f.ids(), "waves": []int{1, 50, 100}})
	// Wave 1 is deployed at once; it waits for gateway 0.
	ev := f.g[0].c.next(5 * time.Second)
	if ev["type"] != "api.deployed" {
		t.Fatalf("wave 1 gateway got %v", ev)
	}
	var paused api.Rollout
	e.must(200, "POST", "/api/v1/rollouts/"+r.ID+"/pause", f.tok, nil, &paused)
	if paused.Status != store.RolloutPaused {
		t.Fatalf("paused: %+v", paused)
	}
	code, body := e.do("POST", "/api/v1/rollouts/"+r.ID+"/pause", f.tok, nil)
	wantError(t, code, body, 409, "RUNNING")
	// One at a time, and no plain deploy meanwhile.
	code, body = e.do("POST", "/api/v1/apis/"+f.api+"/rollouts", f.tok, map[string]any{"gatewayIds": f.ids(), "waves": []int{100}})
	wantError(t, code, body, 409, r.ID)
	code, body = e.do("POST", "/api/v1/apis/"+f.api+"/deploy-revision", f.tok, []map[string]string{{"gatewayId": f.gws[1].ID}})
	wantError(t, code, body, 409, r.ID)

	// Gateway 0 applies it now: the wave settles, but paused, no wave 2.
	f.g[0].handle(ev)
	waitFor(t, func() bool {
		var got api.Rollout
		e.must(200, "GET", "/api/v1/rollouts/"+r.ID, f.tok, nil, &got)
		return got.Waves[0].Gateways[0].Status == store.StatusDeployed
	})
	e.must(200, "POST", "/api/v1/rollouts/"+r.ID+"/resume", f.tok, nil, nil)
	done := waitRollout(t, e, f.tok, r.ID, store.RolloutCompleted)
	if done.Reached != 3 {
		t.Fatalf("resumed rollout: %+v", done)
	}

	// Abort: a rollout with a long pause after wave 1 ends there.
	go f.g[0].handleAll()
	r = f.create(t, e, "", map[string]any{"gatewayIds": f.ids(), "waves": []int{1, 100}, "pause": "1h"})
	waitFor(t, func() bool {
		var got api.Rollout
		e.must(200, "GET", "/api/v1/rollouts/"+r.ID, f.tok, nil, &got)
		return got.Waves[0].Status == "SETTLED"
	})
	var aborted api.Rollout
	e.must(200, "POST", "/api/v1/rollouts/"+r.ID+"/abort", f.tok, nil, &aborted)
	if aborted.Status != store.RolloutAborted || aborted.Reached != 1 || aborted.FinishedAt == nil {
		t.Fatalf("aborted: %+v", aborted)
	}
	code, body = e.do("POST", "/api/v1/rollouts/"+r.ID+"/resume", f.tok, nil)
	wantError(t, code, body, 409, "ABORTED")
	f.deploy(t, "?wait=5s", 1) // nothing runs: allowed
}

// TestRolloutValidation: a bad body is a 400 naming the field; another
// organization's rollout and API are 404.
func TestRolloutValidation(t *testing.T) {
	e := newEnvWith(t, fastHub)
	f := newFleet(t, e, 2)
	gw := f.gws[0].ID
	for _, c := range []struct {
		body any
		want string
	}{
		{map[string]any{"waves": []int{100}}, "gatewayIds: is required"},
		{map[string]any{"gatewayIds": []string{gw}}, "waves: is required"},
		{map[string]any{"gatewayIds": []string{gw}, "waves": []int{10, 10, 100}}, "waves[1]: must be more than waves[0]"},
		{map[string]any{"gatewayIds": []string{gw}, "waves": []int{0, 100}}, "waves[0]: must be a percentage from 1 to 100"},
		{map[string]any{"gatewayIds": []string{gw}, "waves": []int{10, 101}}, "waves[1]"},
		{map[string]any{"gatewayIds": []string{gw}, "waves": []int{10, 50}}, "waves[1]: the last wave must be 100"},
		{map[string]any{"gatewayIds": []string{gw}, "waves": []int{100}, "waveTimeout": "soon"}, "waveTimeout: must be a duration"},
		{map[string]any{"gatewayIds": []string{gw}, "waves": []int{100}, "pause": "-1s"}, "pause: must be a duration"},
		{map[string]any{"gatewayIds": []string{gw}, "waves": []int{100}, "maxFailures": -1}, "maxFailures: must be 0 or more"},
		{map[string]any{"gatewayIds": []string{gw, gw}, "waves": []int{100}}, "gatewayIds[1]: gateway"},
		{map[string]any{"gatewayIds": []string{"x"}, "waves": []int{100}}, "gatewayIds[0]: must be a gateway UUID"},
		{map[string]any{"gatewayIds": []string{gw}, "waves": []int{100}, "revisionId": "r1"}, "revisionId"},
		{map[string]any{"gatewayIds": []string{gw}, "waves": "all"}, "waves"},
	} {
		code, body := e.do("POST", "/api/v1/apis/"+f.api+"/rollouts", f.tok, c.body)
		wantError(t, code, body, 400, c.want)
	}
	// A gateway of another organization is not found in this one.
	other := newFleet(t, e, 1)
	code, body := e.do("POST", "/api/v1/apis/"+f.api+"/rollouts", f.tok, map[string]any{"gatewayIds": []string{other.gws[0].ID}, "waves": []int{100}})
	wantError(t, code, body, 400, "gatewayIds[0]: gateway "+other.gws[0].ID+" not found")
	code, body = e.do("POST", "/api/v1/apis/"+f.api+"/rollouts", other.tok, map[string]any{"gatewayIds": []string{other.gws[0].ID}, "waves": []int{100}})
	wantError(t, code, body, 404, "not found")

	var r api.Rollout
	e.must(201, "POST", "/api/v1/apis/"+f.api+"/rollouts", f.tok, map[string]any{"gatewayIds": []string{gw}, "waves": []int{100}}, &r)
	for _, p := range []string{"GET /api/v1/rollouts/" + r.ID, "POST /api/v1/rollouts/" + r.ID + "/pause",
		"POST /api/v1/rollouts/" + r.ID + "/abort", "POST /api/v1/rollouts/" + r.ID + "/rollback", "GET /api/v1/apis/" + f.api + "/rollouts"} {
		m, path, _ := strings.Cut(p, " ")
		code, body := e.do(m, path, other.tok, nil)
		wantError(t, code, body, 404, "not found")
	}
	code, body = e.do("GET", "/api/v1/rollouts/nope", f.tok, nil)
	wantError(t, code, body, 404, "rollout nope not found")
}

// TestRolloutResumesAfterRestart: a server stopped while a wave waits for
// its gateway is replaced by another on the same database; the new one
// resumes at that wave (not deploying it again) and completes the rollout.
func TestRolloutResumesAfterRestart(t *testing.T) {
	e1 := newEnvWith(t, fastHub)
	f := newRolloutFleet(t, e1, 3, 0)
	r := f.create(t, e1, "", map[string]any{"gatewayIds": f.ids(), "waves": []int{1, 100}})
	ev := f.g[0].c.next(5 * time.Second) // wave 1 sent; not acknowledged
	if ev["type"] != "api.deployed" {
		t.Fatalf("wave 1 gateway got %v", ev)
	}
	wave1 := ev["payload"].(map[string]any)["deploymentId"]
	// The first server stops (its hub, listener and driver).
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	e1.api.Hub().Shutdown(ctx)
	e1.srv.Close()
	e1.api.Close()

	e2 := newEnvStore(t, func(c *store.Config) { c.DSN = e1.dsn }, fastHub)
	var got api.Rollout
	e2.must(200, "GET", "/api/v1/rollouts/"+r.ID, f.tok, nil, &got)
	// The deploy of wave 1 committed; the step after it (SETTLING) may or
	// may not have: either way the new server must not deploy it again.
	if w := got.Waves[0].Status; got.Status != store.RolloutRunning || got.CurrentWave != 1 || w != "SETTLING" && w != "DEPLOYING" {
		t.Fatalf("rollout after the restart: %+v", got)
	}
	// The gateways come back to the new server; gateway 0 is sent what it
	// has not acknowledged and applies it.
	for _, g := range f.g {
		g.e = e2
		g.connect()
		go g.handleAll()
	}
	done := waitRollout(t, e2, f.tok, r.ID, store.RolloutCompleted)
	if done.Waves[0].Gateways[0].DeploymentID != wave1 {
		t.Fatalf("wave 1 was deployed again: %v, first %v", done.Waves[0].Gateways[0], wave1)
	}
	for i := range f.gws {
		if got := f.deployments(i); len(got) != 1 {
			t.Fatalf("gateway %d applied deployments %v, want one", i, got)
		}
	}
}

// TestRolloutReplicaFailover: the replica driving a rollout dies (its
// driver stops with its lease held); once the lease expires another replica
// takes the rollout over at the stored wave, and no wave is deployed twice.
func TestRolloutReplicaFailover(t *testing.T) {
	rs := newReplicas(t, 2, fastHub)
	// The gateways are connected to replica 1; replica 0 drives.
	f := newRolloutFleet(t, rs[1], 4, 0)
	var r api.Rollout
	rs[0].must(201, "POST", "/api/v1/apis/"+f.api+"/rollouts", f.tok,
		map[string]any{"gatewayIds": f.ids(), "waves": []int{25, 50, 100}}, &r)
	ev := f.g[0].c.next(5 * time.Second)
	if ev["type"] != "api.deployed" {
		t.Fatalf("wave 1 gateway got %v", ev)
	}
	rs[0].api.Rollouts().Stop() // replica 0 dies as a driver: no release
	f.g[0].handle(ev)           // wave 1 settles; replica 1 must carry on
	go f.g[0].handleAll()
	done := waitRollout(t, rs[1], f.tok, r.ID, store.RolloutCompleted)
	if done.Reached != 4 {
		t.Fatalf("rollout after the failover: %+v", done)
	}
	for i := range f.gws {
		if got := f.deployments(i); len(got) != 1 {
			t.Fatalf("gateway %d applied deployments %v, want one", i, got)
		}
	}
}

// TestRolloutFirstGeneration: a first-generation gateway's wave settles
// once it took the event and downloaded the revision (it acknowledges
// nothing): DELIVERED alone does not start the next wave.
func TestRolloutFirstGeneration(t *testing.T) {
	e := newEnvWith(t, fastHub)
	f := newFleet(t, e, 2)
	c0, _ := mustDial(t, e.srv.URL, f.keys[0])
	c1, _ := mustDial(t, e.srv.URL, f.keys[1])
	waitReady(t, e, f.gws[0].ID)
	waitReady(t, e, f.gws[1].ID)
	var r api.Rollout
	e.must(201, "POST", "/api/v1/apis/"+f.api+"/rollouts", f.tok,
		map[string]any{"gatewayIds": []string{f.gws[0].ID, f.gws[1].ID}, "waves": []int{50, 100}}, &r)
	if ev := c0.next(5 * time.Second); ev["type"] != "api.deployed" {
		t.Fatalf("wave 1 gateway got %v", ev)
	}
	waitFor(t, func() bool {
		e.must(200, "GET", "/api/v1/rollouts/"+r.ID, f.tok, nil, &r)
		return r.Waves[0].Gateways[0].Status == store.StatusDelivered
	})
	// Delivered, not downloaded: the wave waits (the driver looks every
	// FetchPoll; a few of them pass while the rollout is read again).
	for range 3 {
		e.must(200, "GET", "/api/v1/rollouts/"+r.ID, f.tok, nil, &r)
		if r.Waves[0].Status != "SETTLING" || r.Waves[1].Status != "WAITING" {
			t.Fatalf("wave 1 settled on delivery alone: %+v", r.Waves)
		}
		time.Sleep(300 * time.Millisecond) // longer than rollout.FetchPoll: the driver looked
	}
	download(t, e, f.keys[0], "/api/internal/v1/apis/"+f.api)
	if ev := c1.next(5 * time.Second); ev["type"] != "api.deployed" {
		t.Fatalf("wave 2 gateway got %v", ev)
	}
	download(t, e, f.keys[1], "/api/internal/v1/apis/"+f.api)
	done := waitRollout(t, e, f.tok, r.ID, store.RolloutCompleted)
	for _, w := range done.Waves {
		if w.Gateways[0].Status != store.StatusDelivered {
			t.Fatalf("first-generation outcome: %+v", w)
		}
	}
}

// TestRolloutWaveTimeout: a gateway that never acknowledges is a failure
// once waveTimeout passes, and halts the rollout.
func TestRolloutWaveTimeout(t *testing.T) {
	e := newEnvWith(t, fastHub)
	f := newRolloutFleet(t, e, 2, 0) // gateway 0 reads nothing, acknowledges nothing
	r := f.create(t, e, "?wait=10s", map[string]any{"gatewayIds": f.ids(), "waves": []int{50, 100}, "waveTimeout": "300ms"})
	if r.Status != store.RolloutHalted || r.Reached != 1 || len(*r.Failures) != 1 || (*r.Failures)[0].ErrorCode != "WAVE_TIMEOUT" {
		t.Fatalf("rollout with a silent gateway: %+v", r)
	}
	if d := deploymentStatus(t, e, f.tok, f.api, f.gws[1].ID); d != nil {
		t.Fatalf("wave 2 was deployed: %v", d)
	}
}

// TestRolloutResumesMidWave: a driver that stopped between recording a
// wave's start and its deploy, or between the deploy and recording it,
// is replaced by one that deploys the wave's gateways that were not
// deployed, and only those.
func TestRolloutResumesMidWave(t *testing.T) {
	e := newEnvWith(t, fastHub)
	f := newRolloutFleet(t, e, 4)
	e.api.Rollouts().Stop() // the server's driver is gone: this test steps by hand
	r := f.create(t, e, "", map[string]any{"gatewayIds": f.ids(), "waves": []int{50, 100}})
	ctx := t.Context()
	if ok, err := e.db.BeginWave(ctx, r.ID, 0); !ok || err != nil {
		t.Fatalf("begin wave 1: %v %v", ok, err)
	}
	// Of wave 1 (gateways 0 and 1), gateway 0's deploy committed before
	// the driver stopped; gateway 1's never ran.
	stored, err := e.db.DriveRollout(ctx, r.ID)
	if err != nil {
		t.Fatal(err)
	}
	first, err := e.api.fleet.Deploy(ctx, stored.OrganizationID, f.api, r.RevisionID,
		[]store.DeployTarget{{GatewayID: f.gws[0].ID}}, func(*store.Revision) error { return nil }, 5*time.Second)
	if err != nil || first[0].Status != store.StatusDeployed {
		t.Fatalf("deploy of gateway 0: %v %+v", err, first)
	}
	d := rollout.New(rollout.Options{Store: e.db, Fleet: e.api.fleet})
	d.Start()
	t.Cleanup(d.Close)
	done := waitRollout(t, e, f.tok, r.ID, store.RolloutCompleted)
	if got := done.Waves[0].Gateways[0].DeploymentID; got != first[0].DeploymentID {
		t.Fatalf("gateway 0 deployed again: %s, not %s", got, first[0].DeploymentID)
	}
	for i := range f.gws {
		if got := f.deployments(i); len(got) != 1 {
			t.Fatalf("gateway %d applied deployments %v, want one", i, got)
		}
	}
}
