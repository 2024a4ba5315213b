package server

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"platform-api/httpx"
	"platform-api/store"
)

// TestTenantIsolation makes every request of the public API with a second
// organization's token against the first organization's resources. Each is
// answered exactly as for a missing resource, and nothing of the first
// organization changes.
func TestTenantIsolation(t *testing.T) {
	e := newEnvWith(t, fastHub)
	a := newFleet(t, e, 1) // organization A: an API, a gateway with a token
	a.deploy(t, "", 0)
	b := newFleet(t, e, 1) // organization B, the intruder
	var aProject string
	for _, p := range listOf[store.Project](t, e, a.tok, "/api/v1/projects") {
		aProject = p.ID
	}
	gw, api, tokID := a.gws[0].ID, a.api, a.keyID[0]
	missing := "00000000-0000-4000-8000-000000000000"

	routes := []struct {
		method, path string
		body         any
	}{
		{"GET", "/api/v1/projects/" + aProject, nil},
		{"PUT", "/api/v1/projects/" + aProject, map[string]string{"name": "stolen"}},
		{"DELETE", "/api/v1/projects/" + aProject, nil},
		{"GET", "/api/v1/apis/" + api, nil},
		{"PUT", "/api/v1/apis/" + api, map[string]string{"description": "stolen"}},
		{"DELETE", "/api/v1/apis/" + api, nil},
		{"GET", "/api/v1/apis?projectId=" + aProject, nil},
		{"POST", "/api/v1/apis/" + api + "/deploy-revision", []map[string]string{{"gatewayId": b.gws[0].ID}}},
		{"DELETE", "/api/v1/apis/" + api + "/deployments/" + gw, nil},
		{"GET", "/api/v1/apis/" + api + "/deployments", nil},
		{"GET", "/api/v1/apis/" + api + "/gateways", nil},
		{"GET", "/api/v1/apis/" + api + "/revisions", nil},
		{"GET", "/api/v1/gateways/" + gw, nil},
		{"PUT", "/api/v1/gateways/" + gw, map[string]string{"displayName": "stolen"}},
		{"DELETE", "/api/v1/gateways/" + gw, nil},
		{"POST", "/api/v1/gateways/" + gw + "/tokens", nil},
		{"GET", "/api/v1/gateways/" + gw + "/tokens", nil},
		{"DELETE", "/api/v1/gateways/" + gw + "/tokens/" + tokID, nil},
		{"GET", "/api/v1/gateways/" + gw + "/live-proxy-artifacts", nil},
		{"GET", "/api/v1/status/gateways?gatewayId=" + gw, nil},
	}
	for _, rt := range routes {
		t.Run(rt.method+" "+rt.path, func(t *testing.T) {
			code, data := e.do(rt.method, rt.path, b.tok, rt.body)
			wantError(t, code, data, http.StatusNotFound, "not found")
			// The answer for a missing resource is the same but for its id.
			path := strings.NewReplacer(aProject, missing, api, missing, gw, missing, tokID, missing).Replace(rt.path)
			mcode, mdata := e.do(rt.method, path, b.tok, rt.body)
			if mcode != code || strings.ReplaceAll(string(data), rt.path, "") == "" ||
				!bytes.Equal(normalizeIDs(data), normalizeIDs(mdata)) {
				t.Fatalf("foreign: %d %s\nmissing: %d %s", code, data, mcode, mdata)
			}
		})
	}
	t.Run("BodyReferences", func(t *testing.T) {
		// A foreign project or gateway in a body is refused like a missing one.
		body := fixture(t, "api_minimal.json", aProject)
		code, data := e.do("POST", "/api/v1/apis", b.tok, body)
		wantError(t, code, data, 400, "projectId")
		code, data = e.do("POST", "/api/v1/apis/"+b.api+"/deploy-revision", b.tok, []map[string]string{{"gatewayId": gw}})
		wantError(t, code, data, 400, "[0].gatewayId")
	})
	t.Run("OrganizationWithForeignID", func(t *testing.T) {
		var o store.Organization
		e.must(200, "GET", "/api/v1/organizations", a.tok, nil, &o)
		code, data := e.do("POST", "/api/v1/organizations", b.tok, map[string]string{"id": o.ID, "handle": "x", "name": "x", "region": "x"})
		wantError(t, code, data, 403, "organization claim")
	})
	t.Run("ListsHoldOnlyOwnResources", func(t *testing.T) {
		for _, path := range []string{"/api/v1/projects", "/api/v1/apis", "/api/v1/gateways", "/api/v1/status/gateways"} {
			_, data := e.do("GET", path, b.tok, nil)
			for _, id := range []string{aProject, api, gw} {
				if strings.Contains(string(data), id) {
					t.Fatalf("%s shows organization A's %s", path, id)
				}
			}
		}
	})
	t.Run("GatewayRoutes", func(t *testing.T) {
		resp, _ := download(t, e, b.keys[0], "/api/internal/v1/apis/"+api)
		if resp.StatusCode != 404 {
			t.Fatalf("foreign API download: %d", resp.StatusCode)
		}
		b.deploy(t, "", 0)
		_, files := download(t, e, b.keys[0], "/api/internal/v1/apis")
		if len(files) != 1 || files["api-"+b.api+".yaml"] == nil {
			t.Fatalf("gateway B downloads %v", files)
		}
	})
	t.Run("NothingChanged", func(t *testing.T) {
		e.must(200, "GET", "/api/v1/projects/"+aProject, a.tok, nil, nil)
		got := asMap(t, e.must(200, "GET", "/api/v1/apis/"+api, a.tok, nil, nil))
		if got["description"] == "stolen" {
			t.Fatal("organization B changed A's API")
		}
		var g store.Gateway
		e.must(200, "GET", "/api/v1/gateways/"+gw, a.tok, nil, &g)
		if g.DisplayName == "stolen" {
			t.Fatal("organization B changed A's gateway")
		}
		if _, err := e.db.VerifyToken(t.Context(), a.keys[0]); err != nil {
			t.Fatalf("A's token no longer verifies: %v", err)
		}
		if deps := listOf[store.Deployment](t, e, a.tok, "/api/v1/apis/"+api+"/deployments"); len(deps) != 1 {
			t.Fatalf("A's deployment is gone: %v", deps)
		}
	})
}

// normalizeIDs blanks UUIDs so two error bodies can be compared.
func normalizeIDs(b []byte) []byte {
	s := string(b)
	for i := 0; i+36 <= len(s); i++ {
		if isUUID(s[i : i+36]) {
			s = s[:i] + "<id>" + s[i+36:]
		}
	}
	return []byte(s)
}

func isUUID(s string) bool {
	for i, c := range s {
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !strings.ContainsRune("0123456789abcdef", c) {
				return false
			}
		}
	}
	return true
}

func listOf[T any](t *testing.T, e *testEnv, tok, path string) []T {
	t.Helper()
	var l httpx.List[T]
	e.must(200, "GET", path, tok, nil, &l)
	return l.List
}

// syncBuffer is a log sink safe for concurrent writers.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.String()
}

// TestNoSecretsInLogs runs a full scenario with debug logging and checks that
// no gateway token, secret, token hash or JWT reaches the log.
func TestNoSecretsInLogs(t *testing.T) {
	var logs syncBuffer
	e := newEnvWith(t, func(o *Options) {
		fastHub(o)
		o.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
		o.WSRateLimitPerMinute = 5
	})
	f := newFleet(t, e, 1)
	var second struct{ ID, Token string }
	e.must(201, "POST", "/api/v1/gateways/"+f.gws[0].ID+"/tokens", f.tok, nil, &second) // rotation
	c, _ := mustDial(t, e.srv.URL, second.Token)
	f.deploy(t, "", 0)
	c.next(time.Second)
	download(t, e, second.Token, "/api/internal/v1/apis/"+f.api)
	e.must(200, "DELETE", "/api/v1/gateways/"+f.gws[0].ID+"/tokens/"+f.keyID[0], f.tok, nil, nil) // revoke
	// Failures: a revoked key, tampered keys until rate limited, a bad JWT.
	for range 8 {
		dialWS(t, e.srv.URL, f.keys[0])
		download(t, e, second.Token[:len(second.Token)-3]+"AAA", "/api/internal/v1/apis")
	}
	e.do("GET", "/api/v1/projects", f.tok[:len(f.tok)-4]+"AAAA", nil)
	e.must(200, "DELETE", "/api/v1/gateways/"+f.gws[0].ID+"/tokens/"+second.ID, f.tok, nil, nil)
	c.closeCode(time.Second)

	out := logs.String()
	if !strings.Contains(out, "level=DEBUG") && !strings.Contains(out, "gateway connected") {
		t.Fatal("the scenario logged nothing; the test would prove nothing")
	}
	secrets := []string{f.tok, strings.Split(f.tok, ".")[2]}
	for _, tok := range []string{f.keys[0], second.Token} {
		secrets = append(secrets, tok, tok[37:]) // the whole token and its secret part
	}
	rows, err := e.dbRead("SELECT hash, salt FROM gateway_tokens")
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rows {
		secrets = append(secrets, hex.EncodeToString(r), base64.StdEncoding.EncodeToString(r), base64.RawURLEncoding.EncodeToString(r))
	}
	for _, s := range secrets {
		if strings.Contains(out, s) {
			t.Fatalf("a secret reached the log: %.12s…", s)
		}
	}
}
