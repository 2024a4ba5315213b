package api

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"

	"go.yaml.in/yaml/v3"
)

// Our own description: api/openapi.yaml, an OpenAPI 3.1 document of every
// public route, embedded in the binary and served as it is, and in JSON.
// A route added to Register is described there too; the test
// TestDescriptionComplete names any route missing on either side.

//go:embed openapi.yaml
var descriptionYAML []byte

// descriptionJSON is the same document in JSON, made once.
var descriptionJSON = func() []byte {
	var doc any
	if err := yaml.Unmarshal(descriptionYAML, &doc); err != nil {
		panic(fmt.Sprintf("api/openapi.yaml: %v", err))
	}
	data, err := json.MarshalIndent(jsonable(doc), "", "  ")
	if err != nil {
		panic(fmt.Sprintf("api/openapi.yaml: %v", err))
	}
	return append(data, '\n')
}()

// jsonable turns what YAML decodes (maps with any keys) into what JSON
// encodes.
func jsonable(v any) any {
	switch t := v.(type) {
	case map[string]any:
		for k, e := range t {
			t[k] = jsonable(e)
		}
		return t
	case map[any]any:
		m := make(map[string]any, len(t))
		for k, e := range t {
			m[fmt.Sprint(k)] = jsonable(e)
		}
		return m
	case []any:
		for i, e := range t {
			t[i] = jsonable(e)
		}
		return t
	}
	return v
}

// Description is the description in YAML.
func Description() []byte { return descriptionYAML }

func serveDescriptionYAML(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/yaml")
	w.Write(descriptionYAML)
}

func serveDescriptionJSON(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Write(descriptionJSON)
}

// recorder is a Mux that only notes the patterns registered.
type recorder []string

func (r *recorder) Handle(pattern string, _ http.Handler) { *r = append(*r, pattern) }

// Routes lists the patterns Register adds ("GET /api/v1/apis/{apiId}"),
// sorted: what the description must describe.
func Routes() []string {
	var rec recorder
	(&Server{}).Register(&rec)
	sort.Strings(rec)
	return rec
}
