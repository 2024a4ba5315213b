package server

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"platform-api/httpx"
	"platform-api/store"
)

// raw sends body with exactly the given Content-Type ("" sends none).
func (e *testEnv) raw(method, path, token, contentType, body string) (int, []byte) {
	e.t.Helper()
	req, err := http.NewRequest(method, e.srv.URL+path, strings.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	return e.send(req)
}

// A body declared as something other than JSON (what curl -d sends without
// a header) is a 415 naming the type to send, not a puzzling JSON type
// error; JSON types with parameters, +json types and no Content-Type at all
// (older scripts, first-generation gateways) are read as JSON.
func TestNewcomerContentType(t *testing.T) {
	e := newEnv(t)
	_, tok := e.newOrg()
	for _, ct := range []string{"application/x-www-form-urlencoded", "text/plain", "multipart/form-data; boundary=x", "application/jsonx", "garbage;;"} {
		code, data := e.raw("POST", "/api/v1/projects", tok, ct, `{"name":"p1"}`)
		wantError(t, code, data, http.StatusUnsupportedMediaType, "Content-Type: application/json")
	}
	code, data := e.raw("POST", "/api/v1/projects", tok, "application/x-www-form-urlencoded", `name=p1`)
	wantError(t, code, data, http.StatusUnsupportedMediaType, "Content-Type must be application/json")
	for i, ct := range []string{"", "application/json", "application/json; charset=utf-8", "Application/JSON", "application/merge-patch+json"} {
		if code, data := e.raw("POST", "/api/v1/projects", tok, ct, `{"name":"ok`+string(rune('a'+i))+`"}`); code != http.StatusCreated {
			t.Fatalf("Content-Type %q: %d %s", ct, code, data)
		}
	}
	// PUT of an API reads its body its own way: the same rule holds.
	project := e.defaultProject(tok)
	var api struct{ ID string }
	e.must(http.StatusCreated, "POST", "/api/v1/apis", tok, fixture(t, "api_minimal.json", project), &api)
	code, data = e.raw("PUT", "/api/v1/apis/"+api.ID, tok, "text/plain", `{"description":"x"}`)
	wantError(t, code, data, http.StatusUnsupportedMediaType, "application/json")
	// A gateway route too; gateways send application/json or nothing.
	gw := e.newGateway(tok, "ct-gw")
	var issued struct{ Token string }
	e.must(http.StatusCreated, "POST", "/api/v1/gateways/"+gw.ID+"/tokens", tok, nil, &issued)
	req, _ := http.NewRequest("POST", e.srv.URL+"/api/internal/v1/deployments/fetch-batch", strings.NewReader(`{"deploymentIds":[]}`))
	req.Header.Set("api-key", issued.Token)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := e.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	wantError(t, resp.StatusCode, body, http.StatusUnsupportedMediaType, "application/json")
}

// A path the mux would redirect (an empty segment, most often an unset
// shell variable, or a "." segment) is a 404 with the JSON error body, not
// a 307 with an HTML one.
func TestNewcomerUncleanPathIsJSON(t *testing.T) {
	e := newEnv(t)
	_, tok := e.newOrg()
	for _, tc := range []struct{ method, path, want string }{
		{"POST", "/api/v1/gateways//tokens", "empty segment"},
		{"GET", "/api/v1/gateways//tokens", "empty segment"},
		{"GET", "//api/v1/projects", "empty segment"},
		{"GET", "/api/v1/./projects", "use /api/v1/projects"},
		{"GET", "/api/internal/v1//apis", "empty segment"},
	} {
		code, data := e.raw(tc.method, tc.path, tok, "", "")
		wantError(t, code, data, http.StatusNotFound, tc.want)
	}
}

// TestListRevisions: GET /api/v1/apis/{apiId}/revisions lists an API's
// revisions newest first, in the list envelope, each with the gateways
// that run it, following deployments, rollbacks and undeployments.
func TestListRevisions(t *testing.T) {
	e := newEnvWith(t, fastHub)
	f := newFleet(t, e, 2)
	type revisions = httpx.List[store.RevisionSummary]
	var empty revisions
	e.must(200, "GET", "/api/v1/apis/"+f.api+"/revisions", f.tok, nil, &empty)
	if empty.Count != 0 || empty.List == nil || empty.Pagination.Total != 0 || empty.Pagination.Limit != 100 {
		t.Fatalf("before any deployment: %+v", empty)
	}
	first := f.deploy(t, "", 0)[0].RevisionID
	e.must(200, "PUT", "/api/v1/apis/"+f.api, f.tok, map[string]string{"description": "second"}, nil)
	second := f.deploy(t, "", 1)[0].RevisionID
	if first == second {
		t.Fatal("an edited API deployed again made no new revision")
	}
	runs := func(r store.RevisionSummary) []string {
		var ids []string
		for _, g := range r.Gateways {
			if g.DeploymentID == "" || g.Status == "" || g.Vhost != "api.example.com" {
				t.Fatalf("gateway of revision %s: %+v", r.ID, g)
			}
			ids = append(ids, g.GatewayID)
		}
		return ids
	}
	var all revisions
	e.must(200, "GET", "/api/v1/apis/"+f.api+"/revisions", f.tok, nil, &all)
	if all.Count != 2 || all.Pagination.Total != 2 || all.List[0].ID != second || all.List[1].ID != first ||
		all.List[0].Number <= all.List[1].Number || all.List[0].CreatedAt.IsZero() {
		t.Fatalf("revisions: %+v", all)
	}
	if g := runs(all.List[0]); len(g) != 1 || g[0] != f.gws[1].ID {
		t.Fatalf("newest revision runs on %v", g)
	}
	if g := runs(all.List[1]); len(g) != 1 || g[0] != f.gws[0].ID {
		t.Fatalf("first revision runs on %v", g)
	}
	var page revisions
	e.must(200, "GET", "/api/v1/apis/"+f.api+"/revisions?offset=1&limit=1", f.tok, nil, &page)
	if page.Count != 1 || page.Pagination != (httpx.Pagination{Total: 2, Offset: 1, Limit: 1}) || page.List[0].ID != first {
		t.Fatalf("second page: %+v", page)
	}
	// Roll gateway 1 back to the first revision, then undeploy gateway 0.
	f.deploy(t, "?revisionId="+first, 1)
	e.must(http.StatusNoContent, "DELETE", "/api/v1/apis/"+f.api+"/deployments/"+f.gws[0].ID, f.tok, nil, nil)
	e.must(200, "GET", "/api/v1/apis/"+f.api+"/revisions", f.tok, nil, &all)
	if all.Count != 2 || len(all.List[0].Gateways) != 0 {
		t.Fatalf("after the rollback the newest revision still runs: %+v", all)
	}
	if g := runs(all.List[1]); len(g) != 1 || g[0] != f.gws[1].ID {
		t.Fatalf("after rollback and undeploy the first revision runs on %v", g)
	}
	code, data := e.do("GET", "/api/v1/apis/00000000-0000-4000-8000-000000000000/revisions", f.tok, nil)
	wantError(t, code, data, http.StatusNotFound, "not found")
	code, data = e.do("GET", "/api/v1/apis/"+f.api+"/revisions?limit=0", f.tok, nil)
	wantError(t, code, data, http.StatusBadRequest, "limit")
}
