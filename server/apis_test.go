package server

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"platform-api/api"
	"platform-api/httpx"
	"platform-api/store"
)

// fixture reads a JSON body from testdata and sets its projectId.
func fixture(t testing.TB, name, projectID string) map[string]any {
	t.Helper()
	data, err := os.ReadFile("../testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	m := decodeNumbers(t, data)
	m["projectId"] = projectID
	return m
}

// defaultProject returns the ID of the organization's project "default".
func (e *testEnv) defaultProject(tok string) string {
	e.t.Helper()
	var l httpx.List[store.Project]
	e.must(200, "GET", "/api/v1/projects", tok, nil, &l)
	for _, p := range l.List {
		if p.Name == "default" {
			return p.ID
		}
	}
	e.t.Fatal("no default project")
	return ""
}

// subset checks that every value in want appears, equal, at the same place
// in got, and reports the JSON path of the first difference.
func subset(t *testing.T, path string, want, got any) {
	t.Helper()
	switch w := want.(type) {
	case map[string]any:
		g, ok := got.(map[string]any)
		if !ok {
			t.Errorf("%s: got %v, want an object", path, got)
			return
		}
		for k, v := range w {
			gv, ok := g[k]
			if !ok {
				t.Errorf("%s.%s: missing", path, k)
				continue
			}
			subset(t, path+"."+k, v, gv)
		}
	case []any:
		g, ok := got.([]any)
		if !ok || len(g) != len(w) {
			t.Errorf("%s: got %v, want %v", path, got, want)
			return
		}
		for i := range w {
			subset(t, fmt.Sprintf("%s[%d]", path, i), w[i], g[i])
		}
	default:
		if !reflect.DeepEqual(want, got) {
			t.Errorf("%s: got %#v, want %#v", path, got, want)
		}
	}
}

func asMap(t *testing.T, data []byte) map[string]any {
	t.Helper()
	return decodeNumbers(t, data)
}

// decodeNumbers decodes a JSON object keeping numbers exact (json.Number).
func decodeNumbers(t testing.TB, data []byte) map[string]any {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestAPIRoundTripMaximal(t *testing.T) {
	e := newEnv(t)
	org, tok := e.newOrg()
	body := fixture(t, "api_maximal.json", e.defaultProject(tok))

	created := e.must(201, "POST", "/api/v1/apis", tok, body, nil)
	c := asMap(t, created)
	subset(t, "POST", maskClientKeys(body), c)
	if c["organizationId"] != org || c["id"] == "" || c["createdAt"] == nil || c["createdAt"] != c["updatedAt"] {
		t.Fatalf("server fields: %v %v %v", c["organizationId"], c["id"], c["createdAt"])
	}
	if !bytes.Contains(created, []byte("9007199254740993")) {
		t.Fatal("policy params lost integer precision")
	}
	path := "/api/v1/apis/" + c["id"].(string)
	got := e.must(200, "GET", path, tok, nil, nil)
	if !reflect.DeepEqual(asMap(t, got), c) {
		t.Fatalf("GET differs from POST answer:\n%s\n%s", got, created)
	}

	// PUT replaces the fields present and keeps the rest.
	put := map[string]any{
		"description": "changed",
		"name":        body["name"], // immutable, but unchanged: fine
		"operations":  []any{map[string]any{"request": map[string]any{"method": "PUT", "path": "/payments/{id}"}}},
		"cors":        map[string]any{"enabled": false},
	}
	updated := asMap(t, e.must(200, "PUT", path, tok, put, nil))
	subset(t, "PUT", put, updated)
	// A PUT advances updatedAt and keeps createdAt.
	before, err1 := time.Parse(time.RFC3339Nano, c["updatedAt"].(string))
	after, err2 := time.Parse(time.RFC3339Nano, updated["updatedAt"].(string))
	if err1 != nil || err2 != nil || !after.After(before) || updated["createdAt"] != c["createdAt"] {
		t.Fatalf("timestamps not maintained: createdAt %v then %v, updatedAt %v then %v",
			c["createdAt"], updated["createdAt"], c["updatedAt"], updated["updatedAt"])
	}
	for _, k := range []string{"mtls", "security", "backend-services", "api-rate-limiting", "displayName", "context", "version"} {
		subset(t, "PUT kept "+k, c[k], updated[k])
	}
	if !reflect.DeepEqual(asMap(t, e.must(200, "GET", path, tok, nil, nil)), updated) {
		t.Fatal("GET after PUT differs from the PUT answer")
	}
}

func TestAPIRoundTripMinimal(t *testing.T) {
	e := newEnv(t)
	_, tok := e.newOrg()
	body := fixture(t, "api_minimal.json", e.defaultProject(tok))
	c := asMap(t, e.must(201, "POST", "/api/v1/apis", tok, body, nil))
	subset(t, "defaults", map[string]any{
		"provider": "admin", "type": "HTTP", "transport": []any{"http", "https"}, "lifeCycleStatus": "CREATED",
		"backend-services": []any{}, "revisionId": json.Number("0"), "isRevision": false,
		"operations": []any{
			map[string]any{"request": map[string]any{"method": "GET", "path": "/*"}},
			map[string]any{"request": map[string]any{"method": "POST", "path": "/*"}},
			map[string]any{"request": map[string]any{"method": "PATCH", "path": "/*"}},
			map[string]any{"request": map[string]any{"method": "DELETE", "path": "/*"}},
		},
	}, c)
	path := "/api/v1/apis/" + c["id"].(string)
	u := asMap(t, e.must(200, "PUT", path, tok, map[string]any{"lifeCycleStatus": "PUBLISHED"}, nil))
	if u["lifeCycleStatus"] != "PUBLISHED" || len(u["operations"].([]any)) != 4 {
		t.Fatalf("PUT = %v", u)
	}
	if !reflect.DeepEqual(asMap(t, e.must(200, "GET", path, tok, nil, nil)), u) {
		t.Fatal("GET after PUT differs")
	}
}

func TestAPIValidation(t *testing.T) {
	e := newEnv(t)
	_, tok := e.newOrg()
	project := e.defaultProject(tok)
	backend := func() []any {
		return []any{map[string]any{"name": "b1", "endpoints": []any{map[string]any{"url": "https://b1.internal"}}}}
	}
	op := func(method, path string) map[string]any {
		return map[string]any{"request": map[string]any{"method": method, "path": path}}
	}
	tests := []struct {
		name  string
		mod   func(m map[string]any)
		field string
	}{
		{"NameMissing", func(m map[string]any) { delete(m, "name") }, "name:"},
		{"NameCharset", func(m map[string]any) { m["name"] = "pay/ments" }, "name:"},
		{"NameTooLong", func(m map[string]any) { m["name"] = strings.Repeat("a", 101) }, "name:"},
		{"VersionPattern", func(m map[string]any) { m["version"] = "1.0.0.0" }, "version:"},
		{"VersionWord", func(m map[string]any) { m["version"] = "latest" }, "version:"},
		{"ContextMissing", func(m map[string]any) { delete(m, "context") }, "context:"},
		{"ContextNoSlash", func(m map[string]any) { m["context"] = "echo" }, "context:"},
		{"ContextTrailingSlash", func(m map[string]any) { m["context"] = "/echo/" }, "context:"},
		{"ContextTooLong", func(m map[string]any) { m["context"] = "/" + strings.Repeat("a", 200) }, "context:"},
		{"ProjectMissing", func(m map[string]any) { delete(m, "projectId") }, "projectId:"},
		{"ProjectUnknown", func(m map[string]any) { m["projectId"] = uuid.NewString() }, "projectId:"},
		{"LifeCycle", func(m map[string]any) { m["lifeCycleStatus"] = "LIVE" }, "lifeCycleStatus:"},
		{"Type", func(m map[string]any) { m["type"] = "REST" }, "type:"},
		{"TransportEmpty", func(m map[string]any) { m["transport"] = []any{} }, "transport:"},
		{"TransportValue", func(m map[string]any) { m["transport"] = []any{"http", "ftp"} }, "transport[1]:"},
		{"TransportType", func(m map[string]any) { m["transport"] = "http" }, "transport"},
		{"RateLimitUnit", func(m map[string]any) {
			m["api-rate-limiting"] = map[string]any{"enabled": true, "rateLimitCount": 5, "rateLimitTimeUnit": "day"}
		}, "api-rate-limiting.rateLimitTimeUnit:"},
		{"RateLimitNegative", func(m map[string]any) {
			m["api-rate-limiting"] = map[string]any{"rateLimitCount": -1}
		}, "api-rate-limiting.rateLimitCount:"},
		{"BackendNameMissing", func(m map[string]any) {
			m["backend-services"] = []any{map[string]any{"endpoints": []any{map[string]any{"url": "https://x"}}}}
		}, "backend-services[0].name:"},
		{"BackendDuplicate", func(m map[string]any) { m["backend-services"] = append(backend(), backend()...) }, "backend-services[1].name:"},
		{"BackendNoEndpoints", func(m map[string]any) {
			m["backend-services"] = []any{map[string]any{"name": "b1"}}
		}, "backend-services[0].endpoints:"},
		{"EndpointScheme", func(m map[string]any) {
			m["backend-services"] = []any{map[string]any{"name": "b1", "endpoints": []any{map[string]any{"url": "ftp://x"}}}}
		}, "backend-services[0].endpoints[0].url:"},
		{"EndpointNoHost", func(m map[string]any) {
			m["backend-services"] = []any{map[string]any{"name": "b1", "endpoints": []any{map[string]any{"url": "https://"}}}}
		}, "backend-services[0].endpoints[0].url:"},
		{"EndpointWeight", func(m map[string]any) {
			m["backend-services"] = []any{map[string]any{"name": "b1", "endpoints": []any{map[string]any{"url": "https://x", "weight": 101}}}}
		}, "backend-services[0].endpoints[0].weight:"},
		{"NegativeTimeout", func(m map[string]any) {
			b := backend()
			b[0].(map[string]any)["timeout"] = map[string]any{"read": -5}
			m["backend-services"] = b
		}, "backend-services[0].timeout.read:"},
		{"NegativeHealthInterval", func(m map[string]any) {
			m["backend-services"] = []any{map[string]any{"name": "b1", "endpoints": []any{map[string]any{"url": "https://x",
				"healthCheck": map[string]any{"enabled": true, "interval": -1}}}}}
		}, "backend-services[0].endpoints[0].healthCheck.interval:"},
		{"Method", func(m map[string]any) { m["operations"] = []any{op("GET", "/a"), op("GET", "/b"), op("FETCH", "/c")} }, "operations[2].request.method:"},
		{"MethodLowerCase", func(m map[string]any) { m["operations"] = []any{op("get", "/a")} }, "operations[0].request.method:"},
		{"PathNoSlash", func(m map[string]any) { m["operations"] = []any{op("GET", "a")} }, "operations[0].request.path:"},
		{"PathUnbalanced", func(m map[string]any) { m["operations"] = []any{op("GET", "/a/{id")} }, "operations[0].request.path:"},
		{"PathCloseFirst", func(m map[string]any) { m["operations"] = []any{op("GET", "/a/}id{")} }, "operations[0].request.path:"},
		{"PathNested", func(m map[string]any) { m["operations"] = []any{op("GET", "/a/{{id}}")} }, "operations[0].request.path:"},
		{"PathEmptyParam", func(m map[string]any) { m["operations"] = []any{op("GET", "/a/{}")} }, "operations[0].request.path:"},
		{"DuplicateOperation", func(m map[string]any) { m["operations"] = []any{op("GET", "/a"), op("GET", "/a")} }, "operations[1].request:"},
		{"RequestMissing", func(m map[string]any) { m["operations"] = []any{map[string]any{"name": "x"}} }, "operations[0].request:"},
		{"UnknownBackendRef", func(m map[string]any) {
			m["backend-services"] = backend()
			o := op("GET", "/a")
			o["request"].(map[string]any)["backend-services"] = []any{map[string]any{"name": "nope"}}
			m["operations"] = []any{o}
		}, "operations[0].request.backend-services[0].name:"},
		{"BackendRefWeight", func(m map[string]any) {
			m["backend-services"] = backend()
			o := op("GET", "/a")
			o["request"].(map[string]any)["backend-services"] = []any{map[string]any{"name": "b1", "weight": -1}}
			m["operations"] = []any{o}
		}, "operations[0].request.backend-services[0].weight:"},
		{"PolicyParamsNotObject", func(m map[string]any) {
			o := op("GET", "/a")
			o["request"].(map[string]any)["requestPolicies"] = []any{map[string]any{"name": "p", "params": []any{1}}}
			m["operations"] = []any{o}
		}, "operations[0].request.requestPolicies[0].params:"},
		{"PolicyName", func(m map[string]any) {
			o := op("GET", "/a")
			o["request"].(map[string]any)["responsePolicies"] = []any{map[string]any{"params": map[string]any{}}}
			m["operations"] = []any{o}
		}, "operations[0].request.responsePolicies[0].name:"},
		{"ScopeWithSpace", func(m map[string]any) {
			m["security"] = map[string]any{"oauth2": map[string]any{"scopes": []any{"a b"}}}
		}, "security.oauth2.scopes[0]:"},
		{"CallbackURL", func(m map[string]any) {
			m["security"] = map[string]any{"oauth2": map[string]any{"grantTypes": map[string]any{"authorizationCode": map[string]any{"enabled": true, "callbackUrl": "javascript:alert(1)"}}}}
		}, "security.oauth2.grantTypes.authorizationCode.callbackUrl:"},
		{"APIKeyHeader", func(m map[string]any) {
			m["security"] = map[string]any{"apiKey": map[string]any{"enabled": true, "header": "X Key"}}
		}, "security.apiKey.header:"},
		{"CORSMaxAge", func(m map[string]any) { m["cors"] = map[string]any{"maxAge": -1} }, "cors.maxAge:"},
		{"WrongTypeNested", func(m map[string]any) { m["cors"] = map[string]any{"maxAge": "ten"} }, "maxAge"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := fixture(t, "api_minimal.json", project)
			tt.mod(body)
			code, data := e.do("POST", "/api/v1/apis", tok, body)
			wantError(t, code, data, 400, tt.field)
		})
	}
	var l httpx.List[store.API]
	e.must(200, "GET", "/api/v1/apis", tok, nil, &l)
	if l.Pagination.Total != 0 {
		t.Fatalf("a rejected API was stored: %+v", l.List[0])
	}
}

func TestAPIUpdateRules(t *testing.T) {
	e := newEnv(t)
	_, tok := e.newOrg()
	project := e.defaultProject(tok)
	a := asMap(t, e.must(201, "POST", "/api/v1/apis", tok, fixture(t, "api_maximal.json", project), nil))
	path := "/api/v1/apis/" + a["id"].(string)
	var other store.Project
	e.must(201, "POST", "/api/v1/projects", tok, map[string]string{"name": "other"}, &other)
	for field, v := range map[string]any{"name": "Renamed", "context": "/other", "version": "v9", "projectId": other.ID} {
		code, data := e.do("PUT", path, tok, map[string]any{field: v})
		wantError(t, code, data, 400, field+": cannot be changed")
	}
	// Removing a backend that an operation still refers to is caught.
	code, data := e.do("PUT", path, tok, map[string]any{"backend-services": []any{
		map[string]any{"name": "primary", "endpoints": []any{map[string]any{"url": "https://p"}}}}})
	wantError(t, code, data, 400, "operations[0].request.backend-services[1].name")
	code, data = e.do("PUT", path, tok, `[1]`)
	wantError(t, code, data, 400, "object")
	code, data = e.do("PUT", path, tok, `{"operations": 5}`)
	wantError(t, code, data, 400, "operations")
	// Nothing of the failed updates was kept.
	if !reflect.DeepEqual(asMap(t, e.must(200, "GET", path, tok, nil, nil)), a) {
		t.Fatal("a rejected PUT changed the API")
	}
}

func TestAPIUniquenessAndIsolation(t *testing.T) {
	e := newEnv(t)
	_, tok := e.newOrg()
	_, otherTok := e.newOrg()
	project := e.defaultProject(tok)
	var second store.Project
	e.must(201, "POST", "/api/v1/projects", tok, map[string]string{"name": "second"}, &second)

	body := fixture(t, "api_minimal.json", project)
	a := asMap(t, e.must(201, "POST", "/api/v1/apis", tok, body, nil))

	code, data := e.do("POST", "/api/v1/apis", tok, body)
	wantError(t, code, data, 409, "already exists in this project")

	body["version"] = "2.0"
	e.must(201, "POST", "/api/v1/apis", tok, body, nil) // same name, other version

	clash := fixture(t, "api_minimal.json", second.ID)
	clash["name"] = "different"
	code, data = e.do("POST", "/api/v1/apis", tok, clash)
	wantError(t, code, data, 409, "context")

	// Another organization may use the same context, and cannot see ours.
	otherBody := fixture(t, "api_minimal.json", e.defaultProject(otherTok))
	e.must(201, "POST", "/api/v1/apis", otherTok, otherBody, nil)
	path := "/api/v1/apis/" + a["id"].(string)
	for _, m := range []string{"GET", "PUT", "DELETE"} {
		code, data := e.do(m, path, otherTok, map[string]any{"description": "x"})
		wantError(t, code, data, 404, "not found")
	}
	code, data = e.do("POST", "/api/v1/apis", otherTok, fixture(t, "api_minimal.json", project))
	wantError(t, code, data, 400, "projectId")
	code, data = e.do("GET", "/api/v1/apis?projectId="+project, otherTok, nil)
	wantError(t, code, data, 404, "not found")

	var l httpx.List[store.API]
	e.must(200, "GET", "/api/v1/apis?projectId="+project, tok, nil, &l)
	if l.Pagination.Total != 2 || l.List[0].Version != "2.0" || len(l.List[0].Operations) != 4 {
		t.Fatalf("list: %+v", l)
	}
	e.must(200, "GET", "/api/v1/apis?projectId="+second.ID, tok, nil, &l)
	if l.Pagination.Total != 0 || l.List == nil {
		t.Fatalf("second project list: %+v", l)
	}

	// A project that holds APIs cannot be deleted; once empty it can.
	code, data = e.do("DELETE", "/api/v1/projects/"+project, tok, nil)
	wantError(t, code, data, 409, "holds APIs")
	e.must(204, "DELETE", path, tok, nil, nil)
	code, data = e.do("GET", path, tok, nil)
	wantError(t, code, data, 404, "not found")
}

// maskClientKeys is a copy of an API body with its mTLS client keys as the
// API answers them: masked.
func maskClientKeys(v any) any {
	switch x := v.(type) {
	case map[string]any:
		out := map[string]any{}
		for k, e := range x {
			if k == "clientKey" && e != "" {
				e = api.SecretMask
			}
			out[k] = maskClientKeys(e)
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = maskClientKeys(e)
		}
		return out
	}
	return v
}

// TestAPIPagesFollowChanges: a page of APIs holds each API exactly as GET
// answers it, on the first read and after it was kept, and an update shows
// at once, including two updates in a row.
func TestAPIPagesFollowChanges(t *testing.T) {
	e := newEnv(t)
	_, tok := e.newOrg()
	project := e.defaultProject(tok)
	var ids []string
	for i := range 3 {
		body := benchAPIBody(project, int64(i))
		ids = append(ids, asMap(t, e.must(201, "POST", "/api/v1/apis", tok, body, nil))["id"].(string))
	}
	e.api.public.DropCachedAnswers() // the first page reads every API
	checkPage(t, e, tok, project, ids)
	checkPage(t, e, tok, project, ids) // from the cache
	for _, name := range []string{"first", "second"} {
		e.must(200, "PUT", "/api/v1/apis/"+ids[1], tok, map[string]any{"description": name}, nil)
		if d := checkPage(t, e, tok, project, ids)[1]["description"]; d != name {
			t.Fatalf("page after an update has description %v, want %s", d, name)
		}
	}
}

// checkPage reads the project's page of APIs and checks it against GET of
// each (newest first) and against the ids; it returns the page's items.
func checkPage(t *testing.T, e *testEnv, tok, project string, ids []string) []map[string]any {
	t.Helper()
	var page struct {
		Count      int
		List       []json.RawMessage
		Pagination struct{ Total, Offset, Limit int }
	}
	e.must(200, "GET", "/api/v1/apis?projectId="+project, tok, nil, &page)
	items := make([]map[string]any, len(page.List))
	if page.Count != len(ids) || len(page.List) != len(ids) || page.Pagination.Total != len(ids) || page.Pagination.Limit != 100 {
		t.Fatalf("page: count %d, %d items, pagination %+v", page.Count, len(page.List), page.Pagination)
	}
	for i, raw := range page.List {
		id := ids[len(ids)-1-i]
		items[i] = asMap(t, raw)
		if one := asMap(t, e.must(200, "GET", "/api/v1/apis/"+id, tok, nil, nil)); !reflect.DeepEqual(items[i], one) {
			t.Fatalf("item %d of the page differs from GET %s:\n%s\n%v", i, id, raw, one)
		}
	}
	return items
}
