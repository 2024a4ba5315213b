package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"golang.org/x/net/websocket"

	"platform-api/store/pgtest"
	"platform-api/store/storetest"
)

// TestMain lets the test binary be the server in a child process: with
// PLATFORM_API_CHILD set it runs main instead of the tests.
func TestMain(m *testing.M) {
	if os.Getenv("PLATFORM_API_CHILD") == "1" {
		main()
		return
	}
	os.Exit(pgtest.Main(m))
}

// child is the real program running in its own process.
type child struct {
	cmd  *exec.Cmd
	base string
}

// startChild runs the server on dataDir and the database dsn, with env
// ("NAME=value") added to its environment.
func startChild(t *testing.T, dataDir, dsn string, env ...string) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-addr", "127.0.0.1:0", "-data-dir", dataDir, "-db", dsn, "-log-level", "warn")
	cmd.Env = append(append(os.Environ(), "PLATFORM_API_CHILD=1"), env...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	line := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		if sc.Scan() {
			line <- sc.Text()
		}
		io.Copy(io.Discard, out)
	}()
	select {
	case l := <-line:
		return &child{cmd: cmd, base: strings.TrimPrefix(l, "platform-api listening on ")}
	case <-time.After(30 * time.Second):
		t.Fatal("child did not start")
		return nil
	}
}

// TestCrashSafety kills the server with SIGKILL in the middle of concurrent
// API creates and deployments, restarts it on the same file, and checks that
// the database is intact, that every API it acknowledged is there whole, and
// that no partial API exists.
func TestCrashSafety(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the server twice in child processes")
	}
	dir, dsn := t.TempDir(), storetest.DSN(t)
	srv := startChild(t, dir, dsn)
	org := uuid.NewString()
	var tokBuf bytes.Buffer
	if err := run(context.Background(), []string{"token", "-org", org, "-data-dir", dir}, os.Getenv, &tokBuf, io.Discard); err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	call := func(base, method, path string, body any) (int, map[string]any) {
		data, _ := json.Marshal(body)
		req, _ := http.NewRequest(method, base+path, bytes.NewReader(data))
		req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(tokBuf.String()))
		resp, err := client.Do(req)
		if err != nil {
			return 0, nil
		}
		defer resp.Body.Close()
		var m map[string]any
		json.NewDecoder(resp.Body).Decode(&m)
		return resp.StatusCode, m
	}
	if code, _ := call(srv.base, "POST", "/api/v1/organizations", map[string]string{"handle": "crash", "name": "c", "region": "r"}); code != 201 {
		t.Fatalf("organization: %d", code)
	}
	_, p := call(srv.base, "POST", "/api/v1/projects", map[string]string{"name": "load"})
	_, g := call(srv.base, "POST", "/api/v1/gateways", map[string]string{"name": "edge", "displayName": "e", "vhost": "gw.example.com"})
	project, gateway := p["id"].(string), g["id"].(string)

	const backends, operations = 3, 5
	body := func(n int64) map[string]any {
		var bs, ops []any
		for i := range backends {
			bs = append(bs, map[string]any{"name": fmt.Sprint("b", i), "endpoints": []any{map[string]any{"url": "https://b.internal"}}})
		}
		for i := range operations {
			ops = append(ops, map[string]any{"request": map[string]any{"method": "GET", "path": fmt.Sprint("/r", i)}})
		}
		return map[string]any{"name": fmt.Sprint("api-", n), "context": fmt.Sprint("/c", n), "version": "v1", "projectId": project,
			"backend-services": bs, "operations": ops}
	}
	var acked sync.Map // API id -> deployed (bool)
	var n, created atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				code, a := call(srv.base, "POST", "/api/v1/apis", body(n.Add(1)))
				if code != 201 {
					continue
				}
				id := a["id"].(string)
				acked.Store(id, false)
				created.Add(1)
				if code, _ := call(srv.base, "POST", "/api/v1/apis/"+id+"/deploy-revision", []map[string]string{{"gatewayId": gateway}}); code == 200 {
					acked.Store(id, true)
				}
			}
		}()
	}
	// Kill once the load is well under way.
	deadline := time.Now().Add(20 * time.Second)
	for created.Load() < 100 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if err := srv.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	srv.cmd.Wait()
	close(stop)
	wg.Wait()
	t.Logf("killed after %d acknowledged creates", created.Load())

	srv = startChild(t, dir, dsn)
	db := storetest.Raw(t, dsn)
	// PostgreSQL checks its own pages and foreign keys; SQLite is asked.
	if !pgtest.Postgres() {
		var integrity string
		if err := db.QueryRow("PRAGMA integrity_check").Scan(&integrity); err != nil || integrity != "ok" {
			t.Fatalf("integrity_check: %q %v", integrity, err)
		}
		if rows, err := db.Query("PRAGMA foreign_key_check"); err != nil || rows.Next() {
			t.Fatalf("foreign_key_check found violations (%v)", err)
		}
	}
	// No partial API: every stored API has all of its children.
	var partial int
	db.QueryRow(`SELECT COUNT(*) FROM apis a WHERE
		(SELECT COUNT(*) FROM api_operations o WHERE o.api_id = a.id) <> $1 OR
		(SELECT COUNT(*) FROM api_backend_services b WHERE b.api_id = a.id) <> $2`, operations, backends).Scan(&partial)
	if partial != 0 {
		t.Fatalf("%d partial APIs after the crash", partial)
	}
	// Every acknowledged API is there, whole, and so is every acknowledged
	// deployment.
	checked := 0
	acked.Range(func(k, v any) bool {
		code, a := call(srv.base, "GET", "/api/v1/apis/"+k.(string), nil)
		if code != 200 || len(a["operations"].([]any)) != operations || len(a["backend-services"].([]any)) != backends {
			t.Errorf("acknowledged API %s: %d %v", k, code, a)
		}
		if v.(bool) {
			code, d := call(srv.base, "GET", "/api/v1/apis/"+k.(string)+"/deployments", nil)
			if code != 200 || d["count"] != float64(1) {
				t.Errorf("acknowledged deployment of %s: %d %v", k, code, d)
			}
		}
		checked++
		return true
	})
	if checked < 100 {
		t.Fatalf("only %d APIs were acknowledged before the kill", checked)
	}
	if code, _ := call(srv.base, "GET", "/ready", nil); code != 200 {
		t.Fatalf("restarted server not ready: %d", code)
	}
	if code, _ := call(srv.base, "POST", "/api/v1/apis", body(n.Add(1))); code != 201 {
		t.Fatalf("restarted server does not take writes: %d", code)
	}
}

// TestRestartConverges deploys to a connected gateway, kills the server,
// and restarts it: nothing claims the gateway is active until it reconnects,
// and on reconnecting it is sent its desired state.
func TestRestartConverges(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the server twice in child processes")
	}
	dir, dsn := t.TempDir(), storetest.DSN(t)
	srv := startChild(t, dir, dsn)
	var tokBuf bytes.Buffer
	if err := run(context.Background(), []string{"token", "-org", uuid.NewString(), "-data-dir", dir}, os.Getenv, &tokBuf, io.Discard); err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	call := func(method, path string, body any) map[string]any {
		t.Helper()
		data, _ := json.Marshal(body)
		req, _ := http.NewRequest(method, srv.base+path, bytes.NewReader(data))
		req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(tokBuf.String()))
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var m map[string]any
		json.NewDecoder(resp.Body).Decode(&m)
		if resp.StatusCode >= 300 {
			t.Fatalf("%s %s: %d %v", method, path, resp.StatusCode, m)
		}
		return m
	}
	call("POST", "/api/v1/organizations", map[string]string{"handle": "restart", "name": "r", "region": "r"})
	project := call("GET", "/api/v1/projects", nil)["list"].([]any)[0].(map[string]any)["id"].(string)
	gw := call("POST", "/api/v1/gateways", map[string]string{"name": "edge", "displayName": "e", "vhost": "gw.example.com"})["id"].(string)
	key := call("POST", "/api/v1/gateways/"+gw+"/tokens", nil)["token"].(string)
	api := call("POST", "/api/v1/apis", map[string]any{"name": "r", "context": "/r", "version": "v1", "projectId": project,
		"backend-services": []any{map[string]any{"name": "b", "endpoints": []any{map[string]any{"url": "https://b"}}}}})["id"].(string)

	connect := func() *websocket.Conn {
		t.Helper()
		cfg, _ := websocket.NewConfig(strings.Replace(srv.base, "https://", "wss://", 1)+"/api/internal/v1/ws/gateways/connect", srv.base)
		cfg.TlsConfig = &tls.Config{InsecureSkipVerify: true}
		cfg.Header.Set("api-key", key)
		ws, err := cfg.DialContext(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ws.Close() })
		return ws
	}
	next := func(ws *websocket.Conn) map[string]any {
		t.Helper()
		ws.SetReadDeadline(time.Now().Add(5 * time.Second))
		var m map[string]any
		if err := websocket.JSON.Receive(ws, &m); err != nil {
			t.Fatal(err)
		}
		return m
	}
	active := func() bool {
		st := call("GET", "/api/v1/status/gateways?gatewayId="+gw, nil)["list"].([]any)[0].(map[string]any)
		return st["isActive"].(bool)
	}

	ws := connect()
	next(ws)                                                                                     // ack
	call("POST", "/api/v1/apis/"+api+"/deploy-revision", []map[string]string{{"gatewayId": gw}}) // answers an array: not decoded
	if ev := next(ws); ev["type"] != "api.deployed" {
		t.Fatalf("event %v", ev)
	}
	srv.cmd.Process.Signal(syscall.SIGKILL)
	srv.cmd.Wait()

	srv = startChild(t, dir, dsn)
	if active() {
		t.Fatal("a gateway is reported active after a restart before it reconnected")
	}
	ws = connect()
	if m := next(ws); m["type"] != "connection.ack" {
		t.Fatalf("first frame %v", m)
	}
	ev := next(ws)
	if ev["type"] != "api.deployed" || ev["payload"].(map[string]any)["apiId"] != api {
		t.Fatalf("no desired state after the restart: %v", ev)
	}
	if !active() {
		t.Fatal("a reconnected gateway is reported inactive")
	}
}
