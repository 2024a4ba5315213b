package hub

import (
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestSlowConnectionIsDisconnected(t *testing.T) {
	h := New(Config{PingInterval: time.Hour, Timeout: 2 * time.Hour, QueueSize: 2}, nil)
	tr := newBlockedTransport()
	done := make(chan struct{})
	go func() { h.Serve(context.Background(), tr, Identity{GatewayID: "g", TokenID: "t"}); close(done) }()
	<-tr.firstSend // the ack is being written, and the write never ends
	took := 0
	for range 10 {
		n, _ := h.Deliver("g", &Event{Type: "x"}, nil)
		took += n
	}
	if took > 2 || h.Dropped.Load() != 1 {
		t.Fatalf("queued %d, dropped %d; want at most the queue size and one drop", took, h.Dropped.Load())
	}
	// Each event is counted once per connection: queued or dropped.
	if ec := h.EventCounts(); len(ec) != 1 || ec[0].Type != "x" || ec[0].Queued != int64(took) || ec[0].Dropped < 1 ||
		ec[0].Queued+ec[0].Dropped > 10 || h.Accepted.Load() != 1 {
		t.Fatalf("event counts %+v, accepted %d", ec, h.Accepted.Load())
	}
	tr.unblock()
	<-done
	if n, _ := h.Presence("g"); n != 0 {
		t.Fatal("slow connection still registered")
	}
}

// blockedTransport's writes block until unblock, like a gateway whose TCP
// window is full. It stands in for a socket only to reach the full-queue
// path deterministically; the real transport is tested above.
type blockedTransport struct {
	firstSend chan struct{}
	once      sync.Once
	release   chan struct{}
	closed    chan struct{}
	closeOnce sync.Once
}

func newBlockedTransport() *blockedTransport {
	return &blockedTransport{firstSend: make(chan struct{}), release: make(chan struct{}), closed: make(chan struct{})}
}

func (b *blockedTransport) Send([]byte, time.Time) error {
	b.once.Do(func() { close(b.firstSend) })
	<-b.release
	return io.ErrClosedPipe
}
func (b *blockedTransport) Ping(time.Time) error     { return nil }
func (b *blockedTransport) Receive() ([]byte, error) { <-b.closed; return nil, io.EOF }
func (b *blockedTransport) LastActivity() time.Time  { return time.Now() }
func (b *blockedTransport) Touch()                   {}
func (b *blockedTransport) Close(int, time.Time) error {
	b.closeOnce.Do(func() { close(b.closed) })
	return nil
}
func (b *blockedTransport) unblock() { close(b.release) }

// fakeTransport is an idle, well-behaved connection.
type fakeTransport struct {
	closed chan struct{}
	once   sync.Once
}

func newFakeTransport() *fakeTransport { return &fakeTransport{closed: make(chan struct{})} }

func (f *fakeTransport) Send([]byte, time.Time) error { return nil }
func (f *fakeTransport) Ping(time.Time) error         { return nil }
func (f *fakeTransport) Receive() ([]byte, error)     { <-f.closed; return nil, io.EOF }
func (f *fakeTransport) LastActivity() time.Time      { return time.Now() }
func (f *fakeTransport) Touch()                       {}
func (f *fakeTransport) Close(int, time.Time) error {
	f.once.Do(func() { close(f.closed) })
	return nil
}

// TestRegistryUnderConcurrency connects and drops many replicas of a few
// gateways at once and checks that the registry loses nothing and keeps
// nothing.
func TestRegistryUnderConcurrency(t *testing.T) {
	h := New(Config{PingInterval: time.Hour, Timeout: 2 * time.Hour}, nil)
	const gateways, replicas = 4, 25
	var started, stopped sync.WaitGroup
	ts := make([]*fakeTransport, 0, gateways*replicas)
	for g := range gateways {
		for range replicas {
			tr := newFakeTransport()
			ts = append(ts, tr)
			started.Add(1)
			stopped.Add(1)
			go func() {
				defer stopped.Done()
				h.Serve(context.Background(), tr, Identity{GatewayID: fmt.Sprint(g), TokenID: fmt.Sprint("t", g)})
			}()
			go func() {
				defer started.Done()
				waitUntil(t, func() bool { n, _ := h.Presence(fmt.Sprint(g)); return n > 0 })
			}()
		}
	}
	started.Wait()
	waitUntil(t, func() bool { return h.Count() == gateways*replicas })
	for g := range gateways {
		if n, _ := h.Presence(fmt.Sprint(g)); n != replicas {
			t.Fatalf("gateway %d has %d connections, want %d", g, n, replicas)
		}
		if got, _ := h.Deliver(fmt.Sprint(g), &Event{Type: "x"}, nil); got != replicas {
			t.Fatalf("delivered to %d, want %d", got, replicas)
		}
	}
	// Drop every other replica concurrently, then the rest by token.
	for i, tr := range ts {
		if i%2 == 0 {
			go tr.Close(CloseNormal, time.Time{})
		}
	}
	waitUntil(t, func() bool { return h.Count() == gateways*replicas/2 })
	for g := range gateways {
		h.CloseToken(fmt.Sprint("t", g))
	}
	stopped.Wait()
	if h.Count() != 0 {
		t.Fatalf("%d connections left", h.Count())
	}
	h.gateways.Range(func(k, _ any) bool { t.Fatalf("gateway %v left in the registry", k); return false })
}

func waitUntil(t *testing.T, cond func() bool) {
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Error("condition not met within 5s")
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// recordingTransport records written frames; its first Send waits for gate.
type recordingTransport struct {
	fakeTransport
	gate   chan struct{}
	mu     sync.Mutex
	frames []string
	sent   chan struct{}
}

func newRecordingTransport() *recordingTransport {
	return &recordingTransport{fakeTransport: fakeTransport{closed: make(chan struct{})}, gate: make(chan struct{}), sent: make(chan struct{}, 100)}
}

func (r *recordingTransport) Send(f []byte, _ time.Time) error {
	r.mu.Lock()
	first := len(r.frames) == 0
	r.frames = append(r.frames, string(f))
	r.mu.Unlock()
	if first {
		<-r.gate
	}
	r.sent <- struct{}{}
	return nil
}

// TestAckFirstAndInitialStateNeverOverwritesLiveEvents holds the writer on
// the ack while a live event for an API arrives after the initial state was
// computed: the stale initial-state frame must not be written after it.
func TestAckFirstAndInitialStateNeverOverwritesLiveEvents(t *testing.T) {
	computed := make(chan struct{})
	handedOver := make(chan struct{}) // the initial state has reached the writer
	h := New(Config{PingInterval: time.Hour, Timeout: 2 * time.Hour, OnConnect: func(ctx context.Context, c *Conn) ([]*Event, func()) {
		defer close(computed)
		c.SetGeneration(Gen1)
		return []*Event{{Type: "api.deployed", APIID: "x", Payload: "rev1"}}, func() { close(handedOver) }
	}}, nil)
	tr := newRecordingTransport()
	served := make(chan struct{})
	go func() { h.Serve(context.Background(), tr, Identity{GatewayID: "g", TokenID: "t"}); close(served) }()
	<-computed
	waitUntil(t, func() bool { n, _ := h.Presence("g"); return n == 1 })
	if n, _ := h.Deliver("g", &Event{Type: "api.deployed", APIID: "x", Payload: "rev2"}, nil); n != 1 {
		t.Fatalf("delivered to %d", n)
	}
	close(tr.gate) // the writer was held on the ack until now
	<-handedOver
	// Ending the connection waits for the writer, so any frame it took is
	// written (or dropped) before the frames are read below.
	tr.Close(CloseNormal, time.Time{})
	<-served
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if !strings.Contains(tr.frames[0], "connection.ack") {
		t.Fatalf("first frame %s", tr.frames[0])
	}
	last := tr.frames[len(tr.frames)-1]
	if !strings.Contains(last, "rev2") {
		t.Fatalf("frames %q: the older initial state was written after the live event", tr.frames)
	}
}

// TestRevokedTokenCannotRegister covers a handshake whose token was checked
// just before it was revoked: it must not become a live connection.
func TestRevokedTokenCannotRegister(t *testing.T) {
	h := New(Config{PingInterval: time.Hour, Timeout: 2 * time.Hour}, nil)
	h.CloseToken("t1")
	h.CloseGateway("g2")
	for _, id := range []Identity{{GatewayID: "g1", TokenID: "t1"}, {GatewayID: "g2", TokenID: "t2"}} {
		tr := newRecordingTransport()
		close(tr.gate)
		h.Serve(context.Background(), tr, id) // returns at once when refused
		if n, _ := h.Presence(id.GatewayID); n != 0 || !strings.Contains(tr.frames[len(tr.frames)-1], "revoked") {
			t.Fatalf("%+v: registered or not told why: %q", id, tr.frames)
		}
	}
}

// TestEndedConnectionTakesNothing: a connection stays registered while its
// cleanup (OnDisconnect) runs. An event delivered then used to be "taken"
// by it at random (a select between its done context and a free queue
// slot), so the fleet expected an acknowledgement from a connection that
// could never send one, and the deployment timed out although the
// gateway, reconnected, had acknowledged it.
func TestEndedConnectionTakesNothing(t *testing.T) {
	inCleanup, release := make(chan *Conn), make(chan struct{})
	h := New(Config{PingInterval: time.Hour, Timeout: 2 * time.Hour, OnDisconnect: func(c *Conn) {
		inCleanup <- c
		<-release
	}}, nil)
	tr := newFakeTransport()
	served := make(chan struct{})
	go func() { h.Serve(context.Background(), tr, Identity{GatewayID: "g", TokenID: "t"}); close(served) }()
	waitUntil(t, func() bool { n, _ := h.Presence("g"); return n == 1 })
	tr.Close(CloseNormal, time.Time{}) // the gateway goes away
	c := <-inCleanup
	if n, _ := h.Presence("g"); n != 1 {
		t.Fatalf("presence during cleanup: %d", n)
	}
	for range 100 { // the old select lost half the time
		if n, _ := h.Deliver("g", &Event{Type: "api.deployed", APIID: "x"}, func(*Conn) { t.Fatal("an ended connection took an event") }); n != 0 {
			t.Fatalf("delivered to %d", n)
		}
	}
	if c.Context().Err() == nil {
		t.Fatal("context of an ended connection is live")
	}
	close(release)
	<-served
}
