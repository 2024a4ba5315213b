package api

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"platform-api/apidef"
	"platform-api/document"
	"platform-api/httpx"
	"platform-api/store"
	"reflect"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// checkRejection asserts the contract for a refused body: a 4xx with a
// description, never a 500.
func checkRejection(t *testing.T, err error) {
	t.Helper()
	status, desc := httpx.ErrorStatus(err)
	if status != http.StatusBadRequest && status != http.StatusRequestEntityTooLarge {
		t.Fatalf("rejection is %d (%q), want 400 or 413; err %v", status, desc, err)
	}
	if desc == "" || strings.HasPrefix(desc, "internal") {
		t.Fatalf("rejection has no useful description: %q", desc)
	}
}

func decodeBody(body []byte, v any) error {
	r := httptest.NewRequest("POST", "/", bytes.NewReader(body))
	return httpx.Decode(httptest.NewRecorder(), r, 64<<10, v)
}

// documentAmplification bounds how much larger than its body an API's
// document may be (plus documentOverhead for the defaults an empty body
// gets): nesting is capped at httpx.MaxJSONDepth, so YAML indentation can add at
// most 2 * httpx.MaxJSONDepth bytes to a line that took at least 5 bytes of JSON.
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
// accepted body nested deeper than httpx.MaxJSONDepth, and every accepted API
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
	deep := strings.Repeat(`{"a":`, httpx.MaxJSONDepth-7) + `{"":1,"b":2,"c":[[1]]}` + strings.Repeat("}", httpx.MaxJSONDepth-7)
	f.Add([]byte(`{"name":"x","context":"/x","version":"1","projectId":"6a1c3e5f-7b9d-4f1e-8a2c-3d4e5f6a7b8c",` +
		`"operations":[{"request":{"method":"GET","path":"/x","requestPolicies":[{"name":"p","params":` + deep + `}]}}]}`))
	f.Add([]byte(strings.Repeat("[", httpx.MaxJSONDepth+1) + strings.Repeat("]", httpx.MaxJSONDepth+1)))
	f.Fuzz(func(t *testing.T, body []byte) {
		var req apiRequest
		if err := decodeBody(body, &req); err != nil {
			checkRejection(t, err)
			return
		}
		if d := jsonDepth(body); d > httpx.MaxJSONDepth {
			t.Fatalf("accepted a body nested %d levels deep", d)
		}
		a := &req.API
		apidef.ApplyDefaults(a)
		if err := apidef.Validate(context.Background(), a); err != nil {
			checkRejection(t, err)
			if _, desc := httpx.ErrorStatus(err); !strings.Contains(desc, ":") {
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

// FuzzCheckJSON holds httpx.CheckJSON to encoding/json: what it accepts decodes
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
		err := httpx.CheckJSON(data, reflect.TypeOf(&req), true)
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
