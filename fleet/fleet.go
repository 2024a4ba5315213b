// Package fleet is where what gateways should run meets the gateways that
// are connected: it records deployments, undeployments, deletions and
// revocations through the store, delivers their events to the live
// connections (hub) in the form each gateway generation understands, takes
// the acknowledgements of second-generation gateways, and tells the caller
// how far each deployment got. HTTP handlers call it; they never coordinate
// the store and the hub themselves.
//
// Ordering. Every change is delivered from the store's publisher, which
// runs after the change's transaction commits and in commit order (store
// Change). Two requests about one API may race, but their events reach each
// connection in the order their transactions committed, so a gateway's last
// event always matches the stored state.
//
// Statuses. A first-generation gateway's deployment is PENDING until a live
// connection takes it, then DELIVERED. A second-generation gateway's is
// DEPLOYING once sent, then DEPLOYED when every connection that took it
// acknowledged success, or FAILED. See store's status constants.
package fleet

import (
	"context"
	"log/slog"
	"maps"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"platform-api/hub"
	"platform-api/store"
)

// Options configure the fleet.
type Options struct {
	Store *store.DB
	// Hub configures the gateway channel; its OnConnect, OnMessage and
	// OnDisconnect are the fleet's.
	Hub hub.Config
	Log *slog.Logger
	// GenerationGrace is how long a new connection's initial state waits
	// for its gateway's manifest before the gateway is taken for the
	// first generation (or for what it reported on an earlier
	// connection). Default 1 s.
	GenerationGrace time.Duration
	// DeliveryWait bounds how long a request waits to learn what
	// delivering its change did (PostgreSQL delivers from the listener).
	// A gateway not reported in time is answered PENDING. Default 2 s.
	DeliveryWait time.Duration
	// Consumers are the features whose state follows APIs onto
	// second-generation gateways (consumers.go), in the order their
	// state is sent.
	Consumers []ConsumerSource
}

// DefaultDeliveryWait is the default of Options.DeliveryWait.
const DefaultDeliveryWait = 2 * time.Second

// DefaultGenerationGrace is the default of Options.GenerationGrace. A
// second-generation gateway posts its manifest as it connects (well within
// it); a first-generation one waits this long for its initial state. A
// manifest that comes later still makes the connection second generation,
// and its state is sent again in that form.
const DefaultGenerationGrace = time.Second

// Fleet coordinates the store and the hub.
type Fleet struct {
	store *store.DB
	hub   *hub.Hub
	log   *slog.Logger
	grace time.Duration

	mu      sync.Mutex
	reports map[string]*pendingReport // change ID -> what delivering it did
	waiters map[string]chan struct{}  // API ID -> closed at its next status change
	wait    time.Duration             // how long a request waits for its change's report

	// followUps carries other replicas' changes this one delivered to the
	// worker that records the deliveries and reports them to the origin.
	followUps chan followUp
	stopped   chan struct{}
	// arrivals are the gateways that gained a connection here lately, by
	// when: their cap across replicas is checked once every replica's
	// count is written (trimLoop).
	arrivalsMu sync.Mutex
	arrivals   map[string]time.Time

	// Overflowed counts other replicas' changes the follow-up queue had
	// no room for: their gateways were sent their state again instead.
	Overflowed atomic.Int64

	acks      acks
	consumers consumers
	served    served
}

// report is what delivering one change did, by gateway.
type report map[string]delivered

// pendingReport is what delivering a change of this process did, as a
// request waits for it: the local part is ready when the change is
// committed (SQLite) or once the listener has published it (PostgreSQL);
// other replicas report theirs (store.Report), in parts.
type pendingReport struct {
	rep    report // local
	ready  chan struct{}
	remote map[string]*remoteReport // by replica
	wake   chan struct{}            // a remote part came
	at     time.Time
}

type remoteReport struct {
	rep        report
	got, parts int
}

func (p *pendingReport) remoteDone(replicas map[string]bool) bool {
	for r := range replicas {
		rr := p.remote[r]
		if rr == nil || rr.got < rr.parts {
			return false
		}
	}
	return true
}

// merged is the local report with every remote one added.
func (p *pendingReport) merged() report {
	out := report{}
	for gw, d := range p.rep {
		out[gw] = d
	}
	for _, rr := range p.remote {
		for gw, d := range rr.rep {
			o := out[gw]
			out[gw] = delivered{conns: o.conns + d.conns, gen2: o.gen2 + d.gen2, joining: o.joining + d.joining}
		}
	}
	return out
}

// delivered is what delivering one change did on one gateway: the
// connections that took the event, of which second generation, and those
// whose generation was not known yet (their initial state carries it).
type delivered struct{ conns, gen2, joining int }

// New builds the fleet over o.Store, with a hub configured by o.Hub, and
// makes itself the store's publisher.
func New(o Options) *Fleet {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.GenerationGrace <= 0 {
		o.GenerationGrace = DefaultGenerationGrace
	}
	if o.DeliveryWait <= 0 {
		o.DeliveryWait = DefaultDeliveryWait
	}
	f := &Fleet{store: o.Store, log: o.Log, grace: o.GenerationGrace, wait: o.DeliveryWait,
		reports: map[string]*pendingReport{}, waiters: map[string]chan struct{}{},
		followUps: make(chan followUp, 1024), stopped: make(chan struct{})}
	f.acks.init(f)
	f.consumers.init(f, o.Consumers)
	f.served.init(o.Store != nil && !o.Store.Replicated())
	go f.followUpLoop()
	hc := o.Hub
	hc.OnConnect = f.initialState
	hc.OnMessage = f.onMessage
	hc.OnDisconnect = f.onDisconnect
	f.hub = hub.New(hc, o.Log)
	if o.Store != nil && o.Store.Replicated() {
		f.arrivals = map[string]time.Time{}
		go f.trimLoop() // it reads f.hub: started once that is set
	}
	if o.Store != nil {
		o.Store.SetPublisher(f.publish)
		o.Store.SetResync(f.resync)
		o.Store.SetReportReceiver(f.receiveReport)
	}
	return f
}

// Hub is the registry of live connections.
func (f *Fleet) Hub() *hub.Hub { return f.hub }

// Close stops the fleet's background work (after the hub has shut down).
func (f *Fleet) Close() {
	select {
	case <-f.stopped:
		return
	default:
	}
	close(f.stopped)
	f.acks.close()
}

// publish delivers a committed change to the live connections. The store
// calls it in commit order, one change at a time; it never blocks (the hub
// queues or drops, the ack table is in memory).
func (f *Fleet) publish(c *store.Change) {
	f.served.apply(c) // before the events, for the downloads they cause
	switch c.Kind {
	case store.ChangeDeployed, store.ChangeUndeployed, store.ChangeAPIDeleted:
		rep := f.deliverAll(c.Deployments, c.Kind)
		if c.Local {
			f.mu.Lock()
			p := f.reportLocked(c.ID)
			p.rep = rep
			close(p.ready)
			f.mu.Unlock()
		} else {
			// Another replica's change: record what was delivered here and
			// tell it, off this goroutine (it must not block).
			select {
			case f.followUps <- followUp{c, rep}:
			default:
				f.overflowed(c)
			}
		}
		if len(c.Deployments) > 0 {
			f.statusChanged(c.Deployments[0].APIID)
		}
	case store.ChangeTokenRevoked, store.ChangeGatewayDeleted:
		if c.Kind == store.ChangeTokenRevoked {
			f.hub.CloseToken(c.TokenID)
		} else {
			f.hub.CloseGateway(c.GatewayID)
		}
		// The request waits for every replica to have closed them.
		if c.Local {
			f.mu.Lock()
			close(f.reportLocked(c.ID).ready)
			f.mu.Unlock()
		} else {
			select {
			case f.followUps <- followUp{c: c}:
			default:
				f.overflowed(c) // the revoking replica's wait ends at its bound
			}
		}
	case store.ChangeManifest:
		f.learnGeneration(c.GatewayID)
	case store.ChangeStatus:
		for _, api := range c.APIIDs {
			f.statusChanged(api)
		}
	case store.ChangeConsumer:
		f.consumers.publish(c.Consumer)
	case store.ChangeConsumersPulled:
		for _, conn := range f.hub.Conns(c.GatewayID) {
			f.consumers.afterPull(conn)
		}
	}
}

// fanOutMin is the fewest deployments a delivering goroutine takes: below
// twice that, one goroutine delivers them all.
const fanOutMin = 128

// deliverAll delivers a change's deployments and reports what that did. A
// change to many gateways is delivered by several goroutines at once (each
// gateway's connections are served by one of them, so every connection
// still gets its events in commit order: the publisher waits for them all
// before the next change).
func (f *Fleet) deliverAll(deps []*store.Deployment, kind store.ChangeKind) report {
	workers := min(runtime.GOMAXPROCS(0), len(deps)/fanOutMin)
	if workers <= 1 {
		rep := report{}
		f.deliverTo(deps, kind, rep)
		return rep
	}
	parts := make([]report, workers)
	var wg sync.WaitGroup
	size := (len(deps) + workers - 1) / workers
	for i := range parts {
		parts[i] = report{}
		part := deps[min(i*size, len(deps)):min((i+1)*size, len(deps))]
		wg.Go(func() { f.deliverTo(part, kind, parts[i]) })
	}
	wg.Wait()
	rep := make(report, len(deps))
	for _, p := range parts {
		maps.Copy(rep, p)
	}
	return rep
}

// deliverTo delivers deps and notes in rep the gateways that took them or
// were joining.
func (f *Fleet) deliverTo(deps []*store.Deployment, kind store.ChangeKind, rep report) {
	for _, d := range deps {
		if n := f.deliver(d, kind); n.conns > 0 || n.joining > 0 {
			rep[d.GatewayID] = n
		}
	}
}

// deliver sends one deployment's action to the gateway's live connections,
// and expects the acknowledgement of the second-generation ones.
func (f *Fleet) deliver(d *store.Deployment, kind store.ChangeKind) delivered {
	var ev *hub.Event
	switch kind {
	case store.ChangeDeployed:
		ev = deployedEvent(d, d.PerformedAt)
		ev.Sent = f.consumersFollow(d.APIID)
	case store.ChangeUndeployed:
		ev = undeployedEvent(d, d.PerformedAt)
	case store.ChangeAPIDeleted:
		ev = deletedEvent(d.APIID, d.DeploymentID, d.Vhost, d.PerformedAt, d.State == store.StateDeployed)
	}
	var out delivered
	out.conns, out.joining = f.hub.Deliver(d.GatewayID, ev, func(c *hub.Conn) {
		if c.Generation() == hub.Gen2 {
			out.gen2++
			if kind != store.ChangeAPIDeleted { // a deletion is not acknowledged
				f.acks.expect(c, d.APIID, d.DeploymentID, kind == store.ChangeUndeployed)
			}
		}
	})
	return out
}

// reportLocked returns the entry of change id, made by whichever comes
// first: the request, the publisher or a remote report. Entries nobody
// claimed (a request that gave up waiting) are dropped after a minute.
// f.mu must be held.
func (f *Fleet) reportLocked(id string) *pendingReport {
	p := f.reports[id]
	if p == nil {
		now := time.Now()
		for k, old := range f.reports {
			if now.Sub(old.at) > time.Minute {
				delete(f.reports, k)
			}
		}
		p = &pendingReport{ready: make(chan struct{}), remote: map[string]*remoteReport{}, wake: make(chan struct{}, 1), at: now}
		f.reports[id] = p
	}
	return p
}

// takeReport waits, at most f.wait, for what delivering change c did:
// here, and on the other replicas that hold connections of its gateways.
// It returns this replica's part (which it records) and the whole (which
// the request answers). What is not reported in time counts as not
// delivered: those gateways are answered PENDING and converge when their
// replica catches up or they reconnect.
func (f *Fleet) takeReport(ctx context.Context, c *store.Change) (local, all report) {
	var expected map[string]bool
	if f.store.Replicated() && len(c.Deployments) > 0 {
		ids := make([]string, len(c.Deployments))
		for i, d := range c.Deployments {
			ids[i] = d.GatewayID
		}
		var err error
		if expected, err = f.store.ReplicasHolding(ctx, ids); err != nil {
			f.log.Warn("could not tell which replicas hold the gateways; answering for this one", "err", err)
		}
	}
	return f.awaitReport(ctx, c, expected)
}

// awaitReport waits, at most f.wait, until this replica has applied change
// c and every expected replica has reported it.
func (f *Fleet) awaitReport(ctx context.Context, c *store.Change, expected map[string]bool) (local, all report) {
	f.mu.Lock()
	p := f.reportLocked(c.ID)
	f.mu.Unlock()
	timer := time.NewTimer(f.wait)
	defer timer.Stop()
	// ready is p.ready until it is closed, then nil: once applied here, only
	// the other replicas' reports (wake) are waited for, not spun on.
	ready := p.ready
wait:
	for {
		f.mu.Lock()
		done := p.remoteDone(expected)
		f.mu.Unlock()
		select {
		case <-p.ready:
			if done {
				break wait
			}
			ready = nil
		default:
		}
		select {
		case <-ready:
		case <-p.wake:
		case <-timer.C:
			f.log.Warn("a change was not reported in time by every replica; a deploy answers the gateways not reported PENDING",
				"change", c.ID, "wait", f.wait)
			break wait
		case <-ctx.Done():
			break wait
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.reports, c.ID)
	select {
	case <-p.ready:
		return p.rep, p.merged()
	default:
		p.rep = report{}
		return report{}, p.merged()
	}
}

// receiveReport takes a part of another replica's delivery report of a
// change of this process.
func (f *Fleet) receiveReport(r store.Report) {
	f.mu.Lock()
	defer f.mu.Unlock()
	p := f.reportLocked(r.ChangeID)
	rr := p.remote[r.Replica]
	if rr == nil {
		rr = &remoteReport{rep: report{}, parts: r.Parts}
		p.remote[r.Replica] = rr
	}
	for _, e := range r.Entries {
		rr.rep[e.GatewayID] = delivered{conns: e.Connections, gen2: e.Gen2, joining: e.Joining}
	}
	rr.got++
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// settleAfter is how long after a connection arrives its gateway's counts
// on every replica are taken as written: a few of the store's background
// rounds (250 ms each).
const settleAfter = time.Second

// noteArrival notes that the gateway gained a connection here.
func (f *Fleet) noteArrival(gatewayID string) {
	if f.arrivals == nil {
		return
	}
	f.arrivalsMu.Lock()
	f.arrivals[gatewayID] = time.Now()
	f.arrivalsMu.Unlock()
}

// trimLoop enforces the per-gateway cap across replicas. Each replica
// refuses a connection that would put the gateway over its cap, counting
// the others' connections as last written; connections that arrive on
// several replicas at once all pass that check. Once their counts are
// written, every replica works out the same split of the cap from the
// same rows: in the order of replica ids, each keeps what it holds while
// the cap allows; each closes its own newest connections beyond its part.
func (f *Fleet) trimLoop() {
	t := time.NewTicker(settleAfter / 2)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-f.stopped:
			return
		}
		cap := f.hub.MaxPerGateway()
		f.arrivalsMu.Lock()
		var due []string
		for gw, at := range f.arrivals {
			// Checked over a few rounds: another replica's connections that
			// arrived a moment before or after are written by then.
			if age := time.Since(at); age >= settleAfter {
				due = append(due, gw)
				if age >= 3*settleAfter {
					delete(f.arrivals, gw)
				}
			}
		}
		f.arrivalsMu.Unlock()
		if cap <= 0 || len(due) == 0 {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		remote, err := f.store.ConnectionsByReplica(ctx, due)
		cancel()
		if err != nil {
			f.log.Warn("could not check gateways' connections across replicas", "err", err)
			continue
		}
		self := f.store.ReplicaID()
		for _, gw := range due {
			counts := map[string]int{self: f.liveConns(gw)}
			for r, n := range remote[gw] {
				counts[r] = n
			}
			left := cap
			for _, r := range slices.Sorted(maps.Keys(counts)) {
				keep := min(counts[r], left)
				left -= keep
				if r == self {
					f.hub.Trim(gw, counts[r]-keep)
				}
			}
		}
	}
}

// overflowed handles another replica's change that the follow-up queue had
// no room for: its deliveries here cannot be recorded in order, so the
// gateways concerned are sent their whole state again, whose delivery is
// recorded as on connect (their rows would otherwise stay PENDING until
// they reconnect). It is counted and logged.
func (f *Fleet) overflowed(c *store.Change) {
	f.Overflowed.Add(1)
	f.log.Warn("too many changes of other replicas to follow up; resending their gateways' state", "change", c.ID)
	seen := map[string]bool{}
	for _, d := range c.Deployments {
		if !seen[d.GatewayID] {
			seen[d.GatewayID] = true
			for _, conn := range f.hub.Conns(d.GatewayID) {
				conn.Resync()
			}
		}
	}
}

// followUp is another replica's change, and what delivering it here did.
type followUp struct {
	c   *store.Change
	rep report
}

// followUpLoop records the deliveries of other replicas' changes made here
// and reports them to the replica that made the change, in order.
func (f *Fleet) followUpLoop() {
	for {
		var fu followUp
		select {
		case fu = <-f.followUps:
		case <-f.stopped:
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		switch fu.c.Kind {
		case store.ChangeDeployed, store.ChangeUndeployed:
			f.recordDeliveries(ctx, fu.c.Deployments, fu.rep, fu.c.Kind == store.ChangeUndeployed)
		case store.ChangeAPIDeleted:
			f.recordDeletions(ctx, fu.c.Deployments, fu.rep)
		}
		entries := make([]store.ReportEntry, 0, len(fu.rep))
		for gw, d := range fu.rep {
			entries = append(entries, store.ReportEntry{GatewayID: gw, Connections: d.conns, Gen2: d.gen2, Joining: d.joining})
		}
		if err := f.store.SendReport(ctx, fu.c.ID, fu.c.Origin, entries); err != nil {
			f.log.Warn("could not report a delivery to the replica that made the change", "change", fu.c.ID, "err", err)
		}
		cancel()
	}
}

// statusChanged wakes those waiting for a status change of the API.
func (f *Fleet) statusChanged(apiID string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if ch, ok := f.waiters[apiID]; ok {
		close(ch)
		delete(f.waiters, apiID)
	}
}

// resync follows changes that may have been missed (the store's listener
// was lost): the live gateways get their state again, and everyone waiting
// on a status change reads the status again, as the change that would have
// woken them may be among those missed.
//
// A revocation or a gateway's deletion may be among the missed changes:
// the tokens of the live connections are checked again first, and the
// connections of those no longer valid closed, as the change would have.
func (f *Fleet) resync() {
	f.mu.Lock()
	for id, ch := range f.waiters {
		close(ch)
		delete(f.waiters, id)
	}
	f.mu.Unlock()
	// Not on the caller's goroutine: the store's listener calls this.
	go func() {
		f.recheckTokens()
		f.hub.Resync()
	}()
}

// recheckTokens closes the live connections whose token is no longer
// valid (revoked, or its gateway deleted).
func (f *Fleet) recheckTokens() {
	tokens := f.hub.Tokens()
	if len(tokens) == 0 || f.store == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	active, err := f.store.ActiveTokens(ctx, tokens)
	if err != nil {
		f.log.Warn("could not check the tokens of live gateway connections after missed changes", "err", err)
		return
	}
	for _, id := range tokens {
		if !active[id] {
			f.log.Info("closing the connections of a token revoked while changes were missed", "token", id)
			f.hub.CloseToken(id)
		}
	}
}

// StatusChange returns a channel closed at the API's next status change.
// Take it before reading the statuses, then wait on it.
func (f *Fleet) StatusChange(apiID string) <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	ch, ok := f.waiters[apiID]
	if !ok {
		ch = make(chan struct{})
		f.waiters[apiID] = ch
	}
	return ch
}

// Result is what a deployment to one gateway did, as the deploy request is
// answered (contract §2).
type Result struct {
	RevisionID           string    `json:"revisionId"`
	GatewayID            string    `json:"gatewayId"`
	DeploymentID         string    `json:"deploymentId"`
	Status               string    `json:"status"`
	ErrorCode            string    `json:"errorCode,omitempty"`
	Vhost                string    `json:"vhost"`
	DisplayOnDevportal   bool      `json:"displayOnDevportal"`
	DeployedTime         time.Time `json:"deployedTime"`
	DeliveredConnections int       `json:"deliveredConnections"`
	// joining counts the gateway's connections that were learning their
	// generation, when it had no other: their initial state delivers the
	// deployment.
	joining int
}

// statusAfter is a deployment's status once delivered as rep says: a
// second-generation connection took it (an acknowledgement will follow),
// only first-generation ones did, or none did.
func statusAfter(rep delivered, undeploy bool) string {
	switch {
	case rep.gen2 > 0 && undeploy:
		return store.StatusUndeploying
	case rep.gen2 > 0:
		return store.StatusDeploying
	case rep.conns > 0 && undeploy:
		return store.StatusUndeployed
	case rep.conns > 0:
		return store.StatusDelivered
	case undeploy:
		return store.StatusUndeploying
	}
	return store.StatusPending
}

// recordDeliveries stores what delivering a change did. A gateway whose
// connections all ended since they took the event was recorded offline
// before the status said it waits for an acknowledgement, so it is
// recorded offline again: what it owes waits for its return.
func (f *Fleet) recordDeliveries(ctx context.Context, deps []*store.Deployment, rep report, undeploy bool) {
	var ds []store.Delivery
	var waiting []string
	for _, d := range deps {
		if r := rep[d.GatewayID]; r.conns > 0 {
			ds = append(ds, store.Delivery{APIID: d.APIID, GatewayID: d.GatewayID, DeploymentID: d.DeploymentID,
				Status: statusAfter(r, undeploy)})
			if r.gen2 > 0 {
				waiting = append(waiting, d.GatewayID)
			}
		}
	}
	if err := f.store.RecordDeliveries(ctx, ds); err != nil {
		f.log.Warn("could not record deliveries", "err", err)
	}
	for _, gw := range waiting {
		if !f.liveAnywhere(ctx, gw) {
			if err := f.store.GatewayOffline(ctx, gw); err != nil {
				f.log.Warn("could not record a gateway going offline", "gateway", gw, "err", err)
			}
		}
	}
}

// live reports whether the gateway has a connection here that has not
// ended (one that has may still be registered while its cleanup runs).
func (f *Fleet) live(gatewayID string) bool {
	return f.liveConns(gatewayID) > 0
}

// liveConns counts the gateway's connections here that have not ended.
func (f *Fleet) liveConns(gatewayID string) int {
	n := 0
	for _, c := range f.hub.Conns(gatewayID) {
		if c.Context().Err() == nil {
			n++
		}
	}
	return n
}

// liveAnywhere reports whether the gateway has a live connection here or on
// another replica (when the database cannot tell, it is taken as live:
// offline is the claim that needs proof).
func (f *Fleet) liveAnywhere(ctx context.Context, gatewayID string) bool {
	if f.live(gatewayID) {
		return true
	}
	if !f.store.Replicated() {
		return false
	}
	remote, err := f.store.RemotePresence(ctx, []string{gatewayID})
	return err != nil || remote[gatewayID].Connections > 0
}

// MaxWait bounds how long a deploy request may wait for the gateways.
const MaxWait = 60 * time.Second

// Deploy records that each target gateway runs a revision of the API (a new
// one of the current definition, or revisionID: a rollback), in one
// transaction, then delivers api.deployed to the targets' live connections.
// check may refuse the revision before anything is recorded. With wait > 0
// it answers once no target's deployment is waiting for an
// acknowledgement, or when wait has passed, with the statuses as they are.
func (f *Fleet) Deploy(ctx context.Context, orgID, apiID, revisionID string, targets []store.DeployTarget,
	check func(*store.Revision) error, wait time.Duration) ([]Result, error) {
	rev, change, err := f.store.Deploy(ctx, orgID, apiID, revisionID, targets, check)
	if err != nil {
		return nil, err
	}
	// What was delivered is recorded whether or not the client stays for
	// the answer (its rows would otherwise stay PENDING): the wait for
	// reports is bounded by f.wait anyway.
	rctx := context.WithoutCancel(ctx)
	local, rep := f.takeReport(rctx, change)
	f.recordDeliveries(rctx, change.Deployments, local, false)
	out := make([]Result, len(change.Deployments))
	for i, d := range change.Deployments {
		r := rep[d.GatewayID]
		out[i] = Result{RevisionID: rev.ID, GatewayID: d.GatewayID, DeploymentID: d.DeploymentID,
			Status: statusAfter(r, false), Vhost: d.Vhost, DisplayOnDevportal: d.DisplayOnDevportal,
			DeployedTime: d.DeployedTime, DeliveredConnections: r.conns}
		if r.conns == 0 {
			out[i].joining = r.joining
		}
	}
	switch {
	case wait > 0:
		f.waitSettled(ctx, apiID, out, min(wait, MaxWait), false)
	case slices.ContainsFunc(out, func(r Result) bool { return r.joining > 0 }):
		// A gateway that just connected is told once its generation is
		// known, within the grace period: answer with what that did, as
		// for a gateway whose connection was ready.
		f.waitSettled(ctx, apiID, out, f.grace+time.Second, true)
	}
	return out, nil
}

// waitSettled waits until none of the results' deployments is DEPLOYING
// (unless joinedOnly), nor PENDING on a gateway whose connections were
// learning their generation, or until the wait ends, and updates the
// results with the stored statuses.
func (f *Fleet) waitSettled(ctx context.Context, apiID string, out []Result, wait time.Duration, joinedOnly bool) {
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	ids := make([]string, len(out))
	for i, r := range out {
		ids[i] = r.GatewayID
	}
	for {
		changed := f.StatusChange(apiID)
		// A fresh context for the read: the wait may just have ended.
		statuses, err := f.store.DeploymentStatuses(context.WithoutCancel(ctx), apiID, ids)
		if err != nil {
			f.log.Warn("could not read deployment statuses", "api", apiID, "err", err)
			return
		}
		settled := true
		for i := range out {
			d := statuses[out[i].GatewayID]
			if d == nil || d.DeploymentID != out[i].DeploymentID {
				continue // replaced by a later deployment: that one's status is not ours
			}
			out[i].Status, out[i].ErrorCode = d.Status, d.ErrorCode
			if out[i].joining > 0 {
				if d.Status == store.StatusPending {
					settled = false
					continue
				}
				out[i].DeliveredConnections = out[i].joining // their initial state delivered it
			}
			if d.Status == store.StatusDeploying && !joinedOnly {
				settled = false
			}
		}
		if settled {
			return
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return
		}
	}
}

// Undeploy undeploys an API from a gateway and tells its live connections.
func (f *Fleet) Undeploy(ctx context.Context, orgID, apiID, gatewayID string) error {
	change, err := f.store.Undeploy(ctx, orgID, apiID, gatewayID)
	if err != nil {
		return err
	}
	ctx = context.WithoutCancel(ctx) // recorded even if the client left (see Deploy)
	local, _ := f.takeReport(ctx, change)
	f.recordDeliveries(ctx, change.Deployments, local, true)
	return nil
}

// DeleteAPI deletes an API with its deployments; the gateways that ran it
// are told (api.deleted for the second generation, api.undeployed for the
// first).
func (f *Fleet) DeleteAPI(ctx context.Context, orgID, apiID string) error {
	change, err := f.store.DeleteAPI(ctx, orgID, apiID)
	if err != nil || change == nil {
		return err
	}
	ctx = context.WithoutCancel(ctx) // recorded even if the client left (see Deploy)
	local, _ := f.takeReport(ctx, change)
	f.recordDeletions(ctx, change.Deployments, local)
	return nil
}

// recordDeletions records that an API's deletion reached gateways.
func (f *Fleet) recordDeletions(ctx context.Context, deps []*store.Deployment, rep report) {
	for _, d := range deps {
		if rep[d.GatewayID].conns > 0 {
			if err := f.store.MarkDeletedDelivered(ctx, d.GatewayID, []string{d.APIID}); err != nil {
				f.log.Warn("could not record a deletion's delivery", "err", err)
			}
		}
	}
}

// RevokeToken revokes a gateway token and closes the connections that
// authenticated with it. It returns once every live replica has closed
// them and stopped accepting the token (at most the delivery wait), so
// that no replica takes the token after the revocation is answered.
func (f *Fleet) RevokeToken(ctx context.Context, orgID, gatewayID, tokenID string) error {
	c, err := f.store.RevokeToken(ctx, orgID, gatewayID, tokenID)
	if err != nil {
		return err
	}
	f.heardEverywhere(ctx, c)
	return nil
}

// DeleteGateway deletes a gateway with its tokens and deployments, and
// closes its live connections, on every live replica before it returns (as
// RevokeToken).
func (f *Fleet) DeleteGateway(ctx context.Context, orgID, gatewayID string) error {
	c, err := f.store.DeleteGateway(ctx, orgID, gatewayID)
	if err != nil {
		return err
	}
	f.heardEverywhere(ctx, c)
	return nil
}

// heardEverywhere waits, at most the delivery wait, until this replica and
// every other live one have applied change c.
func (f *Fleet) heardEverywhere(ctx context.Context, c *store.Change) {
	expected, err := f.store.LiveReplicas(ctx)
	if err != nil {
		f.log.Warn("could not tell which replicas are live; answering once this one applied the change", "err", err)
	}
	f.awaitReport(ctx, c, expected)
}

// ReportManifest records what a second-generation gateway reported about
// itself; its connections waiting to know their generation learn it.
func (f *Fleet) ReportManifest(ctx context.Context, gatewayID, orgID string, m *store.Manifest) error {
	if err := f.store.RecordManifest(ctx, gatewayID, orgID, m); err != nil {
		return err
	}
	// This replica's connections learn it before the answer; the change,
	// published (at once on SQLite, by the listener on PostgreSQL), tells
	// the other replicas'.
	f.learnGeneration(gatewayID)
	return nil
}

// learnGeneration makes the gateway's connections second generation.
// Connections still waiting to know their generation learn it; one taken
// for the first generation because its manifest came after the grace
// period is second generation after all, and is sent its state again, in
// that form.
func (f *Fleet) learnGeneration(gatewayID string) {
	for _, conn := range f.hub.Conns(gatewayID) {
		before := conn.Generation()
		if conn.SetGeneration(hub.Gen2) && before == hub.Gen1 {
			conn.Resync()
		}
	}
}

// Downloaded records that a gateway downloaded revisions of APIs (API ID to
// revision ID), which paces its initial state.
func (f *Fleet) Downloaded(gatewayID string, revisions map[string]string) {
	f.store.MarkFetched(gatewayID, revisions)
	for api := range revisions {
		f.hub.Credit(gatewayID, api)
	}
}

// Presence is a gateway's live connections across every replica, and when
// it was last seen active.
type Presence struct {
	Connections int
	LastSeen    time.Time
}

// Presence returns the live connections of gateways, here and on the other
// replicas whose lease is live. A gateway with none is absent.
func (f *Fleet) Presence(ctx context.Context, gatewayIDs []string) (map[string]Presence, error) {
	out := map[string]Presence{}
	for _, gw := range gatewayIDs {
		if n, last := f.hub.Presence(gw); n > 0 {
			out[gw] = Presence{Connections: n, LastSeen: f.store.ClockAt(last)}
		}
	}
	remote, err := f.store.RemotePresence(ctx, gatewayIDs)
	if err != nil {
		return out, err
	}
	for gw, r := range remote {
		p := out[gw]
		p.Connections += r.Connections
		if r.LastSeen.After(p.LastSeen) {
			p.LastSeen = r.LastSeen
		}
		out[gw] = p
	}
	return out, nil
}

// Elsewhere is how many live connections the gateway has on other
// replicas, for the per-gateway cap (a race between replicas may let it
// be passed by a connection or two).
func (f *Fleet) Elsewhere(ctx context.Context, gatewayID string) (int, error) {
	remote, err := f.store.RemotePresence(ctx, []string{gatewayID})
	return remote[gatewayID].Connections, err
}
