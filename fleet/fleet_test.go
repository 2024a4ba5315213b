package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"testing"
	"time"

	"platform-api/hub"
	"platform-api/store"
	"platform-api/store/storetest"
)

func TestStatusAfter(t *testing.T) {
	for _, c := range []struct {
		rep      delivered
		undeploy bool
		want     string
	}{
		{delivered{}, false, store.StatusPending},
		{delivered{}, true, store.StatusUndeploying},
		{delivered{joining: 1}, false, store.StatusPending}, // its initial state tells it
		{delivered{conns: 2}, false, store.StatusDelivered},
		{delivered{conns: 2}, true, store.StatusUndeployed},
		{delivered{conns: 2, gen2: 1}, false, store.StatusDeploying}, // an acknowledgement will follow
		{delivered{conns: 1, gen2: 1}, true, store.StatusUndeploying},
	} {
		if got := statusAfter(c.rep, c.undeploy); got != c.want {
			t.Errorf("statusAfter(%+v, undeploy %v) = %s, want %s", c.rep, c.undeploy, got, c.want)
		}
	}
}

// newFixture is a store with an organization, one gateway and one API that
// gateways can run.
func newFixture(t *testing.T) (*store.DB, *store.Organization, *store.Gateway, *store.API) {
	t.Helper()
	ctx := context.Background()
	db, _ := storetest.Open(t, nil)
	org := &store.Organization{Handle: "o", Name: "o", Region: "r"}
	if err := db.CreateOrganization(ctx, org); err != nil {
		t.Fatal(err)
	}
	projects, _, _ := db.Projects(ctx, org.ID, store.Page{Limit: 1})
	gw := &store.Gateway{OrganizationID: org.ID, Name: "edge", DisplayName: "edge", Vhost: "gw.example.com", FunctionalityType: "regular"}
	if err := db.CreateGateway(ctx, gw); err != nil {
		t.Fatal(err)
	}
	a, err := db.CreateAPI(ctx, &store.API{OrganizationID: org.ID, ProjectID: projects[0].ID, Name: "a", Context: "/a", Version: "v1",
		BackendServices: []store.BackendService{{Name: "b", Endpoints: []store.Endpoint{{URL: "https://b"}}}}})
	if err != nil {
		t.Fatal(err)
	}
	return db, org, gw, a
}

// memTransport is a gateway connection in memory: it keeps what the hub
// sends, and ends when closed.
type memTransport struct {
	frames chan []byte
	once   sync.Once
	closed chan struct{}
}

// serveMem connects gw to f over a memTransport, served until the test
// ends, and reads its connection.ack.
func serveMem(t *testing.T, f *Fleet, org *store.Organization, gw *store.Gateway) *memTransport {
	t.Helper()
	tr := newMemTransport()
	served := make(chan struct{})
	go func() {
		f.Hub().Serve(context.Background(), tr, hub.Identity{GatewayID: gw.ID, OrganizationID: org.ID, TokenID: "t"})
		close(served)
	}()
	t.Cleanup(func() { tr.Close(hub.CloseNormal, time.Time{}); <-served })
	if ev := tr.next(t); ev["type"] != "connection.ack" {
		t.Fatalf("first frame %v", ev)
	}
	return tr
}

func newMemTransport() *memTransport {
	return &memTransport{frames: make(chan []byte, 64), closed: make(chan struct{})}
}

func (m *memTransport) Send(f []byte, _ time.Time) error { m.frames <- f; return nil }
func (m *memTransport) Ping(time.Time) error             { return nil }
func (m *memTransport) Receive() ([]byte, error)         { <-m.closed; return nil, errors.New("closed") }
func (m *memTransport) Close(int, time.Time) error       { m.once.Do(func() { close(m.closed) }); return nil }
func (m *memTransport) LastActivity() time.Time          { return time.Now() }
func (m *memTransport) Touch()                           {}

// next returns the next frame the gateway got, decoded.
func (m *memTransport) next(t *testing.T) map[string]any {
	t.Helper()
	select {
	case f := <-m.frames:
		var ev map[string]any
		if err := json.Unmarshal(f, &ev); err != nil {
			t.Fatalf("frame %s: %v", f, err)
		}
		return ev
	case <-time.After(5 * time.Second):
		t.Fatal("no frame")
		return nil
	}
}

// TestDeployToAJoiningConnection: a deployment that reaches a gateway whose
// only connection does not know its generation yet is sent once, in the
// form of the generation it turns out to be (through its initial state),
// and the deploy answers with what that did.
func TestDeployToAJoiningConnection(t *testing.T) {
	for _, gen2 := range []bool{false, true} {
		t.Run(map[bool]string{false: "first generation", true: "second generation"}[gen2], func(t *testing.T) {
			ctx := context.Background()
			db, org, gw, a := newFixture(t)
			const grace = time.Second // long enough that the deploy surely comes within it
			f := New(Options{Store: db, GenerationGrace: grace})
			t.Cleanup(f.Close)
			tr := serveMem(t, f, org, gw)
			if gen2 {
				// The manifest comes while the deploy waits for it.
				time.AfterFunc(100*time.Millisecond, func() {
					f.ReportManifest(ctx, gw.ID, org.ID, &store.Manifest{Version: "1.2.0", FunctionalityType: "regular"})
				})
			}
			start := time.Now()
			out, err := f.Deploy(ctx, org.ID, a.ID, "", []store.DeployTarget{{GatewayID: gw.ID}}, func(*store.Revision) error { return nil }, 0)
			if err != nil {
				t.Fatal(err)
			}
			want := map[bool]string{false: store.StatusDelivered, true: store.StatusDeploying}[gen2]
			if out[0].Status != want || out[0].DeliveredConnections != 1 {
				t.Fatalf("answer %+v, want %s to 1 connection", out[0], want)
			}
			if !gen2 && time.Since(start) < grace/2 {
				t.Fatalf("answered after %s, before the connection could know its generation", time.Since(start))
			}
			ev := tr.next(t)
			p, _ := ev["payload"].(map[string]any)
			if ev["type"] != "api.deployed" || p["apiId"] != a.ID || gen2 && p["deploymentId"] != out[0].DeploymentID {
				t.Fatalf("event %v", ev)
			}
			select {
			case f := <-tr.frames:
				t.Fatalf("sent again: %s", f)
			case <-time.After(200 * time.Millisecond):
			}
		})
	}
}
