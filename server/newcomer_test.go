package server

import (
	"io"
	"net/http"
	"strings"
	"testing"
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
	client := *e.client // redirects are answers to check, not to follow
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err := client.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return resp.StatusCode, data
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
