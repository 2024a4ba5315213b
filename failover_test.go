package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"golang.org/x/net/websocket"

	"platform-api/store"
	"platform-api/store/storetest"
)

// TestFailover runs three replicas as processes of their own on one
// PostgreSQL database, each with its own data directory (as on three
// machines) and the encryption key file they share. Gateways are spread
// across them; one replica is killed with SIGKILL. Its gateways reconnect
// to the others and converge to the desired state, a deployment made
// while they were away is not lost, and a gateway that never comes back
// stops being active once the dead replica's lease expires.
func TestFailover(t *testing.T) {
	replicas, dirs := startReplicas(t)
	// A token minted with replica a's key is accepted by every replica.
	var tokBuf bytes.Buffer
	if err := run(context.Background(), []string{"token", "-org", uuid.NewString(), "-data-dir", dirs[0]}, os.Getenv, &tokBuf, io.Discard); err != nil {
		t.Fatal(err)
	}
	token := strings.TrimSpace(tokBuf.String())
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	call := func(r *child, method, path string, body, out any) {
		t.Helper()
		data, _ := json.Marshal(body)
		req, _ := http.NewRequest(method, r.base+path, bytes.NewReader(data))
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		if resp.StatusCode >= 300 {
			t.Fatalf("%s %s on %s: %d %s", method, path, r.base, resp.StatusCode, raw)
		}
		if out != nil {
			if err := json.Unmarshal(raw, out); err != nil {
				t.Fatalf("%s %s: %v: %s", method, path, err, raw)
			}
		}
	}
	var org struct{ ID string }
	call(replicas[1], "POST", "/api/v1/organizations", map[string]string{"handle": "failover", "name": "f", "region": "r"}, &org)
	var projects struct{ List []struct{ ID string } }
	call(replicas[2], "GET", "/api/v1/projects", nil, &projects)
	var api struct{ ID string }
	call(replicas[0], "POST", "/api/v1/apis", map[string]any{"name": "f", "context": "/f", "version": "v1", "projectId": projects.List[0].ID,
		"backend-services": []any{map[string]any{"name": "b", "endpoints": []any{map[string]any{"url": "https://b"}}}}}, &api)

	// Nine gateways, three on each replica, and a tenth on replica c that
	// will not come back.
	const perReplica = 3
	var gws []*failoverGateway
	var quiet string
	for i := range 3*perReplica + 1 {
		var gw, tok struct{ ID, Token string }
		call(replicas[i%3], "POST", "/api/v1/gateways", map[string]string{"name": "edge-" + string(rune('a'+i)), "displayName": "e", "vhost": "gw.example.com"}, &gw)
		call(replicas[(i+1)%3], "POST", "/api/v1/gateways/"+gw.ID+"/tokens", nil, &tok)
		g := &failoverGateway{id: gw.ID, key: tok.Token, changed: make(chan struct{}, 1)}
		if i == 3*perReplica {
			quiet = gw.ID
			g.once = true
			i = 2
		}
		go g.run(t, replicas, i%3)
		gws = append(gws, g)
	}
	t.Cleanup(func() {
		for _, g := range gws {
			g.stop()
		}
	})
	targets := make([]map[string]string, len(gws))
	for i, g := range gws {
		targets[i] = map[string]string{"gatewayId": g.id}
	}
	converged := func(rev string, gs []*failoverGateway, within time.Duration) {
		t.Helper()
		deadline := time.After(within)
		for _, g := range gs {
			for g.revision() != rev {
				select {
				case <-g.changed:
				case <-deadline:
					t.Fatalf("gateway %s holds %q, want revision %s", g.id, g.revision(), rev)
				}
			}
		}
	}
	// Every gateway is connected (so the first deployment reaches it live).
	waitActive := func(r *child, want int) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			var st struct {
				List []struct {
					IsActive    bool
					Connections int
				}
			}
			call(r, "GET", "/api/v1/status/gateways", nil, &st)
			n := 0
			for _, s := range st.List {
				if s.IsActive {
					n += s.Connections
				}
			}
			if n == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d live connections seen from %s, want %d", n, r.base, want)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	waitActive(replicas[0], len(gws))

	var first []struct {
		RevisionID           string
		Status               string
		DeliveredConnections int
	}
	call(replicas[0], "POST", "/api/v1/apis/"+api.ID+"/deploy-revision", targets, &first)
	for i, r := range first {
		if r.Status != "DELIVERED" || r.DeliveredConnections != 1 {
			t.Fatalf("gateway %d: %+v (every gateway has one connection, on some replica)", i, r)
		}
	}
	converged(first[0].RevisionID, gws, 10*time.Second)

	// Replica c dies. A deployment made through b at once is not lost on
	// the gateways that were on c: they get it on reconnecting.
	killed := time.Now()
	replicas[2].cmd.Process.Signal(syscall.SIGKILL)
	replicas[2].cmd.Wait()
	var second []struct{ RevisionID string }
	call(replicas[1], "POST", "/api/v1/apis/"+api.ID+"/deploy-revision", targets[:len(gws)-1], &second)
	converged(second[0].RevisionID, gws[:len(gws)-1], 10*time.Second)
	t.Logf("the fleet converged %s after the kill", time.Since(killed).Round(time.Millisecond))

	// The quiet gateway stops counting once c's lease expires, and every
	// other gateway counts once.
	waitActive(replicas[0], len(gws)-1)
	var st struct {
		List []struct {
			IsActive bool
		}
	}
	call(replicas[1], "GET", "/api/v1/status/gateways?gatewayId="+quiet, nil, &st)
	if len(st.List) != 1 || st.List[0].IsActive {
		t.Fatalf("the gateway that did not come back: %+v", st.List)
	}
}

// startReplicas runs three replicas (ra, rb, rc) as processes of their own
// on one PostgreSQL schema, each with its own data directory (as on three
// machines), sharing an encryption key file, with a 1 s lease and env
// added; it skips the test on SQLite or in -short.
func startReplicas(t *testing.T, env ...string) (replicas []*child, dirs []string) {
	t.Helper()
	if testing.Short() {
		t.Skip("starts three servers in child processes")
	}
	dsn := storetest.DSN(t)
	if !store.IsPostgres(dsn) {
		t.Skip("several replicas need PostgreSQL")
	}
	keyFile := filepath.Join(t.TempDir(), "encryption.key")
	env = append([]string{"PLATFORM_ENCRYPTION_KEY_FILE=" + keyFile, "PLATFORM_REPLICA_LEASE=1s"}, env...)
	for i := range 3 {
		dir := t.TempDir()
		dirs = append(dirs, dir)
		replicas = append(replicas, startChild(t, dir, dsn, append(env, "PLATFORM_REPLICA_ID=r"+string(rune('a'+i)))...))
	}
	return replicas, dirs
}

// failoverGateway is a first-generation gateway behind a load balancer: it
// connects to a replica, keeps the revision of the API it was last told
// of, and when its connection ends connects to the next replica.
type failoverGateway struct {
	id, key string
	once    bool // does not reconnect
	changed chan struct{}

	mu   sync.Mutex
	rev  string
	ws   *websocket.Conn
	done bool
}

func (g *failoverGateway) revision() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.rev
}

func (g *failoverGateway) stop() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.done = true
	if g.ws != nil {
		g.ws.Close()
	}
}

func (g *failoverGateway) run(t *testing.T, replicas []*child, at int) {
	for attempt := 0; ; attempt++ {
		g.mu.Lock()
		done := g.done
		g.mu.Unlock()
		if done || g.once && attempt > 0 {
			return
		}
		base := replicas[(at+attempt)%len(replicas)].base
		cfg, _ := websocket.NewConfig(strings.Replace(base, "https://", "wss://", 1)+"/api/internal/v1/ws/gateways/connect", base)
		cfg.TlsConfig = &tls.Config{InsecureSkipVerify: true}
		cfg.Header.Set("api-key", g.key)
		ws, err := cfg.DialContext(context.Background())
		if err != nil {
			time.Sleep(50 * time.Millisecond) // a dead replica: the next one
			continue
		}
		g.mu.Lock()
		g.ws = ws
		g.mu.Unlock()
		for {
			var m struct {
				Type    string
				Payload struct{ RevisionID string }
			}
			if err := websocket.JSON.Receive(ws, &m); err != nil {
				break
			}
			if m.Type == "api.deployed" {
				g.mu.Lock()
				g.rev = m.Payload.RevisionID
				g.mu.Unlock()
				select {
				case g.changed <- struct{}{}:
				default:
				}
			}
		}
		ws.Close()
	}
}

// TestSimulateReplicas runs the simulator against three replicas (processes
// of their own on one PostgreSQL database): the fleet is spread across
// them and deployments go through them in turn, so delivery latency is
// measured both on the replica that took the deploy request and across
// replicas. During -hold one replica is killed with SIGKILL: its gateways
// move to the next replica and converge on the last deployment again,
// which the progress line shows as it happens and the report counts.
func TestSimulateReplicas(t *testing.T) {
	// First-generation gateways post no manifest: a short grace keeps each
	// (re)connect's initial state from waiting the default 1 s. A longer
	// delivery wait than the default 2 s keeps "all delivered" about the
	// simulator, not about how busy two shared cores are; it ends as soon
	// as the reports are in.
	replicas, dirs := startReplicas(t, "PLATFORM_WS_GENERATION_GRACE=200ms", "PLATFORM_DELIVERY_WAIT=10s")
	var bases []string
	for _, r := range replicas {
		bases = append(bases, r.base)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	progress := newProgressLines()
	var out bytes.Buffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"simulate", "-target", strings.Join(bases, ","), "-insecure", "-json",
			"-gateways", "30", "-deploys", "2", "-wait", "20s", "-hold", "2m"},
			envMap(map[string]string{"PLATFORM_TOKEN": mintToken(t, dirs[0])}), &out, progress)
	}()
	progress.await(t, done, "the hold to begin", func(st holdLine) bool { return st.ok })
	replicas[2].cmd.Process.Signal(syscall.SIGKILL)
	replicas[2].cmd.Wait()
	// Gateways 2, 5, ..., 29 were on replica c; each moves to the next, a
	// (or b, should a refuse it once).
	progress.await(t, done, "the fleet to move and converge", func(st holdLine) bool {
		return st.ok && st.live == 30 && st.moved == 10 && st.converged == 30
	})
	cancel() // ends the hold; the report follows
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	var rep struct {
		AllDelivered, AllConverged bool
		Errors                     []string
		Deployments                []struct{ Target string }
		SameP50                    float64 `json:"deliverySameReplicaP50Ms"`
		SameP99                    float64 `json:"deliverySameReplicaP99Ms"`
		SameMax                    float64 `json:"deliverySameReplicaMaxMs"`
		CrossP50                   float64 `json:"deliveryCrossReplicaP50Ms"`
		CrossP99                   float64 `json:"deliveryCrossReplicaP99Ms"`
		CrossMax                   float64 `json:"deliveryCrossReplicaMaxMs"`
		Moved                      int
		Hold                       struct {
			LostConnections, Moved, Live, NotConverged int
			GatewaysPerTarget                          []int
			Converged                                  bool
			RecoveryMs                                 float64
		}
	}
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("report is not JSON: %v\n%s", err, out.Bytes())
	}
	if !rep.AllDelivered || !rep.AllConverged || len(rep.Errors) != 0 || len(rep.Deployments) != 2 ||
		rep.Deployments[0].Target != bases[0] || rep.Deployments[1].Target != bases[1] {
		t.Fatalf("deployments: %s", out.Bytes())
	}
	if rep.SameP50 <= 0 || rep.SameP99 < rep.SameP50 || rep.SameMax < rep.SameP99 ||
		rep.CrossP50 <= 0 || rep.CrossP99 < rep.CrossP50 || rep.CrossMax < rep.CrossP99 {
		t.Fatalf("same- and cross-replica latencies: %s", out.Bytes())
	}
	h := rep.Hold
	if rep.Moved != 10 || h.Moved != 10 || h.LostConnections != 10 || h.Live != 30 || !h.Converged || h.NotConverged != 0 ||
		len(h.GatewaysPerTarget) != 3 || h.GatewaysPerTarget[0]+h.GatewaysPerTarget[1] != 30 || h.RecoveryMs <= 0 {
		t.Fatalf("hold: %s", out.Bytes())
	}
	t.Logf("delivery p50 same %.1f ms, cross %.1f ms; after the kill, converged again in %.0f ms", rep.SameP50, rep.CrossP50, h.RecoveryMs)
}

// holdLine is the simulator's progress line during the hold.
type holdLine struct {
	ok                            bool
	live, moved, converged, fleet int
}

var holdLineRE = regexp.MustCompile(`^hold .*: (\d+) live, (\d+) moved, (\d+) of (\d+) converged`)

func parseHoldLine(s string) holdLine {
	m := holdLineRE.FindStringSubmatch(s)
	if m == nil {
		return holdLine{}
	}
	n := func(i int) int { v, _ := strconv.Atoi(m[i]); return v }
	return holdLine{true, n(1), n(2), n(3), n(4)}
}

// progressLines keeps the last progress line a command wrote (lines end
// in \r or \n) and signals each new one.
type progressLines struct {
	mu      sync.Mutex
	last    string
	changed chan struct{}
}

func newProgressLines() *progressLines { return &progressLines{changed: make(chan struct{}, 1)} }

func (p *progressLines) Write(b []byte) (int, error) {
	lines := strings.FieldsFunc(string(b), func(r rune) bool { return r == '\r' || r == '\n' })
	for i := len(lines) - 1; i >= 0; i-- {
		if l := strings.TrimSpace(lines[i]); l != "" {
			p.mu.Lock()
			p.last = l
			p.mu.Unlock()
			select {
			case p.changed <- struct{}{}:
			default:
			}
			break
		}
	}
	return len(b), nil
}

// await waits until the last progress line is a hold line for which ok
// holds, failing the test if the command ends first or a minute passes.
func (p *progressLines) await(t *testing.T, done <-chan error, what string, ok func(holdLine) bool) {
	t.Helper()
	timeout := time.After(time.Minute)
	for {
		p.mu.Lock()
		last := p.last
		p.mu.Unlock()
		if ok(parseHoldLine(last)) {
			return
		}
		select {
		case <-p.changed:
		case err := <-done:
			t.Fatalf("the simulator ended while waiting for %s: %v (last progress: %q)", what, err, last)
		case <-timeout:
			t.Fatalf("waiting for %s; last progress: %q", what, last)
		}
	}
}
