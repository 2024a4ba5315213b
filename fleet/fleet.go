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
	"sync"
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

	acks acks
}

// report is what delivering one change did, by gateway.
type report map[string]delivered

// pendingReport is a report a request waits for: on SQLite it is ready when
// the change is committed; on PostgreSQL when the listener has published
// the change.
type pendingReport struct {
	rep   report
	ready chan struct{}
	at    time.Time
}

// delivered counts the live connections of one gateway that took an event,
// and how many of them are of the second generation.
type delivered struct{ conns, gen2 int }

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
		reports: map[string]*pendingReport{}, waiters: map[string]chan struct{}{}}
	f.acks.init(f)
	hc := o.Hub
	hc.OnConnect = f.initialState
	hc.OnMessage = f.onMessage
	hc.OnDisconnect = f.onDisconnect
	f.hub = hub.New(hc, o.Log)
	if o.Store != nil {
		o.Store.SetPublisher(f.publish)
		o.Store.SetResync(f.hub.Resync)
	}
	return f
}

// Hub is the registry of live connections.
func (f *Fleet) Hub() *hub.Hub { return f.hub }

// Close stops the fleet's background work (after the hub has shut down).
func (f *Fleet) Close() { f.acks.close() }

// publish delivers a committed change to the live connections. The store
// calls it in commit order, one change at a time; it never blocks (the hub
// queues or drops, the ack table is in memory).
func (f *Fleet) publish(c *store.Change) {
	switch c.Kind {
	case store.ChangeDeployed, store.ChangeUndeployed, store.ChangeAPIDeleted:
		rep := report{}
		for _, d := range c.Deployments {
			rep[d.GatewayID] = f.deliver(d, c.Kind)
		}
		if c.Local {
			f.mu.Lock()
			p := f.reportLocked(c.ID)
			p.rep = rep
			close(p.ready)
			f.mu.Unlock()
		}
		if len(c.Deployments) > 0 {
			f.statusChanged(c.Deployments[0].APIID)
		}
	case store.ChangeTokenRevoked:
		f.hub.CloseToken(c.TokenID)
	case store.ChangeGatewayDeleted:
		f.hub.CloseGateway(c.GatewayID)
	case store.ChangeManifest:
		// Connections still waiting to know their generation learn it. One
		// taken for the first generation because its manifest came after
		// the grace period is second generation after all: it is sent its
		// state again, in that form.
		for _, conn := range f.hub.Conns(c.GatewayID) {
			before := conn.Generation()
			if conn.SetGeneration(hub.Gen2) && before == hub.Gen1 {
				conn.Resync()
			}
		}
	case store.ChangeStatus:
		for _, api := range c.APIIDs {
			f.statusChanged(api)
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
	case store.ChangeUndeployed:
		ev = undeployedEvent(d, d.PerformedAt)
	case store.ChangeAPIDeleted:
		ev = deletedEvent(d.APIID, d.DeploymentID, d.Vhost, d.PerformedAt, d.State == store.StateDeployed)
	}
	var out delivered
	out.conns = f.hub.Deliver(d.GatewayID, ev, func(c *hub.Conn) {
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
// first: the request or the publisher. Entries nobody claimed (a request
// that gave up waiting) are dropped after a minute. f.mu must be held.
func (f *Fleet) reportLocked(id string) *pendingReport {
	p := f.reports[id]
	if p == nil {
		now := time.Now()
		for k, old := range f.reports {
			if now.Sub(old.at) > time.Minute {
				delete(f.reports, k)
			}
		}
		p = &pendingReport{ready: make(chan struct{}), at: now}
		f.reports[id] = p
	}
	return p
}

// takeReport waits (at most f.wait) for what delivering change id did,
// and forgets it. A report not ready in time is empty: the gateways are
// answered PENDING, and converge from the state sent when they connect.
func (f *Fleet) takeReport(ctx context.Context, id string) report {
	f.mu.Lock()
	p := f.reportLocked(id)
	f.mu.Unlock()
	timer := time.NewTimer(f.wait)
	defer timer.Stop()
	select {
	case <-p.ready:
	case <-timer.C:
		f.log.Warn("a change's delivery was not reported in time; its gateways are answered PENDING", "change", id, "wait", f.wait)
	case <-ctx.Done():
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.reports, id)
	select {
	case <-p.ready:
		return p.rep
	default:
		return report{}
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
		if !f.live(gw) {
			if err := f.store.GatewayOffline(ctx, gw); err != nil {
				f.log.Warn("could not record a gateway going offline", "gateway", gw, "err", err)
			}
		}
	}
}

// live reports whether the gateway has a connection that has not ended
// (one that has may still be registered while its cleanup runs).
func (f *Fleet) live(gatewayID string) bool {
	for _, c := range f.hub.Conns(gatewayID) {
		if c.Context().Err() == nil {
			return true
		}
	}
	return false
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
	rep := f.takeReport(ctx, change.ID)
	f.recordDeliveries(ctx, change.Deployments, rep, false)
	out := make([]Result, len(change.Deployments))
	for i, d := range change.Deployments {
		r := rep[d.GatewayID]
		out[i] = Result{RevisionID: rev.ID, GatewayID: d.GatewayID, DeploymentID: d.DeploymentID,
			Status: statusAfter(r, false), Vhost: d.Vhost, DisplayOnDevportal: d.DisplayOnDevportal,
			DeployedTime: d.DeployedTime, DeliveredConnections: r.conns}
	}
	if wait > 0 {
		f.waitSettled(ctx, apiID, out, min(wait, MaxWait))
	}
	return out, nil
}

// waitSettled waits until none of the results' deployments is DEPLOYING
// (or the wait ends), and updates the results with the stored statuses.
func (f *Fleet) waitSettled(ctx context.Context, apiID string, out []Result, wait time.Duration) {
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
			if d.Status == store.StatusDeploying {
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
	f.recordDeliveries(ctx, change.Deployments, f.takeReport(ctx, change.ID), true)
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
	rep := f.takeReport(ctx, change.ID)
	for _, d := range change.Deployments {
		if rep[d.GatewayID].conns > 0 {
			if err := f.store.MarkDeletedDelivered(ctx, d.GatewayID, []string{d.APIID}); err != nil {
				f.log.Warn("could not record a deletion's delivery", "err", err)
			}
		}
	}
	return nil
}

// RevokeToken revokes a gateway token and closes the connections that
// authenticated with it.
func (f *Fleet) RevokeToken(ctx context.Context, orgID, gatewayID, tokenID string) error {
	return f.store.RevokeToken(ctx, orgID, gatewayID, tokenID)
}

// DeleteGateway deletes a gateway with its tokens and deployments, and
// closes its live connections.
func (f *Fleet) DeleteGateway(ctx context.Context, orgID, gatewayID string) error {
	return f.store.DeleteGateway(ctx, orgID, gatewayID)
}

// ReportManifest records what a second-generation gateway reported about
// itself; its connections waiting to know their generation learn it.
func (f *Fleet) ReportManifest(ctx context.Context, gatewayID, orgID string, m *store.Manifest) error {
	return f.store.RecordManifest(ctx, gatewayID, orgID, m)
}

// Downloaded records that a gateway downloaded revisions of APIs (API ID to
// revision ID), which paces its initial state.
func (f *Fleet) Downloaded(gatewayID string, revisions map[string]string) {
	f.store.MarkFetched(gatewayID, revisions)
	for api := range revisions {
		f.hub.Credit(gatewayID, api)
	}
}
