package server

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"platform-api/httpx"
)

// TestStampsFollowCommitOrder: a deploy's performedAt was taken before the
// API's row lock, so on PostgreSQL a change that committed later could
// carry an older stamp; and a reconnecting gateway's initial state was
// stamped "now", newer than a change committed just after it. A
// second-generation gateway ignores an event not newer than what it holds,
// so it kept an older state (an ignored undeploy left the API served).
// Deploys and undeploys of one API race from several goroutines while
// gateways drop their connections and reconnect; in the end every
// gateway's last applied event must be the stored state.
func TestStampsFollowCommitOrder(t *testing.T) {
	for _, reconnect := range []bool{false, true} {
		t.Run(fmt.Sprintf("reconnect=%v", reconnect), func(t *testing.T) {
			raceStamps(t, reconnect)
		})
	}
}

func raceStamps(t *testing.T, reconnect bool) {
	e := newEnv(t)
	const gateways, rounds, workers = 6, 6, 6
	f := newFleet(t, e, gateways)
	gs := make([]*gen2Gateway, gateways)
	for i := range gs {
		gs[i] = newGen2(t, e, f.keys[i], f.gws[i].ID)
		gs[i].noDownload, gs[i].dropsConns = true, reconnect
		gs[i].connect()
		go gs[i].handleAll()
	}
	var items []map[string]any
	for _, g := range f.gws {
		items = append(items, map[string]any{"gatewayId": g.ID, "vhost": "api.example.com"})
	}
	// Each round, the workers start together: a deploy to every gateway,
	// or an undeploy from one; then every gateway must converge.
	for round := range rounds {
		var wg sync.WaitGroup
		start := make(chan struct{})
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				rnd := rand.New(rand.NewPCG(uint64(round), uint64(w)))
				for range 2 {
					if rnd.IntN(3) == 0 {
						gw := f.gws[rnd.IntN(gateways)].ID
						if code, body := e.do("DELETE", "/api/v1/apis/"+f.api+"/deployments/"+gw, f.tok, nil); code != 204 && code != 404 {
							t.Errorf("undeploy: %d %s", code, body)
						}
						continue
					}
					if code, body := e.do("POST", "/api/v1/apis/"+f.api+"/deploy-revision", f.tok, items); code != 200 {
						t.Errorf("deploy: %d %s", code, body)
					}
				}
			}()
		}
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		close(start)
		for i := 0; reconnect; i++ {
			select {
			case <-done:
			default:
				g := gs[(round+i)%gateways]
				g.c.conn.Close()
				g.connect()
				go g.handleAll()
				continue
			}
			break
		}
		<-done
		checkLastApplied(t, e, f, gs)
	}
}

// checkLastApplied waits until every gateway's last applied event for the
// fleet's API is its stored state, and fails naming those that diverged.
func checkLastApplied(t *testing.T, e *testEnv, f *testFleet, gs []*gen2Gateway) {
	t.Helper()
	checkLastAppliedWithin(t, e, f, gs, 3*time.Second)
}

// checkLastAppliedWithin is checkLastApplied waiting at most wait.
func checkLastAppliedWithin(t *testing.T, e *testEnv, f *testFleet, gs []*gen2Gateway, wait time.Duration) {
	t.Helper()
	checkAppliedWithin(t, e, f.tok, []string{f.api}, nil, gs, wait)
}

// checkAppliedWithin waits at most wait until, for every gateway, the last
// event it applied for each API is the stored state (api.deployed of the
// stored deployment, api.undeployed, or nothing where nothing is stored),
// and, for each deleted API, is not api.deployed; it fails naming those
// that diverged.
func checkAppliedWithin(t *testing.T, e *testEnv, tok string, apis, deleted []string, gs []*gen2Gateway, wait time.Duration) {
	t.Helper()
	var diverged []string
	deadline := time.Now().Add(wait)
	for {
		stored := map[string]map[string]map[string]any{} // API -> gateway -> row
		for _, a := range apis {
			stored[a] = map[string]map[string]any{}
			var l httpx.List[map[string]any]
			e.must(200, "GET", "/api/v1/apis/"+a+"/deployments", tok, nil, &l)
			for _, d := range l.List {
				stored[a][d["gatewayId"].(string)] = d
			}
		}
		diverged = nil
		for _, g := range gs {
			got, gotDep := map[string]string{}, map[string]string{}
			g.mu.Lock()
			for _, ev := range g.applied {
				p, _ := ev["payload"].(map[string]any)
				a, _ := p["apiId"].(string)
				got[a], _ = ev["type"].(string)
				gotDep[a], _ = p["deploymentId"].(string)
			}
			g.mu.Unlock()
			for _, a := range apis {
				want, dep := "", ""
				if d := stored[a][g.id]; d != nil {
					dep, _ = d["deploymentId"].(string)
					want = "api.deployed"
					if s := d["status"]; s == "UNDEPLOYING" || s == "UNDEPLOYED" {
						want = "api.undeployed"
					}
				}
				if got[a] != want || (want == "api.deployed" && gotDep[a] != dep) {
					diverged = append(diverged, fmt.Sprintf("gateway %s, API %s: applied %q %s, stored %q %s", g.id, a, got[a], gotDep[a], want, dep))
				}
			}
			for _, a := range deleted {
				if got[a] == "api.deployed" {
					diverged = append(diverged, fmt.Sprintf("gateway %s runs API %s, which was deleted", g.id, a))
				}
			}
		}
		if len(diverged) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if len(diverged) > 0 {
		t.Fatalf("%d gateway-API pairs diverged from the stored state:\n%s", len(diverged), strings.Join(diverged, "\n"))
	}
}
