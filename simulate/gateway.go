package simulate

import (
	"archive/zip"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"go.yaml.in/yaml/v3"
	"golang.org/x/net/websocket"
)

// gateway is one simulated gateway: one connection at a time, events
// handled one after the other on the goroutine that reads them, as real
// gateways do.
type gateway struct {
	id, key, name string
	r             *runner

	mu sync.Mutex
	ws *websocket.Conn
	// at is the index of the target the gateway is (or was last)
	// connected to, since connectedAt; moving is set while it reconnects,
	// after its connection ended without the run closing it (see move),
	// and lostAt is when that last happened.
	at          int
	connectedAt time.Time
	moving      bool
	lostAt      time.Time
	got         map[string]receipt   // revision of the measured API -> api.deployed received
	fetched     map[string]time.Time // revision -> applied (gen 1: downloaded; gen 2: acknowledged)
	rev         string               // revision of the measured API last applied
	// held is, per API index, the performedAt (Unix ns) of the last event
	// applied by a second-generation gateway: positive for a deploy,
	// negative for an undeploy, 0 for none. A real gateway keeps it across
	// reconnects, and so does this one.
	held []int64
	// failDeploys makes a second-generation gateway acknowledge failure of
	// every deploy of the measured API (-fail).
	failDeploys bool

	// Convergence on all the APIs, per connection: epoch counts the
	// connections, seen[i] is the epoch in which API i was last applied
	// (or, second generation, found held at connect), count how many APIs
	// are seen in this epoch, and doneAt when that reached all of them.
	epoch  uint32
	seen   []uint32
	count  int
	doneAt time.Time
}

// receipt is when an api.deployed of the measured API first came, and on
// a connection to which target.
type receipt struct {
	at     time.Time
	target int
}

// event is what the simulator reads of a frame from the server.
type event struct {
	Type    string `json:"type"`
	Message string `json:"message"`
	Payload struct {
		APIID        string `json:"apiId"`
		DeploymentID string `json:"deploymentId"`
		PerformedAt  string `json:"performedAt"`
		RevisionID   string `json:"revisionId"`
	} `json:"payload"`
}

// channelPath is the gateways' WebSocket channel.
const channelPath = "/api/internal/v1/ws/gateways/connect"

// manifest is what the simulated second-generation gateways report about
// themselves on every connect (contract §6).
const manifest = `{"version":"1.2.0","functionalityType":"regular","policies":[{"name":"cors","version":"v1"}]}`

// connect opens the channel to the gateway's target and reads it.
func (g *gateway) connect(ctx context.Context) error {
	g.mu.Lock()
	at := g.at
	g.mu.Unlock()
	ws, err := g.open(ctx, at)
	if err != nil {
		return err
	}
	g.attach(ws, at, false)
	return nil
}

// open opens the channel to target at and waits for connection.ack. A
// second-generation gateway posts its manifest at the same time, as real
// ones do; the connection counts as made once both are done.
func (g *gateway) open(ctx context.Context, at int) (*websocket.Conn, error) {
	var posted chan error
	if g.r.opt.Generation == 2 {
		posted = make(chan error, 1)
		go func() { posted <- g.postManifest(ctx, at) }()
	}
	ws, err := g.dial(ctx, at)
	if err == nil {
		err = g.awaitAck(ws)
	}
	if posted != nil {
		if perr := <-posted; err == nil && perr != nil {
			err = fmt.Errorf("manifest: %w", perr)
		}
	}
	if err != nil {
		if ws != nil {
			ws.Close()
		}
		return nil, err
	}
	return ws, nil
}

// attach makes ws, a connection to target at, the gateway's connection
// and reads it. With ifMoving it does so only while the gateway is moving
// (the run may have closed the gateway since the move began), and reports
// whether it did.
func (g *gateway) attach(ws *websocket.Conn, at int, ifMoving bool) bool {
	g.mu.Lock()
	if ifMoving && !g.moving {
		g.mu.Unlock()
		return false
	}
	g.ws, g.at, g.moving, g.connectedAt = ws, at, false, time.Now()
	g.epoch++
	epoch := g.epoch
	g.count, g.doneAt = 0, time.Time{}
	if g.r.opt.Generation == 2 {
		// What it holds needs nothing from the server.
		for i, at := range g.held {
			if at > 0 {
				g.seen[i] = epoch
				g.count++
			}
		}
	}
	g.checkDoneLocked()
	g.mu.Unlock()
	g.r.live.Add(1)
	go g.read(ws, epoch, at)
	return true
}

// markApplied notes that API i was applied in connection epoch.
func (g *gateway) markApplied(epoch uint32, i int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.epoch == epoch && g.seen[i] != epoch {
		g.seen[i] = epoch
		g.count++
		g.checkDoneLocked()
	}
}

// checkDoneLocked notes when the gateway has converged on all the APIs in
// its current connection. g.mu must be held.
func (g *gateway) checkDoneLocked() {
	if g.count == len(g.seen) && g.doneAt.IsZero() {
		g.doneAt = time.Now()
		g.r.notify()
	}
}

// convergedAt returns when the gateway converged on all the APIs in its
// current connection (zero: not yet), and whether it has a connection or
// is moving to another target.
func (g *gateway) convergedAt() (time.Time, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.doneAt, g.ws != nil || g.moving
}

// dial opens the WebSocket to target at over a TLS connection of its own,
// so that the frames the gateway writes can be counted (pongs: see
// pongCounter).
func (g *gateway) dial(ctx context.Context, at int) (*websocket.Conn, error) {
	base := g.r.targets[at].target
	cfg, err := websocket.NewConfig("wss://"+strings.TrimPrefix(base, "https://")+channelPath, base)
	if err != nil {
		return nil, err
	}
	cfg.Header.Set("api-key", g.key)
	addr := cfg.Location.Host
	if _, _, err := net.SplitHostPort(addr); err != nil {
		addr = net.JoinHostPort(addr, "443")
	}
	dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	// A WebSocket needs HTTP/1.1: offer only that in ALPN (the shared
	// config is mutated by http.Transport to offer h2 as well).
	d := tls.Dialer{Config: &tls.Config{InsecureSkipVerify: g.r.opt.Insecure, NextProtos: []string{"http/1.1"}}}
	nc, err := d.DialContext(dctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	deadline, _ := dctx.Deadline()
	nc.SetDeadline(deadline)
	rec := &ConnRecorder{Conn: nc}
	ws, err := websocket.NewClient(cfg, pongCounter{rec, g.r})
	if err != nil {
		nc.Close()
		if errors.Is(err, websocket.ErrBadStatus) {
			return nil, fmt.Errorf("connect to %s refused: %s", base, rec.Refusal())
		}
		return nil, err
	}
	nc.SetDeadline(time.Time{})
	return ws, nil
}

// pongCounter counts the pongs a gateway writes, which shows it answered
// the server's pings. The websocket package answers a ping while it reads
// (a gateway busy with an event answers after it), writing each frame with
// one Write of the whole frame, whose first byte is 0x8A for a pong.
type pongCounter struct {
	net.Conn
	r *runner
}

func (c pongCounter) Write(b []byte) (int, error) {
	if len(b) > 0 && b[0] == 0x80|websocket.PongFrame {
		c.r.pongs.Add(1)
	}
	return c.Conn.Write(b)
}

// awaitAck reads the first frame, which must be connection.ack.
func (g *gateway) awaitAck(ws *websocket.Conn) error {
	ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	var ack event
	if err := websocket.JSON.Receive(ws, &ack); err != nil {
		return fmt.Errorf("no connection.ack: %w", err)
	}
	if ack.Type != "connection.ack" {
		return fmt.Errorf("first frame is %q, not connection.ack: %s", ack.Type, ack.Message)
	}
	ws.SetReadDeadline(time.Time{})
	return nil
}

// postManifest reports the manifest to target at. Like a real gateway, it
// gives up at once on the statuses that make one exit, and retries others
// 3 times.
func (g *gateway) postManifest(ctx context.Context, at int) error {
	var err error
	for range 4 {
		var status int
		status, err = g.request(ctx, at, "POST", "/api/internal/v1/gateways/"+g.id+"/manifest", strings.NewReader(manifest), nil)
		switch {
		case err == nil && (status == 200 || status == 204):
			return nil
		case err == nil:
			err = fmt.Errorf("answered %d", status)
			switch status {
			case 401, 403, 404, 409, 422:
				return fmt.Errorf("%w (a real gateway exits)", err)
			}
		}
		if ctx.Err() != nil {
			return err
		}
	}
	return err
}

// request makes a gateway-facing request to target at with the api-key and
// reads at most 8 MiB of the answer into body, if not nil.
func (g *gateway) request(ctx context.Context, at int, method, path string, in io.Reader, body *[]byte) (int, error) {
	req, err := http.NewRequestWithContext(ctx, method, g.r.targets[at].target+path, in)
	if err != nil {
		return 0, err
	}
	req.Header.Set("api-key", g.key)
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := g.r.targets[at].http.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if body != nil {
		*body = data
	}
	return resp.StatusCode, err
}

// read handles events from a connection to target at until it ends, one at
// a time: reading is also what answers the server's pings (the library
// does it while it reads), so a gateway busy with an event answers once it
// is done. A connection that ends while the gateway still holds it was
// ended by the server. With one target that is a failure (the gateway
// never reconnects by itself); with several, the gateway's replica went
// away, and the gateway moves to another (see move).
func (g *gateway) read(ws *websocket.Conn, epoch uint32, at int) {
	for {
		var ev event
		if err := websocket.JSON.Receive(ws, &ev); err != nil {
			g.lost(ws, at, err)
			return
		}
		start := time.Now()
		if g.r.opt.Generation == 2 {
			g.handleGen2(ws, epoch, at, &ev)
		} else {
			g.handleGen1(epoch, at, &ev)
		}
		g.r.noteHandling(time.Since(start))
	}
}

// lost notes that connection ws to target at ended with err, unless the
// run closed it, and starts the gateway's move when there are several
// targets.
func (g *gateway) lost(ws *websocket.Conn, at int, err error) {
	move := len(g.r.targets) > 1
	g.mu.Lock()
	byServer := g.ws == ws
	if byServer {
		g.ws = nil
		g.moving, g.lostAt = move, time.Now()
	}
	g.mu.Unlock()
	if !byServer {
		return
	}
	g.r.live.Add(-1)
	g.r.serverClosed.Add(1)
	if move {
		go g.move(at)
	} else {
		g.r.fail("the server ended the connection of %s: %v", g.name, err)
	}
	g.r.notify()
}

// handleGen1 downloads the API of every api.deployed (contract §3-§4).
func (g *gateway) handleGen1(epoch uint32, at int, ev *event) {
	i, ok := g.r.apiIndex[ev.Payload.APIID]
	if !ok || (ev.Type != "api.deployed" && ev.Type != "api.undeployed") {
		return
	}
	g.r.events.Add(1)
	if ev.Type != "api.deployed" {
		return
	}
	rev := ev.Payload.RevisionID
	if i == 0 {
		g.received(rev, at)
	}
	if err := g.download(at, ev.Payload.APIID); err != nil {
		if !g.r.replicaGone(err) {
			g.r.fail("download by %s: %v", g.name, err)
		}
		return
	}
	if i == 0 {
		g.applied(rev)
	}
	g.markApplied(epoch, i)
}

// handleGen2 applies an event the way a second-generation gateway does
// (contract §6): only when its performedAt is newer than what it holds;
// api.deployed is downloaded (a RestApi document) and, like
// api.undeployed, acknowledged; api.deleted is dropped without an
// acknowledgement.
func (g *gateway) handleGen2(ws *websocket.Conn, epoch uint32, at int, ev *event) {
	p := &ev.Payload
	i, ok := g.r.apiIndex[p.APIID]
	if !ok {
		return
	}
	switch ev.Type {
	case "api.deleted":
		g.mu.Lock()
		g.held[i] = 0
		g.mu.Unlock()
		return
	case "api.deployed", "api.undeployed":
	default:
		return
	}
	g.r.events.Add(1)
	performed, err := time.Parse(time.RFC3339Nano, p.PerformedAt)
	if err != nil || p.DeploymentID == "" {
		g.r.fail("%s without deploymentId or performedAt to %s: %+v", ev.Type, g.name, *p)
		return
	}
	deploy := ev.Type == "api.deployed"
	if deploy && i == 0 {
		g.received(p.RevisionID, at)
	}
	g.mu.Lock()
	newer := performed.UnixNano() > abs(g.held[i])
	g.mu.Unlock()
	if !newer {
		return // not newer than what it holds: ignored, not acknowledged
	}
	action := "undeploy"
	if deploy {
		action = "deploy"
		if err := g.downloadRestAPI(at, p.APIID); err != nil {
			if g.r.replicaGone(err) {
				return // its connection ends too: the move gets the event again
			}
			g.r.fail("download by %s: %v", g.name, err)
			g.ack(ws, p.DeploymentID, p.APIID, action, p.PerformedAt, "GATEWAY_PROCESSING_ERROR")
			return
		}
	}
	if deploy && i == 0 && g.failDeploys {
		g.ack(ws, p.DeploymentID, p.APIID, action, p.PerformedAt, "GATEWAY_PROCESSING_ERROR")
		return
	}
	g.mu.Lock()
	if deploy {
		g.held[i] = performed.UnixNano()
		if i == 0 {
			g.rev = p.RevisionID // held, even if its connection ends before the ack
		}
	} else {
		g.held[i] = -performed.UnixNano()
	}
	g.mu.Unlock()
	if err := g.ack(ws, p.DeploymentID, p.APIID, action, p.PerformedAt, ""); err != nil {
		g.mu.Lock()
		dropped := g.ws != ws
		g.mu.Unlock()
		// Not a failure when the run closed this connection (churn,
		// reconnect), or, with several targets, when its replica went
		// away (the gateway moves, and is sent the event again).
		if !dropped && !g.r.several() {
			g.r.fail("ack by %s: %v", g.name, err)
		}
		return
	}
	if deploy {
		if i == 0 {
			g.applied(p.RevisionID)
		}
		g.markApplied(epoch, i)
	}
}

func abs(x int64) int64 {
	if x < 0 {
		return -x
	}
	return x
}

// ack sends a deployment.ack: success, or failed with errorCode.
func (g *gateway) ack(ws *websocket.Conn, deploymentID, apiID, action, performedAt, errorCode string) error {
	type payload struct {
		DeploymentID string `json:"deploymentId"`
		ArtifactID   string `json:"artifactId"`
		ResourceType string `json:"resourceType"`
		Action       string `json:"action"`
		Status       string `json:"status"`
		PerformedAt  string `json:"performedAt"`
		ErrorCode    string `json:"errorCode,omitempty"`
	}
	p := payload{DeploymentID: deploymentID, ArtifactID: apiID, ResourceType: "api", Action: action,
		Status: "success", PerformedAt: performedAt, ErrorCode: errorCode}
	if errorCode != "" {
		p.Status = "failed"
	}
	frame, err := json.Marshal(struct {
		Type    string  `json:"type"`
		Payload payload `json:"payload"`
	}{"deployment.ack", p})
	if err != nil {
		return err
	}
	return websocket.Message.Send(ws, string(frame))
}

// received notes when api.deployed of a revision of the measured API first
// came, on a connection to target at.
func (g *gateway) received(rev string, at int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if _, seen := g.got[rev]; !seen {
		g.got[rev] = receipt{time.Now(), at}
	}
}

// applied notes when a revision of the measured API was applied.
func (g *gateway) applied(rev string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.fetched[rev] = time.Now()
	g.rev = rev
}

// fetch downloads an API's zip from target at as the gateway and returns
// its one YAML document, checking its name.
func (g *gateway) fetch(at int, apiID string) ([]byte, error) {
	var data []byte
	status, err := g.request(context.Background(), at, "GET", "/api/internal/v1/apis/"+apiID, nil, &data)
	if err != nil {
		return nil, err
	}
	if status != 200 {
		return nil, fmt.Errorf("%d %s", status, http.StatusText(status))
	}
	zr, err := zip.NewReader(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		return nil, err
	}
	if len(zr.File) != 1 || zr.File[0].Name != "api-"+apiID+".yaml" {
		return nil, errors.New("zip does not hold the API's YAML")
	}
	rc, err := zr.File[0].Open()
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(rc)
}

// download fetches the API's zip and checks it holds the YAML.
func (g *gateway) download(at int, apiID string) error {
	_, err := g.fetch(at, apiID)
	return err
}

// downloadRestAPI fetches the API's zip and checks that its document is
// the second generation's (kind: RestApi); these gateways refuse others.
func (g *gateway) downloadRestAPI(at int, apiID string) error {
	doc, err := g.fetch(at, apiID)
	if err != nil {
		return err
	}
	var d struct {
		Kind string `yaml:"kind"`
	}
	if err := yaml.Unmarshal(doc, &d); err != nil {
		return fmt.Errorf("document of %s is not YAML: %w", apiID, err)
	}
	if d.Kind != "RestApi" {
		return fmt.Errorf("document of %s is kind %q, not RestApi", apiID, d.Kind)
	}
	return nil
}

// disconnect closes the gateway's connection, or ends its move.
func (g *gateway) disconnect() {
	g.mu.Lock()
	ws := g.ws
	g.ws, g.moving = nil, false
	g.mu.Unlock()
	if ws != nil {
		g.r.live.Add(-1)
		ws.Close()
	}
}

func (g *gateway) times(rev string) (got receipt, fetched time.Time) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.got[rev], g.fetched[rev]
}
