// Package hub keeps the live gateway connections: who is connected, their
// heartbeats, and the delivery of events to every connection of a gateway.
//
// The registry maps a gateway ID to an immutable snapshot of that gateway's
// connections in a sync.Map. Register and unregister build a new snapshot
// under one mutex, so two replicas connecting or dropping at once never lose
// an entry; delivery loads the snapshot without any lock. A connection is
// removed from a snapshot by identity, so a late cleanup can never remove a
// newer connection.
//
// An idle connection has one goroutine, the one that accepted it, which
// reads (only to notice activity, acknowledgements and close). A writer
// goroutine exists only while the connection has something to write: it is
// started when a frame is queued and none runs, and returns once the queue
// is empty. At most one goroutine writes to a socket at a time (the
// connection's write role, taken under its mutex), with a deadline on every
// write. The queue is bounded: a full queue disconnects the gateway instead
// of blocking the publisher. One goroutine of the hub pings every
// connection and closes the silent ones; an idle connection's ping is
// written by a short-lived worker of that tick, not by a goroutine of its
// own.
package hub

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
)

// Config holds the hub's timing and limits.
type Config struct {
	// PingInterval is how often the server pings each connection.
	PingInterval time.Duration
	// Timeout closes a connection that has sent nothing (not even a pong)
	// for this long. It must exceed PingInterval, so that a live gateway
	// always has a ping to answer before it expires.
	Timeout time.Duration
	// WriteTimeout bounds every write to one socket.
	WriteTimeout time.Duration
	// QueueSize is how many frames may wait for one connection; a gateway
	// that falls further behind is disconnected.
	QueueSize int
	// MaxConnections, MaxPerOrg and MaxPerGateway cap live connections:
	// in all, of one organization, and of one gateway (0: no cap). A
	// connection must fit under all three.
	MaxConnections int
	MaxPerOrg      int
	MaxPerGateway  int
	// OnConnect, if set, returns the events a new connection must get to
	// reach its gateway's desired state. It runs on a goroutine of the
	// connection's own, so it may wait (for the connection's generation).
	// The events are sent after the ack, behind heartbeats and live events,
	// and paced on the gateway: an event with Await set holds one of
	// InitialWindow slots until the gateway acts on it (Credit) or
	// CreditTimeout passes. done is called once they have all been handed
	// to the writer.
	//
	// OnConnect must set the connection's generation before it reads the
	// state it returns: until then Deliver passes the connection by, since
	// it cannot tell which form of an event to send, and the state read
	// after carries what it passed by. Without OnConnect, connections are
	// first generation.
	OnConnect func(ctx context.Context, c *Conn) (events []*Event, done func())
	// OnMessage, if set, receives each text frame a gateway sends (at
	// most 4 KiB), on the connection's reading goroutine.
	OnMessage func(c *Conn, frame []byte)
	// InitialWindow and CreditTimeout pace the initial state (defaults 8
	// and 5 s).
	InitialWindow int
	CreditTimeout time.Duration
	// OnDisconnect, if set, is called once a registered connection has
	// ended.
	OnDisconnect func(c *Conn)
}

// Defaults of the contract (§3).
const (
	DefaultPingInterval  = 20 * time.Second
	DefaultTimeout       = 30 * time.Second
	DefaultWriteTimeout  = 10 * time.Second
	DefaultQueueSize     = 32
	DefaultInitialWindow = 8
	DefaultCreditTimeout = 5 * time.Second
)

// Identity is who a connection authenticated as.
type Identity struct {
	GatewayID      string
	OrganizationID string
	TokenID        string
	// Elsewhere is how many connections the gateway holds on other
	// replicas, counted against MaxPerGateway.
	Elsewhere int
}

// Event is one message for gateways. Its frame is encoded once per Deliver
// and generation, not once per connection.
type Event struct {
	Type    string
	APIID   string // the API it concerns, for ordering and pacing
	Payload any
	// Gen1, when set, is sent instead to connections that are not of the
	// second generation; SkipGen1 sends them nothing.
	Gen1     *Event
	SkipGen1 bool
	// Await marks an initial-state event the gateway acts on visibly (a
	// download, an acknowledgement): it is paced on that (Credit).
	Await bool
	// UserID, when set, is the envelope's "userId" (contract §7).
	UserID string
	// Sent, if set, is called once the event is handed to a connection:
	// queued (Deliver, Send) or taken by its writer (initial state).
	// Whatever is queued on the connection after that goes out after it.
	Sent func(*Conn)
}

// forGeneration is the event a connection of generation gen gets (nil:
// none).
func (e *Event) forGeneration(gen int) *Event {
	if gen == Gen2 {
		return e
	}
	switch {
	case e.SkipGen1:
		return nil
	case e.Gen1 != nil:
		return e.Gen1
	}
	return e
}

// Generations of gateway connections (contract §6): unknown until the
// gateway posts a manifest or a grace period passes.
const (
	GenUnknown = 0
	Gen1       = 1
	Gen2       = 2
)

type envelope struct {
	Type          string `json:"type"`
	Payload       any    `json:"payload"`
	Timestamp     string `json:"timestamp"`
	CorrelationID string `json:"correlationId"`
	UserID        string `json:"userId,omitempty"`
}

// Encode renders the event as the contract's envelope.
func (e Event) Encode() ([]byte, error) {
	return json.Marshal(envelope{Type: e.Type, Payload: e.Payload,
		Timestamp: time.Now().UTC().Format(time.RFC3339Nano), CorrelationID: uuid.NewString(), UserID: e.UserID})
}

// Conn is one live gateway connection.
type Conn struct {
	ID          string
	Identity    Identity
	ConnectedAt time.Time

	t      Transport
	hub    *Hub
	ctx    context.Context
	cancel context.CancelFunc
	// closeCode is the close frame the writer sends when ctx ends.
	closeCode atomic.Int32

	// wmu guards the write side: the queue, what waits to be written and
	// who writes.
	wmu sync.Mutex
	// queue holds live frames, written before the initial state; at most
	// QueueSize, and nil when empty, so an idle connection keeps no array.
	queue [][]byte
	// paced holds initial-state frames offered to the writer, taken when
	// the queue is empty.
	paced []*pacedFrame
	// pingDue asks the writer for a ping.
	pingDue bool
	// writing is set while a goroutine holds the write role: a writer
	// goroutine, or a ping worker of the hub's ticker.
	writing bool
	// finishing is set once the writer has taken the close; finished is
	// closed once the socket is closed.
	finishing bool
	finished  chan struct{}
	// room, when not nil, is closed when a frame leaves the queue
	// (SendWait waits on it).
	room chan struct{}
	// lastPing is when the hub's ticker last pinged (its goroutine only).
	lastPing time.Time
	// initial is closed when the initial state has been handed over.
	initial chan struct{}
	// live records, by API, the sequence number of the last live event
	// queued for it, so that a state read before that event (the initial
	// state, a resynchronization) does not send an older view of it.
	liveMu  sync.Mutex
	live    map[string]uint64
	liveSeq uint64

	gen      atomic.Int32
	genKnown chan struct{} // closed when gen is set

	// window holds a slot per initial-state event the gateway has not
	// acted on yet; inflight names them (API -> when sent).
	window     chan struct{}
	inflightMu sync.Mutex
	inflight   map[string]time.Time
}

// Generation is the connection's generation (GenUnknown, Gen1, Gen2).
func (c *Conn) Generation() int { return int(c.gen.Load()) }

// SetGeneration sets the connection's generation, once; later calls do
// nothing, except that a first-generation connection may become second
// generation (its manifest came after the grace period). It reports
// whether this call changed the generation.
func (c *Conn) SetGeneration(gen int) bool {
	if c.gen.CompareAndSwap(GenUnknown, int32(gen)) {
		close(c.genKnown)
		return true
	}
	return gen == Gen2 && c.gen.CompareAndSwap(Gen1, Gen2)
}

// GenerationKnown is closed once the generation is set.
func (c *Conn) GenerationKnown() <-chan struct{} { return c.genKnown }

// InitialStateSent is closed once the connection's initial state (OnConnect)
// has been handed to its writer, or the connection ended first. Until
// then, a change committed just before OnConnect read the state may reach
// the gateway twice: in the initial state, and as its live event when that
// was queued after the initial state's frame went out (the same
// deployment again: a second-generation gateway ignores it, as not newer;
// a first-generation one applies it again). A change committed once this
// is closed reaches the connection as a live event only (until a Resync).
func (c *Conn) InitialStateSent() <-chan struct{} { return c.initial }

// Context ends when the connection does.
func (c *Conn) Context() context.Context { return c.ctx }

// Hub is the registry of live connections.
type Hub struct {
	cfg Config
	log *slog.Logger

	mu       sync.Mutex           // serializes every change of gateways, tokens, orgs and total
	gateways sync.Map             // gateway ID -> *connSet (immutable)
	tokens   map[string][]*Conn   // a slice, not a set: a token has a connection or two
	orgs     map[string]int       // organization ID -> live connections
	revoked  map[string]time.Time // "t:"+token or "g:"+gateway ID -> when
	total    int
	closing  bool
	changed  chan struct{} // closed and replaced on every register and unregister
	ticking  bool          // the ticker goroutine runs (while total > 0)
	tickStop chan struct{} // closed to stop it

	wg sync.WaitGroup // one per connection, done when all its goroutines are

	// Counters for metrics and tests.
	Dropped      atomic.Int64 // gateways disconnected for a full queue
	TimedOut     atomic.Int64 // connections closed for silence
	Accepted     atomic.Int64 // connections registered
	RefusedLimit atomic.Int64 // connections refused for a connection limit

	events eventCounts
}

type connSet struct{ conns []*Conn }

// New makes a hub.
func New(cfg Config, log *slog.Logger) *Hub {
	if cfg.PingInterval <= 0 {
		cfg.PingInterval = DefaultPingInterval
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = DefaultWriteTimeout
	}
	if cfg.QueueSize <= 0 {
		cfg.QueueSize = DefaultQueueSize
	}
	if cfg.InitialWindow <= 0 {
		cfg.InitialWindow = DefaultInitialWindow
	}
	if cfg.CreditTimeout <= 0 {
		cfg.CreditTimeout = DefaultCreditTimeout
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Hub{cfg: cfg, log: log, tokens: map[string][]*Conn{}, orgs: map[string]int{}, revoked: map[string]time.Time{},
		changed: make(chan struct{})}
}

// ErrLimit is why a connection was refused: a connection limit is reached.
var ErrLimit = errors.New("connection limit reached")

// register adds c, enforcing the limits atomically with every other
// register and unregister.
func (h *Hub) register(c *Conn) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closing {
		return errors.New("server is shutting down")
	}
	if h.revokedLocked("t:"+c.Identity.TokenID) || h.revokedLocked("g:"+c.Identity.GatewayID) {
		return errors.New("the gateway token was revoked")
	}
	if h.cfg.MaxConnections > 0 && h.total >= h.cfg.MaxConnections {
		return fmt.Errorf("%w: the server holds its maximum of %d gateway connections", ErrLimit, h.cfg.MaxConnections)
	}
	if org := c.Identity.OrganizationID; h.cfg.MaxPerOrg > 0 && h.orgs[org] >= h.cfg.MaxPerOrg {
		return fmt.Errorf("%w: organization %s already has its maximum of %d gateway connections", ErrLimit, org, h.cfg.MaxPerOrg)
	}
	id := c.Identity.GatewayID
	var old []*Conn
	if v, ok := h.gateways.Load(id); ok {
		old = v.(*connSet).conns
	}
	if h.cfg.MaxPerGateway > 0 && len(old)+c.Identity.Elsewhere >= h.cfg.MaxPerGateway {
		return fmt.Errorf("%w: gateway %s already has its maximum of %d connections", ErrLimit, id, h.cfg.MaxPerGateway)
	}
	conns := make([]*Conn, len(old), len(old)+1)
	copy(conns, old)
	h.gateways.Store(id, &connSet{append(conns, c)})
	h.tokens[c.Identity.TokenID] = append(h.tokens[c.Identity.TokenID], c)
	h.orgs[c.Identity.OrganizationID]++
	h.total++
	h.wg.Add(1)
	h.notifyLocked()
	if !h.ticking {
		h.ticking = true
		h.tickStop = make(chan struct{})
		go h.tickLoop(h.tickStop)
	}
	return nil
}

// notifyLocked wakes the waiters of Changed. h.mu must be held.
func (h *Hub) notifyLocked() {
	close(h.changed)
	h.changed = make(chan struct{})
}

// Changed returns a channel that is closed at the next registration or
// unregistration of a connection. Take it before looking at the registry,
// then wait on it.
func (h *Hub) Changed() <-chan struct{} {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.changed
}

// unregister removes exactly c, never another connection of its gateway.
func (h *Hub) unregister(c *Conn) {
	h.mu.Lock()
	defer h.mu.Unlock()
	id := c.Identity.GatewayID
	v, ok := h.gateways.Load(id)
	if !ok {
		return
	}
	old := v.(*connSet)
	var conns []*Conn
	for _, x := range old.conns {
		if x != c {
			conns = append(conns, x)
		}
	}
	if len(conns) == len(old.conns) {
		return
	}
	if len(conns) == 0 {
		h.gateways.CompareAndDelete(id, old)
	} else {
		h.gateways.Store(id, &connSet{conns})
	}
	if cs := slices.DeleteFunc(h.tokens[c.Identity.TokenID], func(x *Conn) bool { return x == c }); len(cs) > 0 {
		h.tokens[c.Identity.TokenID] = cs
	} else {
		delete(h.tokens, c.Identity.TokenID)
	}
	if h.orgs[c.Identity.OrganizationID]--; h.orgs[c.Identity.OrganizationID] <= 0 {
		delete(h.orgs, c.Identity.OrganizationID)
	}
	h.total--
	if h.total == 0 && h.ticking {
		h.ticking = false
		close(h.tickStop)
	}
	h.notifyLocked()
}

// Conns returns the live connections of a gateway (do not modify).
func (h *Hub) Conns(gatewayID string) []*Conn { return h.conns(gatewayID) }

func (h *Hub) conns(gatewayID string) []*Conn {
	if v, ok := h.gateways.Load(gatewayID); ok {
		return v.(*connSet).conns
	}
	return nil
}

// Count is the number of live connections.
func (h *Hub) Count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.total
}

// Presence reports a gateway's live connections and its last activity.
func (h *Hub) Presence(gatewayID string) (int, time.Time) {
	conns := h.conns(gatewayID)
	var last time.Time
	for _, c := range conns {
		if t := c.t.LastActivity(); t.After(last) {
			last = t
		}
	}
	return len(conns), last
}

// Deliver queues ev, in the form of each connection's generation, for every
// live connection of the gateway, and returns how many took it. took, if
// not nil, is called with each connection that took it. Deliver never
// blocks: a connection whose queue is full is disconnected (and counted),
// since a gateway that far behind must reconnect and resynchronise anyway.
//
// A connection whose generation is not known yet is passed by and counted
// in joining: its initial state, read once the generation is known (so
// after ev's change), carries ev in the right form.
func (h *Hub) Deliver(gatewayID string, ev *Event, took func(*Conn)) (n, joining int) {
	conns := h.conns(gatewayID)
	if len(conns) == 0 {
		return 0, 0
	}
	var frames [3][]byte // by generation, encoded on first use
	for _, c := range conns {
		gen := c.Generation()
		if gen == GenUnknown {
			if c.ctx.Err() == nil {
				joining++
			}
			continue
		}
		e := ev.forGeneration(gen)
		if e == nil {
			continue
		}
		count := h.events.get(e.Type)
		if frames[gen] == nil {
			f, err := e.Encode()
			if err != nil {
				h.log.Error("encode event", "type", e.Type, "err", err)
				count.dropped.Add(1)
				continue
			}
			frames[gen] = f
		}
		if c.enqueue(ev.APIID, frames[gen]) {
			count.queued.Add(1)
			n++
			if took != nil {
				took(c)
			}
			if ev.Sent != nil {
				ev.Sent(c)
			}
		} else {
			count.dropped.Add(1)
		}
	}
	return n, joining
}

// Credit tells the gateway's connections that it acted on the API (it
// downloaded it, or acknowledged it), which frees the initial-state slot
// the API's event held.
func (h *Hub) Credit(gatewayID, apiID string) {
	for _, c := range h.conns(gatewayID) {
		c.credit(apiID)
	}
}

func (c *Conn) credit(apiID string) {
	c.inflightMu.Lock()
	_, ok := c.inflight[apiID]
	delete(c.inflight, apiID)
	c.inflightMu.Unlock()
	if ok {
		// The gateway read the event on this connection and acted on it:
		// the connection is alive, even if the ping behind the event
		// waits for the gateway to finish.
		c.t.Touch()
		<-c.slots()
	}
}

// slots is the initial-state window, made when first used: an idle
// connection keeps none unless it had initial state to pace.
func (c *Conn) slots() chan struct{} {
	c.inflightMu.Lock()
	defer c.inflightMu.Unlock()
	if c.window == nil {
		c.window = make(chan struct{}, c.hub.cfg.InitialWindow)
	}
	return c.window
}

// acquire takes a slot of the initial-state window for apiID, waiting for
// the gateway to act on an earlier event; an event it has not acted on
// within CreditTimeout gives its slot up.
func (c *Conn) acquire(apiID string) bool {
	timer := time.NewTimer(c.hub.cfg.CreditTimeout)
	defer timer.Stop()
	window := c.slots()
	for {
		select {
		case window <- struct{}{}:
			c.inflightMu.Lock()
			if c.inflight == nil {
				c.inflight = map[string]time.Time{}
			}
			c.inflight[apiID] = time.Now()
			c.inflightMu.Unlock()
			return true
		case <-c.ctx.Done():
			return false
		case <-timer.C:
			c.expireCredits()
			timer.Reset(c.hub.cfg.CreditTimeout)
		}
	}
}

// expireCredits frees the slots of events older than CreditTimeout.
func (c *Conn) expireCredits() {
	cutoff := time.Now().Add(-c.hub.cfg.CreditTimeout)
	var old []string
	c.inflightMu.Lock()
	for api, t := range c.inflight {
		if !t.After(cutoff) {
			old = append(old, api)
		}
	}
	c.inflightMu.Unlock()
	for _, api := range old {
		c.credit(api)
	}
}

// EventCount is how many events of one type were queued to connections and
// how many could not be (full queue, closing connection, encoding failure).
type EventCount struct {
	Type            string
	Queued, Dropped int64
}

// EventCounts returns the counts of every event type seen, sorted by type.
func (h *Hub) EventCounts() []EventCount {
	var out []EventCount
	for typ, c := range h.events.load() {
		out = append(out, EventCount{Type: typ, Queued: c.queued.Load(), Dropped: c.dropped.Load()})
	}
	slices.SortFunc(out, func(a, b EventCount) int { return strings.Compare(a.Type, b.Type) })
	return out
}

// eventCounts holds a counter pair per event type. Event types are a few
// constants, so the map is read lock-free through an atomic pointer (no
// allocation on the delivery path) and copied under mu when a new type
// first appears.
type eventCounts struct {
	mu sync.Mutex
	m  atomic.Pointer[map[string]*eventCount]
}

type eventCount struct{ queued, dropped atomic.Int64 }

func (e *eventCounts) load() map[string]*eventCount {
	if p := e.m.Load(); p != nil {
		return *p
	}
	return nil
}

func (e *eventCounts) get(typ string) *eventCount {
	if c, ok := e.load()[typ]; ok {
		return c
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	old := e.load()
	if c, ok := old[typ]; ok {
		return c
	}
	m := make(map[string]*eventCount, len(old)+1)
	maps.Copy(m, old)
	c := &eventCount{}
	m[typ] = c
	e.m.Store(&m)
	return c
}

func (c *Conn) enqueue(apiID string, frame []byte) bool {
	// An ended connection (still registered until its cleanup is done)
	// takes nothing.
	if c.ctx.Err() != nil {
		return false
	}
	if apiID != "" {
		c.liveMu.Lock()
		c.liveSeq++
		if c.live == nil {
			c.live = map[string]uint64{}
		}
		c.live[apiID] = c.liveSeq
		c.liveMu.Unlock()
	}
	c.wmu.Lock()
	switch {
	case c.ctx.Err() != nil:
		c.wmu.Unlock()
		return false
	case len(c.queue) >= c.hub.cfg.QueueSize:
		c.wmu.Unlock()
		c.hub.Dropped.Add(1)
		c.logger().Warn("gateway is not reading: queue full, disconnecting")
		c.close(ClosePolicy)
		return false
	}
	c.queue = append(c.queue, frame)
	c.kickLocked()
	c.wmu.Unlock()
	return true
}

// logger is the connection's logger. It is made when something is logged,
// not kept: most connections log twice in their life.
func (c *Conn) logger() *slog.Logger {
	return c.hub.log.With("gateway", c.Identity.GatewayID, "connection", c.ID)
}

// kickLocked starts a writer if none holds the write role. c.wmu must be
// held.
func (c *Conn) kickLocked() {
	if !c.writing {
		c.writing = true
		go c.writeLoop()
	}
}

// Send queues an event on this connection alone, in the form of its
// generation (none while that is unknown), behind what is queued already.
// It does not count as a live event of ev.APIID: it never stands in for
// the API's deployment events in the initial state. It reports whether the
// connection took it (a full queue disconnects, as Deliver).
func (c *Conn) Send(ev *Event) bool {
	frame, count, ok := c.encodeAlone(ev)
	if !ok {
		return false
	}
	if !c.enqueue("", frame) {
		count.dropped.Add(1)
		return false
	}
	count.queued.Add(1)
	if ev.Sent != nil {
		ev.Sent(c)
	}
	return true
}

// encodeAlone is ev's frame in the form of c's generation, and the count
// of its type, for Send and SendWait; false when there is nothing to send
// (generation unknown, not for it, or not encodable: counted as dropped).
func (c *Conn) encodeAlone(ev *Event) ([]byte, *eventCount, bool) {
	gen := c.Generation()
	if gen == GenUnknown || c.ctx.Err() != nil {
		return nil, nil, false
	}
	e := ev.forGeneration(gen)
	if e == nil {
		return nil, nil, false
	}
	count := c.hub.events.get(e.Type)
	frame, err := e.Encode()
	if err != nil {
		c.logger().Error("encode event", "type", e.Type, "err", err)
		count.dropped.Add(1)
		return nil, nil, false
	}
	return frame, count, true
}

// SendBelow is Send for events that can wait for room: it queues ev only
// while fewer than limit frames (at most QueueSize) wait on the
// connection. Otherwise it reports full and does nothing else: the
// connection stays, and the caller keeps ev and sends it later
// (SendWait), so that a burst of such events neither disconnects a
// gateway that reads steadily nor takes the room live deployment events
// need. It never blocks. full is false when ev was queued or there was
// nothing to send (as for Send).
func (c *Conn) SendBelow(ev *Event, limit int) (full bool) {
	frame, count, ok := c.encodeAlone(ev)
	if !ok {
		return false
	}
	c.wmu.Lock()
	switch {
	case c.ctx.Err() != nil:
		c.wmu.Unlock()
		count.dropped.Add(1)
		return false
	case len(c.queue) >= c.limit(limit):
		c.wmu.Unlock()
		return true
	}
	c.queue = append(c.queue, frame)
	c.kickLocked()
	c.wmu.Unlock()
	count.queued.Add(1)
	if ev.Sent != nil {
		ev.Sent(c)
	}
	return false
}

// limit is the most frames a caller allowing limit may leave waiting:
// QueueSize when limit is 0 or more than that.
func (c *Conn) limit(limit int) int {
	if limit <= 0 || limit > c.hub.cfg.QueueSize {
		return c.hub.cfg.QueueSize
	}
	return limit
}

// QueueSize is how many frames may wait for one connection.
func (h *Hub) QueueSize() int { return h.cfg.QueueSize }

// SendWait is Send for bulk state sent off the publisher's path: it waits
// until fewer than limit frames (the whole QueueSize when limit is 0) wait
// in the queue, at most the write timeout, rather than disconnecting a
// gateway at once for a full queue. A gateway that takes no frame for the
// write timeout is disconnected.
func (c *Conn) SendWait(ev *Event, limit int) bool {
	frame, count, ok := c.encodeAlone(ev)
	if !ok {
		return false
	}
	limit = c.limit(limit)
	timer := time.NewTimer(c.hub.cfg.WriteTimeout)
	defer timer.Stop()
	for {
		c.wmu.Lock()
		if c.ctx.Err() != nil {
			c.wmu.Unlock()
			break
		}
		if len(c.queue) < limit {
			c.queue = append(c.queue, frame)
			c.kickLocked()
			c.wmu.Unlock()
			count.queued.Add(1)
			return true
		}
		if c.room == nil {
			c.room = make(chan struct{})
		}
		room := c.room
		c.wmu.Unlock()
		select {
		case <-room:
			continue
		case <-c.ctx.Done():
		case <-timer.C:
			c.hub.Dropped.Add(1)
			c.logger().Warn("gateway is not reading: queue full, disconnecting")
			c.close(ClosePolicy)
		}
		break
	}
	count.dropped.Add(1)
	return false
}

// Drop disconnects a connection that fell too far behind to be caught up
// by events (counted as Dropped): its gateway reconnects and resyncs.
func (c *Conn) Drop(reason string) {
	if c.ctx.Err() != nil {
		return
	}
	c.hub.Dropped.Add(1)
	c.logger().Warn("disconnecting gateway", "reason", reason)
	c.close(ClosePolicy)
}

// LastActivity is when the gateway last sent anything on this connection.
func (c *Conn) LastActivity() time.Time { return c.t.LastActivity() }

// liveMark is the sequence number of the last live event queued.
func (c *Conn) liveMark() uint64 {
	c.liveMu.Lock()
	defer c.liveMu.Unlock()
	return c.liveSeq
}

// hadLiveEvent reports whether a live event for the API was queued after
// mark.
func (c *Conn) hadLiveEvent(apiID string, mark uint64) bool {
	c.liveMu.Lock()
	defer c.liveMu.Unlock()
	return c.live[apiID] > mark
}

// close ends the connection with a close code (the first code wins).
func (c *Conn) close(code int) {
	c.closeCode.CompareAndSwap(0, int32(code))
	c.end()
}

// end cancels the connection's context and makes sure a writer runs to
// send the close frame and close the socket (finish), which ends the
// reader.
func (c *Conn) end() {
	c.cancel()
	c.wmu.Lock()
	c.kickLocked()
	c.wmu.Unlock()
}

// revokedFor is how long a revoked token or deleted gateway is remembered:
// longer than a handshake can take between its token check and its
// registration, so none slips in after the revocation.
const revokedFor = time.Minute

// revokedLocked reports whether key was revoked recently, and forgets old
// revocations. h.mu must be held.
func (h *Hub) revokedLocked(key string) bool {
	now := time.Now()
	for k, t := range h.revoked {
		if now.Sub(t) > revokedFor {
			delete(h.revoked, k)
		}
	}
	_, ok := h.revoked[key]
	return ok
}

// CloseToken closes every connection that authenticated with the token, and
// refuses the token to connections still in their handshake.
func (h *Hub) CloseToken(tokenID string) {
	h.mu.Lock()
	h.revoked["t:"+tokenID] = time.Now()
	cs := slices.Clone(h.tokens[tokenID])
	h.mu.Unlock()
	for _, c := range cs {
		c.close(ClosePolicy)
	}
}

// MaxPerGateway is the cap on one gateway's live connections (0: none).
func (h *Hub) MaxPerGateway() int { return h.cfg.MaxPerGateway }

// Trim closes the gateway's n newest connections (1008): the gateway holds
// more than its cap across replicas (connections that came to several
// replicas at once).
func (h *Hub) Trim(gatewayID string, n int) {
	cs := h.conns(gatewayID)
	if n <= 0 || len(cs) == 0 {
		return
	}
	cs = slices.Clone(cs)
	slices.SortFunc(cs, func(a, b *Conn) int { return b.ConnectedAt.Compare(a.ConnectedAt) })
	for _, c := range cs[:min(n, len(cs))] {
		c.logger().Warn("gateway connection closed: over its cap of connections across replicas", "cap", h.cfg.MaxPerGateway)
		h.RefusedLimit.Add(1)
		c.close(ClosePolicy)
	}
}

// Tokens lists the tokens the live connections authenticated with.
func (h *Hub) Tokens() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]string, 0, len(h.tokens))
	for id, cs := range h.tokens {
		if len(cs) > 0 {
			out = append(out, id)
		}
	}
	return out
}

// CloseGateway closes every connection of the gateway, and refuses the
// gateway to connections still in their handshake.
func (h *Hub) CloseGateway(gatewayID string) {
	h.mu.Lock()
	h.revoked["g:"+gatewayID] = time.Now()
	h.mu.Unlock()
	for _, c := range h.conns(gatewayID) {
		c.close(ClosePolicy)
	}
}

// Shutdown refuses new connections, sends every connection a 1001 close
// frame, and waits until all connection goroutines have returned or ctx ends.
func (h *Hub) Shutdown(ctx context.Context) error {
	h.mu.Lock()
	h.closing = true
	h.mu.Unlock()
	h.gateways.Range(func(_, v any) bool {
		for _, c := range v.(*connSet).conns {
			c.close(CloseGoingAway)
		}
		return true
	})
	done := make(chan struct{})
	go func() { h.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("gateway connections still open: %w", ctx.Err())
	}
}

// Accept takes the request's connection, upgrades it to a WebSocket and
// serves the gateway on goroutines of its own; it returns at once. The caller
// has verified the gateway token and checked CanUpgrade.
func (h *Hub) Accept(w http.ResponseWriter, r *http.Request, id Identity) error {
	ctx := context.WithoutCancel(r.Context())
	return upgrade(w, r, func(t Transport) func() {
		if c := h.start(ctx, t, id); c != nil {
			return c.read
		}
		return nil
	})
}

// Serve runs one connection on t until it ends: register (or refuse with an
// error frame), ack, initial state, then events and heartbeats.
func (h *Hub) Serve(ctx context.Context, t Transport, id Identity) {
	if c := h.start(ctx, t, id); c != nil {
		c.read()
	}
}

// start registers the connection (or refuses it with an error frame, and
// returns nil), and starts its ack and initial state on their way.
func (h *Hub) start(ctx context.Context, t Transport, id Identity) *Conn {
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	c := &Conn{
		ID:          uuid.NewString(),
		Identity:    id,
		ConnectedAt: time.Now().UTC(),
		t:           t,
		hub:         h,
		ctx:         ctx,
		cancel:      cancel,
		finished:    make(chan struct{}),
		genKnown:    make(chan struct{}),
		initial:     make(chan struct{}), // made before registration: InitialStateSent reads it
	}
	c.lastPing = time.Now()
	if h.cfg.OnConnect == nil {
		c.SetGeneration(Gen1) // nothing will tell it otherwise
	}
	// The ack is the first frame: it is queued before the connection is
	// registered, so no event can overtake it (nor fill the queue first).
	// The writer starts once the connection is registered.
	ack, _ := json.Marshal(map[string]string{"type": "connection.ack", "gatewayId": id.GatewayID,
		"connectionId": c.ID, "timestamp": c.ConnectedAt.Format(time.RFC3339Nano)})
	c.queue = [][]byte{ack}
	c.writing = true
	if err := h.register(c); err != nil {
		cancel()
		if errors.Is(err, ErrLimit) {
			h.RefusedLimit.Add(1)
		}
		c.logger().Warn("gateway connection refused", "reason", err)
		frame, _ := json.Marshal(map[string]string{"type": "error", "message": err.Error()})
		deadline := time.Now().Add(h.cfg.WriteTimeout)
		t.Send(frame, deadline)
		t.Close(ClosePolicy, deadline)
		return nil
	}
	h.Accepted.Add(1)
	c.logger().Info("gateway connected")
	go c.writeLoop() // the ack; c.writing was set with it
	go func() { defer close(c.initial); c.sendInitialState() }()
	return c
}

// read reads the connection until it ends, then cleans up after it.
func (c *Conn) read() {
	h, t := c.hub, c.t
	defer h.wg.Done()
	defer h.unregister(c)
	// This goroutine reads: the frames a gateway sends (acknowledgements)
	// go to OnMessage; reading is also how pongs are consumed (and
	// timestamped) and how a close is noticed.
	for {
		frame, err := t.Receive()
		if err == nil {
			if h.cfg.OnMessage != nil {
				h.cfg.OnMessage(c, frame)
			}
			continue
		}
		if errors.Is(err, errTooBig) {
			c.logger().Warn("gateway sent an oversized frame", "limit", maxMessageBytes)
			c.close(CloseTooBig)
		}
		break
	}
	c.end()
	<-c.finished
	<-c.initial
	if h.cfg.OnDisconnect != nil {
		h.cfg.OnDisconnect(c)
	}
	// A close code was set when the server ended the connection.
	c.logger().Info("gateway disconnected", "byServer", c.closeCode.Load() != 0, "code", c.closeCode.Load())
}

// writeLoop holds the write role until nothing is left to write: live
// frames first, then a ping, then the initial state. It returns the role
// when there is nothing to do, and closes the socket once the connection
// has ended.
func (c *Conn) writeLoop() {
	for {
		f, ping, p := c.next()
		switch {
		case f != nil:
		case ping:
			if err := c.t.Ping(time.Now().Add(c.hub.cfg.WriteTimeout)); err != nil {
				c.close(CloseServerFailure)
			}
			continue
		case p != nil:
			// Checked here, in the writer, where the order of frames is
			// decided: a live event for the API already written (or
			// queued) is newer than the initial state's view of it.
			if c.hadLiveEvent(p.apiID, p.mark) {
				continue
			}
			f = p.frame
		default:
			return // the role was given back, or the socket closed
		}
		if err := c.t.Send(f, time.Now().Add(c.hub.cfg.WriteTimeout)); err != nil {
			c.logger().Info("write to gateway failed", "err", err)
			c.close(CloseServerFailure)
		}
	}
}

// next takes the writer's next piece of work. Once the connection has
// ended it closes the socket instead (once) and returns nothing; with
// nothing to do it gives the write role back and returns nothing.
func (c *Conn) next() (frame []byte, ping bool, p *pacedFrame) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.ctx.Err() != nil {
		if !c.finishing {
			c.finishing = true // keeps the role: no writer starts again
			c.queue, c.paced = nil, nil
			c.wmu.Unlock()
			c.finish()
			c.wmu.Lock()
			close(c.finished)
		}
		return nil, false, nil
	}
	switch {
	case len(c.queue) > 0:
		frame = c.queue[0]
		c.queue[0] = nil
		c.queue = c.queue[1:]
		if len(c.queue) == 0 {
			c.queue = nil // an idle connection keeps no array
		}
		if c.room != nil {
			close(c.room)
			c.room = nil
		}
		return frame, false, nil
	case c.pingDue:
		c.pingDue = false
		return nil, true, nil
	case len(c.paced) > 0:
		p = c.paced[0]
		c.paced[0] = nil
		c.paced = c.paced[1:]
		if len(c.paced) == 0 {
			c.paced = nil
		}
		close(p.taken)
		return nil, false, p
	}
	c.writing = false
	return nil, false, nil
}

// finish sends the close frame and closes the socket, which ends the reader.
func (c *Conn) finish() {
	code := int(c.closeCode.Load())
	if code == 0 {
		code = CloseNormal
	}
	c.t.Close(code, time.Now().Add(min(c.hub.cfg.WriteTimeout, time.Second)))
}

// tickLoop is the hub's one ticker: it pings every connection every
// PingInterval and closes those silent for longer than Timeout. Ticking
// every Timeout/6 (5 s with the defaults) drops a silent connection between
// Timeout and 7/6 of it, before a gateway's own 35 s limit, without waking
// every connection every second. It returns when no connection is left
// (stop; the next registration starts it again).
func (h *Hub) tickLoop(stop <-chan struct{}) {
	tick := time.NewTicker(min(h.cfg.PingInterval, h.cfg.Timeout/6))
	defer tick.Stop()
	var idle []*Conn
	for {
		var now time.Time
		select {
		case <-stop:
			return
		case now = <-tick.C:
		}
		idle = idle[:0]
		h.gateways.Range(func(_, v any) bool {
			for _, c := range v.(*connSet).conns {
				if c.tick(now) {
					idle = append(idle, c)
				}
			}
			return true
		})
		h.pingIdle(slices.Clone(idle))
		clear(idle)
	}
}

// tick checks c's silence and asks for its ping when one is due. It
// reports whether the caller must write the ping itself: no writer runs,
// and the caller now holds the write role.
func (c *Conn) tick(now time.Time) bool {
	h := c.hub
	if c.ctx.Err() != nil {
		return false
	}
	if now.Sub(c.t.LastActivity()) > h.cfg.Timeout {
		h.TimedOut.Add(1)
		c.logger().Info("gateway silent past the timeout, closing", "timeout", h.cfg.Timeout)
		c.close(ClosePolicy)
		return false
	}
	if now.Sub(c.lastPing) < h.cfg.PingInterval {
		return false
	}
	c.lastPing = now
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.writing {
		c.pingDue = true // the writer sends it
		return false
	}
	c.writing = true
	return true
}

// pingWorkers bounds the goroutines that write one tick's pings: a gateway
// whose socket does not take the ping holds one of them up to the write
// timeout, not the ticker.
const pingWorkers = 8

// pingIdle writes the pings of connections that have no writer, on a few
// goroutines that return once done. Each holds the connection's write role
// for its ping, then hands it to a writer if frames came meanwhile.
func (h *Hub) pingIdle(conns []*Conn) {
	if len(conns) == 0 {
		return
	}
	var next atomic.Int64
	for range min(len(conns), pingWorkers) {
		go func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= len(conns) {
					return
				}
				c := conns[i]
				if err := c.t.Ping(time.Now().Add(h.cfg.WriteTimeout)); err != nil {
					c.close(CloseServerFailure) // the writer started below closes
				}
				c.wmu.Lock()
				if len(c.queue) > 0 || c.pingDue || len(c.paced) > 0 || c.ctx.Err() != nil {
					go c.writeLoop() // keeps the role
				} else {
					c.writing = false
				}
				c.wmu.Unlock()
			}
		}()
	}
}

// pacedFrame is an initial-state frame, the API it concerns, and the live
// mark of the state it comes from; taken is closed when the writer takes
// it.
type pacedFrame struct {
	apiID string
	frame []byte
	mark  uint64
	taken chan struct{}
}

// offer hands p to the writer and waits until the writer takes it (true)
// or the connection ends (false).
func (c *Conn) offer(p *pacedFrame) bool {
	p.taken = make(chan struct{})
	c.wmu.Lock()
	if c.ctx.Err() != nil {
		c.wmu.Unlock()
		return false
	}
	c.paced = append(c.paced, p)
	c.kickLocked()
	c.wmu.Unlock()
	select {
	case <-p.taken:
		return true
	case <-c.ctx.Done():
		select {
		case <-p.taken: // taken as the connection ended
			return true
		default:
			return false
		}
	}
}

// Resync sends every live connection its gateway's state again, as on
// connect (OnConnect), paced behind live traffic: what the server could
// not deliver meanwhile (a lost PostgreSQL listener) reaches the gateways.
func (h *Hub) Resync() {
	h.gateways.Range(func(_, v any) bool {
		for _, c := range v.(*connSet).conns {
			c.Resync()
		}
		return true
	})
}

// Resync sends the connection its gateway's state again (see Hub.Resync).
func (c *Conn) Resync() {
	if c.ctx.Err() == nil {
		go c.sendInitialState()
	}
}

// sendInitialState hands the gateway's state to the writer, one event at a
// time behind live traffic.
func (c *Conn) sendInitialState() {
	if c.hub.cfg.OnConnect == nil {
		return
	}
	mark := c.liveMark() // taken before the state is read
	events, done := c.hub.cfg.OnConnect(c.ctx, c)
	c.SetGeneration(Gen1) // when OnConnect did not: events are not passed by forever
	for _, ev := range events {
		if c.hadLiveEvent(ev.APIID, mark) {
			continue // a newer event for this API already went out
		}
		e := ev.forGeneration(c.Generation())
		if e == nil {
			continue
		}
		count := c.hub.events.get(e.Type)
		frame, err := e.Encode()
		if err != nil {
			count.dropped.Add(1)
			continue
		}
		if ev.Await && !c.acquire(ev.APIID) {
			return
		}
		if !c.offer(&pacedFrame{apiID: ev.APIID, frame: frame, mark: mark}) {
			count.dropped.Add(1)
			return
		}
		count.queued.Add(1)
		if ev.Sent != nil {
			ev.Sent(c)
		}
	}
	if done != nil {
		done()
	}
}
