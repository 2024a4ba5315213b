package simulate

import (
	"context"
	"fmt"
	mathrand "math/rand/v2"
	"net/url"
	"slices"
	"strings"
	"time"
)

// deployItem is one item of a deploy answer.
type deployItem struct {
	RevisionID, GatewayID, DeploymentID, Status, ErrorCode string
	DeliveredConnections                                   int
}

// deployOnce drops the churn set, deploys to the whole fleet, reconnects the
// churn set, and waits until every gateway has downloaded the revision
// (second generation: acknowledged it). For the second generation the
// deploy request waits for the acknowledgements (?wait=), and the statuses
// of the items it did not answer DEPLOYED are read back once the fleet has
// converged. Deployment n goes through target n % len(targets).
func (r *runner) deployOnce(ctx context.Context, n int) (DeploymentReport, latencies, int) {
	var churned []*gateway
	if r.opt.Churn > 0 {
		for _, i := range mathrand.Perm(len(r.gws))[:int(r.opt.Churn*float64(len(r.gws)))] {
			churned = append(churned, r.gws[i])
		}
		for _, g := range churned {
			g.disconnect()
		}
		if err := r.awaitSeen(ctx, churned, false); err != nil {
			r.fail("deploy %d: %v", n+1, err)
		}
	}
	items := make([]map[string]any, len(r.gws))
	for i, g := range r.gws {
		items[i] = map[string]any{"gatewayId": g.id, "vhost": "sim.example.com"}
	}
	path := "/api/v1/apis/" + r.apis[0] + "/deploy-revision"
	if r.opt.Generation == 2 {
		path += "?wait=" + url.QueryEscape(r.opt.AckWait.String())
	}
	var out []deployItem
	start := time.Now()
	via, err := r.callVia(ctx, n%len(r.targets), "POST", path, items, &out, 200)
	d := DeploymentReport{RequestMs: ms(time.Since(start)), Churned: len(churned)}
	if err != nil {
		r.fail("deploy %d: %v", n+1, err)
		return d, latencies{}, 0
	}
	d.RevisionID = out[0].RevisionID
	if r.several() {
		d.Target = r.targets[via].target
	}
	if r.opt.Generation == 2 {
		d.Answered = map[string]int{}
	}
	for _, o := range out {
		// A second-generation gateway's status goes past DELIVERED: what
		// counts is that a live connection took the event.
		if o.Status == "DELIVERED" || o.DeliveredConnections > 0 {
			d.Delivered++
		}
		if d.Answered != nil {
			d.Answered[o.Status]++
		}
	}
	r.forEach(ctx, churned, func(g *gateway) {
		if err := g.connect(ctx); err != nil {
			r.fail("reconnect %s: %v", g.name, err)
		}
	}, fmt.Sprintf("deploy %d: reconnecting", n+1))

	churnSet := map[*gateway]bool{}
	for _, g := range churned {
		churnSet[g] = true
	}
	deadline := time.Now().Add(r.opt.Wait)
	var lat latencies
	for {
		lat = latencies{lat.all[:0], lat.same[:0], lat.cross[:0]}
		waiting := 0
		var last time.Time
		for _, g := range r.gws {
			got, fetched := g.times(d.RevisionID)
			if fetched.IsZero() {
				waiting++
				continue
			}
			if !churnSet[g] {
				l := ms(got.at.Sub(start))
				lat.all = append(lat.all, l)
				if got.target == via {
					lat.same = append(lat.same, l)
				} else {
					lat.cross = append(lat.cross, l)
				}
			}
			if fetched.After(last) {
				last = fetched
			}
		}
		r.progress("deploy %d/%d: %d of %d gateways converged", n+1, r.opt.Deploys, len(r.gws)-waiting, len(r.gws))
		if waiting == 0 {
			d.Converged, d.ConvergenceMs = true, ms(last.Sub(start))
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			r.fail("deploy %d: %d gateways did not converge within %s", n+1, waiting, r.opt.Wait)
			d.ConvergenceMs = ms(time.Since(start))
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if r.opt.Generation == 2 {
		d.Final = r.finalStatuses(ctx, n, out)
		d.AllDeployed = d.Final["DEPLOYED"] == len(out)
	}
	return d, lat, len(churned)
}

// awaitSeen waits until the server sees every one of the gateways offline
// (online false) or connected (online true). A gateway that drops "before
// the deployment" must be offline for the server when the deployment is
// made, or the server may still deliver to the connection it has not yet
// seen close. With several replicas, each counts its own connections at
// once but learns of the others' a moment after they change, and answers
// a deployment to the ones it has not learned of PENDING; so each target
// is asked in turn. The server has no signal for either, so this polls the
// gateway status list.
func (r *runner) awaitSeen(ctx context.Context, gws []*gateway, online bool) error {
	waiting := map[string]bool{}
	for _, g := range gws {
		waiting[g.id] = true
	}
	deadline := time.Now().Add(30 * time.Second)
	for via := range r.targets {
		for {
			connected, err := r.countConnected(ctx, via, waiting)
			if err != nil {
				return err
			}
			wrong := connected
			if online {
				wrong = len(waiting) - connected
			}
			if wrong == 0 {
				break
			}
			if time.Now().After(deadline) || ctx.Err() != nil {
				if online {
					return fmt.Errorf("%d gateways not connected for the server after 30s", wrong)
				}
				return fmt.Errorf("%d dropped gateways still connected for the server after 30s", wrong)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	return nil
}

// countConnected returns how many of the gateways have a connection, as
// target via sees them.
func (r *runner) countConnected(ctx context.Context, via int, gws map[string]bool) (int, error) {
	n := 0
	for offset := 0; ; offset += 1000 {
		var page struct {
			List []struct {
				ID          string
				Connections int
			}
			Pagination struct{ Total int }
		}
		if _, err := r.callVia(ctx, via, "GET", fmt.Sprintf("/api/v1/status/gateways?limit=1000&offset=%d", offset), nil, &page, 200); err != nil {
			return 0, err
		}
		for _, s := range page.List {
			if gws[s.ID] && s.Connections > 0 {
				n++
			}
		}
		if len(page.List) == 0 || offset+len(page.List) >= page.Pagination.Total {
			return n, nil
		}
	}
}

// finalStatuses returns how many items of a deployment ended in each
// status: those answered DEPLOYED as answered, the others (churned
// gateways, answered PENDING) as the server lists them once they are no
// longer PENDING or DEPLOYING, or when the wait for acknowledgements ends.
// A gateway's deployment replaced by a later one is counted as REPLACED.
func (r *runner) finalStatuses(ctx context.Context, n int, out []deployItem) map[string]int {
	final := map[string]int{}
	open := map[string]string{} // gateway ID -> deployment ID, not final yet
	for _, o := range out {
		if o.Status == "DEPLOYED" {
			final[o.Status]++
		} else {
			open[o.GatewayID] = o.DeploymentID
		}
	}
	if len(open) == 0 {
		return final
	}
	deadline := time.Now().Add(r.opt.AckWait)
	for {
		listed, err := r.deployments(ctx, r.apis[0])
		if err != nil {
			r.fail("deploy %d: read statuses: %v", n+1, err)
			final["UNKNOWN"] += len(open)
			return final
		}
		settled := true
		now := map[string]int{}
		for gw, dep := range open {
			l, ok := listed[gw]
			switch {
			case !ok || l.DeploymentID != dep:
				now["REPLACED"]++
			case l.Status == "PENDING" || l.Status == "DEPLOYING":
				settled = false
				now[l.Status]++
			default:
				now[l.Status]++
			}
		}
		if settled || time.Now().After(deadline) || ctx.Err() != nil {
			for s, k := range now {
				final[s] += k
			}
			return final
		}
		// The server writes acknowledgements in batches every few
		// milliseconds and has no status signal for clients: poll.
		time.Sleep(20 * time.Millisecond)
	}
}

// deployments lists every deployment of an API, by gateway ID.
func (r *runner) deployments(ctx context.Context, apiID string) (map[string]deployItem, error) {
	all := map[string]deployItem{}
	for offset := 0; ; offset += 1000 {
		var page struct {
			List       []deployItem
			Pagination struct{ Total int }
		}
		if err := r.call(ctx, "GET", fmt.Sprintf("/api/v1/apis/%s/deployments?limit=1000&offset=%d", apiID, offset), nil, &page, 200); err != nil {
			return nil, err
		}
		for _, d := range page.List {
			all[d.GatewayID] = d
		}
		if len(page.List) == 0 || offset+len(page.List) >= page.Pagination.Total {
			return all, nil
		}
	}
}

// statusCounts writes counts by status, DEPLOYED first: "DEPLOYED 15, PENDING 5".
func statusCounts(m map[string]int) string {
	var keys []string
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b string) int {
		if (a == "DEPLOYED") != (b == "DEPLOYED") {
			if a == "DEPLOYED" {
				return -1
			}
			return 1
		}
		return strings.Compare(a, b)
	})
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
	}
	return strings.Join(parts, ", ")
}
