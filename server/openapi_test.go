package server

import (
	"bytes"
	"encoding/json"
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"

	"platform-api/api"
	"platform-api/httpx"
	"platform-api/store"
)

func realDocument(t *testing.T, name string) string {
	t.Helper()
	data, err := os.ReadFile("../openapi/testdata/real/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// rawJSON is raw with the answer decoded into out.
func (e *testEnv) rawJSON(want int, method, path, tok, contentType, body string, out any) {
	e.t.Helper()
	code, data := e.raw(method, path, tok, contentType, body)
	if code != want {
		e.t.Fatalf("%s %s = %d %s; want %d", method, path, code, data, want)
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			e.t.Fatalf("decode %s: %v", data, err)
		}
	}
}

// A Swagger 2.0 and an OpenAPI 3 document import as APIs, through the same
// rules and store as a create, and the document is answered back as sent.
func TestOpenAPIImport(t *testing.T) {
	e := newEnv(t)
	_, tok := e.newOrg()
	_, otherTok := e.newOrg()
	project := e.defaultProject(tok)

	v2 := realDocument(t, "oai-v2-petstore-expanded.yaml")
	var a store.API
	e.rawJSON(201, "POST", "/api/v1/apis/import-openapi?projectId="+project, tok, "application/yaml", v2, &a)
	if a.Name != "Swagger Petstore" || a.Version != "1.0.0" || a.Context != "/api" || len(a.Operations) != 4 ||
		a.BackendServices[0].Endpoints[0].URL != "http://petstore.swagger.io/api" || a.ProjectID != project || a.LifeCycleStatus != "CREATED" {
		t.Fatalf("imported %+v", a)
	}
	var got store.API
	e.must(200, "GET", "/api/v1/apis/"+a.ID, tok, nil, &got)
	if len(got.Operations) != 4 {
		t.Fatalf("stored %+v", got)
	}
	req, _ := http.NewRequest("GET", e.srv.URL+"/api/v1/apis/"+a.ID+"/openapi", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := e.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var back bytes.Buffer
	back.ReadFrom(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || back.String() != v2 || resp.Header.Get("Content-Type") != "application/yaml" {
		t.Fatalf("document answered %d %s: not the one sent", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	// Another organization sees neither the API nor its document.
	code, data := e.do("GET", "/api/v1/apis/"+a.ID+"/openapi", otherTok, nil)
	wantError(t, code, data, 404, "not found")

	// The same document again clashes like any create; with overrides it
	// is another API.
	code, data = e.raw("POST", "/api/v1/apis/import-openapi?projectId="+project, tok, "application/yaml", v2)
	wantError(t, code, data, 409, "already exists")
	e.rawJSON(201, "POST", "/api/v1/apis/import-openapi?projectId="+project+"&name=pets2&version=v2&context=/pets2&backendUrl=https://pets.internal", tok, "application/yaml", v2, &a)
	if a.Name != "pets2" || a.Version != "v2" || a.Context != "/pets2" || a.BackendServices[0].Endpoints[0].URL != "https://pets.internal" {
		t.Fatalf("overrides: %+v", a)
	}

	// OpenAPI 3 with an apiKey scheme.
	v3 := realDocument(t, "swagger-petstore-v3.yaml")
	e.rawJSON(201, "POST", "/api/v1/apis/import-openapi?projectId="+project, tok, "application/yaml", v3, &a)
	if len(a.Operations) != 19 || a.Security == nil || a.Security.APIKey.Header != "api_key" || a.Context != "/api/v3" ||
		a.BackendServices[0].Endpoints[0].URL != "https://petstore3.swagger.io/api/v3" {
		t.Fatalf("imported %+v", a)
	}
	// A relative server URL needs backendUrl; the context is its path.
	rel := strings.Replace(v3, "https://petstore3.swagger.io/api/v3", "/store/v3", 1)
	code, data = e.raw("POST", "/api/v1/apis/import-openapi?projectId="+project, tok, "application/yaml", rel)
	wantError(t, code, data, 400, "?backendUrl=")
	e.rawJSON(201, "POST", "/api/v1/apis/import-openapi?projectId="+project+"&backendUrl=https://store.internal/v3&version=2", tok, "application/yaml", rel, &a)
	if a.Context != "/store/v3" || a.BackendServices[0].Endpoints[0].URL != "https://store.internal/v3" {
		t.Fatalf("imported %+v", a)
	}

	// JSON is accepted as application/json.
	e.rawJSON(201, "POST", "/api/v1/apis/import-openapi?projectId="+project, tok, "application/json", realDocument(t, "oai-v2-uber.json"), &a)
	if a.Name != "Uber API" || len(a.Operations) != 5 {
		t.Fatalf("imported %+v", a)
	}
}

func TestOpenAPIImportRefusals(t *testing.T) {
	e := newEnvWith(t, func(o *Options) { o.MaxOpenAPIBytes = 64 << 10 })
	_, tok := e.newOrg()
	project := e.defaultProject(tok)
	path := "/api/v1/apis/import-openapi?projectId=" + project
	doc := realDocument(t, "oai-v3.0-uspto.yaml")

	code, data := e.raw("POST", path, tok, "application/x-www-form-urlencoded", doc)
	wantError(t, code, data, http.StatusUnsupportedMediaType, "application/yaml")
	code, data = e.raw("POST", path, tok, "", doc)
	wantError(t, code, data, http.StatusUnsupportedMediaType, "application/yaml")
	code, data = e.raw("POST", path, tok, "application/yaml", doc+"\nx-pad: "+strings.Repeat("x", 64<<10))
	wantError(t, code, data, http.StatusRequestEntityTooLarge, "limit")
	code, data = e.raw("POST", "/api/v1/apis/import-openapi", tok, "application/yaml", doc)
	wantError(t, code, data, 400, "projectId")
	code, data = e.raw("POST", path, tok, "application/yaml", strings.Replace(doc, "'#/components/schemas/dataSetList'", "'https://evil.example/x.yaml'", 1))
	wantError(t, code, data, 400, `$ref "https://evil.example/x.yaml" points outside the document`)
	code, data = e.raw("POST", path+"&context=nope", tok, "application/yaml", doc)
	wantError(t, code, data, 400, "context")
	code, data = e.raw("POST", "/api/v1/apis/import-openapi?projectId=6f1c0a52-1b7e-4d8e-9a4e-0c6f3f1e2d3a", tok, "application/yaml", doc)
	wantError(t, code, data, 400, "project")
	code, data = e.raw("POST", path, "", "application/yaml", doc)
	wantError(t, code, data, 401, "bearer")

	var list httpx.List[store.API]
	e.must(200, "GET", "/api/v1/apis", tok, nil, &list)
	if list.Pagination.Total != 0 {
		t.Fatalf("refused imports stored %d APIs", list.Pagination.Total)
	}
}

// validate-openapi answers the API an import would create and stores
// nothing.
func TestOpenAPIValidate(t *testing.T) {
	e := newEnv(t)
	_, tok := e.newOrg()
	var check api.ImportCheck
	e.rawJSON(200, "POST", "/api/v1/apis/validate-openapi", tok, "application/yaml", realDocument(t, "oai-v3.0-uspto.yaml"), &check)
	if check.OpenAPIVersion != "3.0.1" || check.API.Name != "USPTO Data Set API" || len(check.API.Operations) != 3 ||
		check.API.BackendServices[0].Endpoints[0].URL != "https://developer.uspto.gov/ds-api" || check.API.ID != "" || check.API.ProjectID != "" {
		t.Fatalf("check %+v", check)
	}
	code, data := e.raw("POST", "/api/v1/apis/validate-openapi", tok, "application/json", realDocument(t, "oai-v3.1-webhook-example.json"))
	wantError(t, code, data, 400, "#/paths")
	var list httpx.List[store.API]
	e.must(200, "GET", "/api/v1/apis", tok, nil, &list)
	if list.Pagination.Total != 0 {
		t.Fatalf("validate stored %d APIs", list.Pagination.Total)
	}
}

const ordersV1 = `openapi: 3.1.0
info: {title: Orders, version: 1.0.0}
servers: [{url: 'https://orders.internal/api'}]
paths:
  /orders:
    get: {operationId: listOrders}
    post: {operationId: createOrder}
  /orders/{id}:
    get: {operationId: getOrder}
`

const ordersV2 = `openapi: 3.1.0
info: {title: Orders, version: 1.0.0}
servers: [{url: 'https://elsewhere.example'}]
paths:
  /orders:
    get: {operationId: listOrders, summary: List them all}
  /orders/{id}:
    get: {operationId: getOrder}
    delete: {operationId: cancelOrder}
`

// PUT /apis/{apiId}/openapi replaces the operations and keeps backends,
// security and the policies of kept operations; each revision keeps the
// document it was made with.
func TestOpenAPIUpdate(t *testing.T) {
	e := newEnv(t)
	_, tok := e.newOrg()
	_, otherTok := e.newOrg()
	project := e.defaultProject(tok)
	var a store.API
	e.rawJSON(201, "POST", "/api/v1/apis/import-openapi?projectId="+project, tok, "application/yaml", ordersV1, &a)

	// Policies, security and a backend set by hand.
	e.must(200, "PUT", "/api/v1/apis/"+a.ID, tok, map[string]any{
		"security": map[string]any{"enabled": true, "apiKey": map[string]any{"enabled": true, "header": "X-Key"}},
		"operations": []map[string]any{
			{"name": "listOrders", "request": map[string]any{"method": "GET", "path": "/orders",
				"requestPolicies": []map[string]any{{"name": "add-header", "params": map[string]any{"name": "x"}}}}},
			{"name": "createOrder", "request": map[string]any{"method": "POST", "path": "/orders"}},
			{"name": "getOrder", "request": map[string]any{"method": "GET", "path": "/orders/{id}"}},
		}}, nil)

	// A revision made now keeps the first document.
	g := e.newGateway(tok, "edge-openapi")
	e.must(200, "POST", "/api/v1/apis/"+a.ID+"/deploy-revision", tok, []map[string]any{{"gatewayId": g.ID, "vhost": "gw.example.com"}}, nil)
	var revs httpx.List[store.RevisionSummary]
	e.must(200, "GET", "/api/v1/apis/"+a.ID+"/revisions", tok, nil, &revs)
	if len(revs.List) != 1 {
		t.Fatalf("revisions %+v", revs)
	}

	var out api.OpenAPIUpdate
	e.rawJSON(200, "PUT", "/api/v1/apis/"+a.ID+"/openapi", tok, "application/yaml", ordersV2, &out)
	refs := func(l []api.OperationRef) string {
		var s []string
		for _, r := range l {
			s = append(s, r.Method+" "+r.Path)
		}
		return strings.Join(s, ",")
	}
	if refs(out.Added) != "DELETE /orders/{id}" || refs(out.Removed) != "POST /orders" || refs(out.Kept) != "GET /orders,GET /orders/{id}" {
		t.Fatalf("added %v removed %v kept %v", out.Added, out.Removed, out.Kept)
	}
	u := out.API
	if u.BackendServices[0].Endpoints[0].URL != "https://orders.internal/api" || u.Security == nil || u.Security.APIKey.Header != "X-Key" {
		t.Fatalf("backends or security not kept: %+v", u)
	}
	for _, op := range u.Operations {
		if op.Request.Method == "GET" && op.Request.Path == "/orders" &&
			(len(op.Request.RequestPolicies) != 1 || op.Description != "List them all") {
			t.Fatalf("kept operation %+v: policies not kept or description not taken", op)
		}
	}
	_, data := e.do("GET", "/api/v1/apis/"+a.ID+"/openapi", tok, nil)
	if string(data) != ordersV2 {
		t.Fatalf("document now %s", data)
	}
	_, data = e.do("GET", "/api/v1/apis/"+a.ID+"/openapi?revisionId="+revs.List[0].ID, tok, nil)
	if string(data) != ordersV1 {
		t.Fatalf("revision's document %s", data)
	}

	code, data := e.raw("PUT", "/api/v1/apis/"+a.ID+"/openapi", otherTok, "application/yaml", ordersV2)
	wantError(t, code, data, 404, "not found")
	code, data = e.raw("PUT", "/api/v1/apis/"+a.ID+"/openapi", tok, "application/yaml", "openapi: 3.1.0\npaths: {}")
	wantError(t, code, data, 400, "#/paths")
}

// An API made without a document is answered one made from its
// operations, which the library reads as valid OpenAPI 3.1.
func TestOpenAPIGenerated(t *testing.T) {
	e := newEnv(t)
	_, tok := e.newOrg()
	var a store.API
	e.must(201, "POST", "/api/v1/apis", tok, map[string]any{"name": "plain", "version": "v1", "context": "/plain",
		"projectId": e.defaultProject(tok),
		"security":  map[string]any{"enabled": true, "apiKey": map[string]any{"enabled": true, "header": "X-Key"}},
		"operations": []map[string]any{{"name": "get one", "request": map[string]any{"method": "GET", "path": "/things/{thingId}"}},
			{"request": map[string]any{"method": "POST", "path": "/things"}}}}, &a)
	for _, accept := range []string{"application/yaml", "application/json"} {
		req, _ := http.NewRequest("GET", e.srv.URL+"/api/v1/apis/"+a.ID+"/openapi", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		req.Header.Set("Accept", accept)
		code, data := e.send(req)
		if code != 200 {
			t.Fatalf("%d %s", code, data)
		}
		doc, err := openapi3.NewLoader().LoadFromData(data)
		if err != nil {
			t.Fatal(err)
		}
		if err := doc.Validate(t.Context()); err != nil {
			t.Fatalf("generated document is not valid OpenAPI: %v\n%s", err, data)
		}
		if doc.Paths.Len() != 2 || doc.Paths.Value("/things/{thingId}").Get == nil || doc.Servers[0].URL != "/plain" ||
			doc.Components.SecuritySchemes["apiKey"].Value.Name != "X-Key" {
			t.Fatalf("generated %s", data)
		}
	}
}
