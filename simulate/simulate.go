// Package simulate plays a fleet of gateways against a running platform-api,
// the way real gateways use it: it registers gateways, issues their tokens,
// holds one WSS connection per gateway (api-key header, connection.ack,
// pongs), downloads the API after every api.deployed, and measures how long
// deployments take to reach and converge the fleet. With churn, part of the
// fleet drops and reconnects around each deployment and must still converge.
//
// The gateways are of the first generation (contract §3-§4) or of the
// second (§6): those post a manifest as they connect, apply an event only
// when its performedAt is newer than what they hold, download RestApi
// documents and acknowledge what they applied.
//
// With many APIs the run first measures a large desired state: every API
// is deployed to the fleet before it connects, the fleet connects and
// converges on them, then every gateway drops and reconnects and must
// converge again, answering heartbeats all along (see desired.go).
//
// Against several replicas of one server the fleet is spread across them,
// deployments go through them in turn, delivery latency is split into
// same- and cross-replica, and gateways whose replica goes away move to
// another (see replicas.go).
package simulate

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Options configure a run.
type Options struct {
	// Target is the base URL, https://host:port; or several, separated
	// by commas: replicas of one server (one database).
	Target   string
	Insecure bool    // skip certificate verification
	Token    string  // bearer JWT of the organization to work in
	Gateways int     // fleet size
	Deploys  int     // deployments to run
	Churn    float64 // fraction of the fleet that drops and reconnects around each deployment
	Keep     bool    // keep what the run created
	// Concurrency bounds parallel registrations and connection attempts.
	Concurrency int
	// Wait bounds how long one deployment may take to converge.
	Wait time.Duration
	// Hold keeps the fleet connected this long after the deployments, to
	// watch the server with a connected fleet (memory, /metrics).
	Hold time.Duration
	// Progress receives a progress line now and then; nil for none.
	Progress io.Writer
	// Generation is the gateway generation played: 1 (the default) or 2.
	Generation int
	// AckWait is how long each deploy request of a second-generation run
	// waits for the gateways' acknowledgements (?wait=, at most 60 s).
	AckWait time.Duration
	// APIs is how many APIs the run creates (default 1); the deployments
	// go to the first. With more than one, each is deployed to the whole
	// fleet before it connects, and the run measures the fleet converging
	// on them as it connects and again after it reconnects.
	APIs int
	// ServerPID, when set, is the process id of the server, on this
	// machine: the report adds the CPU time it spent on each deployment
	// and its memory (read from /proc; Linux).
	ServerPID int
	// Rollout, when set, makes a progressive rollout of the measured API
	// to the whole fleet after the deployments, in these waves
	// (cumulative percentages); Fail is the fraction of the fleet that
	// acknowledges failure of its deploys (second generation), and
	// MaxFailures, RolloutPause and WaveTimeout are the rollout's.
	Rollout      []int
	Fail         float64
	MaxFailures  int
	RolloutPause time.Duration
	WaveTimeout  time.Duration
	// Keys, with Generation 2, is how many API keys the run creates on
	// the measured API after the deployments (keys.go).
	Keys int
}

// Report is what a run measured.
type Report struct {
	Target     string  `json:"target"`
	Generation int     `json:"generation"`
	Gateways   int     `json:"gateways"`
	APIs       int     `json:"apis"`
	Deploys    int     `json:"deploys"`
	Churn      float64 `json:"churn"`
	ConnectSec float64 `json:"connectSeconds"`
	// Delivery latency: deploy request sent -> api.deployed received, over
	// every gateway connected during the deployment, in milliseconds.
	DeliveryP50 float64 `json:"deliveryP50Ms"`
	DeliveryP99 float64 `json:"deliveryP99Ms"`
	DeliveryMax float64 `json:"deliveryMaxMs"`
	// The same over every deployment after the first (which may land
	// within the generation grace of a fleet that just connected).
	DeliveryLaterP50 float64 `json:"deliveryAfterFirstP50Ms,omitempty"`
	DeliveryLaterP99 float64 `json:"deliveryAfterFirstP99Ms,omitempty"`
	// With several targets, the same split by whether the gateway's
	// connection was on the replica that handled the deploy request.
	DeliverySameP50  float64 `json:"deliverySameReplicaP50Ms,omitempty"`
	DeliverySameP99  float64 `json:"deliverySameReplicaP99Ms,omitempty"`
	DeliverySameMax  float64 `json:"deliverySameReplicaMaxMs,omitempty"`
	DeliveryCrossP50 float64 `json:"deliveryCrossReplicaP50Ms,omitempty"`
	DeliveryCrossP99 float64 `json:"deliveryCrossReplicaP99Ms,omitempty"`
	DeliveryCrossMax float64 `json:"deliveryCrossReplicaMaxMs,omitempty"`
	// Convergence: deploy request sent -> the last gateway has downloaded
	// the revision (second generation: has acknowledged it), churned
	// gateways included; the worst deployment.
	ConvergenceMax float64 `json:"convergenceMaxMs"`
	// Second generation: deploy request sent -> answer received, with
	// ?wait= (every target acknowledged, or the wait ended), over the
	// deployments; and whether every item of every deployment ended
	// DEPLOYED (answered so, or, for a gateway offline when it was made,
	// once it reconnected and acknowledged).
	DeployAnswerP50 float64            `json:"deployAnswerP50Ms,omitempty"`
	DeployAnswerP99 float64            `json:"deployAnswerP99Ms,omitempty"`
	AllDeployed     *bool              `json:"allDeployed,omitempty"`
	Deployments     []DeploymentReport `json:"deployments"`
	AllDelivered    bool               `json:"allDelivered"`
	AllConverged    bool               `json:"allConverged"`
	Reconnects      int                `json:"reconnects"`
	// Moved counts, with several targets, the reconnections of gateways
	// to another target after theirs went away, over the whole run; Hold
	// is the fleet during -hold.
	Moved int64       `json:"moved,omitempty"`
	Hold  *HoldReport `json:"hold,omitempty"`
	// The large desired state (more than one API): reconnect -> every
	// gateway has applied every API (desiredState.reconnect.convergeMs).
	ReconnectConvergeMs float64             `json:"reconnectConvergeMs,omitempty"`
	DesiredState        *DesiredStateReport `json:"desiredState,omitempty"`
	// With -server-pid: the server's CPU seconds per deployment after the
	// first (the mean; the first may fall in the generation grace of the
	// fleet that just connected), and its resident memory with the fleet
	// connected after the deployments, and at its peak, in KiB.
	ServerCPUPerDeployment float64 `json:"serverCpuPerDeploymentSeconds,omitempty"`
	ServerRSSKiB           int64   `json:"serverRssKiB,omitempty"`
	ServerPeakRSSKiB       int64   `json:"serverPeakRssKiB,omitempty"`
	// Rollout is the progressive rollout of -rollout.
	Rollout *RolloutReport `json:"rollout,omitempty"`
	Keys    *KeysReport    `json:"keys,omitempty"`
	Errors  []string       `json:"errors"`
}

// DeploymentReport is one deployment.
type DeploymentReport struct {
	RevisionID string `json:"revisionId"`
	// Target is the target that handled the deploy request (several
	// targets only).
	Target    string  `json:"target,omitempty"`
	RequestMs float64 `json:"requestMs"`
	// Delivery latency of this deployment (request sent -> api.deployed
	// received), in milliseconds.
	DeliveryP50   float64 `json:"deliveryP50Ms"`
	DeliveryP99   float64 `json:"deliveryP99Ms"`
	Delivered     int     `json:"delivered"` // items the server answered delivered to a live connection
	Churned       int     `json:"churned"`
	ConvergenceMs float64 `json:"convergenceMs"`
	Converged     bool    `json:"converged"`
	// ServerCPUSeconds (with -server-pid) is the server's CPU time from
	// this deploy request to the next one (the last: to a moment after
	// it converged, once the server has written what it batches).
	ServerCPUSeconds float64 `json:"serverCpuSeconds,omitempty"`
	// Second generation: items by the status the deploy request answered,
	// and by the status they ended in.
	Answered    map[string]int `json:"answered,omitempty"`
	Final       map[string]int `json:"final,omitempty"`
	AllDeployed bool           `json:"allDeployed,omitempty"`
}

type runner struct {
	// suffix names what this run creates (its project, APIs and
	// gateways), so that cleanup finds even what a lost answer hid.
	suffix  string
	targets []*client
	turn    atomic.Uint64 // REST calls made, to pick the next target
	opt     Options
	// ctx is the run's: gateways that move reconnect from goroutines of
	// their own, which end with it.
	ctx context.Context

	project string
	// apis are the APIs the run created; deployments go to the first.
	apis     []string
	apiIndex map[string]int
	gws      []*gateway

	pongs        atomic.Int64  // pongs the fleet wrote (pings answered)
	events       atomic.Int64  // deploy and undeploy events the fleet received
	serverClosed atomic.Int64  // connections the server ended
	maxHandling  atomic.Int64  // longest a gateway spent on one event, in ns
	kick         chan struct{} // a gateway converged or lost its connection
	live         atomic.Int64  // gateways connected
	moved        atomic.Int64  // reconnections to another target

	errMu  sync.Mutex
	errors []string
}

func (r *runner) fail(format string, a ...any) {
	r.errMu.Lock()
	defer r.errMu.Unlock()
	if len(r.errors) < 50 {
		r.errors = append(r.errors, fmt.Sprintf(format, a...))
	}
}

func (r *runner) progress(format string, a ...any) {
	if r.opt.Progress == nil {
		return
	}
	line := fmt.Sprintf(format, a...)
	// With several targets, every line but the hold's (which says more)
	// shows the fleet's connections once there are any.
	if live, moved := r.live.Load(), r.moved.Load(); r.several() && line != "" && !strings.HasPrefix(line, "hold ") && live+moved > 0 {
		line += fmt.Sprintf(" (%d live, %d moved)", live, moved)
	}
	fmt.Fprintf(r.opt.Progress, "\r%-70s", line)
}

// Run plays the fleet and returns the report. An error means the run could
// not be set up; failures during the run are in Report.Errors.
func Run(ctx context.Context, opt Options) (*Report, error) {
	if opt.Gateways < 1 || opt.Deploys < 0 || opt.Churn < 0 || opt.Churn > 1 {
		return nil, errors.New("need -gateways >= 1, -deploys >= 0 and -churn from 0 to 1")
	}
	if opt.APIs == 0 {
		opt.APIs = 1
	}
	if opt.APIs < 1 || opt.APIs > maxAPIs {
		return nil, fmt.Errorf("-apis must be from 1 to %d", maxAPIs)
	}
	if opt.Generation == 0 {
		opt.Generation = 1
	}
	if opt.Generation != 1 && opt.Generation != 2 {
		return nil, errors.New("-generation must be 1 or 2")
	}
	if opt.Keys < 0 || opt.Keys > 0 && (opt.Generation != 2 || opt.Deploys < 1) {
		return nil, errors.New("-keys needs -generation 2 and -deploys of 1 or more (keys reach the gateways an API is deployed to)")
	}
	if opt.AckWait <= 0 {
		opt.AckWait = 10 * time.Second
	}
	if opt.AckWait > time.Minute {
		return nil, errors.New("-ack-wait is at most 60s (the server's limit)")
	}
	if opt.Fail < 0 || opt.Fail > 1 || opt.Fail > 0 && (opt.Generation != 2 || len(opt.Rollout) == 0) {
		return nil, errors.New("-fail is a fraction from 0 to 1, and needs -generation 2 and -rollout (a second-generation gateway acknowledges failure)")
	}
	if opt.WaveTimeout <= 0 {
		opt.WaveTimeout = time.Minute
	}
	if opt.Concurrency <= 0 {
		opt.Concurrency = 64
	}
	if opt.Wait <= 0 {
		opt.Wait = 2 * time.Minute
	}
	targets, err := newClients(opt.Target, opt.Token, opt.Insecure, time.Minute+opt.AckWait)
	if err != nil {
		return nil, err
	}
	var bases []string
	for _, c := range targets {
		bases = append(bases, c.target)
	}
	opt.Target = strings.Join(bases, ",")
	r := &runner{targets: targets, opt: opt, kick: make(chan struct{}, 1)}
	rep := &Report{Target: opt.Target, Generation: opt.Generation, Gateways: opt.Gateways, APIs: opt.APIs, Deploys: opt.Deploys, Churn: opt.Churn, Errors: []string{}}

	// Deferred before the setup, so that a run that fails part way (a
	// refused registration, an interrupt) still deletes what it made.
	if !opt.Keep {
		defer r.cleanup()
	}
	if err := r.setup(ctx); err != nil {
		return nil, err
	}
	// Deferred after cleanup, so it runs before it: no gateway is still
	// moving when cleanup closes them.
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	r.ctx = ctx
	var ds *DesiredStateReport
	if opt.APIs > 1 {
		if ds, err = r.deployAll(ctx); err != nil {
			return nil, err
		}
	}
	ps := r.startPhase()
	start := ps.at
	r.forEach(ctx, r.gws, func(g *gateway) {
		if err := g.connect(ctx); err != nil {
			r.fail("connect %s: %v", g.name, err)
		}
	}, "connecting")
	rep.ConnectSec = time.Since(start).Seconds()
	if r.several() {
		if err := r.awaitSeen(ctx, r.gws, true); err != nil {
			r.fail("connect: %v", err)
		}
	}
	if ds != nil {
		ds.Connect = r.awaitConverged(ctx, ps, "connect")
		ds.Reconnect = r.reconnectAll(ctx)
		rep.DesiredState, rep.ReconnectConvergeMs = ds, ds.Reconnect.ConvergeMs
	}

	var lat, later latencies
	var answers []float64
	var lastRev string
	rep.AllDelivered, rep.AllConverged = true, true
	allDeployed := true
	cpu := r.serverCPU()
	for i := range opt.Deploys {
		d, dl, reconnects := r.deployOnce(ctx, i)
		if opt.ServerPID > 0 {
			if i == opt.Deploys-1 {
				time.Sleep(serverSettle)
			}
			now := r.serverCPU()
			d.ServerCPUSeconds, cpu = now-cpu, now
		}
		d.DeliveryP50, d.DeliveryP99, _ = percentiles(dl.all)
		rep.Deployments = append(rep.Deployments, d)
		lat.add(dl)
		if i > 0 {
			later.add(dl)
		}
		if d.RevisionID != "" {
			lastRev = d.RevisionID
		}
		rep.Reconnects += reconnects
		rep.ConvergenceMax = max(rep.ConvergenceMax, d.ConvergenceMs)
		rep.AllDelivered = rep.AllDelivered && d.Delivered == opt.Gateways-d.Churned
		rep.AllConverged = rep.AllConverged && d.Converged
		allDeployed = allDeployed && d.AllDeployed
		answers = append(answers, d.RequestMs)
	}
	if opt.ServerPID > 0 && len(rep.Deployments) > 1 {
		var sum float64
		for _, d := range rep.Deployments[1:] {
			sum += d.ServerCPUSeconds
		}
		rep.ServerCPUPerDeployment = sum / float64(len(rep.Deployments)-1)
	}
	if opt.Keys > 0 {
		rep.Keys = r.runKeys(ctx)
	}
	if opt.Generation == 2 {
		rep.AllDeployed = &allDeployed
		if len(answers) > 0 {
			rep.DeployAnswerP50, rep.DeployAnswerP99 = quantile(answers, 0.5), quantile(answers, 0.99)
		}
	}
	if len(opt.Rollout) > 0 {
		rep.Rollout = r.runRollout(ctx)
	}
	switch {
	case opt.Hold > 0 && r.several():
		rep.Hold = r.holdReplicas(ctx, lastRev)
	case opt.Hold > 0:
		r.progress("holding %d connections for %s", opt.Gateways, opt.Hold)
		select {
		case <-time.After(opt.Hold):
		case <-ctx.Done():
		}
	}
	rep.DeliveryP50, rep.DeliveryP99, rep.DeliveryMax = percentiles(lat.all)
	rep.DeliveryLaterP50, rep.DeliveryLaterP99, _ = percentiles(later.all)
	if opt.ServerPID > 0 {
		var err error
		if rep.ServerRSSKiB, rep.ServerPeakRSSKiB, err = processMemory(opt.ServerPID); err != nil {
			r.fail("server memory: %v", err)
		}
	}
	if r.several() {
		rep.DeliverySameP50, rep.DeliverySameP99, rep.DeliverySameMax = percentiles(lat.same)
		rep.DeliveryCrossP50, rep.DeliveryCrossP99, rep.DeliveryCrossMax = percentiles(lat.cross)
		rep.Moved = r.moved.Load()
	}
	r.progress("")
	if opt.Progress != nil {
		fmt.Fprint(opt.Progress, "\r")
	}
	rep.Errors = append(rep.Errors, r.errors...)
	return rep, nil
}

// serverSettle is how long after the last deployment converged its CPU
// time is read: past the server's next background write (250 ms).
const serverSettle = 400 * time.Millisecond

// serverCPU is the server's CPU seconds so far (0 without -server-pid).
func (r *runner) serverCPU() float64 {
	if r.opt.ServerPID <= 0 {
		return 0
	}
	s, err := processCPU(r.opt.ServerPID)
	if err != nil {
		r.fail("server CPU: %v", err)
	}
	return s
}

func randomSuffix() string {
	b := make([]byte, 4)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// setup registers the organization if needed, a project, the APIs and the
// gateways with their tokens.
func (r *runner) setup(ctx context.Context) error {
	suffix := randomSuffix()
	r.suffix = suffix
	if err := r.targets[0].ensureOrganization(ctx, "sim-"+suffix, "Fleet simulator"); err != nil {
		return err
	}
	var p struct{ ID string }
	if err := r.call(ctx, "POST", "/api/v1/projects", map[string]string{"name": "simulate-" + suffix,
		"description": "created by platform-api simulate"}, &p, 201); err != nil {
		return fmt.Errorf("create project: %w", err)
	}
	r.project = p.ID
	r.apis = make([]string, r.opt.APIs)
	var failed atomic.Int64
	r.parallel(ctx, len(r.apis), func(i int) {
		name := "sim-" + suffix
		if i > 0 {
			name = fmt.Sprintf("sim-%s-%d", suffix, i)
		}
		var a struct{ ID string }
		err := r.call(ctx, "POST", "/api/v1/apis", map[string]any{
			"name": name, "context": "/" + name, "version": "v1", "projectId": p.ID,
			"backend-services": []any{map[string]any{"name": "echo", "endpoints": []any{map[string]any{"url": "https://echo.internal"}}}},
			"operations":       []any{map[string]any{"request": map[string]any{"method": "GET", "path": "/items/{id}"}}},
		}, &a, 201)
		if err != nil {
			failed.Add(1)
			r.fail("create API %s: %v", name, err)
			return
		}
		r.apis[i] = a.ID
	}, "creating APIs")
	if n := failed.Load(); n > 0 {
		return fmt.Errorf("%d of %d APIs could not be created; first error: %s", n, len(r.apis), r.errors[0])
	}
	r.apiIndex = make(map[string]int, len(r.apis))
	for i, id := range r.apis {
		r.apiIndex[id] = i
	}
	r.gws = make([]*gateway, r.opt.Gateways)
	for i := range r.gws {
		r.gws[i] = &gateway{name: fmt.Sprintf("sim-%s-%d", suffix, i), r: r, at: i % len(r.targets),
			got: map[string]receipt{}, fetched: map[string]time.Time{},
			ks:   keyState{keys: map[string]string{}, gone: map[string]time.Time{}},
			held: make([]int64, len(r.apis)), seen: make([]uint32, len(r.apis))}
	}
	r.forEach(ctx, r.gws, func(g *gateway) {
		var gw struct{ ID string }
		if err := r.call(ctx, "POST", "/api/v1/gateways", map[string]any{"name": g.name, "displayName": g.name,
			"vhost": "sim.example.com"}, &gw, 201); err != nil {
			failed.Add(1)
			r.fail("register %s: %v", g.name, err)
			return
		}
		g.id = gw.ID
		var tok struct{ Token string }
		if err := r.call(ctx, "POST", "/api/v1/gateways/"+gw.ID+"/tokens", nil, &tok, 201); err != nil {
			failed.Add(1)
			r.fail("token for %s: %v", g.name, err)
			return
		}
		g.key = tok.Token
	}, "registering")
	if n := failed.Load(); n > 0 {
		return fmt.Errorf("%d of %d gateways could not be registered; first error: %s", n, len(r.gws), r.errors[0])
	}
	return nil
}

// forEach runs fn over gateways with bounded concurrency, reporting progress.
func (r *runner) forEach(ctx context.Context, gws []*gateway, fn func(*gateway), what string) {
	r.parallel(ctx, len(gws), func(i int) { fn(gws[i]) }, what)
}

// parallel runs fn(0) to fn(n-1) with bounded concurrency, reporting
// progress.
func (r *runner) parallel(ctx context.Context, n int, fn func(int), what string) {
	sem := make(chan struct{}, r.opt.Concurrency)
	var wg sync.WaitGroup
	var done atomic.Int64
	for i := range n {
		if ctx.Err() != nil {
			break
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			fn(i)
			if k := done.Add(1); k%100 == 0 || int(k) == n {
				r.progress("%s %d/%d", what, k, n)
			}
		}()
	}
	wg.Wait()
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// latencies are delivery latencies in milliseconds: all of them, and, with
// several targets, split by whether the gateway's connection was on the
// replica that handled the deploy request.
type latencies struct{ all, same, cross []float64 }

func (l *latencies) add(o latencies) {
	l.all = append(l.all, o.all...)
	l.same = append(l.same, o.same...)
	l.cross = append(l.cross, o.cross...)
}

// percentiles returns the p50, p99 and max of xs (zeros when empty).
func percentiles(xs []float64) (p50, p99, top float64) {
	if len(xs) == 0 {
		return 0, 0, 0
	}
	return quantile(xs, 0.5), quantile(xs, 0.99), quantile(xs, 1)
}

// quantile sorts xs and returns its q quantile by nearest rank: the
// smallest value with at least q of the values at or below it, so that the
// p99 of five deployments is the slowest, not the second slowest. (For the
// thousands of delivery latencies it is the value the previous formula,
// index q*(n-1) rounded down, picked.)
func quantile(xs []float64, q float64) float64 {
	slices.Sort(xs)
	i := int(math.Ceil(q*float64(len(xs)))) - 1
	return xs[min(max(i, 0), len(xs)-1)]
}

// cleanup deletes what the run created: the gateways (which closes their
// connections), the APIs and the project. Gateways go first: deleting an
// API still deployed undeploys it on every replica holding its gateways,
// and the request waits for their reports, for the whole delivery wait
// when one of them has died (a replica killed during -hold); with the
// gateways gone there is no one left to tell.
func (r *runner) cleanup() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	for _, g := range r.gws {
		g.disconnect()
	}
	r.forEach(ctx, r.gws, func(g *gateway) {
		if g.id != "" {
			if err := r.call(ctx, "DELETE", "/api/v1/gateways/"+g.id, nil, nil, 204); err != nil {
				r.fail("cleanup: %v", err)
			}
		}
	}, "cleaning up")
	r.sweepGateways(ctx)
	r.parallel(ctx, len(r.apis), func(i int) {
		if r.apis[i] == "" {
			return
		}
		if err := r.call(ctx, "DELETE", "/api/v1/apis/"+r.apis[i], nil, nil, 204); err != nil {
			r.fail("cleanup: %v", err)
		}
	}, "deleting APIs")
	if r.project == "" {
		r.project = r.findProject(ctx)
	}
	if r.project != "" {
		r.sweepAPIs(ctx)
		if err := r.call(ctx, "DELETE", "/api/v1/projects/"+r.project, nil, nil, 204); err != nil {
			r.fail("cleanup: %v", err)
		}
	}
}

// listed is an item of a list answer: what the sweeps look at.
type listed struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

type listPage struct {
	List       []listed `json:"list"`
	Pagination struct {
		Total int `json:"total"`
	} `json:"pagination"`
}

// sweepGateways deletes the gateways named after this run that cleanup did
// not know of: a registration whose answer was lost (an interrupt, a
// timeout) may have created one.
func (r *runner) sweepGateways(ctx context.Context) {
	if r.suffix == "" {
		return
	}
	prefix := "sim-" + r.suffix + "-"
	for offset := 0; ; {
		var page listPage
		if err := r.call(ctx, "GET", fmt.Sprintf("/api/v1/gateways?limit=1000&offset=%d", offset), nil, &page, 200); err != nil {
			r.fail("cleanup: %v", err)
			return
		}
		deleted := 0
		for _, g := range page.List {
			if !strings.HasPrefix(g.Name, prefix) {
				offset++
				continue
			}
			if err := r.call(ctx, "DELETE", "/api/v1/gateways/"+g.ID, nil, nil, 204, 404); err != nil {
				r.fail("cleanup: %v", err)
				return
			}
			deleted++
		}
		if len(page.List) == 0 || deleted == 0 && offset >= page.Pagination.Total {
			return
		}
	}
}

// sweepAPIs deletes what the run's project still holds: APIs whose
// creation answer was lost.
func (r *runner) sweepAPIs(ctx context.Context) {
	for range 1 + maxAPIs/1000 { // every round deletes a page of 1,000
		var page listPage
		if err := r.call(ctx, "GET", "/api/v1/apis?limit=1000&projectId="+r.project, nil, &page, 200); err != nil {
			r.fail("cleanup: %v", err)
			return
		}
		if len(page.List) == 0 {
			return
		}
		for _, a := range page.List {
			if err := r.call(ctx, "DELETE", "/api/v1/apis/"+a.ID, nil, nil, 204, 404); err != nil {
				r.fail("cleanup: %v", err)
				return
			}
		}
	}
}

// findProject returns the id of the run's project when its creation
// answer was lost, or "".
func (r *runner) findProject(ctx context.Context) string {
	if r.suffix == "" {
		return ""
	}
	var page listPage
	if err := r.call(ctx, "GET", "/api/v1/projects?limit=1000", nil, &page, 200); err != nil {
		return ""
	}
	for _, p := range page.List {
		if p.Name == "simulate-"+r.suffix {
			return p.ID
		}
	}
	return ""
}

// missedEvents counts, over the deployments, the gateways that were not
// churned and yet got no live event.
func (rep *Report) missedEvents() int {
	n := 0
	for _, d := range rep.Deployments {
		n += max(0, rep.Gateways-d.Churned-d.Delivered)
	}
	return n
}

// WriteTable writes the report for a person.
func (rep *Report) WriteTable(w io.Writer) {
	fmt.Fprintf(w, "target            %s\n", rep.Target)
	if rep.Generation == 2 {
		fmt.Fprintf(w, "generation        2 (manifest on connect, performedAt rule, RestApi documents, acknowledgements)\n")
	}
	fmt.Fprintf(w, "gateways          %d (churn %.0f%% per deployment, %d reconnects)\n", rep.Gateways, rep.Churn*100, rep.Reconnects)
	fmt.Fprintf(w, "fleet connected   %.2f s\n", rep.ConnectSec)
	if ds := rep.DesiredState; ds != nil {
		applied := "downloaded"
		if rep.Generation == 2 {
			applied = "downloaded and acknowledged (or held)"
		}
		fmt.Fprintf(w, "desired state     %d APIs, each deployed to the whole offline fleet: %.2f s\n", ds.APIs, ds.SetupSec)
		fmt.Fprintf(w, "                  converged: connect and reconnect -> every gateway has %s all %d\n", applied, ds.APIs)
		for _, ph := range []struct {
			name string
			p    PhaseReport
		}{{"connect", ds.Connect}, {"reconnect", ds.Reconnect}} {
			fmt.Fprintf(w, "  %-9s       %.1f ms, converged %v; %d events, %d pings answered, %d connections ended by the server, longest event %.1f ms\n",
				ph.name, ph.p.ConvergeMs, ph.p.Converged, ph.p.Events, ph.p.Pongs, ph.p.ServerClosed, ph.p.MaxEventMs)
		}
	}
	if rep.Deploys == 0 {
		fmt.Fprintf(w, "deployments       none (-deploys 0): nothing was deployed to measure\n")
	} else {
		fmt.Fprintf(w, "delivery latency  p50 %.1f ms   p99 %.1f ms   max %.1f ms\n", rep.DeliveryP50, rep.DeliveryP99, rep.DeliveryMax)
		if rep.Deploys > 1 {
			fmt.Fprintf(w, "  after the first p50 %.1f ms   p99 %.1f ms\n", rep.DeliveryLaterP50, rep.DeliveryLaterP99)
		}
	}
	if strings.Contains(rep.Target, ",") && rep.Deploys > 0 {
		fmt.Fprintf(w, "  same replica    p50 %.1f ms   p99 %.1f ms   max %.1f ms (connection on the replica that took the deploy request)\n",
			rep.DeliverySameP50, rep.DeliverySameP99, rep.DeliverySameMax)
		fmt.Fprintf(w, "  cross replica   p50 %.1f ms   p99 %.1f ms   max %.1f ms\n", rep.DeliveryCrossP50, rep.DeliveryCrossP99, rep.DeliveryCrossMax)
		fmt.Fprintf(w, "moved             %d (reconnections to another replica after a connection was lost)\n", rep.Moved)
	}
	last := "downloaded"
	if rep.Generation == 2 {
		last = "acknowledged"
	}
	if strings.Contains(rep.Target, ",") && rep.Deploys == 0 {
		fmt.Fprintf(w, "moved             %d (reconnections to another replica after a connection was lost)\n", rep.Moved)
	}
	if rep.Deploys > 0 {
		fmt.Fprintf(w, "convergence       worst %.1f ms (request sent -> last gateway %s)\n", rep.ConvergenceMax, last)
	}
	if rep.Generation == 2 && len(rep.Deployments) > 0 {
		fmt.Fprintf(w, "deploy answer     p50 %.1f ms   p99 %.1f ms (request sent -> answer received, waiting for acknowledgements)\n", rep.DeployAnswerP50, rep.DeployAnswerP99)
	}
	if rep.ServerRSSKiB > 0 {
		fmt.Fprintf(w, "server            CPU %.3f s per deployment after the first; resident memory %d KiB now, %d KiB at the peak\n",
			rep.ServerCPUPerDeployment, rep.ServerRSSKiB, rep.ServerPeakRSSKiB)
	}
	if len(rep.Deployments) > 0 {
		fmt.Fprintf(w, "\n%-4s %-38s %10s %10s %10s %10s %8s %14s %s\n", "#", "revision", "request", "p50", "p99", "delivered", "churned", "convergence", "ok")
	}
	for i, d := range rep.Deployments {
		fmt.Fprintf(w, "%-4d %-38s %8.1fms %8.1fms %8.1fms %10d %8d %12.1fms %v\n", i+1, d.RevisionID, d.RequestMs, d.DeliveryP50, d.DeliveryP99, d.Delivered, d.Churned, d.ConvergenceMs, d.Converged)
		if d.Answered != nil {
			fmt.Fprintf(w, "     answered %s; ended %s\n", statusCounts(d.Answered), statusCounts(d.Final))
		}
	}
	if rep.Rollout != nil {
		fmt.Fprintln(w)
		rep.Rollout.write(w)
	}
	deployed := ""
	if rep.AllDeployed != nil {
		deployed = fmt.Sprintf(", all deployed %v", *rep.AllDeployed)
	}
	if h := rep.Hold; h != nil {
		fmt.Fprintf(w, "\nhold              %.1f s: %d connections lost, %d gateways moved; at the end %d live %v, converged on the last deployment %v (%d not)\n",
			h.Seconds, h.Lost, h.Moved, h.Live, h.GatewaysPerTarget, h.Converged, h.NotConverged)
		if h.RecoveryMs > 0 {
			fmt.Fprintf(w, "                  first connection lost -> last of those gateways converged again: %.1f ms\n", h.RecoveryMs)
		}
	}
	if k := rep.Keys; k != nil {
		fmt.Fprintf(w, "\nAPI keys          %d created (p50 %.1f ms, p99 %.1f ms); then, %d gateways away and coming back: %d regenerated, %d revoked, %d created\n",
			k.Keys, k.CreateP50, k.CreateP99, k.Churned, k.Regenerated, k.Revoked, k.CreatedMore)
		fmt.Fprintf(w, "                  %d/%d gateways hold exactly the current set (converged %v, %.1f ms after the last change)\n",
			k.Converged, rep.Gateways, k.AllConverged, k.ConvergeMs)
		fmt.Fprintf(w, "                  one revocation applied: p50 %.1f ms   p99 %.1f ms   max %.1f ms (request sent -> gateway dropped it)\n",
			k.RevokeP50, k.RevokeP99, k.RevokeMax)
	}
	fmt.Fprintf(w, "\nall delivered %v, all converged %v%s, %d errors\n", rep.AllDelivered, rep.AllConverged, deployed, len(rep.Errors))
	if missed := rep.missedEvents(); !rep.AllDelivered && rep.AllConverged && missed > 0 {
		fmt.Fprintf(w, "  not delivered: %d live event(s) reached no connection of their gateway (one being made or "+
			"replaced as the deployment went out); every such gateway converged anyway, from the state sent on connect\n", missed)
	}
	for _, e := range rep.Errors {
		fmt.Fprintf(w, "  error: %s\n", e)
	}
}
