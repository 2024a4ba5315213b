package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/websocket"

	"platform-api/simulate"
	"platform-api/store/storetest"
)

// TestPlainHTTPOnTLSPortIsJSON: http:// on the TLS port is answered with
// the contract's JSON error body, not Go's text 400, and the port keeps
// serving HTTPS.
func TestPlainHTTPOnTLSPortIsJSON(t *testing.T) {
	base, _ := startServer(t, nil)
	plain := "http://" + strings.TrimPrefix(base, "https://")
	for range 2 {
		resp, err := http.Get(plain + "/health")
		if err != nil {
			t.Fatal(err)
		}
		data, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var b struct {
			Code        int
			Message     string
			Description string
		}
		if err := json.Unmarshal(data, &b); err != nil || resp.StatusCode != 400 || b.Code != 400 ||
			resp.Header.Get("Content-Type") != "application/json" || !strings.Contains(b.Description, "https://") {
			t.Fatalf("plain HTTP: %d %q %s (%v)", resp.StatusCode, resp.Header.Get("Content-Type"), data, err)
		}
	}
	resp, err := insecureClient().Get(base + "/health")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("HTTPS after plain HTTP: %d", resp.StatusCode)
	}
}

func insecureClient() *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
}

// TestHelpCommands: platform-api help lists the commands; each command's
// -h shows its own flags, token's without the server's settings.
func TestHelpCommands(t *testing.T) {
	var out bytes.Buffer
	if err := run(context.Background(), []string{"help"}, envMap(nil), &out, io.Discard); err != nil {
		t.Fatalf("help: %v", err)
	}
	for _, c := range commandNames {
		if !strings.Contains(out.String(), "\n  "+c+" ") {
			t.Errorf("help does not list %s:\n%s", c, out.String())
		}
	}
	usage := func(args ...string) string {
		var stderr bytes.Buffer
		if err := run(context.Background(), args, envMap(nil), io.Discard, &stderr); !errors.Is(err, flag.ErrHelp) {
			t.Fatalf("%v: %v", args, err)
		}
		return stderr.String()
	}
	tok := usage("token", "-h")
	for _, f := range []string{"-org", "-ttl", "-sub", "-data-dir"} {
		if !strings.Contains(tok, "  "+f+" ") {
			t.Errorf("token -h lacks %s:\n%s", f, tok)
		}
	}
	if strings.Contains(tok, "-ws-timeout") || strings.Contains(tok, "PLATFORM_ADDR") || strings.Count(tok, "\n  -") > 8 {
		t.Errorf("token -h lists server settings:\n%s", tok)
	}
	if sim := usage("simulate", "-h"); !strings.Contains(sim, "-gateways") || strings.Contains(sim, "PLATFORM_ADDR") {
		t.Errorf("simulate -h:\n%s", sim)
	}
	if load := usage("load", "-h"); !strings.Contains(load, "-scenario") || strings.Contains(load, "-gateways") {
		t.Errorf("load -h:\n%s", load)
	}
	out.Reset()
	if err := run(context.Background(), []string{"help", "token"}, envMap(nil), &out, io.Discard); err != nil || out.String() != tok {
		t.Errorf("help token: %v\n%s", err, out.String())
	}
	if err := run(context.Background(), []string{"bogus"}, envMap(nil), io.Discard, io.Discard); err == nil || !strings.Contains(err.Error(), "unknown command \"bogus\"") {
		t.Errorf("unknown command: %v", err)
	}
	// The token command still takes the data directory it signs with.
	dir := t.TempDir()
	if err := run(context.Background(), []string{"token", "-org", "00000000-0000-4000-8000-000000000000", "-data-dir", dir}, envMap(nil), io.Discard, io.Discard); err != nil {
		t.Fatal(err)
	}
}

// TestUnknownDatabaseScheme: a URL of a scheme this server does not speak
// (a typo of postgres://) is refused, not taken as a SQLite path.
func TestUnknownDatabaseScheme(t *testing.T) {
	for _, dsn := range []string{"postgress://postgres@127.0.0.1:5432/platform", "mysql://root@db/platform"} {
		env := envMap(map[string]string{"PLATFORM_DATA_DIR": t.TempDir(), "PLATFORM_ADDR": "127.0.0.1:0", "PLATFORM_DB": dsn})
		err := run(context.Background(), nil, env, io.Discard, io.Discard)
		if err == nil || !strings.Contains(err.Error(), "PLATFORM_DB") || !strings.Contains(err.Error(), "postgres://") {
			t.Fatalf("%s: %v", dsn, err)
		}
		scheme, _, _ := strings.Cut(dsn, "//")
		if _, err := os.Stat(scheme); !os.IsNotExist(err) {
			os.RemoveAll(scheme)
			t.Fatalf("%s: a SQLite database was made under %s", dsn, scheme)
		}
	}
	// A SQLite path is still a path, even with a colon in it.
	if _, err := parseConfig(newFlagSet("test", io.Discard), []string{"-db", "/tmp/a:b/platform.db"}, envMap(nil)); err != nil {
		t.Fatal(err)
	}
}

// TestPostgresAnswerAtStart: a PostgreSQL server that answers with a
// refusal (no such database, no such role) is quoted, not said to be
// silent.
func TestPostgresAnswerAtStart(t *testing.T) {
	base := os.Getenv("PLATFORM_TEST_POSTGRES")
	if base == "" {
		t.Skip("PLATFORM_TEST_POSTGRES is not set")
	}
	for name, tc := range map[string]struct {
		change func(*url.URL)
		want   string
	}{
		"NoDatabase": {func(u *url.URL) { u.Path = "/platform_no_such_db" }, `database "platform_no_such_db" does not exist`},
		"NoRole":     {func(u *url.URL) { u.User = url.User("platform_no_such_role") }, `role "platform_no_such_role" does not exist`},
	} {
		t.Run(name, func(t *testing.T) {
			u, err := url.Parse(base)
			if err != nil {
				t.Fatal(err)
			}
			tc.change(u)
			env := envMap(map[string]string{"PLATFORM_DATA_DIR": t.TempDir(), "PLATFORM_ADDR": "127.0.0.1:0", "PLATFORM_DB": u.String()})
			err = run(context.Background(), nil, env, io.Discard, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "does not answer") {
				t.Fatalf("start: %v", err)
			}
		})
	}
}

// TestFailedStartLeavesNothing: a start that fails on its port or its
// database makes no data directory, TLS pair or encryption key, and never
// asks for a key to be backed up.
func TestFailedStartLeavesNothing(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	garbage := filepath.Join(t.TempDir(), "not.db")
	if err := os.WriteFile(garbage, []byte("this is not a database, but a note\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := map[string]struct {
		vars map[string]string
		want string
	}{
		"PortInUse":    {map[string]string{"PLATFORM_ADDR": busy.Addr().String()}, "PLATFORM_ADDR"},
		"NotSQLite":    {map[string]string{"PLATFORM_DB": garbage}, "not a SQLite database"},
		"NoSQLiteDir":  {map[string]string{"PLATFORM_DB": filepath.Join(t.TempDir(), "missing", "x.db")}, "does not exist"},
		"PostgresNoDB": {map[string]string{"PLATFORM_DB": "postgres://postgres@127.0.0.1:1/platform?connect_timeout=1"}, "does not answer"},
	}
	if base := os.Getenv("PLATFORM_TEST_POSTGRES"); base != "" {
		u, _ := url.Parse(base)
		u.Path = "/platform_no_such_db"
		cases["PostgresMissingDatabase"] = struct {
			vars map[string]string
			want string
		}{map[string]string{"PLATFORM_DB": u.String()}, "does not exist"}
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			root := t.TempDir()
			dataDir, keyFile := filepath.Join(root, "data"), filepath.Join(root, "encryption.key")
			vars := map[string]string{"PLATFORM_DATA_DIR": dataDir, "PLATFORM_ADDR": "127.0.0.1:0", "PLATFORM_ENCRYPTION_KEY_FILE": keyFile}
			for k, v := range tc.vars {
				vars[k] = v
			}
			var logs bytes.Buffer
			err := run(context.Background(), nil, envMap(vars), io.Discard, &logs)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("start: %v; want an error naming %q", err, tc.want)
			}
			for _, p := range []string{dataDir, keyFile} {
				if _, err := os.Stat(p); !os.IsNotExist(err) {
					t.Errorf("the failed start made %s", p)
				}
			}
			if strings.Contains(logs.String(), "back it up") {
				t.Errorf("the failed start asked for a key to be backed up:\n%s", logs.String())
			}
		})
	}
}

// TestSettingsNewcomer: a flag wins even over an environment value that
// would not parse, and a metrics token short enough to guess is refused.
func TestSettingsNewcomer(t *testing.T) {
	parse := func(env map[string]string, args ...string) (*Config, error) {
		return parseConfig(newFlagSet("test", io.Discard), args, envMap(env))
	}
	c, err := parse(map[string]string{"PLATFORM_ADDR": "8443", "PLATFORM_WS_TIMEOUT": "soon"}, "-addr", ":9000", "-ws-timeout", "40s")
	if err != nil || c.Addr != ":9000" || c.WSTimeout != 40*time.Second {
		t.Fatalf("flags over bad environment values: %+v %v", c, err)
	}
	if _, err := parse(map[string]string{"PLATFORM_ADDR": "8443"}, "-ws-timeout", "40s"); err == nil || !strings.Contains(err.Error(), "PLATFORM_ADDR") {
		t.Fatalf("a bad environment value no flag replaces: %v", err)
	}
	for _, args := range [][]string{{"-metrics-token", "Q"}, {"-metrics-token", "QQQQQQQQQQQQQQQ"}} {
		if _, err := parse(nil, args...); err == nil || !strings.Contains(err.Error(), "at least 16") || strings.Contains(err.Error(), "Q") {
			t.Fatalf("metrics token %q: %v", args[1], err)
		}
	}
	if c, err := parse(map[string]string{"PLATFORM_METRICS_TOKEN": "0123456789abcdef"}); err != nil || c.MetricsToken != "0123456789abcdef" {
		t.Fatalf("a 16-character metrics token: %v", err)
	}
}

// TestJSONLogs: with -log-format json every line the server writes is a
// JSON record, the listening address included, and durations read as
// durations.
func TestJSONLogs(t *testing.T) {
	dir := t.TempDir()
	vars := map[string]string{"PLATFORM_DATA_DIR": dir, "PLATFORM_ADDR": "127.0.0.1:0", "PLATFORM_LOG_FORMAT": "json",
		"PLATFORM_DB": storetest.DSN(t)}
	ctx, cancel := context.WithCancel(context.Background())
	var stdout, stderr syncBuffer
	done := make(chan error, 1)
	go func() { done <- run(ctx, nil, envMap(vars), &stdout, &stderr) }()
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(stderr.String(), `"url":"https://`) {
		if time.Now().After(deadline) {
			t.Fatalf("no listening record:\n%s", stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if stdout.String() != "" {
		t.Errorf("text on stdout with JSON logs: %q", stdout.String())
	}
	sawDuration := false
	for _, line := range strings.Split(strings.TrimSpace(stderr.String()), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("not a JSON record: %q", line)
		}
		if rec["msg"] == "shutting down" {
			sawDuration = true
			if rec["timeout"] != "15s" {
				t.Errorf("shutdown timeout logged as %v; want \"15s\"", rec["timeout"])
			}
		}
	}
	if !sawDuration {
		t.Errorf("no shutdown record:\n%s", stderr.String())
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestGatewayClientSaysWhy: the recorder that testdata/gateway and the
// simulator dial through words a refused handshake with the server's
// status and JSON description, and a connection the server ended with its
// close code, where golang.org/x/net/websocket says only "bad status" and
// EOF.
func TestGatewayClientSaysWhy(t *testing.T) {
	base, dir := startServer(t, nil)
	tok := mintToken(t, dir)
	client := insecureClient()
	call := func(method, path, body string) map[string]any {
		t.Helper()
		req, _ := http.NewRequest(method, base+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+tok)
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		json.NewDecoder(resp.Body).Decode(&out)
		if resp.StatusCode >= 300 {
			t.Fatalf("%s %s: %d %v", method, path, resp.StatusCode, out)
		}
		return out
	}
	call("POST", "/api/v1/organizations", `{"handle":"why","name":"Why","region":"eu"}`)
	gw := call("POST", "/api/v1/gateways", `{"name":"why-gw","displayName":"Why","vhost":"gw.example.com"}`)["id"].(string)
	issued := call("POST", "/api/v1/gateways/"+gw+"/tokens", "")
	dial := func(key string) (*websocket.Conn, *simulate.ConnRecorder, error) {
		cfg, err := websocket.NewConfig("wss://"+strings.TrimPrefix(base, "https://")+"/api/internal/v1/ws/gateways/connect", base)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Header.Set("api-key", key)
		nc, err := tls.Dial("tcp", cfg.Location.Host, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
		if err != nil {
			t.Fatal(err)
		}
		rec := &simulate.ConnRecorder{Conn: nc, KeepTail: true}
		ws, err := websocket.NewClient(cfg, rec)
		return ws, rec, err
	}
	_, rec, err := dial("gwt_00000000000000000000000000000000_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
	if !errors.Is(err, websocket.ErrBadStatus) {
		t.Fatalf("a bad key connected: %v", err)
	}
	if why := rec.Refusal(); !strings.HasPrefix(why, "401 Unauthorized: ") || len(why) < len("401 Unauthorized: ")+10 {
		t.Fatalf("refusal: %q", why)
	}
	ws, rec, err := dial(issued["token"].(string))
	if err != nil {
		t.Fatal(err)
	}
	var ack string
	if err := websocket.Message.Receive(ws, &ack); err != nil || !strings.Contains(ack, "connection.ack") {
		t.Fatalf("ack: %q %v", ack, err)
	}
	call("DELETE", "/api/v1/gateways/"+gw+"/tokens/"+issued["id"].(string), "")
	ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	var msg string
	if err := websocket.Message.Receive(ws, &msg); !errors.Is(err, io.EOF) {
		t.Fatalf("after the revocation: %q %v", msg, err)
	}
	if code, _, ok := rec.CloseFrame(); !ok || code != 1008 || !strings.Contains(rec.CloseDescription(), "close 1008") {
		t.Fatalf("close: %d %v %q", code, ok, rec.CloseDescription())
	}
}

// cancelOn cancels when a line containing word is written.
type cancelOn struct {
	word   string
	cancel context.CancelFunc
	mu     sync.Mutex
	seen   bytes.Buffer
}

func (c *cancelOn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.seen.Write(p)
	if strings.Contains(c.seen.String(), c.word) {
		c.cancel()
	}
	return len(p), nil
}

// TestSimulateFailedRunCleansUp: a simulate run that fails part way (here
// interrupted while it registers its gateways) still deletes what it
// created.
func TestSimulateFailedRunCleansUp(t *testing.T) {
	base, dir := startServer(t, nil)
	for _, tc := range []struct {
		when string
		args []string
	}{
		{"registering 2", []string{"-gateways", "400"}},
		{"creating APIs 1", []string{"-gateways", "1", "-apis", "300"}},
	} {
		t.Run(tc.when, func(t *testing.T) { simulateInterrupted(t, base, mintToken(t, dir), tc.when, tc.args) })
	}
}

func simulateInterrupted(t *testing.T, base, tok, when string, args []string) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	progress := &cancelOn{word: when, cancel: cancel}
	err := run(ctx, append([]string{"simulate", "-target", base, "-insecure", "-concurrency", "4", "-deploys", "1"}, args...),
		envMap(map[string]string{"PLATFORM_TOKEN": tok}), io.Discard, progress)
	if err == nil {
		t.Fatal("the interrupted run succeeded")
	}
	get := func(path string) string {
		req, _ := http.NewRequest("GET", base+path, nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := insecureClient().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		data, _ := io.ReadAll(resp.Body)
		return string(data)
	}
	if gws := get("/api/v1/gateways"); !strings.Contains(gws, `"total":0`) {
		t.Fatalf("gateways left: %s", gws)
	}
	if projects := get("/api/v1/projects"); !strings.Contains(projects, `"total":1`) {
		t.Fatalf("projects left: %s", projects)
	}
}
