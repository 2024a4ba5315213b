package server

import (
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"platform-api/store"
	"platform-api/store/pgtest"
)

// randomStepsEnv sets how many steps TestReplicasRandomized runs (default
// randomStepsDefault, a few seconds); a long run sets thousands.
const (
	randomStepsEnv     = "PLATFORM_TEST_RANDOM_STEPS"
	randomStepsDefault = 40
)

// TestReplicasRandomized: deploys and undeploys through three replicas in
// random order, the replicas' clocks skewed (one 2 s behind, one 12 s
// ahead), while their listening connections are cut, one replica's reads
// of changes stall past its lease now and then, and gateways reconnect.
// In the end every gateway's last applied event is the stored state, and
// no deployment waits (PENDING, DEPLOYING, UNDEPLOYING) on a gateway that
// applied it.
func TestReplicasRandomized(t *testing.T) {
	steps := randomStepsDefault
	if v := os.Getenv(randomStepsEnv); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			t.Fatalf("%s=%q: want a positive number of steps", randomStepsEnv, v)
		}
		steps = n
	}
	rs := newReplicasWith(t, []time.Duration{0, -2 * time.Second, 12 * time.Second}, time.Second, fastHub)
	const gateways = 6
	f := newFleet(t, rs[0], gateways)
	gs := make([]*gen2Gateway, gateways)
	for i := range gs {
		gs[i] = newGen2(t, rs[i%len(rs)], f.keys[i], f.gws[i].ID)
		gs[i].noDownload, gs[i].dropsConns = true, true
		gs[i].connect()
		go gs[i].handleAll()
	}
	// A stalled listener: replica 2's reads of changes hang for longer than
	// its lease while stall is set.
	var stallMu sync.Mutex
	stall := false
	rs[2].db.SetChangeReadFault(func(store.ChangeKind) error {
		stallMu.Lock()
		s := stall
		stall = false
		stallMu.Unlock()
		if s {
			time.Sleep(1500 * time.Millisecond)
		}
		return nil
	})
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d, %d steps", seed, steps)
	rnd := rand.New(rand.NewPCG(seed, 25))
	var items []map[string]any
	for _, g := range f.gws {
		items = append(items, map[string]any{"gatewayId": g.ID, "vhost": "api.example.com"})
	}
	for step := range steps {
		r := rs[rnd.IntN(len(rs))]
		switch op := rnd.IntN(10); {
		case op < 4: // a deploy to some gateways
			var some []map[string]any
			for _, it := range items {
				if rnd.IntN(2) == 0 {
					some = append(some, it)
				}
			}
			if len(some) == 0 {
				some = items[:1]
			}
			if code, body := r.do("POST", "/api/v1/apis/"+f.api+"/deploy-revision", f.tok, some); code != 200 {
				t.Fatalf("step %d: deploy: %d %s", step, code, body)
			}
		case op < 7: // an undeploy
			gw := f.gws[rnd.IntN(gateways)].ID
			if code, body := r.do("DELETE", "/api/v1/apis/"+f.api+"/deployments/"+gw, f.tok, nil); code != 204 && code != 404 {
				t.Fatalf("step %d: undeploy: %d %s", step, code, body)
			}
		case op == 7: // a listener cut
			pgtest.Exec(t, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1`,
				fmt.Sprintf("replica-%d listener", rnd.IntN(len(rs))))
		case op == 8: // replica 2 stalls on its next change
			stallMu.Lock()
			stall = true
			stallMu.Unlock()
		default: // a gateway reconnects, to another replica
			i := rnd.IntN(gateways)
			g := gs[i]
			g.c.conn.Close()
			g.e = rs[rnd.IntN(len(rs))]
			g.connect()
			go g.handleAll()
		}
	}
	checkLastAppliedWithin(t, rs[0], f, gs, 20*time.Second)
	waitFor(t, func() bool {
		for _, g := range gs {
			d := deploymentStatus(t, rs[0], f.tok, f.api, g.id)
			if d == nil {
				continue
			}
			switch d["status"] {
			case store.StatusPending, store.StatusDeploying, store.StatusUndeploying:
				return false
			}
		}
		return true
	})
}
