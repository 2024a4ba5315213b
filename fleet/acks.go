package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"platform-api/httpx"
	"platform-api/hub"
	"platform-api/store"
)

// Acknowledgements (contract §6). A second-generation gateway answers each
// deploy and undeploy it applies with a deployment.ack frame. A gateway may
// hold several connections (replicas); its deployment is final when every
// connection that took the event and is still connected acknowledged
// success, or as soon as one reports failure. The expectations live here,
// in memory; an acknowledgement that matches none (the server restarted
// since it sent the event) is final by itself. Statuses are written in
// batches, and every write names the deployment id, so a stale
// acknowledgement changes nothing.

// ackFrame is the only frame a gateway sends.
type ackFrame struct {
	Type    string `json:"type"`
	Payload struct {
		DeploymentID string `json:"deploymentId"`
		ArtifactID   string `json:"artifactId"`
		ResourceType string `json:"resourceType"`
		Action       string `json:"action"`
		Status       string `json:"status"`
		PerformedAt  string `json:"performedAt"`
		ErrorCode    string `json:"errorCode"`
	} `json:"payload"`
}

type ackKey struct{ gateway, api string }

// ackWait is one deployment action that connections owe an acknowledgement.
type ackWait struct {
	deploymentID string
	undeploy     bool
	owing        map[*hub.Conn]bool
	succeeded    int
}

// acks holds the expected acknowledgements and writes the final ones.
type acks struct {
	f *Fleet

	mu     sync.Mutex
	waits  map[ackKey]*ackWait
	byConn map[*hub.Conn][]ackKey
	queue  []store.Ack
	kick   chan struct{}
	stop   chan struct{}
	done   chan struct{}

	// unexpected limits, per connection, the acknowledgements that match
	// nothing this server waits for (only useful after a restart): a flood
	// of them cannot become a flood of database writes.
	// Keyed by connection id; idle buckets are swept.
	unexpected *httpx.RateLimiter
	// flushMu serializes flushes (the write loop's, and those of a
	// connection's initial state) and guards retry: how long the write
	// loop waits before it tries again a batch the database did not take
	// (0 after a success).
	flushMu sync.Mutex
	retry   time.Duration

	// Counters for metrics.
	Malformed atomic.Int64
	Dropped   atomic.Int64 // over a connection's allowance of unexpected acknowledgements
	Refused   atomic.Int64 // acknowledgements the database refused, each alone
	Shed      atomic.Int64 // queued acknowledgements dropped while the database was unavailable for long
	Retries   atomic.Int64 // writes tried again because the database was unavailable
	counts    sync.Map     // ackCountKey -> *atomic.Int64
}

type ackCountKey struct{ Status, ErrorCode string }

// KnownErrorCodes are the error codes of failed acknowledgements that
// label metrics as themselves (contract §6); every other code a gateway
// sends is counted as "other", so that gateways cannot grow the series
// without bound. The code itself is still recorded on the deployment.
var KnownErrorCodes = []string{"GATEWAY_PROCESSING_ERROR", "DEPLOYMENT_ID_MISMATCH"}

// Allowance of unexpected acknowledgements per connection: a burst, then a
// steady rate.
const (
	unexpectedBurst   = 1000
	unexpectedPerSec  = 100
	maxErrorCodeBytes = 64
	// maxQueuedAcks bounds what waits for the database while it is
	// unavailable (about 150 bytes each).
	maxQueuedAcks = 200_000
)

// ackFlushEvery is how long acknowledgements gather before they are
// written together.
const ackFlushEvery = 10 * time.Millisecond

func (a *acks) init(f *Fleet) {
	a.f = f
	a.waits = map[ackKey]*ackWait{}
	a.byConn = map[*hub.Conn][]ackKey{}
	a.unexpected = httpx.NewRateLimiter(unexpectedBurst, unexpectedBurst*time.Second/unexpectedPerSec)
	a.kick = make(chan struct{}, 1)
	a.stop = make(chan struct{})
	a.done = make(chan struct{})
	go a.writeLoop()
}

func (a *acks) close() {
	select {
	case <-a.stop:
	default:
		close(a.stop)
		<-a.done
	}
}

// expect records that connection c took the current action of a
// deployment and owes its acknowledgement.
func (a *acks) expect(c *hub.Conn, apiID, deploymentID string, undeploy bool) {
	if c.Context().Err() != nil {
		return // ended: gone (below) has run or will find nothing to drop
	}
	k := ackKey{c.Identity.GatewayID, apiID}
	a.mu.Lock()
	defer a.mu.Unlock()
	w := a.waits[k]
	if w == nil || w.deploymentID != deploymentID || w.undeploy != undeploy {
		w = &ackWait{deploymentID: deploymentID, undeploy: undeploy, owing: map[*hub.Conn]bool{}}
		a.waits[k] = w
	}
	if !w.owing[c] {
		w.owing[c] = true
		a.byConn[c] = append(a.byConn[c], k)
	}
}

// onMessage takes a frame from a gateway: a deployment.ack, or something to
// count and ignore.
func (f *Fleet) onMessage(c *hub.Conn, frame []byte) {
	var m ackFrame
	p := &m.Payload
	// Ids are canonical UUIDs, as every id this server hands out: anything
	// else (a NUL, a multibyte cut) could only fail the batch it joins.
	if json.Unmarshal(frame, &m) != nil || m.Type != "deployment.ack" || !httpx.IsID(p.DeploymentID) || !httpx.IsID(p.ArtifactID) ||
		(p.Action != "deploy" && p.Action != "undeploy") || (p.Status != "success" && p.Status != "failed") {
		f.acks.Malformed.Add(1)
		return
	}
	code := ""
	if p.Status == "failed" {
		code = cleanErrorCode(p.ErrorCode)
	}
	ack := store.Ack{APIID: p.ArtifactID, GatewayID: c.Identity.GatewayID, DeploymentID: p.DeploymentID,
		Undeploy: p.Action == "undeploy", Failed: p.Status == "failed", ErrorCode: code}
	if !f.acks.received(c, ack) {
		f.acks.Dropped.Add(1)
		return
	}
	f.acks.count(p.Status, code)
	f.hub.Credit(c.Identity.GatewayID, p.ArtifactID)
}

// cleanErrorCode makes a gateway's error code fit to store and show: no
// control characters (NUL included), valid UTF-8, at most
// maxErrorCodeBytes cut on a character boundary; empty becomes the
// contract's GATEWAY_PROCESSING_ERROR.
func cleanErrorCode(code string) string {
	code = strings.ToValidUTF8(code, "\uFFFD")
	code = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return -1
		}
		return r
	}, code)
	if len(code) > maxErrorCodeBytes {
		cut := maxErrorCodeBytes
		for cut > 0 && !utf8.RuneStart(code[cut]) {
			cut--
		}
		code = code[:cut]
	}
	if strings.TrimSpace(code) == "" {
		return "GATEWAY_PROCESSING_ERROR"
	}
	return code
}

// count counts an acknowledgement for metrics, under its code when the
// code is a known one.
func (a *acks) count(status, code string) {
	if code != "" && !slices.Contains(KnownErrorCodes, code) {
		code = "other"
	}
	v, _ := a.counts.LoadOrStore(ackCountKey{status, code}, new(atomic.Int64))
	v.(*atomic.Int64).Add(1)
}

// AckCount is how many acknowledgements of one status and error code came.
type AckCount struct {
	Status, ErrorCode string
	N                 int64
}

// AckCounts returns the acknowledgements received, by status and code, and
// the frames ignored as malformed.
func (f *Fleet) AckCounts() ([]AckCount, int64) {
	var out []AckCount
	f.acks.counts.Range(func(k, v any) bool {
		key := k.(ackCountKey)
		out = append(out, AckCount{key.Status, key.ErrorCode, v.(*atomic.Int64).Load()})
		return true
	})
	return out, f.acks.Malformed.Load()
}

// AckDrops are the acknowledgements not recorded, by reason: over a
// connection's allowance of unexpected ones, refused by the database (each
// alone), and shed from the queue while the database was unavailable.
func (f *Fleet) AckDrops() (rateLimited, refused, shed int64) {
	return f.acks.Dropped.Load(), f.acks.Refused.Load(), f.acks.Shed.Load()
}

// AckRetries counts the writes of acknowledgements tried again because the
// database was unavailable.
func (f *Fleet) AckRetries() int64 { return f.acks.Retries.Load() }

// received applies one connection's acknowledgement to what it owed. It
// reports false for an unexpected acknowledgement over the connection's
// allowance, which is dropped.
func (a *acks) received(c *hub.Conn, ack store.Ack) bool {
	k := ackKey{ack.GatewayID, ack.APIID}
	a.mu.Lock()
	w := a.waits[k]
	switch {
	case w == nil || w.deploymentID != ack.DeploymentID || w.undeploy != ack.Undeploy:
		// Nothing expected here: the store decides, within the allowance.
		if !a.unexpected.Allow(c.ID) {
			a.mu.Unlock()
			return false
		}
		ack.Final = true
	case ack.Failed:
		ack.Final = true
		a.forgetLocked(k, w)
	default:
		if w.owing[c] {
			delete(w.owing, c)
			w.succeeded++
		}
		if len(w.owing) == 0 {
			ack.Final = true
			a.forgetLocked(k, w)
		}
	}
	if ack.Final {
		a.queue = append(a.queue, ack)
	}
	a.mu.Unlock()
	if ack.Final {
		a.wake()
	}
	return true
}

// forgetLocked drops a wait. a.mu must be held.
func (a *acks) forgetLocked(k ackKey, w *ackWait) {
	delete(a.waits, k)
	for c := range w.owing {
		keys := a.byConn[c]
		for i, x := range keys {
			if x == k {
				a.byConn[c] = append(keys[:i:i], keys[i+1:]...)
				break
			}
		}
	}
}

// owes reports whether the connection owes any acknowledgement.
func (a *acks) owes(c *hub.Conn) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.byConn[c]) > 0
}

// gone drops a closed connection from what it owed: a deployment whose
// other connections all succeeded is final now.
func (a *acks) gone(c *hub.Conn) {
	a.mu.Lock()
	keys := a.byConn[c]
	delete(a.byConn, c)
	final := false
	for _, k := range keys {
		w := a.waits[k]
		if w == nil {
			continue
		}
		delete(w.owing, c)
		if len(w.owing) == 0 {
			delete(a.waits, k)
			if w.succeeded > 0 {
				a.queue = append(a.queue, store.Ack{APIID: k.api, GatewayID: k.gateway, DeploymentID: w.deploymentID,
					Undeploy: w.undeploy, Final: true})
				final = true
			}
		}
	}
	a.mu.Unlock()
	if final {
		a.wake()
	}
}

func (a *acks) wake() {
	select {
	case a.kick <- struct{}{}:
	default:
	}
}

// writeLoop writes the final acknowledgements in batches.
func (a *acks) writeLoop() {
	defer close(a.done)
	for {
		select {
		case <-a.kick:
		case <-a.stop:
			a.flush()
			return
		}
		// Let the acknowledgements of a fleet-wide deployment gather; after
		// a failed write, wait before trying again.
		a.flushMu.Lock()
		wait := max(ackFlushEvery, a.retry)
		a.flushMu.Unlock()
		select {
		case <-time.After(wait):
		case <-a.stop:
		}
		a.flush()
	}
}

// Waits between tries of a batch the database did not take.
const (
	firstAckRetry = 100 * time.Millisecond
	maxAckRetry   = 5 * time.Second
)

// flush writes the queued acknowledgements in one transaction. No
// acknowledgement is lost to a failed write: while the database is
// unavailable the batch waits and is tried again (a lost write would later
// read as a false FAILED); when the database refuses the batch, each
// acknowledgement is written alone, so that one bad row cannot fail the
// others, other organizations' included.
func (a *acks) flush() {
	a.flushMu.Lock()
	defer a.flushMu.Unlock()
	a.mu.Lock()
	batch := a.queue
	a.queue = nil
	a.mu.Unlock()
	if len(batch) == 0 || a.f.store == nil {
		return
	}
	ctx := context.Background()
	err := a.f.store.ApplyAcks(ctx, batch)
	if err == nil {
		a.retry = 0
		return
	}
	if !errors.Is(err, store.ErrUnavailable) {
		a.f.log.Warn("acknowledgements refused together: writing each alone", "count", len(batch), "err", err)
		for i, ack := range batch {
			err = a.f.store.ApplyAcks(ctx, []store.Ack{ack})
			if errors.Is(err, store.ErrUnavailable) {
				batch = batch[i:]
				break
			}
			if err != nil {
				a.Refused.Add(1)
				a.f.log.Warn("acknowledgement refused by the database", "gateway", ack.GatewayID, "api", ack.APIID,
					"deployment", ack.DeploymentID, "err", err)
			}
		}
		if !errors.Is(err, store.ErrUnavailable) {
			a.retry = 0
			return
		}
	}
	a.retry = min(maxAckRetry, max(firstAckRetry, 2*a.retry))
	a.Retries.Add(1)
	a.f.log.Warn("could not record acknowledgements: trying again", "count", len(batch), "in", a.retry, "err", err)
	a.mu.Lock()
	a.queue = append(batch, a.queue...)
	if over := len(a.queue) - maxQueuedAcks; over > 0 {
		a.queue = a.queue[over:]
		a.Shed.Add(int64(over))
	}
	a.mu.Unlock()
	a.wake()
}
