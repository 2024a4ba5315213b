package document_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"reflect"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"platform-api/apidef"
	"platform-api/document"
	"platform-api/store"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata")

// storedFixture decodes a testdata API body the way the server stores it.
func storedFixture(t *testing.T, name string) *store.API {
	t.Helper()
	data, err := os.ReadFile("../testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	var a store.API
	if err := json.Unmarshal(data, &a); err != nil {
		t.Fatal(err)
	}
	a.ID = "0b0e7a4c-5a43-4d6e-9c4f-2f1a3b5c7d9e"
	apidef.ApplyDefaults(&a)
	return &a
}

func TestRenderDocumentGolden(t *testing.T) {
	for _, name := range []string{"api_maximal", "api_minimal"} {
		t.Run(name, func(t *testing.T) {
			a := storedFixture(t, name+".json")
			got, err := document.RenderHTTPRest(a)
			if err != nil {
				t.Fatal(err)
			}
			checkGolden(t, "../testdata/"+name+".yaml", got)
			again, _ := document.RenderHTTPRest(a)
			if !bytes.Equal(again, got) {
				t.Fatal("rendering is not deterministic")
			}
		})
	}
}

// TestRenderDocumentParsesBack reads the YAML with a YAML parser and checks
// the values against the API and the contract's key order.
func TestRenderDocumentParsesBack(t *testing.T) {
	a := storedFixture(t, "api_maximal.json")
	out, err := document.RenderHTTPRest(a)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Kind    string `yaml:"kind"`
		Version string `yaml:"version"`
		Data    struct {
			ID, Name, Version, Description, Context, Provider string
			DisplayName                                       string `yaml:"displayName"`
			Upstream                                          []map[string]any
			Operations                                        []map[string]any
		} `yaml:"data"`
	}
	if err := yaml.Unmarshal(out, &doc); err != nil {
		t.Fatal(err)
	}
	d := doc.Data
	if doc.Kind != "http/rest" || doc.Version != "api-platform.wso2.com/v1" || d.ID != a.ID || d.Name != a.Name ||
		d.DisplayName != a.DisplayName || d.Description != a.Description || d.Context != a.Context ||
		d.Version != a.Version || d.Provider != a.Provider {
		t.Fatalf("parsed back %+v", doc)
	}
	if len(d.Upstream) != 3 || d.Upstream[0]["url"] != "https://pay-1.internal:8443/v2" || d.Upstream[0]["weight"] != 70 ||
		d.Upstream[2]["url"] != "https://audit.internal" {
		t.Fatalf("upstream %+v", d.Upstream)
	}
	if len(d.Operations) != 4 || d.Operations[1]["path"] != "/payments/{paymentId}" {
		t.Fatalf("operations %+v", d.Operations)
	}
	params := d.Operations[0]["requestPolicies"].([]any)[0].(map[string]any)["params"].(map[string]any)
	if params["big"] != 9007199254740993 || params["ratio"] != 0.25 || params["nested"].(map[string]any)["k"] != "v: #x" {
		t.Fatalf("params %+v", params)
	}
	// Keys in the contract's order.
	var node yaml.Node
	yaml.Unmarshal(out, &node)
	var keys []string
	data := node.Content[0].Content[5]
	for i := 0; i < len(data.Content); i += 2 {
		keys = append(keys, data.Content[i].Value)
	}
	want := "id name displayName version description context provider upstream operations"
	if strings.Join(keys, " ") != want {
		t.Fatalf("data keys %v, want %s", keys, want)
	}
}

// TestDocumentQuoting proves that hostile strings survive the YAML round trip.
func TestDocumentQuoting(t *testing.T) {
	for _, s := range []string{
		"a: b", "# comment", "x #y", `"quoted"`, "'single'", "line\nbreak", "trailing\n", " leading space",
		"unicode ✓ 支払い 🚀", "yes", "no", "null", "~", "1.0", "0x10", "true", "- item", "[a, b]", "{a: b}",
		"&anchor", "*alias", "!tag", "%percent", "@at", "`tick`", "|", ">", "a\tb", "\u00a0nbsp", "---", "...",
	} {
		a := storedFixture(t, "api_minimal.json")
		a.Name, a.DisplayName, a.Description = s, s, s
		a.Operations[0].Request.RequestPolicies = []store.Policy{{Name: "p", Params: mustJSON(map[string]string{s: s})}}
		out, err := document.RenderHTTPRest(a)
		if err != nil {
			t.Fatal(err)
		}
		var doc struct {
			Data struct {
				Name, Description string
				DisplayName       string `yaml:"displayName"`
				Operations        []struct {
					RequestPolicies []struct{ Params map[string]string } `yaml:"requestPolicies"`
				}
			}
		}
		if err := yaml.Unmarshal(out, &doc); err != nil {
			t.Fatalf("%q: %v\n%s", s, err, out)
		}
		got := []string{doc.Data.Name, doc.Data.DisplayName, doc.Data.Description, doc.Data.Operations[0].RequestPolicies[0].Params[s]}
		if !reflect.DeepEqual(got, []string{s, s, s, s}) {
			t.Fatalf("%q came back as %q\n%s", s, got, out)
		}
	}
}

func mustJSON(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// TestRenderRestAPIGolden pins the second generation's document of the
// fixtures (contract §6).
func TestRenderRestAPIGolden(t *testing.T) {
	for _, name := range []string{"api_maximal", "api_minimal"} {
		t.Run(name, func(t *testing.T) {
			a := storedFixture(t, name+".json")
			a.Handle = "handle-of-" + strings.ReplaceAll(name, "_", "-")
			if len(a.BackendServices) == 0 { // deployable needs an upstream
				a.BackendServices = []store.BackendService{{Name: "only", Endpoints: []store.Endpoint{{URL: "http://only.internal:8080"}}}}
			}
			got, err := document.RenderRestAPI(a, "api.example.com")
			if err != nil {
				t.Fatal(err)
			}
			checkGolden(t, "../testdata/"+name+".restapi.yaml", got)
		})
	}
}

// TestRenderRestAPISubscriptionValidationGolden: an API that asks for
// subscriptions carries the subscription-validation policy at API level
// (contract §7); the first generation's document does not change.
func TestRenderRestAPISubscriptionValidationGolden(t *testing.T) {
	a := storedFixture(t, "api_minimal.json")
	a.Handle = "handle-of-api-minimal"
	a.BackendServices = []store.BackendService{{Name: "only", Endpoints: []store.Endpoint{{URL: "http://only.internal:8080"}}}}
	gen1, err := document.RenderHTTPRest(a)
	if err != nil {
		t.Fatal(err)
	}
	a.SubscriptionValidation = true
	got, err := document.RenderRestAPI(a, "api.example.com")
	if err != nil {
		t.Fatal(err)
	}
	checkGolden(t, "../testdata/api_subscriptions.restapi.yaml", got)
	if again, _ := document.RenderHTTPRest(a); !bytes.Equal(again, gen1) {
		t.Fatalf("the first generation's document changed:\n%s", again)
	}
	if document.SubscriptionValidationPolicy != "subscription-validation@v1" {
		t.Fatalf("policy %q", document.SubscriptionValidationPolicy)
	}
}

// TestRenderRestAPIParsesBack reads the RestApi document with a YAML
// parser and checks it against the API: what the second generation
// receives, faithfully, and nothing invented.
func TestRenderRestAPIParsesBack(t *testing.T) {
	a := storedFixture(t, "api_maximal.json")
	a.Handle = "payments-v2-1-0"
	out, err := document.RenderRestAPI(a, "api.example.com")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		APIVersion string `yaml:"apiVersion"`
		Kind       string
		Metadata   struct{ Name string }
		Spec       struct {
			DisplayName string `yaml:"displayName"`
			Version     string
			Context     string
			Vhosts      map[string]string
			Upstream    map[string]struct{ URL string }
			Operations  []struct {
				Method, Path string
				Policies     []struct {
					Name, Version string
					Params        map[string]any
				}
			}
		}
	}
	if err := yaml.Unmarshal(out, &doc); err != nil {
		t.Fatal(err)
	}
	s := doc.Spec
	if doc.APIVersion != "gateway.api-platform.wso2.com/v1" || doc.Kind != "RestApi" || doc.Metadata.Name != a.Handle ||
		s.Version != a.Version || s.Context != a.Context || s.Vhosts["main"] != "api.example.com" {
		t.Fatalf("parsed back %+v", doc)
	}
	// displayName falls back to the name when it holds what RestApi refuses.
	if a.DisplayName == s.DisplayName || s.DisplayName != a.Name {
		t.Fatalf("displayName %q for %q", s.DisplayName, a.DisplayName)
	}
	// The one upstream: the first endpoint of the default backend service.
	if s.Upstream["main"].URL != "https://pay-1.internal:8443/v2" || len(s.Upstream) != 1 {
		t.Fatalf("upstream %+v", s.Upstream)
	}
	if len(s.Operations) != len(a.Operations) {
		t.Fatalf("%d operations, want %d", len(s.Operations), len(a.Operations))
	}
	op := s.Operations[0]
	want := len(a.Operations[0].Request.RequestPolicies) + len(a.Operations[0].Request.ResponsePolicies)
	if len(op.Policies) != want || op.Policies[0].Version != "v1" || op.Policies[0].Params["big"] != 9007199254740993 {
		t.Fatalf("policies %+v", op.Policies)
	}
	// No per-operation backend, weight or health check is invented.
	for _, absent := range []string{"backend-services", "weight", "healthCheck", "clientKey", "requestPolicies"} {
		if bytes.Contains(out, []byte(absent)) {
			t.Fatalf("the RestApi document holds %q:\n%s", absent, out)
		}
	}
}

// FuzzRenderDocument renders APIs whose strings are arbitrary and checks the
// YAML parses back to the same values.
func FuzzRenderDocument(f *testing.F) {
	f.Add("Payments API", "a: b # c\n'\"", "/payments", "v1", "key", "value: #")
	f.Add("", "\x00\t\r\n", "/", "1.0", "yes", "null")
	f.Add("名前", "🚀 ✓", "/ü", "v2.1.3", "- x", "{a: b}")
	f.Fuzz(func(t *testing.T, name, desc, context, version, pkey, pval string) {
		a := &store.API{ID: "0b0e7a4c-5a43-4d6e-9c4f-2f1a3b5c7d9e", Name: name, DisplayName: desc, Description: desc,
			Context: context, Version: version, Provider: name,
			BackendServices: []store.BackendService{{Name: "b", Endpoints: []store.Endpoint{{URL: "https://x", Description: desc}}}},
			Operations:      []store.Operation{{Request: &store.OperationRequest{Method: "GET", Path: context, RequestPolicies: []store.Policy{{Name: "p", Params: mustJSON(map[string]string{pkey: pval})}}}}},
		}
		doc, err := document.RenderHTTPRest(a)
		if err != nil {
			t.Fatal(err)
		}
		again, _ := document.RenderHTTPRest(a)
		if !bytes.Equal(doc, again) {
			t.Fatal("not deterministic")
		}
		var d struct {
			Data struct {
				Name, Description, Context, Version, Provider string
				DisplayName                                   string `yaml:"displayName"`
				Upstream                                      []struct{ URL, Description string }
				Operations                                    []struct {
					Path            string
					RequestPolicies []struct{ Params map[string]string } `yaml:"requestPolicies"`
				}
			}
		}
		if err := yaml.Unmarshal(doc, &d); err != nil {
			t.Fatalf("does not parse: %v\n%s", err, doc)
		}
		// JSON (the stored form) turns invalid UTF-8 into U+FFFD; compare
		// with what the params went through.
		var params map[string]string
		json.Unmarshal(mustJSON(map[string]string{pkey: pval}), &params)
		got := []any{d.Data.Name, d.Data.DisplayName, d.Data.Description, d.Data.Context, d.Data.Version, d.Data.Provider,
			d.Data.Upstream[0].Description, d.Data.Operations[0].Path, d.Data.Operations[0].RequestPolicies[0].Params}
		want := []any{name, desc, desc, context, version, name, desc, context, params}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("round trip:\n got %q\nwant %q\n%s", got, want, doc)
		}
	})
}

// checkGolden compares a rendered document with its golden file (written
// anew with -update).
func checkGolden(t *testing.T, golden string, got []byte) {
	t.Helper()
	if *update {
		if err := os.WriteFile(golden, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test ./document -run Golden -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("document differs from %s:\n--- got\n%s\n--- want\n%s", golden, got, want)
	}
}
