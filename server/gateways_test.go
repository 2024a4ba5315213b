package server

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"platform-api/api"
	"platform-api/httpx"
	"platform-api/store"
)

func gatewayBody(name string) map[string]any {
	return map[string]any{"name": name, "displayName": "Edge " + name, "description": "d", "vhost": "gw.example.com"}
}

func (e *testEnv) newGateway(tok, name string) store.Gateway {
	e.t.Helper()
	var g store.Gateway
	e.must(201, "POST", "/api/v1/gateways", tok, gatewayBody(name), &g)
	return g
}

func TestGateways(t *testing.T) {
	e := newEnv(t)
	org, tok := e.newOrg()
	_, otherTok := e.newOrg()

	g := e.newGateway(tok, "edge-1")
	if g.OrganizationID != org || g.FunctionalityType != "regular" || g.IsActive || g.IsCritical || g.Vhost != "gw.example.com" {
		t.Fatalf("registered %+v", g)
	}
	path := "/api/v1/gateways/" + g.ID

	t.Run("Validation", func(t *testing.T) {
		for _, tc := range []struct {
			mod   func(map[string]any)
			field string
		}{
			{func(b map[string]any) { b["name"] = "Edge" }, "name"},
			{func(b map[string]any) { b["name"] = "ab" }, "name"},
			{func(b map[string]any) { b["name"] = strings.Repeat("a", 65) }, "name"},
			{func(b map[string]any) { b["name"] = "-edge" }, "name"},
			{func(b map[string]any) { b["name"] = "edge-" }, "name"},
			{func(b map[string]any) { b["name"] = "ed_ge" }, "name"},
			{func(b map[string]any) { delete(b, "name") }, "name"},
			{func(b map[string]any) { b["name"] = 12 }, "name"},
			{func(b map[string]any) { b["displayName"] = "" }, "displayName"},
			{func(b map[string]any) { b["displayName"] = strings.Repeat("x", 129) }, "displayName"},
			{func(b map[string]any) { b["vhost"] = "not a host" }, "vhost"},
			{func(b map[string]any) { b["vhost"] = "-bad.example.com" }, "vhost"},
			{func(b map[string]any) { b["functionalityType"] = "streaming" }, "functionalityType"},
			{func(b map[string]any) { b["isCritical"] = "yes" }, "isCritical"},
		} {
			b := gatewayBody("valid-name")
			tc.mod(b)
			code, data := e.do("POST", "/api/v1/gateways", tok, b)
			wantError(t, code, data, 400, tc.field)
		}
	})
	t.Run("AllFields", func(t *testing.T) {
		b := gatewayBody("ai-gw")
		b["functionalityType"], b["isCritical"] = "ai", true
		var got store.Gateway
		e.must(201, "POST", "/api/v1/gateways", tok, b, &got)
		if got.FunctionalityType != "ai" || !got.IsCritical {
			t.Fatalf("%+v", got)
		}
	})
	t.Run("DuplicateIs409SameNameOtherOrgIsFine", func(t *testing.T) {
		code, data := e.do("POST", "/api/v1/gateways", tok, gatewayBody("edge-1"))
		wantError(t, code, data, 409, "edge-1")
		e.newGateway(otherTok, "edge-1")
	})
	t.Run("GetAndList", func(t *testing.T) {
		var got store.Gateway
		e.must(200, "GET", path, tok, nil, &got)
		if got != g {
			t.Fatalf("GET = %+v, want %+v", got, g)
		}
		var l httpx.List[store.Gateway]
		e.must(200, "GET", "/api/v1/gateways", tok, nil, &l)
		if l.Pagination.Total != 2 || l.List[1].ID != g.ID {
			t.Fatalf("list %+v", l)
		}
	})
	t.Run("Update", func(t *testing.T) {
		var got store.Gateway
		e.must(200, "PUT", path, tok, map[string]any{"displayName": "Renamed", "isCritical": true, "description": ""}, &got)
		if got.DisplayName != "Renamed" || !got.IsCritical || got.Description != "" || got.Name != "edge-1" {
			t.Fatalf("PUT = %+v", got)
		}
		code, data := e.do("PUT", path, tok, map[string]any{"displayName": ""})
		wantError(t, code, data, 400, "displayName")
		code, data = e.do("PUT", path, tok, map[string]any{"name": "other-name"})
		wantError(t, code, data, 400, "cannot be changed")
	})
	t.Run("OtherOrgIs404", func(t *testing.T) {
		for _, rt := range []struct{ method, path string }{
			{"GET", path}, {"PUT", path}, {"DELETE", path},
			{"POST", path + "/tokens"}, {"GET", path + "/tokens"}, {"DELETE", path + "/tokens/" + g.ID},
			{"GET", "/api/v1/status/gateways?gatewayId=" + g.ID},
		} {
			code, data := e.do(rt.method, rt.path, otherTok, map[string]any{"displayName": "x"})
			wantError(t, code, data, 404, "not found")
		}
	})
	t.Run("Status", func(t *testing.T) {
		var l httpx.List[api.GatewayStatus]
		e.must(200, "GET", "/api/v1/status/gateways?gatewayId="+g.ID, tok, nil, &l)
		if l.Count != 1 || l.List[0].ID != g.ID || l.List[0].IsActive || l.List[0].Connections != 0 || l.List[0].LastSeenAt != nil {
			t.Fatalf("status %+v", l)
		}
		e.must(200, "GET", "/api/v1/status/gateways", tok, nil, &l)
		if l.Count != 2 {
			t.Fatalf("status list %+v", l)
		}
	})
	t.Run("Delete", func(t *testing.T) {
		var issued api.IssuedToken
		e.must(201, "POST", path+"/tokens", tok, nil, &issued)
		e.must(204, "DELETE", path, tok, nil, nil)
		code, data := e.do("GET", path, tok, nil)
		wantError(t, code, data, 404, "not found")
		if _, err := e.db.VerifyToken(t.Context(), issued.Token); err == nil {
			t.Fatal("token of a deleted gateway still verifies")
		}
	})
}

func TestGatewayTokens(t *testing.T) {
	e := newEnv(t)
	_, tok := e.newOrg()
	g := e.newGateway(tok, "edge")
	path := "/api/v1/gateways/" + g.ID + "/tokens"

	var none httpx.List[store.TokenInfo]
	e.must(200, "GET", path, tok, nil, &none)
	if none.Count != 0 {
		t.Fatalf("registration created a token: %+v", none)
	}

	var t1, t2 struct {
		ID, Token, Message string
		CreatedAt          string
	}
	data := e.must(201, "POST", path, tok, nil, &t1)
	if !strings.HasPrefix(t1.Token, "gwt_") || t1.ID == "" || t1.CreatedAt == "" || t1.Message == "" {
		t.Fatalf("issued %s", data)
	}
	e.must(201, "POST", path, tok, nil, &t2)
	code, data := e.do("POST", path, tok, nil)
	wantError(t, code, data, 409, "revoke one")

	var l httpx.List[map[string]any]
	raw := e.must(200, "GET", path, tok, nil, &l)
	if l.Count != 2 || strings.Contains(string(raw), t1.Token[36:]) || strings.Contains(string(raw), "hash") || strings.Contains(string(raw), "salt") {
		t.Fatalf("list exposes secrets or is wrong: %s", raw)
	}
	for _, k := range []string{"id", "status", "createdAt", "revokedAt", "lastUsedAt"} {
		if _, ok := l.List[0][k]; !ok {
			t.Fatalf("token list item lacks %s: %s", k, raw)
		}
	}

	var msg map[string]string
	e.must(200, "DELETE", path+"/"+t1.ID, tok, nil, &msg)
	if msg["message"] != "Token revoked successfully" {
		t.Fatalf("revoke answer %v", msg)
	}
	e.must(200, "DELETE", path+"/"+t1.ID, tok, nil, nil) // idempotent
	code, data = e.do("DELETE", path+"/00000000-0000-4000-8000-000000000000", tok, nil)
	wantError(t, code, data, 404, "not found")
	if _, err := e.db.VerifyToken(t.Context(), t1.Token); err == nil {
		t.Fatal("revoked token verifies")
	}
	if _, err := e.db.VerifyToken(t.Context(), t2.Token); err != nil {
		t.Fatalf("the other token stopped verifying: %v", err)
	}
	e.must(201, "POST", path, tok, nil, nil)
}

func TestConcurrentTokenIssue(t *testing.T) {
	e := newEnv(t)
	_, tok := e.newOrg()
	g := e.newGateway(tok, "edge")
	var wg sync.WaitGroup
	var created, conflicts atomic.Int32
	for range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			code, _ := e.do("POST", "/api/v1/gateways/"+g.ID+"/tokens", tok, nil)
			switch code {
			case 201:
				created.Add(1)
			case 409:
				conflicts.Add(1)
			}
		}()
	}
	wg.Wait()
	if created.Load() != 2 || conflicts.Load() != 8 {
		t.Fatalf("%d created, %d conflicts; want 2 and 8", created.Load(), conflicts.Load())
	}
}

// BenchmarkRegisterGateway measures registrations over HTTPS with 8
// concurrent clients on a SQLite file.
func BenchmarkRegisterGateway(b *testing.B) {
	e := newEnv(b)
	_, tok := e.newOrg()
	var n atomic.Int64
	b.SetParallelism(8 / max(1, runtimeProcs()))
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			body, _ := json.Marshal(gatewayBody(fmt.Sprintf("gw-%d", n.Add(1))))
			req, _ := http.NewRequest("POST", e.srv.URL+"/api/v1/gateways", strings.NewReader(string(body)))
			req.Header.Set("Authorization", "Bearer "+tok)
			resp, err := e.client.Do(req)
			if err != nil {
				b.Error(err)
				return
			}
			resp.Body.Close()
			if resp.StatusCode != 201 {
				b.Errorf("status %d", resp.StatusCode)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "registrations/s")
}
