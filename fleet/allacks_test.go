package fleet

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"platform-api/hub"
	"platform-api/store"
)

// ackTransport is a memTransport the gateway also writes to: Receive hands
// the hub the frames the test sends, and tells the test each time the hub
// asks for the next one, that is once the previous one is fully handled.
type ackTransport struct {
	*memTransport
	in    chan []byte
	ready chan struct{}
}

func newAckTransport() *ackTransport {
	return &ackTransport{memTransport: newMemTransport(), in: make(chan []byte), ready: make(chan struct{}, 1)}
}

func (a *ackTransport) Receive() ([]byte, error) {
	select {
	case a.ready <- struct{}{}:
	default:
	}
	select {
	case f := <-a.in:
		return f, nil
	case <-a.closed:
		return a.memTransport.Receive()
	}
}

// send hands the hub one frame and returns once the hub handled it.
func (a *ackTransport) send(t *testing.T, frame []byte) {
	t.Helper()
	select { // the ready of the Receive before this frame's
	case <-a.ready:
	case <-time.After(5 * time.Second):
		t.Fatal("the hub does not read")
	}
	a.in <- frame
	select {
	case <-a.ready:
	case <-time.After(5 * time.Second):
		t.Fatal("the hub did not finish with the frame")
	}
	a.ready <- struct{}{} // for the next send
}

// TestDeployedOnlyWhenEveryConnectionAcknowledged: a second-generation
// gateway with two connections that both took a deployment is DEPLOYED
// only once both acknowledged it. The first acknowledgement is handled and
// every acknowledgement gathered so far is written before the status is
// read, so a deployment made final by one connection alone shows.
func TestDeployedOnlyWhenEveryConnectionAcknowledged(t *testing.T) {
	ctx := context.Background()
	db, org, gw, a := newFixture(t)
	f := New(Options{Store: db, GenerationGrace: time.Second})
	t.Cleanup(f.Close)
	// Second generation: its manifest is known before it connects.
	if err := f.ReportManifest(ctx, gw.ID, org.ID, &store.Manifest{Version: "1.2.0", FunctionalityType: "regular"}); err != nil {
		t.Fatal(err)
	}
	conns := []*ackTransport{newAckTransport(), newAckTransport()}
	for i, tr := range conns {
		served := make(chan struct{})
		go func() {
			f.Hub().Serve(ctx, tr, hub.Identity{GatewayID: gw.ID, OrganizationID: org.ID, TokenID: "t"})
			close(served)
		}()
		t.Cleanup(func() { tr.Close(hub.CloseNormal, time.Time{}); <-served })
		if ev := tr.next(t); ev["type"] != "connection.ack" {
			t.Fatalf("connection %d: first frame %v", i, ev)
		}
	}
	// Both know their generation (their initial state, empty, was sent).
	deadline := time.Now().Add(5 * time.Second)
	for _, c := range f.Hub().Conns(gw.ID) {
		for c.Generation() != hub.Gen2 {
			if time.Now().After(deadline) {
				t.Fatal("the connections did not learn their generation")
			}
			select {
			case <-c.GenerationKnown():
			case <-time.After(10 * time.Millisecond):
			}
		}
	}
	out, err := f.Deploy(ctx, org.ID, a.ID, "", []store.DeployTarget{{GatewayID: gw.ID}}, func(*store.Revision) error { return nil }, 0)
	if err != nil {
		t.Fatal(err)
	}
	if out[0].Status != store.StatusDeploying || out[0].DeliveredConnections != 2 {
		t.Fatalf("deploy %+v, want DEPLOYING to 2 connections", out[0])
	}
	status := func() string {
		t.Helper()
		st, err := db.DeploymentStatuses(ctx, a.ID, []string{gw.ID})
		if err != nil || st[gw.ID] == nil {
			t.Fatalf("status: %v %v", st, err)
		}
		return st[gw.ID].Status
	}
	for i, tr := range conns {
		ev := tr.next(t)
		p, _ := ev["payload"].(map[string]any)
		if ev["type"] != "api.deployed" || p["deploymentId"] != out[0].DeploymentID {
			t.Fatalf("connection %d: event %v", i, ev)
		}
		ack, _ := json.Marshal(map[string]any{"type": "deployment.ack", "payload": map[string]any{
			"deploymentId": p["deploymentId"], "artifactId": a.ID, "resourceType": "api", "action": "deploy",
			"status": "success", "performedAt": p["performedAt"]}})
		changed := f.StatusChange(a.ID)
		tr.send(t, ack)
		if i < len(conns)-1 {
			// Handled; what it made final (nothing, as it should be) is
			// written now rather than after the acks' gathering time.
			f.acks.flush()
			if got := status(); got != store.StatusDeploying {
				t.Fatalf("after %d of %d acknowledgements: %s, want %s", i+1, len(conns), got, store.StatusDeploying)
			}
			continue
		}
		for got := status(); got != store.StatusDeployed; got = status() {
			select {
			case <-changed:
				changed = f.StatusChange(a.ID)
			case <-time.After(5 * time.Second):
				t.Fatalf("after every acknowledgement: %s, want %s", got, store.StatusDeployed)
			}
		}
	}
}
