package fleet

import (
	"context"
	"time"

	"platform-api/hub"
	"platform-api/store"
)

// A new connection learns its generation before anything else: the manifest
// arrives in parallel with the connection, and a document or event in the
// wrong form would be refused (contract §6). So its initial state waits
// until the generation is known: from a manifest reported around the time
// of the connection (just before it, or within the grace period), else
// from a manifest the gateway reported on an earlier connection, else it
// is first generation.

// awaitGeneration sets the connection's generation, waiting at most the
// grace period for its manifest.
func (f *Fleet) awaitGeneration(ctx context.Context, c *hub.Conn) {
	if c.Generation() != hub.GenUnknown {
		return
	}
	m, err := f.store.Manifest(ctx, c.Identity.GatewayID)
	if err != nil && ctx.Err() == nil { // a connection that ended meanwhile is no news
		f.log.Warn("could not read a gateway's manifest", "gateway", c.Identity.GatewayID, "err", err)
	}
	if m != nil && m.ReportedAt.After(c.ConnectedAt.Add(-f.grace)) {
		c.SetGeneration(hub.Gen2)
		return
	}
	timer := time.NewTimer(f.grace)
	defer timer.Stop()
	select {
	case <-c.GenerationKnown():
	case <-timer.C:
	case <-ctx.Done():
		return
	}
	if m != nil {
		c.SetGeneration(hub.Gen2) // reported on an earlier connection
	}
	c.SetGeneration(hub.Gen1) // no-op when already set
}

// initialState tells a new connection everything its gateway must know, in
// the form of its generation, once that is known.
//
// The first generation gets api.deployed for every API deployed to it (its
// whole desired state, contract §3), and api.undeployed for the
// undeployments and deletions it was never told of.
//
// The second generation applies an event only when its performedAt is newer
// than what it holds, and acknowledges only what it applies. So it is sent
// only what it has not acknowledged: deployments and undeployments with a
// performedAt newer than anything sent before (so that one it synced by
// itself at start is applied and acknowledged, not timed out), and
// api.deleted for deletions it was never told of. What it acknowledged is
// not sent again, and keeps its status, unless the gateway has another
// connection: then it may run as several instances, and this one may have
// missed what another acknowledged (it was away, or its replica missed the
// change). That is sent as first stamped, and nothing waits for it: an
// instance that holds it ignores it, one that missed it applies it and
// acknowledges it (an acknowledgement nothing waits for is final by
// itself).
func (f *Fleet) initialState(ctx context.Context, c *hub.Conn) ([]*hub.Event, func()) {
	gw := c.Identity.GatewayID
	f.store.NotePresence(gw, f.liveConns(gw))
	f.noteArrival(gw)
	f.awaitGeneration(ctx, c)
	// Acknowledgements gather for a few milliseconds before they are
	// written: write them now, so that one that came on the connection
	// this one replaces is not taken for missing (and its deployment sent
	// again).
	f.acks.flush()
	gen2 := c.Generation() == hub.Gen2
	read := f.store.GatewayState
	if gen2 {
		read = f.store.ResendState // stamps what it re-sends (see there)
	}
	st, err := read(ctx, gw)
	if err != nil {
		if ctx.Err() == nil {
			f.log.Warn("could not load a gateway's state", "gateway", gw, "err", err)
		}
		f.consumers.start(c, c.Generation(), nil)
		return nil, nil
	}
	var events []*hub.Event
	var awaiting, held []string // APIs sent api.deployed now; deployed APIs the gateway holds
	var sent []store.Delivery
	var deleted []string
	peers := -1 // not asked yet
	for _, d := range st.Deployments {
		undeploy := d.State == store.StateUndeployed
		at := d.PerformedAt
		switch {
		case gen2 && d.AckedAt != nil:
			if !undeploy {
				held = append(held, d.APIID)
			}
			if peers < 0 {
				peers = f.otherConns(ctx, c)
			}
			if peers > 0 {
				ev := deployedEvent(d, d.PerformedAt)
				if undeploy {
					ev = undeployedEvent(d, d.PerformedAt)
				}
				events = append(events, ev) // not awaited: it may be ignored
			}
			continue // applied and acknowledged: not expected again
		case gen2:
			at = st.ResendAt
			f.acks.expect(c, d.APIID, d.DeploymentID, undeploy)
		case undeploy && d.DeliveredAt != nil:
			continue // a first-generation gateway was told already
		}
		var ev *hub.Event
		if undeploy {
			ev = undeployedEvent(d, at)
		} else {
			ev = deployedEvent(d, at)
			ev.Await = true // the gateway downloads it, then (gen 2) acknowledges
			ev.Sent = f.consumersFollow(d.APIID)
			awaiting = append(awaiting, d.APIID)
		}
		if undeploy && gen2 {
			ev.Await = true // acknowledged
		}
		events = append(events, ev)
		if gen2 || undeploy || d.Status == store.StatusPending {
			sent = append(sent, store.Delivery{APIID: d.APIID, GatewayID: gw, DeploymentID: d.DeploymentID,
				Status: statusAfter(delivered{conns: 1, gen2: btoi(gen2)}, undeploy)})
		}
	}
	if again := f.consumers.start(c, c.Generation(), awaiting); gen2 && again {
		// A resynchronization (events may have been missed): the consumers
		// of the APIs the gateway holds, and what it cannot pull, again.
		for _, api := range held {
			f.consumers.afterDeployed(c, api)
		}
		f.consumers.afterPull(c)
	}
	for _, d := range st.Deleted {
		if d.DeliveredAt != nil {
			continue
		}
		events = append(events, deletedEvent(d.APIID, d.DeploymentID, d.Vhost, d.DeletedAt, true))
		deleted = append(deleted, d.APIID)
	}
	return events, func() {
		if err := f.store.RecordConnectDeliveries(ctx, sent); err != nil && ctx.Err() == nil {
			f.log.Warn("could not record the initial state's delivery", "gateway", gw, "err", err)
		}
		if err := f.store.MarkDeletedDelivered(ctx, gw, deleted); err != nil && ctx.Err() == nil {
			f.log.Warn("could not record the initial state's delivery", "gateway", gw, "err", err)
		}
	}
}

// otherConns counts the live connections of c's gateway besides c, here
// and on the other replicas (none when the database cannot tell).
func (f *Fleet) otherConns(ctx context.Context, c *hub.Conn) int {
	n := f.liveConns(c.Identity.GatewayID) - 1
	if f.store.Replicated() {
		remote, err := f.store.RemotePresence(ctx, []string{c.Identity.GatewayID})
		if err != nil && ctx.Err() == nil {
			f.log.Warn("could not count a gateway's connections on other replicas", "gateway", c.Identity.GatewayID, "err", err)
		}
		n += remote[c.Identity.GatewayID].Connections
	}
	return max(n, 0)
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// onDisconnect records when the gateway was last seen; what the connection
// owed acknowledgements for no longer waits on it, and when it was the
// gateway's last connection, what the gateway did not acknowledge waits for
// its return instead of timing out.
func (f *Fleet) onDisconnect(c *hub.Conn) {
	gw := c.Identity.GatewayID
	f.store.MarkSeen(gw, f.store.ClockAt(c.LastActivity()))
	f.store.NotePresence(gw, f.liveConns(gw))
	owed := f.acks.owes(c)
	f.acks.gone(c)
	f.consumers.gone(c)
	if !owed || f.liveAnywhere(context.Background(), gw) {
		return
	}
	if err := f.store.GatewayOffline(context.Background(), gw); err != nil {
		f.log.Warn("could not record a gateway going offline", "gateway", gw, "err", err)
	}
}

// consumersFollow is the hook of an api.deployed: on a second-generation
// connection, the API's consumer state follows it (consumers.go).
func (f *Fleet) consumersFollow(apiID string) func(*hub.Conn) {
	if !f.consumers.enabled() {
		return nil
	}
	return func(c *hub.Conn) { f.consumers.afterDeployed(c, apiID) }
}
