package api

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"platform-api/document"
	"platform-api/store"
)

// checkRejection asserts the contract for a refused body: a 4xx with a
// description, never a 500.
func checkRejection(t *testing.T, err error) {
	t.Helper()
	status, desc := errorStatus(err)
	if status != http.StatusBadRequest && status != http.StatusRequestEntityTooLarge {
		t.Fatalf("rejection is %d (%q), want 400 or 413; err %v", status, desc, err)
	}
	if desc == "" || strings.HasPrefix(desc, "internal") {
		t.Fatalf("rejection has no useful description: %q", desc)
	}
}

func decodeBody(body []byte, v any) error {
	r := httptest.NewRequest("POST", "/", bytes.NewReader(body))
	return decode(httptest.NewRecorder(), r, 64<<10, v)
}

// documentAmplification bounds how much larger than its body an API's
// document may be (plus documentOverhead for the defaults an empty body
// gets): nesting is capped at MaxJSONDepth, so YAML indentation can add at
// most 2 * MaxJSONDepth bytes to a line that took at least 5 bytes of JSON.
const (
	documentAmplification = 16
	documentOverhead      = 4096
)

// jsonDepth is the deepest nesting of arrays and objects in a JSON text
// (brackets inside strings not counted).
func jsonDepth(data []byte) int {
	depth, deepest, inString, escaped := 0, 0, false, false
	for _, b := range data {
		switch {
		case inString && escaped:
			escaped = false
		case inString && b == '\\':
			escaped = true
		case b == '"':
			inString = !inString
		case inString:
		case b == '{' || b == '[':
			depth++
			deepest = max(deepest, depth)
		case b == '}' || b == ']':
			depth--
		}
	}
	return deepest
}

// FuzzAPIBody feeds arbitrary bodies to the API decoder and validator: no
// panic, every rejection a 400 whose description names what is wrong, no
// accepted body nested deeper than MaxJSONDepth, and every accepted API
// renders into a document that parses back and is at most
// documentAmplification times the size of its body.
func FuzzAPIBody(f *testing.F) {
	for _, name := range []string{"api_maximal.json", "api_minimal.json"} {
		data, err := os.ReadFile("../testdata/" + name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte(`{"name":"x","context":"/x","version":"1","projectId":"6a1c3e5f-7b9d-4f1e-8a2c-3d4e5f6a7b8c","operations":[{"request":{"method":"GET","path":"/{a}/{b}"}}]}`))
	f.Add([]byte(`{"operations":[{"request":null}],"backend-services":[{"endpoints":[{"url":"http://[::1"}]}]}`))
	f.Add([]byte(`[`))
	// Nesting at the cap, and wide at the bottom: the most indentation.
	deep := strings.Repeat(`{"a":`, MaxJSONDepth-7) + `{"":1,"b":2,"c":[[1]]}` + strings.Repeat("}", MaxJSONDepth-7)
	f.Add([]byte(`{"name":"x","context":"/x","version":"1","projectId":"6a1c3e5f-7b9d-4f1e-8a2c-3d4e5f6a7b8c",` +
		`"operations":[{"request":{"method":"GET","path":"/x","requestPolicies":[{"name":"p","params":` + deep + `}]}}]}`))
	f.Add([]byte(strings.Repeat("[", MaxJSONDepth+1) + strings.Repeat("]", MaxJSONDepth+1)))
	f.Fuzz(func(t *testing.T, body []byte) {
		var req apiRequest
		if err := decodeBody(body, &req); err != nil {
			checkRejection(t, err)
			return
		}
		if d := jsonDepth(body); d > MaxJSONDepth {
			t.Fatalf("accepted a body nested %d levels deep", d)
		}
		a := &req.API
		applyAPIDefaults(a)
		if err := validateAPI(context.Background(), a); err != nil {
			checkRejection(t, err)
			if _, desc := errorStatus(err); !strings.Contains(desc, ":") {
				t.Fatalf("validation error names no field: %q", desc)
			}
			return
		}
		a.ID = "0b0e7a4c-5a43-4d6e-9c4f-2f1a3b5c7d9e"
		// What the store keeps must render, deterministically, and parse.
		stored, err := json.Marshal(a)
		if err != nil {
			t.Fatal(err)
		}
		var back store.API
		if err := json.Unmarshal(stored, &back); err != nil {
			t.Fatalf("stored API does not decode: %v", err)
		}
		doc, err := document.RenderHTTPRest(&back)
		if err != nil {
			t.Fatalf("valid API does not render: %v", err)
		}
		var parsed map[string]any
		if err := yaml.Unmarshal(doc, &parsed); err != nil {
			t.Fatalf("document does not parse: %v\n%s", err, doc)
		}
		if len(doc) > documentAmplification*len(body)+documentOverhead {
			t.Fatalf("a %d-byte body rendered to %d bytes", len(body), len(doc))
		}
	})
}

// FuzzDeployBody feeds arbitrary deploy bodies to the decoder and validator.
func FuzzDeployBody(f *testing.F) {
	f.Add([]byte(`[{"gatewayId":"6a1c3e5f-7b9d-4f1e-8a2c-3d4e5f6a7b8c","vhost":"api.example.com","displayOnDevportal":true}]`))
	f.Add([]byte(`[]`))
	f.Add([]byte(`{"gatewayId":1}`))
	f.Add([]byte(`[{"gatewayId":"6a1c3e5f-7b9d-4f1e-8a2c-3d4e5f6a7b8c"},{"gatewayId":"6a1c3e5f-7b9d-4f1e-8a2c-3d4e5f6a7b8c"}]`))
	f.Fuzz(func(t *testing.T, body []byte) {
		var items deployItems
		if err := decodeBody(body, &items); err != nil {
			checkRejection(t, err)
			return
		}
		for _, it := range items {
			if len(it.GatewayID) != 36 || (it.Vhost != "" && !validHostname(it.Vhost)) {
				t.Fatalf("accepted item %+v", it)
			}
		}
	})
}

// FuzzAuthenticate feeds arbitrary bearer tokens to JWT verification: no
// panic, no forged token accepted, and an accepted one always names an
// organization UUID.
func FuzzAuthenticate(f *testing.F) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	good, _ := MintToken(key, TokenRequest{OrganizationID: testOrg, TTL: 24 * time.Hour})
	f.Add(good)
	f.Add("eyJhbGciOiJub25lIn0.eyJvcmdhbml6YXRpb24iOiJ4In0.")
	f.Add("a.b.c")
	f.Add(good[:len(good)-2])
	a, err := NewAuthenticator(context.Background(), AuthConfig{LocalKey: key, HMACSecret: bytes.Repeat([]byte("k"), 32)}, slog.New(slog.DiscardHandler))
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		p, err := a.Authenticate(raw)
		if err != nil {
			if strings.Contains(err.Error(), raw) && len(raw) > 8 {
				t.Fatal("error repeats the token")
			}
			return
		}
		if raw != good {
			// Only the minted token verifies (JSON re-encodings of it are
			// different signed bytes, so they cannot).
			t.Fatalf("accepted a token that was never signed: %q", raw)
		}
		if !isUUID(p.OrganizationID) {
			t.Fatalf("organization %q", p.OrganizationID)
		}
	})
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

// FuzzCheckJSON holds checkJSON to encoding/json: what it accepts decodes
// without error, and it accepts no text that is not valid JSON.
func FuzzCheckJSON(f *testing.F) {
	for _, name := range []string{"api_maximal.json", "api_minimal.json"} {
		data, _ := os.ReadFile("../testdata/" + name)
		f.Add(data)
	}
	f.Add([]byte(`{"revisionId":-0,"description":"\ud83d\ude80","cors":null}`))
	f.Add([]byte(`{"operations":[{"request":{"requestPolicies":[{"params":{"a":[1e400]}}]}}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var req apiRequest
		err := checkJSON(data, reflect.TypeOf(&req), true)
		if err == nil && !json.Valid(data) {
			t.Fatalf("accepted invalid JSON %q", data)
		}
		if err == nil {
			if err := json.Unmarshal(data, &req); err != nil {
				t.Fatalf("accepted %q, which encoding/json refuses: %v", data, err)
			}
		}
	})
}
