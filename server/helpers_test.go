package server

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/google/uuid"

	"platform-api/auth"
	"platform-api/httpx"
	"platform-api/store"
	"platform-api/store/storetest"
)

// testEnv is the real handler on a real TLS listener over a real SQLite file.
type testEnv struct {
	t      testing.TB
	srv    *httptest.Server
	db     *store.DB
	key    *ecdsa.PrivateKey
	client *http.Client
	api    *Server
	dsn    string // of the store: a SQLite path or a PostgreSQL URL
	// ops is the operational listener (plain HTTP on loopback), as main
	// serves it when PLATFORM_OPS_ADDR is set.
	ops *httptest.Server
}

func newEnv(t testing.TB) *testEnv {
	t.Helper()
	return newEnvWith(t, nil)
}

// newEnvWith is newEnv with changed options (hub timing, limits).
func newEnvWith(t testing.TB, mod func(*Options)) *testEnv {
	t.Helper()
	return newEnvStore(t, nil, mod)
}

// newEnvStore is newEnvWith with a changed store configuration too.
func newEnvStore(t testing.TB, storeMod func(*store.Config), mod func(*Options)) *testEnv {
	t.Helper()
	return newEnvListener(t, storeMod, mod, 0)
}

// newEnvListener is newEnvStore whose accepted connections have a send
// buffer of writeBuffer bytes (the system's when 0): with a small one,
// what a slow gateway has not read stays in the server's queue, as over a
// slow link, rather than in the kernel.
func newEnvListener(t testing.TB, storeMod func(*store.Config), mod func(*Options), writeBuffer int) *testEnv {
	t.Helper()
	dir := t.TempDir()
	db, dsn := storetest.Open(t, storeMod)
	key, err := auth.LoadOrCreateSigningKey(filepath.Join(dir, "jwt.pem"))
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	// As main does: the key is registered, and replicas' keys are trusted.
	if err := db.RegisterSigningKey(context.Background(), auth.LocalKeyID(key), auth.PublicKeyPEM(key)); err != nil {
		t.Fatal(err)
	}
	auth, err := auth.New(context.Background(), auth.Config{LocalKey: key, PeerKey: db.SigningKey}, log)
	if err != nil {
		t.Fatal(err)
	}
	// First-generation test clients post no manifest: their initial state
	// comes after the grace period, kept short here.
	opts := Options{Store: db, Auth: auth, Logger: log, MaxBodyBytes: 64 << 10, GenerationGrace: 100 * time.Millisecond}
	if mod != nil {
		mod(&opts)
	}
	s := New(opts)
	srv := httptest.NewUnstartedServer(s)
	if writeBuffer > 0 {
		srv.Listener = sendBufferListener{srv.Listener, writeBuffer}
	}
	srv.EnableHTTP2 = true
	srv.StartTLS()
	ops := httptest.NewServer(s.Ops())
	t.Cleanup(func() {
		ops.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.Hub().Shutdown(ctx)
		srv.Close()
		s.Close()
	})
	return &testEnv{t: t, srv: srv, db: db, key: key, client: srv.Client(), api: s, dsn: dsn, ops: ops}
}

// sendBufferListener sets the send buffer of the connections it accepts.
type sendBufferListener struct {
	net.Listener
	size int
}

func (l sendBufferListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetWriteBuffer(l.size)
	}
	return c, err
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(bytes.TrimRight(p, "\n")))
	return len(p), nil
}

// token mints a valid JWT for org.
func (e *testEnv) token(org string) string {
	e.t.Helper()
	tok, err := auth.MintToken(e.key, auth.TokenRequest{OrganizationID: org, Subject: "test", TTL: time.Hour})
	if err != nil {
		e.t.Fatal(err)
	}
	return tok
}

// newOrg registers an organization and returns its ID and a token for it.
func (e *testEnv) newOrg() (string, string) {
	e.t.Helper()
	org := uuid.NewString()
	tok := e.token(org)
	e.must(http.StatusCreated, "POST", "/api/v1/organizations", tok,
		map[string]string{"handle": "o" + org[:8], "name": "Org " + org[:8], "region": "eu"}, nil)
	return org, tok
}

// do sends a request; body is JSON-encoded unless it is a string or nil.
func (e *testEnv) do(method, path, token string, body any) (int, []byte) {
	e.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = bytes.NewBufferString(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		data, err := json.Marshal(b)
		if err != nil {
			e.t.Fatal(err)
		}
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequest(method, e.srv.URL+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	req.Header.Set("Content-Type", "application/json")
	return e.send(req)
}

// send makes the request and returns the status and body. Redirects are
// answers to check, not to follow.
func (e *testEnv) send(req *http.Request) (int, []byte) {
	e.t.Helper()
	client := *e.client
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	var reqBody []byte
	if req.GetBody != nil {
		if rc, err := req.GetBody(); err == nil {
			reqBody, _ = io.ReadAll(rc)
		}
	}
	resp, err := client.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	checkDescribed(e.t, req.Method, req.URL.RequestURI(), reqBody, resp.StatusCode, resp.Header.Get("Content-Type"), data)
	return resp.StatusCode, data
}

// must sends a request, fails the test unless the status is want, and
// decodes the answer into out when out is not nil.
func (e *testEnv) must(want int, method, path, token string, body, out any) []byte {
	e.t.Helper()
	code, data := e.do(method, path, token, body)
	if code != want {
		e.t.Fatalf("%s %s = %d %s; want %d", method, path, code, data, want)
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			e.t.Fatalf("%s %s: decode %s: %v", method, path, data, err)
		}
	}
	return data
}

// wantError checks the contract's error body: status, message and a
// description containing substr.
func wantError(t testing.TB, code int, data []byte, wantCode int, substr string) {
	t.Helper()
	var b httpx.ErrorBody
	if err := json.Unmarshal(data, &b); err != nil {
		t.Fatalf("error body %s is not JSON: %v", data, err)
	}
	if code != wantCode || b.Code != wantCode || b.Message != http.StatusText(wantCode) {
		t.Fatalf("got %d %s; want %d", code, data, wantCode)
	}
	if !bytes.Contains([]byte(b.Description), []byte(substr)) {
		t.Fatalf("description %q does not mention %q", b.Description, substr)
	}
}

func runtimeProcs() int { return runtime.GOMAXPROCS(0) }

// dbRead returns the first column of every row of a query on the test
// database, read through a separate connection.
func (e *testEnv) dbRead(query string) ([][]byte, error) {
	rows, err := storetest.Raw(e.t, e.dsn).Query(query)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out [][]byte
	cols, _ := rows.Columns()
	for rows.Next() {
		vals := make([][]byte, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return nil, err
		}
		out = append(out, vals...)
	}
	return out, rows.Err()
}
