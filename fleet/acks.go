package fleet

import (
	"context"
	"encoding/json"
	"sync"
	"sync/atomic"
	"time"

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

	// Counters for metrics.
	Malformed atomic.Int64
	counts    sync.Map // ackCountKey -> *atomic.Int64
}

type ackCountKey struct{ Status, ErrorCode string }

// ackFlushEvery is how long acknowledgements gather before they are
// written together.
const ackFlushEvery = 10 * time.Millisecond

func (a *acks) init(f *Fleet) {
	a.f = f
	a.waits = map[ackKey]*ackWait{}
	a.byConn = map[*hub.Conn][]ackKey{}
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
	if json.Unmarshal(frame, &m) != nil || m.Type != "deployment.ack" || p.DeploymentID == "" || p.ArtifactID == "" ||
		(p.Action != "deploy" && p.Action != "undeploy") || (p.Status != "success" && p.Status != "failed") {
		f.acks.Malformed.Add(1)
		return
	}
	code := ""
	if p.Status == "failed" {
		code = p.ErrorCode
		if code == "" {
			code = "GATEWAY_PROCESSING_ERROR"
		}
		if len(code) > 64 {
			code = code[:64]
		}
	}
	f.acks.count(p.Status, code)
	f.hub.Credit(c.Identity.GatewayID, p.ArtifactID)
	f.acks.received(c, store.Ack{APIID: p.ArtifactID, GatewayID: c.Identity.GatewayID, DeploymentID: p.DeploymentID,
		Undeploy: p.Action == "undeploy", Failed: p.Status == "failed", ErrorCode: code})
}

func (a *acks) count(status, code string) {
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

// received applies one connection's acknowledgement to what it owed.
func (a *acks) received(c *hub.Conn, ack store.Ack) {
	k := ackKey{ack.GatewayID, ack.APIID}
	a.mu.Lock()
	w := a.waits[k]
	switch {
	case w == nil || w.deploymentID != ack.DeploymentID || w.undeploy != ack.Undeploy:
		ack.Final = true // nothing expected here: the store decides
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
		// Let the acknowledgements of a fleet-wide deployment gather.
		select {
		case <-time.After(ackFlushEvery):
		case <-a.stop:
		}
		a.flush()
	}
}

func (a *acks) flush() {
	a.mu.Lock()
	batch := a.queue
	a.queue = nil
	a.mu.Unlock()
	if len(batch) == 0 || a.f.store == nil {
		return
	}
	if err := a.f.store.ApplyAcks(context.Background(), batch); err != nil {
		a.f.log.Warn("could not record acknowledgements", "count", len(batch), "err", err)
	}
}
