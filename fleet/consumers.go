package fleet

// Consumer events (contract §7): keys, applications, plans, subscriptions
// — what a second-generation gateway enforces for the callers of an API —
// kept in step on every gateway, in commit order, on every replica.
//
// How a feature plugs in:
//
//  1. In the store transaction that changes its rows, it records the
//     events gateways must hear (store.NewConsumerEvent, then
//     tx.recordConsumer). An event with an APIID goes to the gateways that
//     API is deployed to (as the transaction saw them), and on each
//     connection only after that API's api.deployed; one without goes to
//     every gateway of its organization (plans), or to the Gateways set on
//     it. The fleet delivers them after the commit, in commit order, here
//     and on the other replicas (store.ChangeConsumer), to
//     second-generation connections only.
//  2. It implements ConsumerSource and is listed in Options.Consumers
//     (server/consumers.go): APIState is what a connection is sent right
//     after each api.deployed of an API (so that consumers made before the
//     deploy arrive with it), AfterKeysPulled what a gateway's connections
//     are sent again once its GET /apis/api-keys has been answered (what
//     it cannot pull). Sources are asked in the order listed: keys before
//     the applications that map them, plans before subscriptions.
//  3. The gateway-facing GET /apis/api-keys calls Fleet.ConsumersPulled
//     once it has answered.
//
// Ordering on a connection. A snapshot (APIState, AfterKeysPulled) is read
// after the connection starts holding back the events routed to it; they
// go out after the snapshot, in order. Every event carries the whole state
// of what it is about (a key, an application's complete key set), so a
// held event older than the snapshot is overtaken again by the newest one,
// and the connection ends on the current state. Events that come while the
// connection's generation is unknown wait for it (the initial state); a
// connection that falls maxConsumerBacklog events behind is dropped, and
// converges when it reconnects.
//
// Room in the queue. Consumer events come in bursts (a portal importing
// hundreds of keys in a second) that a gateway reading steadily cannot
// take as fast as they are made; the hub drops a connection whose queue is
// full. So they take at most half the connection's queue (the rest stays
// for deployment events, which do disconnect when they find no room), and
// what finds no room waits on the connection, in order, sent by one
// goroutine as room frees (consumerConn.out). Everything a connection is
// sent here goes through that one line, snapshots included, so nothing
// overtakes what was routed before it.

import (
	"context"
	"sync"
	"time"

	"platform-api/hub"
	"platform-api/store"
)

// ConsumerSource is a feature whose state follows APIs onto
// second-generation gateways.
type ConsumerSource interface {
	// APIState returns the events that bring a connection up to date with
	// the API's consumers; it is sent right after the API's api.deployed.
	APIState(ctx context.Context, orgID, apiID string) ([]*store.ConsumerEvent, error)
	// AfterKeysPulled returns the events the gateway's connections are
	// sent once its GET /apis/api-keys has been answered.
	AfterKeysPulled(ctx context.Context, orgID, gatewayID string) ([]*store.ConsumerEvent, error)
}

// maxConsumerBacklog is how many events a connection may owe while a
// snapshot is read or its generation is unknown, and how many routed
// events may wait for room in its queue.
const maxConsumerBacklog = 4096

// consumerShare is the part of a connection's queue consumer events may
// fill (a half): the rest is room for deployment events.
func consumerShare(queueSize int) int { return max(1, queueSize/2) }

// consumerReadTimeout bounds one snapshot's reads.
const consumerReadTimeout = 30 * time.Second

type consumers struct {
	f       *Fleet
	sources []ConsumerSource
	conns   sync.Map // *hub.Conn -> *consumerConn

	flightsMu sync.Mutex
	flights   map[string]*flight // API ID -> the APIState read not started yet
}

// flight is one read of an API's state, shared by the connections that
// started holding before it began.
type flight struct {
	orgID string
	conns []*consumerConn
}

// consumerConn is what routing consumer events to one connection needs.
type consumerConn struct {
	c  *hub.Conn
	mu sync.Mutex
	// gen is the generation the connection's state was started for (0:
	// not yet; events wait in early).
	gen   int
	early []*hub.Event
	// awaiting are the APIs whose api.deployed the initial state has still
	// to send: their events are not sent (the snapshot after it carries
	// them); ready those whose api.deployed went out on this connection.
	awaiting map[string]bool
	ready    map[string]bool
	// holds counts snapshots being read; meanwhile events wait in held.
	holds int
	held  []*hub.Event
	// pulled: the gateway's key pull was answered since this connection
	// began; pullHold: the events wait for it (one of holds).
	pulled, pullHold bool
	// out are the events to send that found no room in the queue, or
	// came after one that did, in the order they are to go out; sending
	// is set while a goroutine (sendOut) sends them, and whenever out is
	// not empty. outRouted counts those routed straight here (at most
	// maxConsumerBacklog); a snapshot and the events held meanwhile are
	// bounded on their own.
	out       []outEvent
	outRouted int
	sending   bool
	// limit is how many frames consumer events may leave in the queue.
	limit int
}

// pullWait bounds how long a new connection's events wait for its
// gateway's key pull: a 2026 gateway pulls as it connects, and a key event
// applied before the pull's answer would be undone by it (the answer
// replaces what the gateway holds).
const pullWait = 10 * time.Second

// pullSettle is how long after its key pull was answered a new
// connection's held events wait more: the gateway reads and applies the
// answer on one goroutine and the events on another, and an event applied
// before the answer would be undone by it.
const pullSettle = 250 * time.Millisecond

func (cs *consumers) init(f *Fleet, sources []ConsumerSource) {
	cs.f, cs.sources, cs.flights = f, sources, map[string]*flight{}
}

func (cs *consumers) enabled() bool { return len(cs.sources) > 0 }

// get returns the connection's routing state.
func (cs *consumers) get(c *hub.Conn) *consumerConn {
	if v, ok := cs.conns.Load(c); ok {
		return v.(*consumerConn)
	}
	cc := &consumerConn{c: c, awaiting: map[string]bool{}, ready: map[string]bool{},
		limit: consumerShare(cs.f.hub.QueueSize())}
	if c.Context().Err() != nil {
		return cc // ended: not kept
	}
	v, _ := cs.conns.LoadOrStore(c, cc)
	return v.(*consumerConn)
}

// gone forgets an ended connection.
func (cs *consumers) gone(c *hub.Conn) { cs.conns.Delete(c) }

func hubEvent(ev *store.ConsumerEvent) *hub.Event {
	return &hub.Event{Type: ev.Type, APIID: ev.APIID, Payload: ev.Payload, UserID: ev.UserID, SkipGen1: true}
}

// publish routes a change's events to the live connections of their
// gateways. It runs on the publisher: it never blocks.
func (cs *consumers) publish(evs []*store.ConsumerEvent) {
	for _, ev := range evs {
		he := hubEvent(ev)
		for _, gw := range ev.Gateways {
			for _, c := range cs.f.hub.Conns(gw) {
				if c.Context().Err() == nil {
					cc := cs.get(c)
					cc.mu.Lock()
					cc.routeLocked(he)
					cc.mu.Unlock()
				}
			}
		}
	}
}

// routeLocked sends, holds or drops an event for the connection. cc.mu
// must be held.
func (cc *consumerConn) routeLocked(ev *hub.Event) {
	switch {
	case cc.gen == hub.GenUnknown:
		cc.early = cc.keep(cc.early, ev)
	case cc.gen != hub.Gen2:
	case ev.APIID != "" && cc.awaiting[ev.APIID]:
	case cc.holds > 0:
		cc.held = cc.keep(cc.held, ev)
	default:
		cc.sendLocked(ev, true)
	}
}

// outEvent is an event waiting in consumerConn.out; routed: it was routed
// there (counted in outRouted).
type outEvent struct {
	ev     *hub.Event
	routed bool
}

// sendLocked queues ev on the connection if nothing waits before it and
// the queue has room for it, and otherwise puts it in out, behind what
// waits there, for sendOut. It never blocks. routed events count against
// maxConsumerBacklog: beyond it the connection is dropped. cc.mu must be
// held.
func (cc *consumerConn) sendLocked(ev *hub.Event, routed bool) {
	if !cc.sending && !cc.c.SendBelow(ev, cc.limit) {
		return
	}
	if routed {
		if cc.outRouted >= maxConsumerBacklog {
			cc.c.Drop("too many consumer events owed")
			return
		}
		cc.outRouted++
	}
	cc.out = append(cc.out, outEvent{ev, routed})
	if !cc.sending {
		cc.sending = true
		go cc.sendOut()
	}
}

// sendOut sends the events in out, in order, each once the connection's
// queue has room for it (waiting at most the write timeout for a frame to
// leave it: a gateway that takes none that long is dropped), and returns
// when none is left or the connection has ended.
func (cc *consumerConn) sendOut() {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	for len(cc.out) > 0 && cc.c.Context().Err() == nil {
		o := cc.out[0]
		cc.out[0] = outEvent{}
		cc.out = cc.out[1:]
		if o.routed {
			cc.outRouted--
		}
		cc.mu.Unlock()
		cc.c.SendWait(o.ev, cc.limit)
		cc.mu.Lock()
	}
	cc.out, cc.outRouted, cc.sending = nil, 0, false
}

// keep appends ev to a backlog, or drops the connection when it is full.
func (cc *consumerConn) keep(backlog []*hub.Event, ev *hub.Event) []*hub.Event {
	if len(backlog) >= maxConsumerBacklog {
		cc.c.Drop("too many consumer events owed")
		return nil
	}
	return append(backlog, ev)
}

// start is called by the initial state once the connection's generation is
// known, with the APIs whose api.deployed it is about to send: the events
// that waited are routed. It reports whether the connection had started
// before (a resynchronization, or a first-generation connection that
// turned out second generation): events may have been missed.
func (cs *consumers) start(c *hub.Conn, gen int, awaiting []string) (again bool) {
	cc := cs.get(c)
	cc.mu.Lock()
	defer cc.mu.Unlock()
	first := cc.gen != gen
	again = cc.gen != hub.GenUnknown
	cc.gen = gen
	if first && !again && gen == hub.Gen2 && !cc.pulled && cs.enabled() {
		cc.holds++
		cc.pullHold = true
		time.AfterFunc(pullWait, func() { cc.endPullHold() })
	}
	if first && gen == hub.Gen2 {
		for _, api := range awaiting {
			if !cc.ready[api] { // a live api.deployed went out already
				cc.awaiting[api] = true
			}
		}
	}
	early := cc.early
	cc.early = nil
	for _, ev := range early {
		cc.routeLocked(ev)
	}
	return again
}

// afterDeployed is called once api.deployed of apiID is handed to a
// second-generation connection: the API's consumer state follows it.
func (cs *consumers) afterDeployed(c *hub.Conn, apiID string) {
	if !cs.enabled() || c.Generation() != hub.Gen2 {
		return
	}
	cc := cs.get(c)
	cc.mu.Lock()
	cc.ready[apiID] = true
	delete(cc.awaiting, apiID)
	cc.holds++
	cc.mu.Unlock()
	// Connections that start holding before the read begins share it.
	cs.flightsMu.Lock()
	fl := cs.flights[apiID]
	if fl == nil {
		fl = &flight{orgID: c.Identity.OrganizationID}
		cs.flights[apiID] = fl
		go cs.fly(apiID, fl)
	}
	fl.conns = append(fl.conns, cc)
	cs.flightsMu.Unlock()
}

func (cs *consumers) fly(apiID string, fl *flight) {
	cs.flightsMu.Lock()
	if cs.flights[apiID] == fl {
		delete(cs.flights, apiID)
	}
	conns := fl.conns
	cs.flightsMu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), consumerReadTimeout)
	defer cancel()
	var evs []*store.ConsumerEvent
	var err error
	for _, s := range cs.sources {
		var more []*store.ConsumerEvent
		if more, err = s.APIState(ctx, fl.orgID, apiID); err != nil {
			break
		}
		evs = append(evs, more...)
	}
	if err != nil {
		cs.f.log.Warn("could not read an API's consumers for the gateways it was deployed to; they reconnect to catch up",
			"api", apiID, "err", err)
	}
	for _, cc := range conns {
		cc.release(evs, err)
	}
}

// afterPull is called when the connection's gateway has been answered its
// GET /apis/api-keys.
func (cs *consumers) afterPull(c *hub.Conn) {
	if !cs.enabled() {
		return
	}
	cc := cs.get(c)
	cc.mu.Lock()
	cc.holds++
	cc.pulled = true
	cc.mu.Unlock()
	go func() {
		defer time.AfterFunc(pullSettle, cc.endPullHold)
		select {
		case <-c.GenerationKnown():
		case <-c.Context().Done():
		}
		if c.Context().Err() != nil || c.Generation() != hub.Gen2 {
			cc.release(nil, nil)
			return
		}
		ctx, cancel := context.WithTimeout(c.Context(), consumerReadTimeout)
		defer cancel()
		var evs []*store.ConsumerEvent
		var err error
		for _, s := range cs.sources {
			var more []*store.ConsumerEvent
			if more, err = s.AfterKeysPulled(ctx, c.Identity.OrganizationID, c.Identity.GatewayID); err != nil {
				break
			}
			evs = append(evs, more...)
		}
		if err != nil && c.Context().Err() == nil {
			cs.f.log.Warn("could not read what a gateway's connections are sent after its key pull",
				"gateway", c.Identity.GatewayID, "err", err)
		}
		cc.release(evs, err)
	}()
}

// release sends a snapshot's events, then, when no other snapshot is being
// read, the events held meanwhile; both go behind what waits for room
// already (sendLocked), so it does not wait itself. A snapshot that could
// not be read drops the connection: its gateway converges when it
// reconnects.
func (cc *consumerConn) release(evs []*store.ConsumerEvent, err error) {
	if err != nil {
		cc.c.Drop("could not read consumer state")
	}
	cc.mu.Lock()
	defer cc.mu.Unlock()
	for _, ev := range evs {
		cc.sendLocked(hubEvent(ev), false)
	}
	cc.unholdLocked()
}

// endPullHold ends the wait of a new connection's events for its key pull.
func (cc *consumerConn) endPullHold() {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if cc.pullHold {
		cc.pullHold = false
		cc.unholdLocked()
	}
}

// unholdLocked ends one hold; the last one sends the events held (behind
// what waits for room already). cc.mu must be held.
func (cc *consumerConn) unholdLocked() {
	cc.holds--
	if cc.holds > 0 {
		return
	}
	held := cc.held
	cc.held = nil
	for _, ev := range held {
		cc.sendLocked(ev, false)
	}
}

// ConsumersPulled tells the gateway's connections, on every replica, that
// its GET /apis/api-keys was answered: they are sent what it cannot pull
// (ConsumerSource.AfterKeysPulled).
func (f *Fleet) ConsumersPulled(ctx context.Context, gatewayID string) error {
	if !f.consumers.enabled() {
		return nil
	}
	return f.store.NoteConsumersPulled(ctx, gatewayID)
}
