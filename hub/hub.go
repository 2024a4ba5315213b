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
// Each connection has two goroutines: the one that accepted it reads (only
// to notice activity and close), and a writer that is the only goroutine
// writing to the socket. The writer drains a bounded queue, sends pings on a
// ticker and sets a deadline on every write. A full queue disconnects the
// gateway instead of blocking the publisher.
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
	// reach its gateway's desired state. They are sent after the ack and
	// paced behind heartbeats and live events. done is called once they
	// have all been handed to the writer.
	OnConnect func(ctx context.Context, c *Conn) (events []Event, done func())
	// OnDisconnect, if set, is called once a registered connection has
	// ended.
	OnDisconnect func(c *Conn)
}

// Defaults of the contract (§3).
const (
	DefaultPingInterval = 20 * time.Second
	DefaultTimeout      = 30 * time.Second
	DefaultWriteTimeout = 10 * time.Second
	DefaultQueueSize    = 32
)

// Identity is who a connection authenticated as.
type Identity struct {
	GatewayID      string
	OrganizationID string
	TokenID        string
}

// Event is one message for gateways. Frame is encoded once per Deliver, not
// once per connection.
type Event struct {
	Type    string
	APIID   string // the API it concerns, for pacing the initial state
	Payload any
}

type envelope struct {
	Type          string `json:"type"`
	Payload       any    `json:"payload"`
	Timestamp     string `json:"timestamp"`
	CorrelationID string `json:"correlationId"`
}

// Encode renders the event as the contract's envelope.
func (e Event) Encode() ([]byte, error) {
	return json.Marshal(envelope{Type: e.Type, Payload: e.Payload,
		Timestamp: time.Now().UTC().Format(time.RFC3339Nano), CorrelationID: uuid.NewString()})
}

// Conn is one live gateway connection.
type Conn struct {
	ID          string
	Identity    Identity
	ConnectedAt time.Time

	t      Transport
	hub    *Hub
	queue  chan []byte     // live frames, written before the initial state
	paced  chan pacedFrame // initial-state frames, written when queue is empty
	ctx    context.Context
	cancel context.CancelFunc
	// closeCode is the close frame the writer sends when ctx ends.
	closeCode atomic.Int32
	// live records the APIs a live event was queued for, so that the
	// initial state does not send an older view of them afterwards.
	liveMu sync.Mutex
	live   map[string]bool
	log    *slog.Logger
}

// Hub is the registry of live connections.
type Hub struct {
	cfg Config
	log *slog.Logger

	mu       sync.Mutex // serializes every change of gateways, tokens, orgs and total
	gateways sync.Map   // gateway ID -> *connSet (immutable)
	tokens   map[string]map[*Conn]bool
	orgs     map[string]int       // organization ID -> live connections
	revoked  map[string]time.Time // "t:"+token or "g:"+gateway ID -> when
	total    int
	closing  bool
	changed  chan struct{} // closed and replaced on every register and unregister

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
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Hub{cfg: cfg, log: log, tokens: map[string]map[*Conn]bool{}, orgs: map[string]int{}, revoked: map[string]time.Time{},
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
	if h.cfg.MaxPerGateway > 0 && len(old) >= h.cfg.MaxPerGateway {
		return fmt.Errorf("%w: gateway %s already has its maximum of %d connections", ErrLimit, id, h.cfg.MaxPerGateway)
	}
	conns := make([]*Conn, len(old), len(old)+1)
	copy(conns, old)
	h.gateways.Store(id, &connSet{append(conns, c)})
	if h.tokens[c.Identity.TokenID] == nil {
		h.tokens[c.Identity.TokenID] = map[*Conn]bool{}
	}
	h.tokens[c.Identity.TokenID][c] = true
	h.orgs[c.Identity.OrganizationID]++
	h.total++
	h.wg.Add(1)
	h.notifyLocked()
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
	if m := h.tokens[c.Identity.TokenID]; m != nil {
		delete(m, c)
		if len(m) == 0 {
			delete(h.tokens, c.Identity.TokenID)
		}
	}
	if h.orgs[c.Identity.OrganizationID]--; h.orgs[c.Identity.OrganizationID] <= 0 {
		delete(h.orgs, c.Identity.OrganizationID)
	}
	h.total--
	h.notifyLocked()
}

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

// Deliver queues ev for every live connection of the gateway and returns how
// many took it. It never blocks: a connection whose queue is full is
// disconnected (and counted), since a gateway that far behind must reconnect
// and resynchronise anyway.
func (h *Hub) Deliver(gatewayID string, ev Event) int {
	conns := h.conns(gatewayID)
	if len(conns) == 0 {
		return 0
	}
	count := h.events.get(ev.Type)
	frame, err := ev.Encode()
	if err != nil {
		h.log.Error("encode event", "type", ev.Type, "err", err)
		count.dropped.Add(int64(len(conns)))
		return 0
	}
	n := 0
	for _, c := range conns {
		if c.enqueue(ev.APIID, frame) {
			n++
		}
	}
	count.queued.Add(int64(n))
	count.dropped.Add(int64(len(conns) - n))
	return n
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
	if apiID != "" {
		c.liveMu.Lock()
		c.live[apiID] = true
		c.liveMu.Unlock()
	}
	select {
	case <-c.ctx.Done():
		return false
	case c.queue <- frame:
		return true
	default:
		c.hub.Dropped.Add(1)
		c.log.Warn("gateway is not reading: queue full, disconnecting")
		c.close(ClosePolicy)
		return false
	}
}

// LastActivity is when the gateway last sent anything on this connection.
func (c *Conn) LastActivity() time.Time { return c.t.LastActivity() }

func (c *Conn) hadLiveEvent(apiID string) bool {
	c.liveMu.Lock()
	defer c.liveMu.Unlock()
	return c.live[apiID]
}

// close ends the connection with a close code (the first code wins).
func (c *Conn) close(code int) {
	c.closeCode.CompareAndSwap(0, int32(code))
	c.cancel()
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
	var cs []*Conn
	for c := range h.tokens[tokenID] {
		cs = append(cs, c)
	}
	h.mu.Unlock()
	for _, c := range cs {
		c.close(ClosePolicy)
	}
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
	return upgrade(w, r, func(t Transport) { h.Serve(ctx, t, id) })
}

// Serve runs one connection on t until it ends: register (or refuse with an
// error frame), ack, initial state, then events and heartbeats.
func (h *Hub) Serve(ctx context.Context, t Transport, id Identity) {
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	c := &Conn{
		ID:          uuid.NewString(),
		Identity:    id,
		ConnectedAt: time.Now().UTC(),
		t:           t,
		hub:         h,
		queue:       make(chan []byte, h.cfg.QueueSize),
		paced:       make(chan pacedFrame),
		ctx:         ctx,
		cancel:      cancel,
		live:        map[string]bool{},
	}
	c.log = h.log.With("gateway", id.GatewayID, "connection", c.ID)
	// The ack is the first frame: it is queued before the connection is
	// registered, so no event can overtake it (nor fill the queue first).
	ack, _ := json.Marshal(map[string]string{"type": "connection.ack", "gatewayId": id.GatewayID,
		"connectionId": c.ID, "timestamp": c.ConnectedAt.Format(time.RFC3339Nano)})
	c.queue <- ack
	if err := h.register(c); err != nil {
		cancel()
		if errors.Is(err, ErrLimit) {
			h.RefusedLimit.Add(1)
		}
		c.log.Warn("gateway connection refused", "reason", err)
		frame, _ := json.Marshal(map[string]string{"type": "error", "message": err.Error()})
		deadline := time.Now().Add(h.cfg.WriteTimeout)
		t.Send(frame, deadline)
		t.Close(ClosePolicy, deadline)
		return
	}
	defer h.wg.Done()
	defer h.unregister(c)
	h.Accepted.Add(1)
	c.log.Info("gateway connected")

	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); c.writeLoop() }()
	go func() { defer wg.Done(); c.sendInitialState() }()

	// This goroutine reads: gateways send nothing we act on, but reading is
	// how pongs are consumed (and timestamped) and how a close is noticed.
	for {
		err := t.Receive()
		if err == nil {
			continue
		}
		if errors.Is(err, errTooBig) {
			c.log.Warn("gateway sent an oversized frame", "limit", maxMessageBytes)
			c.close(CloseTooBig)
		}
		break
	}
	c.cancel()
	wg.Wait()
	if h.cfg.OnDisconnect != nil {
		h.cfg.OnDisconnect(c)
	}
	// A close code was set when the server ended the connection.
	c.log.Info("gateway disconnected", "byServer", c.closeCode.Load() != 0, "code", c.closeCode.Load())
}

// writeLoop is the only writer of the socket.
func (c *Conn) writeLoop() {
	h := c.hub
	// One ticker serves both the pings and the silence check. Ticking every
	// Timeout/6 (5 s with the defaults) drops a silent connection between
	// Timeout and 7/6 of it, before a gateway's own 35 s limit, without
	// waking every idle connection every second.
	tick := time.NewTicker(min(h.cfg.PingInterval, h.cfg.Timeout/6))
	defer tick.Stop()
	lastPing := time.Now()
	write := func(f []byte) bool {
		if err := c.t.Send(f, time.Now().Add(h.cfg.WriteTimeout)); err != nil {
			c.log.Info("write to gateway failed", "err", err)
			c.close(CloseServerFailure)
			return false
		}
		return true
	}
	for {
		// Live frames first; the initial state only when no live frame and
		// no tick waits.
		var f []byte
		select {
		case <-c.ctx.Done():
			c.finish()
			return
		case f = <-c.queue:
		default:
			select {
			case <-c.ctx.Done():
				c.finish()
				return
			case f = <-c.queue:
			case p := <-c.paced:
				// Checked here, in the writer, where the order of frames is
				// decided: a live event for the API already written (or
				// queued) is newer than the initial state's view of it.
				if c.hadLiveEvent(p.apiID) {
					continue
				}
				f = p.frame
			case now := <-tick.C:
				if now.Sub(lastPing) >= h.cfg.PingInterval {
					lastPing = now
					if err := c.t.Ping(now.Add(h.cfg.WriteTimeout)); err != nil {
						c.close(CloseServerFailure)
					}
				}
				if now.Sub(c.t.LastActivity()) > h.cfg.Timeout {
					h.TimedOut.Add(1)
					c.log.Info("gateway silent past the timeout, closing", "timeout", h.cfg.Timeout)
					c.close(ClosePolicy)
				}
				continue
			}
		}
		if !write(f) {
			c.finish()
			return
		}
	}
}

// finish sends the close frame and closes the socket, which ends the reader.
func (c *Conn) finish() {
	code := int(c.closeCode.Load())
	if code == 0 {
		code = CloseNormal
	}
	c.t.Close(code, time.Now().Add(min(c.hub.cfg.WriteTimeout, time.Second)))
}

// pacedFrame is an initial-state frame and the API it concerns.
type pacedFrame struct {
	apiID string
	frame []byte
}

// sendInitialState hands the gateway's desired state to the writer, one
// event at a time behind live traffic.
func (c *Conn) sendInitialState() {
	if c.hub.cfg.OnConnect == nil {
		return
	}
	events, done := c.hub.cfg.OnConnect(c.ctx, c)
	for _, ev := range events {
		if c.hadLiveEvent(ev.APIID) {
			continue // a newer event for this API already went out
		}
		count := c.hub.events.get(ev.Type)
		frame, err := ev.Encode()
		if err != nil {
			count.dropped.Add(1)
			continue
		}
		select {
		case c.paced <- pacedFrame{ev.APIID, frame}:
			count.queued.Add(1)
		case <-c.ctx.Done():
			count.dropped.Add(1)
			return
		}
	}
	if done != nil {
		done()
	}
}
