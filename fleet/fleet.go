// Package fleet is where what gateways should run meets the gateways that
// are connected: it records deployments, undeployments, deletions and
// revocations through the store, delivers their events to the live
// connections (hub), and tells the caller how far each one got. HTTP
// handlers call it; they never coordinate the store and the hub themselves.
//
// Ordering. Every change is delivered from the store's publisher, which
// runs after the change's transaction commits and in commit order (store
// Change). Two requests about one API may race, but their events reach each
// connection in the order their transactions committed, so a gateway's last
// event always matches the stored state.
//
// Reports. A request that makes a change learns what its own change caused
// (how many connections took each event) from the publisher, by the
// change's ID.
package fleet

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"platform-api/hub"
	"platform-api/store"
)

// Fleet coordinates the store and the hub.
type Fleet struct {
	store *store.DB
	hub   *hub.Hub
	log   *slog.Logger

	mu      sync.Mutex
	reports map[string]report // change ID -> what delivering it did
}

// report is what delivering one change did: live connections that took the
// event, by gateway.
type report map[string]int

// New builds the fleet over db, with a hub configured by hc (its OnConnect
// is the fleet's), and makes itself db's publisher.
func New(db *store.DB, hc hub.Config, log *slog.Logger) *Fleet {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	f := &Fleet{store: db, log: log, reports: map[string]report{}}
	hc.OnConnect = f.initialState
	hc.OnDisconnect = func(c *hub.Conn) { db.MarkSeen(c.Identity.GatewayID, c.LastActivity()) }
	f.hub = hub.New(hc, log)
	if db != nil {
		db.SetPublisher(f.publish)
	}
	return f
}

// Hub is the registry of live connections.
func (f *Fleet) Hub() *hub.Hub { return f.hub }

// Event types and environment of the contract (§3).
const (
	EventDeployed   = "api.deployed"
	EventUndeployed = "api.undeployed"
	environment     = "production"
)

func deployedEvent(d *store.Deployment) hub.Event {
	return hub.Event{Type: EventDeployed, APIID: d.APIID, Payload: map[string]string{
		"apiId": d.APIID, "revisionId": d.RevisionID, "vhost": d.Vhost, "environment": environment}}
}

func undeployedEvent(d *store.Deployment) hub.Event {
	return hub.Event{Type: EventUndeployed, APIID: d.APIID, Payload: map[string]string{
		"apiId": d.APIID, "vhost": d.Vhost, "environment": environment}}
}

// publish delivers a committed change to the live connections. The store
// calls it in commit order, one change at a time; it never blocks (the hub
// queues or drops).
func (f *Fleet) publish(c *store.Change) {
	rep := report{}
	switch c.Kind {
	case store.ChangeDeployed:
		for _, d := range c.Deployments {
			rep[d.GatewayID] = f.hub.Deliver(d.GatewayID, deployedEvent(d))
		}
	case store.ChangeUndeployed, store.ChangeAPIDeleted:
		for _, d := range c.Deployments {
			rep[d.GatewayID] = f.hub.Deliver(d.GatewayID, undeployedEvent(d))
		}
	case store.ChangeTokenRevoked:
		f.hub.CloseToken(c.TokenID)
	case store.ChangeGatewayDeleted:
		f.hub.CloseGateway(c.GatewayID)
	}
	if c.Kind == store.ChangeDeployed {
		f.mu.Lock()
		f.reports[c.ID] = rep
		f.mu.Unlock()
	}
}

// takeReport returns and forgets what delivering change id did.
func (f *Fleet) takeReport(id string) report {
	f.mu.Lock()
	defer f.mu.Unlock()
	rep := f.reports[id]
	delete(f.reports, id)
	return rep
}

// Result is what a deployment to one gateway did, as the deploy request is
// answered (contract §2).
type Result struct {
	RevisionID           string    `json:"revisionId"`
	GatewayID            string    `json:"gatewayId"`
	Status               string    `json:"status"`
	Vhost                string    `json:"vhost"`
	DisplayOnDevportal   bool      `json:"displayOnDevportal"`
	DeployedTime         time.Time `json:"deployedTime"`
	DeliveredConnections int       `json:"deliveredConnections"`
}

// Deploy records that each target gateway runs a revision of the API (a new
// one of the current definition, or revisionID: a rollback), in one
// transaction, then delivers api.deployed to the targets' live connections.
// check may refuse the revision before anything is recorded. A target is
// DELIVERED when at least one live connection took the event, PENDING when
// none did (it gets the deployment when it connects).
func (f *Fleet) Deploy(ctx context.Context, orgID, apiID, revisionID string, targets []store.DeployTarget, check func(*store.Revision) error) ([]Result, error) {
	rev, change, err := f.store.Deploy(ctx, orgID, apiID, revisionID, targets, check)
	if err != nil {
		return nil, err
	}
	rep := f.takeReport(change.ID)
	out := make([]Result, len(change.Deployments))
	var delivered []string
	for i, d := range change.Deployments {
		n := rep[d.GatewayID]
		out[i] = Result{RevisionID: rev.ID, GatewayID: d.GatewayID, Status: store.StatusPending, Vhost: d.Vhost,
			DisplayOnDevportal: d.DisplayOnDevportal, DeployedTime: d.DeployedTime, DeliveredConnections: n}
		if n > 0 {
			out[i].Status = store.StatusDelivered
			delivered = append(delivered, d.GatewayID)
		}
	}
	if err := f.store.MarkDelivered(ctx, apiID, rev.ID, delivered); err != nil {
		f.log.Warn("could not record delivery", "api", apiID, "err", err)
	}
	return out, nil
}

// Undeploy removes an API from a gateway and tells its live connections.
func (f *Fleet) Undeploy(ctx context.Context, orgID, apiID, gatewayID string) error {
	return f.store.Undeploy(ctx, orgID, apiID, gatewayID)
}

// DeleteAPI deletes an API with its deployments, and tells the gateways that
// ran it to undeploy it.
func (f *Fleet) DeleteAPI(ctx context.Context, orgID, apiID string) error {
	return f.store.DeleteAPI(ctx, orgID, apiID)
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

// initialState gives a new connection an api.deployed for every API deployed
// to its gateway; once they are all handed to the writer, PENDING
// deployments are marked DELIVERED.
func (f *Fleet) initialState(ctx context.Context, c *hub.Conn) ([]hub.Event, func()) {
	// Only the deployment rows: the events need no definitions, and a
	// fleet reconnecting at once should not parse every revision.
	state, err := f.store.GatewayDeployments(ctx, c.Identity.GatewayID)
	if err != nil {
		f.log.Warn("could not load a gateway's deployments", "gateway", c.Identity.GatewayID, "err", err)
		return nil, nil
	}
	events := make([]hub.Event, len(state))
	for i, d := range state {
		events[i] = deployedEvent(d)
	}
	return events, func() {
		for _, d := range state {
			if d.Status == store.StatusPending {
				if err := f.store.MarkDelivered(ctx, d.APIID, d.RevisionID, []string{d.GatewayID}); err != nil {
					f.log.Warn("could not record delivery", "api", d.APIID, "gateway", d.GatewayID, "err", fmt.Sprint(err))
				}
			}
		}
	}
}
