package server

import (
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/google/uuid"

	"platform-api/httpx"
	"platform-api/store"
)

func TestOrganizations(t *testing.T) {
	e := newEnv(t)
	org := uuid.NewString()
	tok := e.token(org)

	t.Run("GetBeforeCreateIs404", func(t *testing.T) {
		code, data := e.do("GET", "/api/v1/organizations", tok, nil)
		wantError(t, code, data, 404, "not registered")
	})
	t.Run("ForeignIDIs403", func(t *testing.T) {
		code, data := e.do("POST", "/api/v1/organizations", tok, map[string]string{"id": uuid.NewString(), "handle": "x", "name": "X", "region": "eu"})
		wantError(t, code, data, 403, "organization claim")
	})
	t.Run("Validation", func(t *testing.T) {
		for body, field := range map[string]string{
			`{"handle":"Acme","name":"A","region":"eu"}`:                            "handle",
			`{"handle":"acme-","name":"A","region":"eu"}`:                           "handle",
			`{"handle":"1acme","name":"A","region":"eu"}`:                           "handle",
			`{"handle":"` + strings.Repeat("a", 64) + `","name":"A","region":"eu"}`: "handle",
			`{"handle":"acme","region":"eu"}`:                                       "name",
			`{"handle":"acme","name":"A"}`:                                          "region",
			`{"id":"nope","handle":"acme","name":"A","region":"eu"}`:                "id",
			`{"handle":"acme","name":"A","region":7}`:                               "region",
		} {
			code, data := e.do("POST", "/api/v1/organizations", tok, body)
			wantError(t, code, data, 400, field)
		}
	})
	var o store.Organization
	t.Run("Create", func(t *testing.T) {
		e.must(201, "POST", "/api/v1/organizations", tok, map[string]string{"id": org, "handle": "a", "name": "Acme", "region": "eu"}, &o)
		if o.ID != org || o.Handle != "a" || o.CreatedAt.IsZero() {
			t.Fatalf("created %+v", o)
		}
		var got store.Organization
		e.must(200, "GET", "/api/v1/organizations", tok, nil, &got)
		if got != o {
			t.Fatalf("GET = %+v, want %+v", got, o)
		}
		var projects httpx.List[store.Project]
		e.must(200, "GET", "/api/v1/projects", tok, nil, &projects)
		if projects.Count != 1 || projects.List[0].Name != "default" {
			t.Fatalf("default project: %+v", projects)
		}
	})
	t.Run("DuplicateIs409", func(t *testing.T) {
		code, data := e.do("POST", "/api/v1/organizations", tok, map[string]string{"handle": "b", "name": "B", "region": "eu"})
		wantError(t, code, data, 409, "already exists")
		other := e.token(uuid.NewString())
		code, data = e.do("POST", "/api/v1/organizations", other, map[string]string{"handle": "a", "name": "B", "region": "eu"})
		wantError(t, code, data, 409, "handle")
	})
}

func TestProjects(t *testing.T) {
	e := newEnv(t)
	_, tok := e.newOrg()
	_, otherTok := e.newOrg()

	var p store.Project
	e.must(201, "POST", "/api/v1/projects", tok, map[string]string{"name": "payments", "description": "Pay"}, &p)
	if p.Name != "payments" || p.Description != "Pay" || p.ID == "" {
		t.Fatalf("created %+v", p)
	}
	path := "/api/v1/projects/" + p.ID

	t.Run("Get", func(t *testing.T) {
		var got store.Project
		e.must(200, "GET", path, tok, nil, &got)
		if got != p {
			t.Fatalf("GET = %+v, want %+v", got, p)
		}
	})
	t.Run("ListNewestFirstWithPaging", func(t *testing.T) {
		var l httpx.List[store.Project]
		e.must(200, "GET", "/api/v1/projects?limit=1", tok, nil, &l)
		if l.Count != 1 || l.Pagination.Total != 2 || l.Pagination.Limit != 1 || l.List[0].ID != p.ID {
			t.Fatalf("page 1: %+v", l)
		}
		e.must(200, "GET", "/api/v1/projects?limit=1&offset=1", tok, nil, &l)
		if l.Count != 1 || l.List[0].Name != "default" || l.Pagination.Offset != 1 {
			t.Fatalf("page 2: %+v", l)
		}
		e.must(200, "GET", "/api/v1/projects?offset=5", tok, nil, &l)
		if l.Count != 0 || l.List == nil || l.Pagination.Total != 2 {
			t.Fatalf("past the end: %+v", l)
		}
		for _, q := range []string{"limit=0", "limit=1001", "limit=x", "offset=-1"} {
			code, data := e.do("GET", "/api/v1/projects?"+q, tok, nil)
			wantError(t, code, data, 400, strings.Split(q, "=")[0])
		}
	})
	t.Run("DuplicateNameIs409", func(t *testing.T) {
		code, data := e.do("POST", "/api/v1/projects", tok, map[string]string{"name": "payments"})
		wantError(t, code, data, 409, "payments")
	})
	t.Run("SameNameInOtherOrgIsFine", func(t *testing.T) {
		e.must(201, "POST", "/api/v1/projects", otherTok, map[string]string{"name": "payments"}, nil)
	})
	t.Run("UnregisteredOrgIs400", func(t *testing.T) {
		code, data := e.do("POST", "/api/v1/projects", e.token(uuid.NewString()), map[string]string{"name": "x"})
		wantError(t, code, data, 400, "not registered")
	})
	t.Run("Update", func(t *testing.T) {
		var got store.Project
		e.must(200, "PUT", path, tok, map[string]string{"description": "Payments"}, &got)
		if got.Name != "payments" || got.Description != "Payments" || !got.UpdatedAt.After(p.UpdatedAt) || !got.CreatedAt.Equal(p.CreatedAt) {
			t.Fatalf("PUT = %+v", got)
		}
		code, data := e.do("PUT", path, tok, map[string]string{"name": "default"})
		wantError(t, code, data, 409, "default")
		code, data = e.do("PUT", path, tok, map[string]string{"name": ""})
		wantError(t, code, data, 400, "name")
	})
	t.Run("OtherOrgIs404", func(t *testing.T) {
		for _, m := range []string{"GET", "PUT", "DELETE"} {
			code, data := e.do(m, path, otherTok, map[string]string{"description": "x"})
			wantError(t, code, data, 404, "not found")
		}
	})
	t.Run("Delete", func(t *testing.T) {
		e.must(204, "DELETE", path, tok, nil, nil)
		code, data := e.do("GET", path, tok, nil)
		wantError(t, code, data, 404, "not found")
		var l httpx.List[store.Project]
		e.must(200, "GET", "/api/v1/projects", tok, nil, &l)
		code, data = e.do("DELETE", "/api/v1/projects/"+l.List[0].ID, tok, nil)
		wantError(t, code, data, 409, "last project")
	})
}

func TestBadInput(t *testing.T) {
	e := newEnv(t)
	_, tok := e.newOrg()
	tests := []struct {
		name, method, path string
		body               any
		code               int
		desc               string
	}{
		{"EmptyBody", "POST", "/api/v1/projects", "", 400, "empty"},
		{"MalformedJSON", "POST", "/api/v1/projects", `{"name":`, 400, "JSON"},
		{"SyntaxError", "POST", "/api/v1/projects", `{"name" "x"}`, 400, "not valid JSON"},
		{"WrongType", "POST", "/api/v1/projects", `{"name":["x"]}`, 400, "name: must be a string"},
		{"NotAnObject", "POST", "/api/v1/projects", `[1]`, 400, "object"},
		{"TrailingData", "POST", "/api/v1/projects", `{"name":"x"} {}`, 400, "exactly one"},
		{"MissingField", "POST", "/api/v1/projects", `{}`, 400, "name: is required"},
		{"ControlCharacters", "POST", "/api/v1/projects", `{"name":"a\u0000b"}`, 400, "control"},
		{"TooLarge", "POST", "/api/v1/projects", `{"name":"` + strings.Repeat("x", 70<<10) + `"}`, 413, "limit"},
		{"UnknownRoute", "GET", "/api/v1/nothing", nil, 404, "no route"},
		{"WrongMethod", "PATCH", "/api/v1/projects", nil, 405, "not allowed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, data := e.do(tt.method, tt.path, tok, tt.body)
			wantError(t, code, data, tt.code, tt.desc)
		})
	}
}

func TestConcurrentProjectCreates(t *testing.T) {
	e := newEnv(t)
	_, tok := e.newOrg()
	codes := make(chan int, 20)
	var wg sync.WaitGroup
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			code, _ := e.do("POST", "/api/v1/projects", tok, map[string]string{"name": "race"})
			codes <- code
		}()
	}
	wg.Wait()
	close(codes)
	count := map[int]int{}
	for c := range codes {
		count[c]++
	}
	if count[http.StatusCreated] != 1 || count[http.StatusConflict] != 19 {
		t.Fatalf("statuses %v; want one 201 and nineteen 409", count)
	}
}

func TestHealth(t *testing.T) {
	e := newEnv(t)
	data := e.must(200, "GET", "/health", "", nil, nil)
	if strings.TrimSpace(string(data)) != `{"status":"ok"}` {
		t.Fatalf("health = %s", data)
	}
}
