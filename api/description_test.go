package api

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
)

// serverRoutes are the public routes the server registers outside this
// package (server/routes.go), described here too.
var serverRoutes = []string{"GET /health", "GET /ready"}

// TestDescriptionComplete: the description is a valid OpenAPI 3.1
// document, every registered route is described, and every described
// route is registered. A failure names each route and the fix.
func TestDescriptionComplete(t *testing.T) {
	doc, err := openapi3.NewLoader().LoadFromData(Description())
	if err != nil {
		t.Fatalf("api/openapi.yaml does not load: %v", err)
	}
	if err := doc.Validate(t.Context()); err != nil {
		t.Fatalf("api/openapi.yaml is not a valid OpenAPI document: %v", err)
	}
	if !doc.IsOpenAPI31OrLater() {
		t.Fatalf("api/openapi.yaml is OpenAPI %s; want 3.1", doc.OpenAPI)
	}
	var described []string
	for path, item := range doc.Paths.Map() {
		for method := range item.Operations() {
			described = append(described, method+" "+path)
		}
	}
	registered := append(Routes(), serverRoutes...)
	var undescribed, unregistered []string
	for _, r := range registered {
		if !slices.Contains(described, r) {
			undescribed = append(undescribed, r)
		}
	}
	for _, d := range described {
		if !slices.Contains(registered, d) {
			unregistered = append(unregistered, d)
		}
	}
	slices.Sort(undescribed)
	slices.Sort(unregistered)
	if len(undescribed) > 0 {
		t.Errorf("routes registered but not described in api/openapi.yaml (add each under paths:, with its request and answer schemas):\n  %s",
			strings.Join(undescribed, "\n  "))
	}
	if len(unregistered) > 0 {
		t.Errorf("routes described in api/openapi.yaml that the server does not register (remove them, or register them in api/routes.go):\n  %s",
			strings.Join(unregistered, "\n  "))
	}
	// Every operation has an id and an answer, and every 4xx answer is the
	// error shape.
	for _, d := range described {
		method, path, _ := strings.Cut(d, " ")
		op := doc.Paths.Value(path).GetOperation(method)
		if op.OperationID == "" {
			t.Errorf("%s: no operationId", d)
		}
		for code, resp := range op.Responses.Map() {
			if strings.HasPrefix(code, "4") && resp.Ref != "#/components/responses/Error" {
				t.Errorf("%s: answer %s is not #/components/responses/Error", d, code)
			}
		}
	}
}

// The JSON form is the same document.
func TestDescriptionJSON(t *testing.T) {
	doc, err := openapi3.NewLoader().LoadFromData(descriptionJSON)
	if err != nil {
		t.Fatal(err)
	}
	yd, err := openapi3.NewLoader().LoadFromData(Description())
	if err != nil {
		t.Fatal(err)
	}
	a, _ := json.Marshal(yd)
	b, _ := json.Marshal(doc)
	if string(a) != string(b) {
		t.Fatal("openapi.json and openapi.yaml differ")
	}
}
