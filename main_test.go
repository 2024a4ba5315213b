package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"platform-api/store/storetest"
)

func envMap(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestParseConfig(t *testing.T) {
	tests := []struct {
		name    string
		env     map[string]string
		args    []string
		check   func(*Config) bool
		wantErr string
	}{
		{name: "Defaults", check: func(c *Config) bool {
			return c.Addr == ":8443" && c.DataDir == "./data" && c.DBPath == filepath.Join("data", "platform.db") &&
				c.JWTLocalKey && !c.JWTInsecure && c.LogLevel == slog.LevelInfo && c.LogFormat == "text" &&
				c.MaxBodyBytes == 1<<20 && c.ShutdownTimeout == 15*time.Second && c.CORSOrigins == nil
		}},
		{name: "Env", env: map[string]string{
			"PLATFORM_ADDR": "127.0.0.1:9000", "PLATFORM_DATA_DIR": "/var/lib/pa", "PLATFORM_TLS_HOSTS": "a.example, 10.0.0.1,",
			"PLATFORM_JWT_LOCAL_KEY": "off", "PLATFORM_LOG_LEVEL": "debug", "PLATFORM_LOG_FORMAT": "json",
			"PLATFORM_MAX_BODY_BYTES": "2048", "PLATFORM_JWT_HMAC_SECRET": strings.Repeat("s", 32),
		}, check: func(c *Config) bool {
			return c.Addr == "127.0.0.1:9000" && c.DBPath == "/var/lib/pa/platform.db" && len(c.TLSHosts) == 2 &&
				c.TLSHosts[1] == "10.0.0.1" && !c.JWTLocalKey && c.LogLevel == slog.LevelDebug && c.LogFormat == "json" &&
				c.MaxBodyBytes == 2048 && c.HMACSecret == strings.Repeat("s", 32)
		}},
		{name: "FlagsBeatEnv", env: map[string]string{"PLATFORM_ADDR": ":1", "PLATFORM_DB": "/env.db"},
			args:  []string{"-addr", ":2", "-db", "/flag.db", "-jwt-insecure-skip-verify", "true"},
			check: func(c *Config) bool { return c.Addr == ":2" && c.DBPath == "/flag.db" && c.JWTInsecure }},
		{name: "BadAddr", env: map[string]string{"PLATFORM_ADDR": "8443"}, wantErr: "PLATFORM_ADDR"},
		{name: "BadBool", env: map[string]string{"PLATFORM_JWT_LOCAL_KEY": "maybe"}, wantErr: "PLATFORM_JWT_LOCAL_KEY"},
		{name: "BadLevel", env: map[string]string{"PLATFORM_LOG_LEVEL": "loud"}, wantErr: "PLATFORM_LOG_LEVEL"},
		{name: "BadFormat", env: map[string]string{"PLATFORM_LOG_FORMAT": "xml"}, wantErr: "PLATFORM_LOG_FORMAT"},
		{name: "BadBodyLimit", env: map[string]string{"PLATFORM_MAX_BODY_BYTES": "12"}, wantErr: "PLATFORM_MAX_BODY_BYTES"},
		{name: "ShortSecret", env: map[string]string{"PLATFORM_JWT_HMAC_SECRET": "short"}, wantErr: "PLATFORM_JWT_HMAC_SECRET"},
		{name: "ShortSecretFlag", args: []string{"-jwt-hmac-secret", "short"}, wantErr: "at least 32 bytes"},
		{name: "BadDuration", env: map[string]string{"PLATFORM_SHUTDOWN_TIMEOUT": "5"}, wantErr: "PLATFORM_SHUTDOWN_TIMEOUT"},
		{name: "DocumentAnswers", env: map[string]string{"PLATFORM_MAX_DOCUMENT_ANSWERS": "4", "PLATFORM_MAX_GATEWAY_CREATED_APIS": "10"},
			check: func(c *Config) bool {
				return c.MaxDocumentAnswers == 4 && c.MaxDocumentAnswersPerGateway == 2 && c.MaxGatewayCreatedAPIs == 10
			}},
		{name: "PerGatewayAnswersOverTotal", env: map[string]string{"PLATFORM_MAX_DOCUMENT_ANSWERS": "2", "PLATFORM_MAX_DOCUMENT_ANSWERS_PER_GATEWAY": "3"},
			wantErr: "PLATFORM_MAX_DOCUMENT_ANSWERS_PER_GATEWAY"},
		{name: "BadCreatedAPIs", env: map[string]string{"PLATFORM_MAX_GATEWAY_CREATED_APIS": "0"}, wantErr: "PLATFORM_MAX_GATEWAY_CREATED_APIS"},
		{name: "OpsOffByDefault", check: func(c *Config) bool { return c.OpsAddr == "" }},
		{name: "OpsLoopback", env: map[string]string{"PLATFORM_OPS_ADDR": "127.0.0.1:9090"}, check: func(c *Config) bool { return c.OpsAddr == "127.0.0.1:9090" }},
		{name: "OpsLocalhostV6", args: []string{"-ops-addr", "[::1]:9090"}, check: func(c *Config) bool { return c.OpsAddr == "[::1]:9090" }},
		{name: "OpsEverywhereWithoutToken", env: map[string]string{"PLATFORM_OPS_ADDR": ":9090"}, wantErr: "PLATFORM_METRICS_TOKEN"},
		{name: "OpsRemoteWithoutToken", env: map[string]string{"PLATFORM_OPS_ADDR": "10.0.0.5:9090"}, wantErr: "not a loopback address"},
		{name: "OpsRemoteWithToken", env: map[string]string{"PLATFORM_OPS_ADDR": "0.0.0.0:9090", "PLATFORM_METRICS_TOKEN": "a-long-enough-metrics-token"},
			check: func(c *Config) bool { return c.OpsAddr == "0.0.0.0:9090" }},
		{name: "BadOpsAddr", env: map[string]string{"PLATFORM_OPS_ADDR": "9090"}, wantErr: "PLATFORM_OPS_ADDR"},
		{name: "CertWithoutKey", env: map[string]string{"PLATFORM_TLS_CERT": "/c.pem"}, wantErr: "PLATFORM_TLS_KEY"},
		{name: "BadFlag", args: []string{"-addr", "nope"}, wantErr: "-addr"},
		{name: "UnknownFlag", args: []string{"-bogus"}, wantErr: "bogus"},
		{name: "StrayArgument", args: []string{"extra"}, wantErr: "extra"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := parseConfig(newFlagSet("test", io.Discard), tt.args, envMap(tt.env))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v; want one naming %s", err, tt.wantErr)
				}
				if strings.Contains(err.Error(), "short") {
					t.Fatalf("err = %v repeats the secret", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !tt.check(c) {
				t.Fatalf("config %+v", c)
			}
		})
	}
}

func TestHelpListsEverySetting(t *testing.T) {
	var out bytes.Buffer
	err := run(context.Background(), []string{"-help"}, envMap(nil), io.Discard, &out)
	if !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("err = %v", err)
	}
	for _, s := range settings() {
		if !strings.Contains(out.String(), "-"+s.flag) || !strings.Contains(out.String(), s.env) {
			t.Errorf("help does not list -%s / %s", s.flag, s.env)
		}
	}
}

// lineWriter hands each written line to a channel.
type lineWriter struct{ lines chan string }

func (w lineWriter) Write(p []byte) (int, error) {
	sc := bufio.NewScanner(bytes.NewReader(p))
	for sc.Scan() {
		select {
		case w.lines <- sc.Text():
		default:
		}
	}
	return len(p), nil
}

// TestServeEndToEnd runs the real program on port 0: self-signed TLS, a token
// from the token command, an organization over HTTPS, and a clean shutdown.
func TestServeEndToEnd(t *testing.T) {
	dir := t.TempDir()
	env := envMap(map[string]string{"PLATFORM_DATA_DIR": dir, "PLATFORM_ADDR": "127.0.0.1:0", "PLATFORM_DB": storetest.DSN(t)})

	org := uuid.NewString()
	var tok bytes.Buffer
	if err := run(context.Background(), []string{"token", "-org", org, "-ttl", "5m"}, env, &tok, io.Discard); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	stdout := lineWriter{make(chan string, 10)}
	done := make(chan error, 1)
	go func() { done <- run(ctx, nil, env, stdout, io.Discard) }()
	var base string
	select {
	case line := <-stdout.lines:
		base = strings.TrimPrefix(line, "platform-api listening on ")
	case err := <-done:
		t.Fatalf("run ended early: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("server did not report its address")
	}

	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	body := strings.NewReader(`{"handle":"acme","name":"Acme","region":"eu"}`)
	req, _ := http.NewRequest("POST", base+"/api/v1/organizations", body)
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(tok.String()))
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var o struct{ ID string }
	json.NewDecoder(resp.Body).Decode(&o)
	resp.Body.Close()
	if resp.StatusCode != 201 || o.ID != org {
		t.Fatalf("create organization: %d %+v", resp.StatusCode, o)
	}
	if v := resp.TLS.Version; v < tls.VersionTLS12 {
		t.Fatalf("TLS version %x", v)
	}
	client.CloseIdleConnections()

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("server did not stop")
	}
}

// TestOperationalListener runs the real program with PLATFORM_OPS_ADDR on
// loopback and no metrics token: the public TLS port refuses /metrics and
// /debug/pprof and serves /health; the operational listener (plain HTTP)
// serves them.
func TestOperationalListener(t *testing.T) {
	dir := t.TempDir()
	env := envMap(map[string]string{"PLATFORM_DATA_DIR": dir, "PLATFORM_ADDR": "127.0.0.1:0", "PLATFORM_OPS_ADDR": "127.0.0.1:0",
		"PLATFORM_LOG_LEVEL": "warn", "PLATFORM_DB": storetest.DSN(t)})
	ctx, cancel := context.WithCancel(context.Background())
	stdout := lineWriter{make(chan string, 10)}
	done := make(chan error, 1)
	go func() { done <- run(ctx, nil, env, stdout, io.Discard) }()
	var public, ops string
	for public == "" || ops == "" {
		select {
		case line := <-stdout.lines:
			if v, ok := strings.CutPrefix(line, "platform-api listening on "); ok {
				public = v
			} else if v, ok := strings.CutPrefix(line, "platform-api operational endpoints on "); ok {
				ops = v
			}
		case err := <-done:
			t.Fatalf("run ended early: %v", err)
		case <-time.After(30 * time.Second):
			t.Fatal("server did not report its addresses")
		}
	}
	if !strings.HasPrefix(ops, "http://127.0.0.1:") {
		t.Fatalf("operational listener at %s", ops)
	}
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	get := func(url string) (int, string) {
		t.Helper()
		resp, err := client.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for _, p := range []string{"/metrics", "/debug/pprof/heap"} {
		if code, body := get(public + p); code != 403 || !strings.Contains(body, "PLATFORM_OPS_ADDR") {
			t.Errorf("public %s: %d %s", p, code, body)
		}
		if code, body := get(ops + p); code != 200 {
			t.Errorf("operational %s: %d %.200s", p, code, body)
		}
	}
	if code, body := get(public + "/health"); code != 200 {
		t.Errorf("public /health: %d %s", code, body)
	}
	client.CloseIdleConnections()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("server did not stop")
	}
}

func TestTokenCommandErrors(t *testing.T) {
	env := envMap(map[string]string{"PLATFORM_DATA_DIR": t.TempDir()})
	for _, args := range [][]string{{"token"}, {"token", "-org", "acme"}, {"token", "-org", uuid.NewString(), "-ttl", "-1h"}} {
		if err := run(context.Background(), args, env, io.Discard, io.Discard); err == nil {
			t.Errorf("%v: no error", args)
		}
	}
}

func TestVersion(t *testing.T) {
	var out bytes.Buffer
	if err := run(context.Background(), []string{"version"}, envMap(nil), &out, io.Discard); err != nil || !strings.HasPrefix(out.String(), "platform-api ") {
		t.Fatalf("version: %q %v", out.String(), err)
	}
}

// startServer runs the real program on port 0 and returns its base URL and
// the data directory; the server stops when the test ends.
func startServer(t *testing.T, extra map[string]string) (string, string) {
	t.Helper()
	dir := t.TempDir()
	vars := map[string]string{"PLATFORM_DATA_DIR": dir, "PLATFORM_ADDR": "127.0.0.1:0", "PLATFORM_LOG_LEVEL": "warn",
		"PLATFORM_DB": storetest.DSN(t)}
	for k, v := range extra {
		vars[k] = v
	}
	ctx, cancel := context.WithCancel(context.Background())
	stdout := lineWriter{make(chan string, 10)}
	done := make(chan error, 1)
	go func() { done <- run(ctx, nil, envMap(vars), stdout, io.Discard) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("server: %v", err)
		}
	})
	select {
	case line := <-stdout.lines:
		return strings.TrimPrefix(line, "platform-api listening on "), dir
	case err := <-done:
		t.Fatalf("server ended early: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("server did not report its address")
	}
	return "", ""
}

// TestSimulate plays a small fleet with churn against the real server and
// checks the JSON report: every gateway got every deployment and converged,
// and with two APIs deployed before it connected, converged on both as it
// connected and again after every gateway reconnected (the server sends a
// first-generation gateway its whole desired state each time).
func TestSimulate(t *testing.T) {
	// First-generation gateways post no manifest: a short grace keeps
	// each reconnect's initial state from waiting the default 2 s.
	base, dir := startServer(t, map[string]string{"PLATFORM_WS_PING_INTERVAL": "1s", "PLATFORM_WS_TIMEOUT": "3s",
		"PLATFORM_WS_GENERATION_GRACE": "200ms"})
	out := simulateJSON(t, base, dir, "-gateways", "20", "-deploys", "3", "-churn", "0.25", "-apis", "2", "-wait", "20s")
	var rep struct {
		Gateways     int
		AllDelivered bool
		AllConverged bool
		Reconnects   int
		Errors       []string
		Deployments  []struct {
			Delivered, Churned int
			Converged          bool
		}
		DesiredState struct{ Connect, Reconnect phaseReport }
	}
	if err := json.Unmarshal(out, &rep); err != nil {
		t.Fatalf("report is not JSON: %v\n%s", err, out)
	}
	if rep.Gateways != 20 || !rep.AllDelivered || !rep.AllConverged || len(rep.Errors) != 0 || len(rep.Deployments) != 3 || rep.Reconnects != 15 ||
		!rep.DesiredState.Connect.ok(40) || !rep.DesiredState.Reconnect.ok(40) {
		t.Fatalf("report: %s", out)
	}
	for _, d := range rep.Deployments {
		if d.Delivered != 15 || d.Churned != 5 || !d.Converged {
			t.Fatalf("deployment %+v", d)
		}
	}
}

// TestSimulateGen2 plays a small second-generation fleet with churn: every
// deployment is answered DEPLOYED for the connected gateways (the deploy
// waits for their acknowledgements) and PENDING for the one dropped, and
// ends DEPLOYED for all once that one has reconnected and acknowledged.
// Three APIs deployed before the fleet connected are applied and
// acknowledged as it connects; after every gateway reconnects, the server
// sends none again (they were acknowledged, contract §6).
func TestSimulateGen2(t *testing.T) {
	base, dir := startServer(t, map[string]string{"PLATFORM_WS_PING_INTERVAL": "1s", "PLATFORM_WS_TIMEOUT": "3s"})
	out := simulateJSON(t, base, dir, "-generation", "2", "-gateways", "5", "-deploys", "2", "-churn", "0.2", "-apis", "3", "-wait", "20s")
	var rep struct {
		Generation      int
		AllDelivered    bool
		AllConverged    bool
		AllDeployed     *bool
		DeployAnswerP99 float64 `json:"deployAnswerP99Ms"`
		Reconnects      int
		Errors          []string
		Deployments     []struct {
			Delivered, Churned int
			Converged          bool
			Answered, Final    map[string]int
		}
		DesiredState struct{ Connect, Reconnect phaseReport }
	}
	if err := json.Unmarshal(out, &rep); err != nil {
		t.Fatalf("report is not JSON: %v\n%s", err, out)
	}
	if rep.Generation != 2 || !rep.AllDelivered || !rep.AllConverged || rep.AllDeployed == nil || !*rep.AllDeployed ||
		len(rep.Errors) != 0 || len(rep.Deployments) != 2 || rep.Reconnects != 2 || rep.DeployAnswerP99 <= 0 ||
		!rep.DesiredState.Connect.ok(15) || !rep.DesiredState.Reconnect.atMost(15) {
		t.Fatalf("report: %s", out)
	}
	for _, d := range rep.Deployments {
		if d.Delivered != 4 || d.Churned != 1 || !d.Converged || d.Answered["DEPLOYED"] != 4 || d.Answered["PENDING"] != 1 ||
			d.Final["DEPLOYED"] != 5 || len(d.Final) != 1 {
			t.Fatalf("deployment %+v", d)
		}
	}
}

// phaseReport is a (re)connect phase of the simulator's desired-state run.
type phaseReport struct {
	Converged    bool
	Events       int64
	ServerClosed int64
}

// ok reports whether the fleet converged, received events events, and kept
// all its connections.
func (p phaseReport) ok(events int64) bool {
	return p.Converged && p.Events == events && p.ServerClosed == 0
}

// atMost is ok for a reconnect right after a drop: what the gateway
// acknowledged on the connection it dropped may reach the server after
// the new connection's state was read, and is then sent again (and
// acknowledged again); nothing is sent twice.
func (p phaseReport) atMost(events int64) bool {
	return p.Converged && p.Events <= events && p.ServerClosed == 0
}

// simulateJSON mints a token with the server's key (in dir), runs the
// simulator against base with args and -json, and returns the report.
func simulateJSON(t *testing.T, base, dir string, args ...string) []byte {
	t.Helper()
	return commandJSON(t, mintToken(t, dir), append([]string{"simulate", "-target", base, "-insecure", "-json"}, args...)...)
}

// mintToken returns a token of a new organization, signed with the key of
// the server whose data directory is dir.
func mintToken(t *testing.T, dir string) string {
	t.Helper()
	var tok bytes.Buffer
	env := envMap(map[string]string{"PLATFORM_DATA_DIR": dir})
	if err := run(context.Background(), []string{"token", "-org", uuid.NewString()}, env, &tok, io.Discard); err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(tok.String())
}

// commandJSON runs a client command with token in PLATFORM_TOKEN and
// returns what it printed.
func commandJSON(t *testing.T, token string, args ...string) []byte {
	t.Helper()
	var out bytes.Buffer
	if err := run(context.Background(), args, envMap(map[string]string{"PLATFORM_TOKEN": token}), &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

// TestLoad runs each load scenario briefly against the real server, each
// in an organization of its own: every phase is answered over HTTP/2 with
// no error, the list pages hold what the project holds (the tool checks
// each page before measuring it), and what the run created is deleted,
// leaving the organization its default project only. With -project, the
// run fills an existing project and leaves it, emptied of what it added.
// The keys scenario pulls every key it made through its gateway, and
// deletes that gateway too.
func TestLoad(t *testing.T) {
	base, dir := startServer(t, nil)
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	t.Cleanup(client.CloseIdleConnections)
	call := func(t *testing.T, token, method, path, body string, want int, out any) {
		t.Helper()
		req, _ := http.NewRequest(method, base+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != want {
			t.Fatalf("%s %s: %s", method, path, resp.Status)
		}
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			t.Fatal(err)
		}
	}
	type page struct {
		List       []struct{ ID, Name string }
		Pagination struct{ Total int }
	}
	for _, tc := range []struct {
		name, scenario string
		existing       bool     // read the default project (-project)
		phases         []string // name:offset
		extra          []string // more flags (the last of a flag wins)
	}{
		{name: "Create", scenario: "create", phases: []string{"create:0"}},
		{name: "List", scenario: "list", phases: []string{"list:0"}},
		{name: "Get", scenario: "get", phases: []string{"get:0"}},
		{name: "All", scenario: "all", phases: []string{"create:0", "list:0", "list:20", "get:0"}},
		{name: "ExistingProject", scenario: "list", existing: true, phases: []string{"list:0"}},
		{name: "Keys", scenario: "keys", phases: []string{"key-page:0", "key-pull:0", "key-create:0"},
			extra: []string{"-apis", "3", "-keys-per-api", "2"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			token := mintToken(t, dir)
			args := []string{"load", "-target", base, "-insecure", "-json", "-scenario", tc.scenario,
				"-clients", "2", "-duration", "300ms", "-warmup", "50ms", "-apis", "120"}
			args = append(args, tc.extra...)
			var defaultProject string
			if tc.existing {
				var projects page
				call(t, token, "POST", "/api/v1/organizations", `{"handle":"load-test","name":"Load test","region":"eu"}`, 201, &struct{}{})
				call(t, token, "GET", "/api/v1/projects", "", 200, &projects)
				defaultProject = projects.List[0].ID
				args = append(args, "-project", defaultProject)
			}
			out := commandJSON(t, token, args...)
			var rep struct {
				Protocol                 string
				APIs                     int
				Phases                   []loadPhase
				CreatedAPIs, DeletedAPIs int
				CreatedProjects          []string
				DeletedProjects          int
				Keys                     int
				CreatedGateways          int
				DeletedGateways          int
				Errors                   []string
			}
			if err := json.Unmarshal(out, &rep); err != nil {
				t.Fatalf("report is not JSON: %v\n%s", err, out)
			}
			var phases []string
			for _, ph := range rep.Phases {
				phases = append(phases, fmt.Sprintf("%s:%d", ph.Name, ph.Offset))
				if ph.Requests == 0 || ph.PerSec <= 0 || ph.P50 <= 0 || ph.ResponseBytes == 0 || ph.Errors != 0 {
					t.Errorf("phase %+v", ph)
				}
			}
			if !slices.Equal(phases, tc.phases) || rep.Protocol != "HTTP/2.0" || len(rep.Errors) != 0 ||
				rep.CreatedAPIs == 0 || rep.DeletedAPIs != rep.CreatedAPIs || rep.DeletedProjects != len(rep.CreatedProjects) {
				t.Fatalf("report: %s", out)
			}
			if tc.scenario == "keys" {
				// 3 APIs of 2 keys, all pulled; the gateway deleted.
				for _, ph := range rep.Phases {
					if ph.Name == "key-pull" && ph.Keys != 6 || ph.APIs != 3 {
						t.Errorf("phase %+v", ph)
					}
				}
				var gws page
				call(t, token, "GET", "/api/v1/gateways", "", 200, &gws)
				if rep.APIs != 3 || rep.Keys != 6 || rep.CreatedGateways != 1 || rep.DeletedGateways != 1 || len(gws.List) != 0 {
					t.Fatalf("keys report: %s; gateways left %+v", out, gws.List)
				}
			} else if tc.scenario != "create" && rep.APIs != 120 {
				t.Fatalf("the project holds %d APIs, want 120", rep.APIs)
			}
			var projects, apis page
			call(t, token, "GET", "/api/v1/projects", "", 200, &projects)
			call(t, token, "GET", "/api/v1/apis", "", 200, &apis)
			if len(projects.List) != 1 || projects.List[0].Name != "default" || apis.Pagination.Total != 0 {
				t.Fatalf("left behind: projects %+v, %d APIs", projects.List, apis.Pagination.Total)
			}
			if tc.existing && projects.List[0].ID != defaultProject {
				t.Fatalf("the default project was replaced")
			}
		})
	}
}

// loadPhase is a phase of the load generator's report.
type loadPhase struct {
	Name                  string
	Offset, Requests      int
	APIs, Keys            int
	PerSec                float64 `json:"perSecond"`
	P50                   float64 `json:"p50Ms"`
	ResponseBytes, Errors int
}

// TestHostileClients holds 1,000 connections that never send anything and a
// slowloris client that dribbles its headers, and checks that real requests
// are still answered at once and that the slow client is cut off.
func TestHostileClients(t *testing.T) {
	base, _ := startServer(t, map[string]string{"PLATFORM_READ_HEADER_TIMEOUT": "1s"})
	addr := strings.TrimPrefix(base, "https://")
	var idle []net.Conn
	defer func() {
		for _, c := range idle {
			c.Close()
		}
	}()
	for range 1000 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("idle connection: %v", err)
		}
		idle = append(idle, c)
	}
	slow, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	cut := make(chan time.Duration, 1)
	go func() {
		start := time.Now()
		for _, b := range []byte("GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: " + strings.Repeat("a", 100)) {
			if _, err := slow.Write([]byte{b}); err != nil {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		cut <- time.Since(start)
	}()

	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	for range 20 {
		start := time.Now()
		resp, err := client.Get(base + "/health")
		if err != nil {
			t.Fatalf("a real request failed beside hostile clients: %v", err)
		}
		resp.Body.Close()
		if took := time.Since(start); took > time.Second {
			t.Fatalf("a real request took %s beside hostile clients", took)
		}
	}
	select {
	case took := <-cut:
		if took > 4*time.Second {
			t.Fatalf("slowloris client cut off only after %s", took)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("slowloris client was never cut off")
	}
	// The silent connections are closed by the server too.
	idle[0].SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := idle[0].Read(make([]byte, 1)); err == nil {
		t.Fatal("a silent connection got data")
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("a silent connection was never closed")
	}
}

// TestDataDirMadePrivate: an existing data directory open to others is
// tightened, and the log says so.
func TestDataDirMadePrivate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755) // whatever the umask
	var logs bytes.Buffer
	if err := ensurePrivateDir(dir, slog.New(slog.NewTextHandler(&logs, nil))); err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(dir)
	if fi.Mode().Perm() != 0o700 || !strings.Contains(logs.String(), "made private") {
		t.Fatalf("mode %o, log %q", fi.Mode().Perm(), logs.String())
	}
	fresh := filepath.Join(t.TempDir(), "new")
	if err := ensurePrivateDir(fresh, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(fresh); fi.Mode().Perm() != 0o700 {
		t.Fatalf("new data dir mode %o", fi.Mode().Perm())
	}
}

// TestPostgresUnreachableAtStart: a PostgreSQL server that refuses, or
// never answers, stops the start with an error naming the host and never
// the password, within the connect timeout.
func TestPostgresUnreachableAtStart(t *testing.T) {
	silent, err := net.Listen("tcp", "127.0.0.1:0") // accepts, never answers
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	go func() {
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	refused, _ := net.Listen("tcp", "127.0.0.1:0")
	refusedAddr := refused.Addr().String()
	refused.Close()
	for name, tc := range map[string]struct{ dsn, host string }{
		"Refused":  {"postgres://platform:s3cret-pw@" + refusedAddr + "/platform", refusedAddr},
		"NoAnswer": {"postgres://platform:s3cret-pw@" + silent.Addr().String() + "/platform?connect_timeout=1", silent.Addr().String()},
	} {
		t.Run(name, func(t *testing.T) {
			env := envMap(map[string]string{"PLATFORM_DATA_DIR": t.TempDir(), "PLATFORM_ADDR": "127.0.0.1:0", "PLATFORM_DB": tc.dsn})
			var logs bytes.Buffer
			start := time.Now()
			err := run(context.Background(), nil, env, io.Discard, &logs)
			took := time.Since(start)
			host, _, _ := net.SplitHostPort(tc.host)
			if err == nil || !strings.Contains(err.Error(), host) || strings.Contains(err.Error()+logs.String(), "s3cret-pw") {
				t.Fatalf("start: %v\nlogs: %s", err, logs.String())
			}
			if took > 10*time.Second {
				t.Fatalf("gave up after %s", took)
			}
		})
	}
}

// TestReplicaIDKept: a process takes back the replica id kept in its data
// directory once the previous holder is gone, and a second process on the
// same directory meanwhile runs under an id of its own.
func TestReplicaIDKept(t *testing.T) {
	dir := t.TempDir()
	first, release, err := replicaID(dir)
	if err != nil || first == "" {
		t.Fatalf("first: %q %v", first, err)
	}
	second, release2, err := replicaID(dir)
	if err != nil || second == "" || second == first {
		t.Fatalf("while the first runs: %q %v (first %q)", second, err, first)
	}
	release2()
	release()
	again, release, err := replicaID(dir)
	if err != nil || again != first {
		t.Fatalf("after a restart: %q %v, want %q", again, err, first)
	}
	release()
}

// TestStartRefusesUnusableTLSPair: a self-signed pair in the data
// directory that cannot be used (here a key file of garbage) stops the
// start with a message naming the file, and the pair is left as it was;
// it was replaced by a new certificate, with an INFO line only.
func TestStartRefusesUnusableTLSPair(t *testing.T) {
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "tls-key.pem")
	if err := os.WriteFile(filepath.Join(dir, "tls-cert.pem"), []byte("kept\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, []byte("garbage\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := envMap(map[string]string{"PLATFORM_DATA_DIR": dir, "PLATFORM_ADDR": "127.0.0.1:0"})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var logs bytes.Buffer
	err := run(ctx, nil, env, io.Discard, &logs)
	if err == nil || !strings.Contains(err.Error(), "the TLS pair in "+dir+" cannot be used") || !strings.Contains(err.Error(), "tls-key.pem") {
		t.Fatalf("start: %v\nlogs: %s", err, logs.String())
	}
	if data, _ := os.ReadFile(keyFile); string(data) != "garbage\n" || strings.Contains(logs.String(), "generated") {
		t.Fatalf("the key file was replaced: %q\nlogs: %s", data, logs.String())
	}
}
