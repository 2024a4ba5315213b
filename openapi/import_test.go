package openapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"platform-api/apidef"
	"platform-api/httpx"
)

// pathMethods counts, independently of the library, every path × method
// of a document: what the import must turn into exactly one operation each.
func pathMethods(t *testing.T, data []byte) []string {
	t.Helper()
	var doc struct {
		Paths map[string]map[string]any `yaml:"paths"`
	}
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	var out []string
	for p, item := range doc.Paths {
		for m := range item {
			if slices.Contains(methods, strings.ToUpper(m)) {
				out = append(out, strings.ToUpper(m)+" "+p)
			}
		}
	}
	slices.Sort(out)
	return out
}

func TestImportRealDocuments(t *testing.T) {
	const project = "0b7e6a1c-5f3e-4c1e-9a57-2a4f1f0e9c11"
	cases := []struct {
		file      string
		o         Overrides
		version   string // of the document
		name, ver string
		backend   string
		context   string
		apiKey    string // header of security.apiKey, if any
	}{
		{file: "oai-v2-petstore-expanded.yaml", version: "2.0", name: "Swagger Petstore", ver: "1.0.0",
			backend: "http://petstore.swagger.io/api", context: "/api"},
		{file: "oai-v2-uber.json", version: "2.0", name: "Uber API", ver: "1.0.0",
			backend: "https://api.uber.com/v1", context: "/v1"},
		{file: "oai-v3.0-petstore-expanded.yaml", version: "3.0.0", name: "Swagger Petstore", ver: "1.0.0",
			backend: "https://petstore.swagger.io/v2", context: "/v2"},
		// A server URL with a variable: its default is taken.
		{file: "oai-v3.0-uspto.yaml", version: "3.0.1", name: "USPTO Data Set API", ver: "1.0.0",
			backend: "https://developer.uspto.gov/ds-api", context: "/ds-api"},
		{file: "swagger-petstore-v3.yaml", version: "3.0.4", name: "Swagger Petstore - OpenAPI 3.0", ver: "1.0.27",
			backend: "https://petstore3.swagger.io/api/v3", context: "/api/v3", apiKey: "api_key"},
		// No server: backendUrl is given, the context is made from the name.
		{file: "oai-v3.1-non-oauth-scopes.json", o: Overrides{BackendURL: "https://users.example.com"},
			version: "3.1.0", name: "Non-oAuth Scopes example", ver: "1.0.0",
			backend: "https://users.example.com", context: "/non-oauth-scopes-example"},
	}
	for _, c := range cases {
		t.Run(c.file, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join("testdata", "real", c.file))
			if err != nil {
				t.Fatal(err)
			}
			res, err := Import(context.Background(), data, c.o)
			if err != nil {
				t.Fatal(err)
			}
			a := res.API
			var got []string
			for _, op := range a.Operations {
				got = append(got, op.Request.Method+" "+op.Request.Path)
			}
			slices.Sort(got)
			if want := pathMethods(t, data); !slices.Equal(got, want) || len(want) == 0 {
				t.Fatalf("operations %v; want exactly one per path × method: %v", got, want)
			}
			if res.Version != c.version || a.Name != c.name || a.Version != c.ver || a.Context != c.context {
				t.Fatalf("version %q name %q version %q context %q; want %q %q %q %q", res.Version, a.Name, a.Version, a.Context,
					c.version, c.name, c.ver, c.context)
			}
			if len(a.BackendServices) != 1 || a.BackendServices[0].Endpoints[0].URL != c.backend {
				t.Fatalf("backend %+v; want %s", a.BackendServices, c.backend)
			}
			switch {
			case c.apiKey == "" && a.Security != nil:
				t.Fatalf("security %+v; want none", a.Security)
			case c.apiKey != "" && (a.Security == nil || !a.Security.Enabled || a.Security.APIKey.Header != c.apiKey):
				t.Fatalf("security %+v; want an API key in header %s", a.Security, c.apiKey)
			}
			// What was derived is an API our own rules accept.
			a.ProjectID = project
			apidef.ApplyDefaults(a)
			if err := apidef.Validate(context.Background(), a); err != nil {
				t.Fatalf("derived API is refused: %v", err)
			}
		})
	}
}

func TestImportNames(t *testing.T) {
	for in, want := range map[string]string{
		"Swagger Petstore (v2)": "Swagger Petstore v2",
		"Café / API™":           "Caf API",
		"  a\tb  ":              "a b",
		"日本":                    "",
	} {
		if got := NormalizeName(in); got != want {
			t.Errorf("NormalizeName(%q) = %q; want %q", in, got, want)
		}
	}
	for in, want := range map[string]string{
		"1.0.0": "1.0.0", "1.0.0-beta.2": "1.0.0", "v2": "v2", "2023-01-15": "2023.01.15",
		"1.2.3.4": "1.2.3", "latest": "", "V3.1": "v3.1",
	} {
		if got := NormalizeVersion(in); got != want {
			t.Errorf("NormalizeVersion(%q) = %q; want %q", in, got, want)
		}
	}
	if got := ContextFromName("Swagger Petstore - OpenAPI 3.0"); got != "/swagger-petstore-openapi-3.0" {
		t.Errorf("ContextFromName = %q", got)
	}
}

// wantBadRequest fails unless err is a 400 whose description holds substr.
func wantBadRequest(t *testing.T, err error, substr string) {
	t.Helper()
	var e *httpx.Error
	if !errors.As(err, &e) || e.Status != http.StatusBadRequest {
		t.Fatalf("err = %v; want a 400", err)
	}
	if !strings.Contains(e.Description, substr) {
		t.Fatalf("description %q does not mention %q", e.Description, substr)
	}
}

const minimal = `openapi: 3.1.0
info: {title: Orders, version: 2.1.0}
servers: [{url: "https://orders.internal:8443/api"}]
paths:
  /orders:
    get: {operationId: listOrders, summary: List orders}
    trace: {}
`

func TestImportMinimalAndOverrides(t *testing.T) {
	res, err := Import(context.Background(), []byte(minimal), Overrides{})
	if err != nil {
		t.Fatal(err)
	}
	a := res.API
	if a.Name != "Orders" || a.Version != "2.1.0" || a.Context != "/api" ||
		a.BackendServices[0].Endpoints[0].URL != "https://orders.internal:8443/api" {
		t.Fatalf("%+v", a)
	}
	if len(a.Operations) != 1 || a.Operations[0].Name != "listOrders" || a.Operations[0].Description != "List orders" {
		t.Fatalf("operations %+v", a.Operations)
	}
	if len(res.Warnings) != 1 || !strings.Contains(res.Warnings[0], "TRACE /orders") {
		t.Fatalf("warnings %q; want TRACE left out", res.Warnings)
	}
	res, err = Import(context.Background(), []byte(minimal), Overrides{Name: "o", Version: "v9", Context: "/x", BackendURL: "http://b:1"})
	if err != nil {
		t.Fatal(err)
	}
	if a := res.API; a.Name != "o" || a.Version != "v9" || a.Context != "/x" || a.BackendServices[0].Endpoints[0].URL != "http://b:1" {
		t.Fatalf("overrides not applied: %+v", a)
	}
}

func TestImportRefusals(t *testing.T) {
	cases := map[string]struct{ doc, want string }{
		"not yaml":       {"{{{", "neither valid YAML nor JSON"},
		"not openapi":    {"a: 1", "not an OpenAPI document"},
		"swagger 1.2":    {`swagger: "1.2"`, `must be "2.0"`},
		"openapi 4":      {"openapi: 4.0.0", "3.x version"},
		"no server":      {"openapi: 3.0.3\ninfo: {title: t, version: '1'}\npaths: {/a: {get: {responses: {'200': {description: ok}}}}}", "?backendUrl="},
		"relative":       {"openapi: 3.0.3\ninfo: {title: t, version: '1'}\nservers: [{url: /v1}]\npaths: {/a: {get: {}}}", "?backendUrl="},
		"no title":       {"openapi: 3.0.3\ninfo: {title: '', version: '1'}\nservers: [{url: 'http://h'}]\npaths: {/a: {get: {}}}", "#/info/title"},
		"no version":     {"openapi: 3.0.3\ninfo: {title: t, version: 'latest'}\nservers: [{url: 'http://h'}]\npaths: {/a: {get: {}}}", "?version="},
		"no operation":   {"openapi: 3.1.0\ninfo: {title: t, version: '1'}\nservers: [{url: 'http://h'}]\nwebhooks: {}", "#/paths"},
		"external file":  {"openapi: 3.0.3\ninfo: {title: t, version: '1'}\npaths:\n  /a:\n    $ref: 'other.yaml#/paths/a'", `#/paths/~1a/$ref (line 5): $ref "other.yaml#/paths/a" points outside`},
		"external url":   {"openapi: 3.0.3\ninfo: {title: t, version: '1'}\ncomponents: {schemas: {A: {$ref: 'http://169.254.169.254/latest'}}}", "http://169.254.169.254/latest"},
		"missing local":  {"openapi: 3.0.3\ninfo: {title: t, version: '1'}\nservers: [{url: 'http://h'}]\npaths: {/a: {get: {responses: {'200': {$ref: '#/components/responses/Nope'}}}}}", "cannot be read"},
		"not UTF-8":      {"openapi: 3.0.3\ninfo: {title: \xff}", "UTF-8"},
		"top-level list": {"- a\n- b", "must be a YAML or JSON object"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := Import(context.Background(), []byte(c.doc), Overrides{})
			wantBadRequest(t, err, c.want)
		})
	}
}

// Real tools accept vendor extensions anywhere and JSON Schema 2020-12
// keywords they do not know in 3.1 schemas; so does the import.
func TestImportLenient(t *testing.T) {
	doc := `openapi: 3.1.0
x-vendor: {anything: [1, 2]}
info: {title: Lenient, version: 1.0.0, x-logo: {url: 'https://x/y.png'}}
servers: [{url: 'https://h/base', x-internal: true}]
paths:
  /a/{id}:
    x-amazon-apigateway-any-method: {}
    get:
      x-code-samples: []
      parameters: [{name: id, in: path, required: true, schema: {type: string}}]
      responses:
        '200':
          description: ok
          content:
            application/json:
              schema:
                $ref: '#/components/schemas/Node'
components:
  schemas:
    Node:
      type: object
      unevaluatedProperties: false
      x-unknown-keyword: 1
      $comment: self reference
      properties:
        children: {type: array, items: {$ref: '#/components/schemas/Node'}}
        next: {$ref: '#/components/schemas/Node'}
`
	res, err := Import(context.Background(), []byte(doc), Overrides{})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.API.Operations) != 1 || res.API.Operations[0].Request.Path != "/a/{id}" {
		t.Fatalf("%+v", res.API.Operations)
	}
}

// hostile documents are refused with a 400, none with work beyond linear.
func TestImportHostile(t *testing.T) {
	var fan strings.Builder
	// Each schema refers to the next one many times: expanding the refs
	// would be 50^30 nodes; resolving them is linear.
	fan.WriteString("openapi: 3.0.3\ninfo: {title: t, version: '1'}\nservers: [{url: 'http://h'}]\npaths:\n  /a:\n    get:\n      responses:\n        '200':\n          description: ok\n          content: {application/json: {schema: {$ref: '#/components/schemas/S0'}}}\ncomponents:\n  schemas:\n")
	for i := range 30 {
		fmt.Fprintf(&fan, "    S%d:\n      type: object\n      properties:\n", i)
		for j := range 50 {
			if i == 29 {
				fmt.Fprintf(&fan, "        p%d: {type: string}\n", j)
			} else {
				fmt.Fprintf(&fan, "        p%d: {$ref: '#/components/schemas/S%d'}\n", j, i+1)
			}
		}
	}
	bomb := "openapi: 3.0.3\ninfo: {title: t, version: '1'}\nx-a: &a [x, x, x, x, x, x, x, x, x, x]\n"
	prev := "a"
	for i := range 12 {
		name := fmt.Sprintf("b%d", i)
		bomb += fmt.Sprintf("x-%s: &%s [*%s, *%s, *%s, *%s, *%s, *%s, *%s, *%s, *%s, *%s]\n", name, name, prev, prev, prev, prev, prev, prev, prev, prev, prev, prev)
		prev = name
	}
	cases := map[string]struct {
		doc  string
		want string // "" when it must be accepted
	}{
		"deep flow":    {"openapi: 3.0.3\nx: " + strings.Repeat("[", 100_000), "neither valid YAML nor JSON"},
		"deep mapping": {"openapi: 3.0.3\ninfo: {title: t, version: '1'}\nx: " + strings.Repeat("{a: ", 200) + strings.Repeat("}", 200), "nests deeper than 64"},
		"deep json":    {`{"openapi":"3.0.3","x":` + strings.Repeat(`{"a":`, 5000) + "1" + strings.Repeat("}", 5000) + "}", "nests deeper than 64"},
		"alias bomb":   {bomb, "alias"},
		"ref fan-out":  {fan.String(), ""},
		"many refs":    {"openapi: 3.0.3\ninfo: {title: t, version: '1'}\nx:\n" + strings.Repeat("  - $ref: '#/info'\n", MaxRefs+1), "more than 100000 $ref"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			start := time.Now()
			_, err := Import(context.Background(), []byte(c.doc), Overrides{})
			if c.want == "" {
				if err != nil {
					t.Fatal(err)
				}
			} else {
				wantBadRequest(t, err, c.want)
			}
			// A bound against blow-ups (exponential work, unbounded
			// memory), not a performance claim: -race slows YAML parsing
			// about tenfold.
			if d := time.Since(start); d > 30*time.Second {
				t.Fatalf("took %v", d)
			}
		})
	}
}

// FuzzImport: no input panics or gives anything but a result or a client
// error (a 4xx).
func FuzzImport(f *testing.F) {
	entries, _ := os.ReadDir(filepath.Join("testdata", "real"))
	for _, e := range entries {
		if data, err := os.ReadFile(filepath.Join("testdata", "real", e.Name())); err == nil && !strings.HasSuffix(e.Name(), ".md") {
			f.Add(data)
		}
	}
	f.Add([]byte(minimal))
	f.Add([]byte("swagger: '2.0'\ninfo: {title: t, version: '1'}\nhost: h\npaths: {/a: {get: {}}}"))
	f.Fuzz(func(t *testing.T, data []byte) {
		res, err := Import(context.Background(), data, Overrides{})
		if err != nil {
			var e *httpx.Error
			if !errors.As(err, &e) || e.Status < 400 || e.Status > 499 {
				t.Fatalf("error %v is not a client error", err)
			}
			return
		}
		if res.API == nil || len(res.API.Operations) == 0 {
			t.Fatal("a result without operations")
		}
	})
}
